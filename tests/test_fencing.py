"""Fencing: a worker whose lease was lost can change nothing; expired leases are reclaimed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from prismq.queue import (
    LeaseLostError,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    Task,
    TaskStatus,
)
from prismq.queue.backends.base import TaskUpdate

if TYPE_CHECKING:
    from conftest import FakeClock

LATE_CALLS: dict[str, Callable[[QueueWorker, Task], Any]] = {
    "complete": lambda w, t: w.complete_task(t, {"late": True}),
    "complete-and-claim": lambda w, t: w.complete_and_claim(t, {"late": True}),
    "fail-retry": lambda w, t: w.fail_task(t, "late failure"),
    "fail-final": lambda w, t: w.fail_task(t, "late failure", retry=False),
    "renew": lambda w, t: w.renew_lease(t),
    "renew-extend": lambda w, t: w.renew_lease(t, extend_by=999),
    "progress": lambda w, t: w.update_progress(t, 99, "late"),
    "release": lambda w, t: w.release_task(t),
    "acknowledge-cancel": lambda w, t: w.acknowledge_cancel(t),
}


@dataclass
class Reclaimed:
    client: QueueClient
    worker_a: QueueWorker
    worker_b: QueueWorker
    task_a: Task
    task_b: Task


@pytest.fixture
def reclaimed(clocked_db: QueueDatabase, clock: FakeClock) -> Reclaimed:
    """Worker A's lease ran out and worker B claimed the same task."""
    client = QueueClient(clocked_db)
    client.enqueue("job", {"n": 1}, max_attempts=5)
    worker_a = QueueWorker(clocked_db, "worker-a", lease_duration=5)
    task_a = worker_a.claim_next_task()
    assert task_a is not None
    clock.advance(5.5)
    worker_b = QueueWorker(clocked_db, "worker-b", lease_duration=60)
    task_b = worker_b.claim_next_task()
    assert task_b is not None
    assert task_b.id == task_a.id
    assert task_b.attempts == 2
    assert task_b.locked_by == "worker-b"
    assert task_b.lease_token != task_a.lease_token
    assert "lease expired" in (task_b.last_error or "")
    return Reclaimed(client, worker_a, worker_b, task_a, task_b)


@pytest.mark.parametrize("call", list(LATE_CALLS.values()), ids=list(LATE_CALLS))
def test_lost_lease_changes_nothing(reclaimed: Reclaimed, call: Callable[[QueueWorker, Task], Any]) -> None:
    r = reclaimed
    before = r.client.get(r.task_a.id)
    assert before == r.task_b
    with pytest.raises(LeaseLostError, match="worker-b"):
        call(r.worker_a, r.task_a)
    assert r.client.get(r.task_a.id) == before
    assert r.task_a.id not in r.worker_a.held_tasks
    # B's lease is intact: B can still finish the task.
    assert r.worker_b.held_tasks == {r.task_b.id: r.task_b}
    r.worker_b.complete_task(r.task_b, "fresh")
    assert r.client.get_result(r.task_b.id) == "fresh"


def test_stale_token_via_backend_is_refused(reclaimed: Reclaimed, clocked_db: QueueDatabase) -> None:
    r = reclaimed
    backend = clocked_db.backend
    stale = TaskUpdate(r.task_a.id, "worker-a", r.task_a.lease_token or "")
    now = clocked_db.now()
    before = r.client.get(r.task_a.id)
    assert backend.complete_tasks([stale], [None], now) == [False]
    with pytest.raises(LeaseLostError):
        backend.renew_lease(stale, now + 100, now)
    with pytest.raises(LeaseLostError):
        backend.update_progress(stale, 50.0, None, now + 100, now)
    with pytest.raises(LeaseLostError):
        backend.finish_attempt(stale, TaskStatus.DEAD, None, "x", None, True, now)
    # B's worker id with A's token is refused too: the token, not only the id, is the fence.
    forged = TaskUpdate(r.task_a.id, "worker-b", r.task_a.lease_token or "")
    assert backend.complete_tasks([forged], [None], now) == [False]
    assert "worker-b" in backend.diagnose_lost_lease(stale)
    assert r.client.get(r.task_a.id) == before == r.task_b


