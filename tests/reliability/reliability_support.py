"""Shared helpers for the reliability tests: sizes, child process bodies, a fake clock.

Child process entry points live here (not in the test modules) so that the "spawn"
start method can import them by name in a fresh interpreter.

Sizes scale with ``PRISMQ_SOAK=1``: the CI size runs in seconds, the soak size for
minutes. Tests that only make sense at soak size carry ``@pytest.mark.soak`` and
``SOAK_ONLY`` (skipped unless ``PRISMQ_SOAK=1``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SOAK = os.environ.get("PRISMQ_SOAK", "").strip() not in ("", "0")
SOAK_ONLY = pytest.mark.skipif(not SOAK, reason="soak size: set PRISMQ_SOAK=1 (nox -s soak)")
POSIX = os.name == "posix"
IS_ROOT = POSIX and os.geteuid() == 0
SPAWN = multiprocessing.get_context("spawn")


def sized(ci: int, soak: int) -> int:
    """``ci`` normally, ``soak`` under ``PRISMQ_SOAK=1``."""
    return soak if SOAK else ci


def append_line(path: Path | str, line: str) -> None:
    """Append one line with a single ``write`` on an O_APPEND descriptor (survives SIGKILL)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[list[str]]:
    """The whitespace-split lines of a log file (a partly written last line is dropped)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
    return [line.split() for line in lines if line.strip()]


def kill_all(processes: list[Any]) -> None:
    """SIGKILL and reap every process in ``processes`` that is still alive."""
    for proc in processes:
        if proc.is_alive():
            with_signal(proc.pid, signal.SIGKILL if POSIX else signal.SIGTERM)
    for proc in processes:
        proc.join(10)


def with_signal(pid: int | None, signum: int) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


# -- chaos: a worker that logs every handler execution ------------------------------


def chaos_worker(db_path: str, log_path: str, worker_id: str, handler_sleep: float) -> None:
    """Claim/complete until every task is finished; log each step to ``log_path``.

    Lines: ``start ID ATTEMPT TOKEN`` before the handler, ``completing ...`` after it,
    ``done ...`` after the fenced complete returned, ``lost ...`` on LeaseLostError.
    """
    from prismq.queue import Ack, QueueClient, QueueDatabase, QueueWorker

    db = QueueDatabase(db_path)
    client = QueueClient(db)
    worker = QueueWorker(db, worker_id=worker_id, lease_duration=1.5, reclaim_interval=0.2)
    task = None
    try:
        while True:
            if task is None:
                task = worker.claim_next_task()
            if task is None:
                counts = client.count_by_status()
                if counts["queued"] == 0 and counts["leased"] == 0:
                    return
                time.sleep(0.02)
                continue
            key = f"{task.id} {task.attempts} {task.lease_token}"
            append_line(log_path, f"start {key}")
            time.sleep(handler_sleep)  # the handler's work
            append_line(log_path, f"completing {key}")
            # The runtime's write path: the fenced outcome and the next claim in one commit.
            outcome = Ack.complete(task.id, {"by": worker_id, "attempt": task.attempts})
            (result,), following = worker.acknowledge([outcome], claim=1)
            append_line(log_path, f"{'done' if result.saved else 'lost'} {key}")
            task = following[0] if following else None
    finally:
        db.close()


# -- producer killed during enqueue_many --------------------------------------------


def batch_producer(db_path: str, marker: str, batch: int) -> None:
    """Enqueue ``batch`` tasks in one ``enqueue_many``; touch ``marker`` when the insert starts."""
    from prismq.queue import QueueClient, QueueDatabase

    db = QueueDatabase(db_path)
    client = QueueClient(db)
    original = db.backend.insert_tasks

    def instrumented(tasks: Any, now: float) -> Any:
        append_line(marker, f"inserting {time.monotonic()}")
        result = original(tasks, now)
        append_line(marker, f"inserted {time.monotonic()}")
        return result

    db.backend.insert_tasks = instrumented  # type: ignore[method-assign]
    client.enqueue_many(
        {"task_type": "bulk", "payload": {"n": n, "pad": "x" * 200}, "max_attempts": 5} for n in range(batch)
    )
    db.close()


# -- fencing: a worker paused past its lease ----------------------------------------


def paused_worker(db_path: str, conn: Any) -> None:
    """Claim the one task, keep renewing until told to go, then try every fenced call.

    Sends ``("claimed", task_id, token)``, and at the end ``("results", {...})`` where
    each fenced call maps to ``[exception class name, message]`` (or ``["ok", ""]``).
    """
    from prismq.queue import LeaseLostError, QueueDatabase, QueueError, QueueWorker

    db = QueueDatabase(db_path)
    worker = QueueWorker(db, worker_id="paused-worker", lease_duration=0.5, reclaim_interval=0.05)
    task = worker.claim_next_task()
    assert task is not None
    conn.send(("claimed", task.id, task.lease_token))
    held = dict(worker._held)
    renew_failed_in_loop = ""
    # A healthy worker: renews well within its lease until it is told to stop working.
    while not conn.poll(0.1):
        try:
            worker.renew_lease(task.id)
        except LeaseLostError as exc:
            renew_failed_in_loop = str(exc)
            break
    if not conn.poll(None):  # pragma: no cover - the parent always sends "go"
        return
    conn.recv()
    results: dict[str, list[str]] = {
        "renew_in_loop": ["LeaseLostError" if renew_failed_in_loop else "none", ""]
    }
    calls = {
        "renew_lease": lambda: worker.renew_lease(task.id),
        "update_progress": lambda: worker.update_progress(task.id, 50, "halfway"),
        "fail_task": lambda: worker.fail_task(task.id, "boom"),
        "complete_task": lambda: worker.complete_task(task.id, {"stale": True}),
        "complete_many": lambda: worker.complete_many([task.id]),
        "release_task": lambda: worker.release_task(task.id),
    }
    for name, call in calls.items():
        worker._held = dict(held)  # the worker still believes it holds the lease
        try:
            value = call()
        except QueueError as exc:
            results[name] = [type(exc).__name__, str(exc)]
        else:
            results[name] = ["ok", repr(value)]
    conn.send(("results", results))
    db.close()


# -- contention: writers and readers ------------------------------------------------


def contention_writer(db_path: str, slot: int, seconds: float, out: Any) -> None:
    """Enqueue, claim and complete in a loop; report ids and busy errors."""
    from prismq.queue import QueueBusyError, QueueClient, QueueDatabase, QueueError, QueueWorker

    db = QueueDatabase(db_path)
    client = QueueClient(db)
    worker = QueueWorker(db, worker_id=f"writer-{slot}", lease_duration=30)
    enqueued: list[int] = []
    completed: list[int] = []
    busy = 0
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            enqueued.append(client.enqueue("contention", {"slot": slot, "n": n}))
            task = worker.claim_next_task()
            if task is not None:
                worker.complete_task(task.id, {"slot": slot})
                completed.append(task.id)
        except QueueBusyError:
            busy += 1
        except QueueError as exc:
            if "locked" in str(exc).lower():
                busy += 1
            else:
                errors.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            if "locked" in str(exc).lower():
                busy += 1
            else:
                errors.append(f"{type(exc).__name__}: {exc}")
    db.close()
    out.put(("writer", slot, enqueued, completed, busy, errors))


def contention_reader(db_path: str, slot: int, seconds: float, out: Any) -> None:
    """Read counts, lists and stats in a loop; report busy errors."""
    from prismq.queue import QueueBusyError, QueueClient, QueueDatabase

    db = QueueDatabase(db_path)
    client = QueueClient(db)
    reads = 0
    busy = 0
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            counts = client.count_by_status()
            client.list(status="completed", limit=20)
            client.stats()
            if min(counts.values()) < 0:
                errors.append(f"negative count {counts}")
            reads += 1
        except QueueBusyError:
            busy += 1
        except Exception as exc:
            if "locked" in str(exc).lower():
                busy += 1
            else:
                errors.append(f"{type(exc).__name__}: {exc}")
    db.close()
    out.put(("reader", slot, reads, busy, errors))


DROP_PRIVILEGES = """
import json, os, sys
import prismq.queue
import prismq.queue.backends.sqlite
from prismq.queue import QueueClient, QueueDatabase, QueueError
if os.name == "posix" and os.geteuid() == 0:
    # Root ignores file modes; run the rest as user nobody, for real permission checks.
    # Everything is imported first: the interpreter's own files may not be readable by nobody.
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    assert os.geteuid() == 65534
"""


def run_python_as_nobody(code: str, *args: str) -> tuple[int, str, str]:
    """Run ``code`` in a fresh interpreter that drops root privileges (to nobody) first."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", DROP_PRIVILEGES + code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


# -- faults while a worker saves an outcome -----------------------------------------


class FaultySaves:
    """Make a backend's finishing calls raise ``error`` as ``schedule`` says.

    Each call that saves an outcome (complete, fail, release, cancel) takes the next entry
    of ``schedule``: ``True`` raises ``error``, ``False`` (or an exhausted schedule) lets
    the call through. A claim that saves nothing is never failed.
    """

    def __init__(self, backend: Any, error: type[Exception], schedule: list[bool]) -> None:
        self.error = error
        self.schedule = list(schedule)
        self.raised = 0
        self.calls = 0
        for name in ("complete_and_claim", "complete_tasks", "finish_attempt"):
            setattr(backend, name, self._faulty(getattr(backend, name), name))

    def _faulty(self, original: Any, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name != "complete_and_claim" or args[0]:
                self.calls += 1
                if self.schedule and self.schedule.pop(0):
                    self.raised += 1
                    raise self.error("injected fault while saving an outcome")
            return original(*args, **kwargs)

        return call
