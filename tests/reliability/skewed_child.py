"""A child process whose host clock is skewed (for test_reliability_clock.py).

This module imports nothing from the queue at the top: the child sets its skewed clock
before the queue is imported, so no default argument captured the true ``time.time``.
"""

from __future__ import annotations

from typing import Any


def skewed_claim(url: str, skew: float, use_host_clock: bool, out: Any) -> None:
    """A worker on a host whose wall clock is ``skew`` seconds ahead tries to take work.

    With ``use_host_clock`` it times leases by that skewed clock (``clock=time.time``);
    otherwise by the database's default clock. Puts ``(reclaimed, claimed task id or None,
    db.now() minus the true time)`` on ``out``.
    """
    import time

    true_time = time.time
    time.time = lambda: true_time() + skew  # this whole process sees the skewed clock
    from prismq.queue import QueueDatabase, QueueWorker

    options = {"clock": time.time} if use_host_clock else {}
    with QueueDatabase(url, **options) as db:
        worker = QueueWorker(db, "skewed-worker", lease_duration=60)
        reclaimed = db.backend.reclaim_expired(db.now())
        task = worker.claim_next_task()
        out.put((reclaimed, None if task is None else task.id, db.now() - true_time()))