def test_complete_many_skips_lost_leases(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    first, second = client.enqueue_many([{"task_type": "job"}, {"task_type": "job"}])
    worker_a = QueueWorker(clocked_db, "worker-a", lease_duration=5)
    held = worker_a.claim_batch(2)
    worker_a.renew_lease(second, extend_by=100)
    clock.advance(6)
    thief = QueueWorker(clocked_db, "thief")
    assert [t.id for t in thief.claim_batch(5)] == [first]
    assert worker_a.complete_many(held) == [second]
    assert client.get(first).status is TaskStatus.LEASED
    assert client.get(first).locked_by == "thief"
    assert client.get(second).status is TaskStatus.COMPLETED


def test_lease_still_valid_at_its_exact_end(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job")
    worker_a = QueueWorker(clocked_db, "worker-a", lease_duration=5)
    task = worker_a.claim_next_task()
    assert task is not None
    clock.advance(5)
    assert QueueWorker(clocked_db, "worker-b").claim_next_task() is None
    worker_a.complete_task(task)
    assert client.get(task_id).status is TaskStatus.COMPLETED


# -- reclaiming without a daemon -----------------------------------------------------------


def test_expired_leases_reclaimed_by_next_claim_counting_attempts(
    clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    client = QueueClient(clocked_db)
    ids = client.enqueue_many([{"task_type": "job", "max_attempts": 3} for _ in range(3)])
    crashed = QueueWorker(clocked_db, "crashed", lease_duration=10)
    assert len(crashed.claim_batch(3)) == 3
    clock.advance(10.5)
    stats = client.stats()
    assert stats.expired_leases == 3
    assert client.count_by_status()["leased"] == 3  # nothing moved them yet
    rescuer = QueueWorker(clocked_db, "rescuer", lease_duration=10)
    again = rescuer.claim_batch(10)
    assert sorted(t.id for t in again) == ids
    assert all(t.attempts == 2 and t.locked_by == "rescuer" for t in again)
    assert client.stats().expired_leases == 0


def test_same_worker_reclaims_after_its_own_crash_restart(
    clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job")
    QueueWorker(clocked_db, "w-1", lease_duration=5).claim_next_task()
    clock.advance(6)
    restarted = QueueWorker(clocked_db, "w-1", lease_duration=5)
    task = restarted.claim_next_task()
    assert task is not None
    assert task.id == task_id
    assert task.attempts == 2


def test_reclaim_happens_even_when_reclaim_interval_not_elapsed(
    clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    client = QueueClient(clocked_db)
    client.enqueue("job")
    rescuer = QueueWorker(clocked_db, "rescuer", reclaim_interval=3600)
    assert rescuer.claim_next_task() is not None  # first claim: also reclaims (nothing to do)
    client.enqueue("job2")
    QueueWorker(clocked_db, "crasher", lease_duration=1, task_types=["job2"]).claim_next_task()
    clock.advance(2)
    # Nothing ready: the empty claim triggers a reclaim pass at once.
    task = rescuer.claim_next_task()
    assert task is not None
    assert task.task_type == "job2"
    assert task.attempts == 2


def test_lease_expiring_on_last_attempt_goes_dead(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job", max_attempts=2)
    for name in ("first", "second"):
        task = QueueWorker(clocked_db, name, lease_duration=5).claim_next_task()
        assert task is not None
        assert task.id == task_id
        clock.advance(6)
    assert QueueWorker(clocked_db, "third").claim_next_task() is None
    dead = client.get(task_id)
    assert dead.status is TaskStatus.DEAD
    assert dead.attempts == 2
    assert dead.finished_at is not None
    assert dead.lease_token is None
    assert dead.last_error is not None
    assert "lease expired" in dead.last_error
    assert "second" in dead.last_error
