"""Real processes sharing one SQLite file: no task lost or run twice, crashes recovered.

Children are separate Python interpreters (``subprocess`` running ``mp_child.py``), each
with its own QueueDatabase, as separate worker processes would be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from prismq.queue import QueueClient, QueueDatabase, QueueWorker, TaskStatus
from prismq.queue.backends.base import TaskUpdate

CHILD = Path(__file__).with_name("mp_child.py")
PROCESSES = 4
TASKS = 10_000


class Children:
    """Starts child processes and makes sure none outlives the test."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), *(str(a) for a in args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def children() -> Iterator[Children]:
    spawned = Children()
    try:
        yield spawned
    finally:
        spawned.stop_all()


def hard_kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL on POSIX (no cleanup at all); TerminateProcess on Windows."""
    if sys.platform == "win32":
        proc.kill()
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        assert proc.stderr is not None
        pytest.fail(f"child exited early: {proc.stderr.read()}")
    return line.strip()


@pytest.mark.slow
@pytest.mark.parametrize("batch", [0, 1, 20], ids=["complete_and_claim", "claim_next_task", "claim_batch"])
def test_processes_complete_every_task_exactly_once(
    sqlite_db: QueueDatabase, db_path: Path, tmp_path: Path, children: Children, batch: int
) -> None:
    client = QueueClient(sqlite_db)
    ids = client.enqueue_many([{"task_type": f"t{n % 3}", "payload": {"n": n}} for n in range(TASKS)])
    assert len(set(ids)) == TASKS
    go = tmp_path / "go"
    outs = [tmp_path / f"done-{n}.txt" for n in range(PROCESSES)]
    procs = [children.start("drain", db_path, out, go, f"proc-{n}", batch) for n, out in enumerate(outs)]
    for proc in procs:
        assert read_line(proc) == "ready"
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err

    per_process = [[int(line) for line in out.read_text().split()] for out in outs]
    every = [task_id for done in per_process for task_id in done]
    duplicates = [task_id for task_id, n in Counter(every).items() if n > 1]
    assert duplicates == []
    assert len(every) == TASKS
    assert set(every) == set(ids)
    # Real concurrency: more than one process did work.
    assert sum(1 for done in per_process if done) >= 2

    assert client.count_by_status() == {
        "queued": 0,
        "leased": 0,
        "completed": TASKS,
        "dead": 0,
        "cancelled": 0,
    }
    # Each task ran once, and the recorded winner is the one that stored its result.
    owners = {task_id: f"proc-{n}" for n, done in enumerate(per_process) for task_id in done}
    for task in client.list(limit=500, status="completed"):
        assert task.attempts == 1
        assert task.result == {"by": owners[task.id]}
    assert sqlite_db.integrity_check() == ["ok"]


def test_sigkilled_worker_task_runs_again_and_late_completion_is_refused(
    sqlite_db: QueueDatabase, db_path: Path, children: Children
) -> None:
    client = QueueClient(sqlite_db)
    task_id = client.enqueue("fragile", {"n": 1}, max_attempts=3)
    proc = children.start("claim_and_hang", db_path, "doomed-worker", 1.0)
    claimed = json.loads(read_line(proc))
    assert claimed["id"] == task_id
    assert claimed["attempts"] == 1
    hard_kill(proc)
    assert client.get(task_id).status is TaskStatus.LEASED

    rescuer = QueueWorker(sqlite_db, "rescuer", lease_duration=60, reclaim_interval=0)
    deadline = time.monotonic() + 30
    task = None
    while task is None and time.monotonic() < deadline:
        task = rescuer.claim_next_task()
        if task is None:
            time.sleep(0.05)
    assert task is not None, "the task was never reclaimed"
    assert task.id == task_id
    assert task.attempts == 2
    assert task.locked_by == "rescuer"
    assert "doomed-worker" in (task.last_error or "")

    # The killed worker's completion arrives late, with its old token: refused.
    stale = TaskUpdate(task_id, "doomed-worker", claimed["token"])
    assert sqlite_db.backend.complete_tasks([stale], ['"late"'], time.time()) == [False]
    assert client.get(task_id) == task
    rescuer.complete_task(task, "on time")
    assert client.get_result(task_id) == "on time"
    assert sqlite_db.integrity_check() == ["ok"]


def test_worker_killed_mid_stream_loses_nothing(
    sqlite_db: QueueDatabase, db_path: Path, children: Children
) -> None:
    client = QueueClient(sqlite_db)
    ids = client.enqueue_many([{"task_type": "job"} for _ in range(3000)])
    proc = children.start("churn", db_path, "churner", 1.0)
    assert read_line(proc) == "working"
    time.sleep(0.2)
    hard_kill(proc)
    assert sqlite_db.integrity_check() == ["ok"]
    counts = client.count_by_status()
    assert counts["leased"] <= 1
    assert counts["completed"] >= 1
    assert counts["queued"] + counts["leased"] + counts["completed"] == len(ids)

    finisher = QueueWorker(sqlite_db, "finisher", lease_duration=60, reclaim_interval=0)
    deadline = time.monotonic() + 60
    while client.count_by_status()["completed"] < len(ids) and time.monotonic() < deadline:
        tasks = finisher.claim_batch(200)
        if tasks:
            finisher.complete_many(tasks)
        else:
            time.sleep(0.05)
    assert client.count_by_status()["completed"] == len(ids)
    assert sqlite_db.integrity_check() == ["ok"]


def test_idempotency_key_race_between_processes(
    sqlite_db: QueueDatabase, db_path: Path, tmp_path: Path, children: Children
) -> None:
    go = tmp_path / "go"
    procs = [children.start("enqueue_idempotent", db_path, go, "same-key") for _ in range(3)]
    for proc in procs:
        assert read_line(proc) == "ready"
    go.touch()
    seen: set[int] = set()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        seen.update(json.loads(out.strip().splitlines()[-1]))
    client = QueueClient(sqlite_db)
    rows = client.list(task_type="race")
    assert len(rows) == 1
    assert seen == {rows[0].id}
    assert rows[0].idempotency_key == "same-key"


def test_wait_returns_when_another_process_completes(
    sqlite_db: QueueDatabase, db_path: Path, children: Children
) -> None:
    client = QueueClient(sqlite_db)
    task_id = client.enqueue("job")
    proc = children.start("complete_later", db_path, 0.5)
    task = client.wait(task_id, timeout=60)
    assert task.status is TaskStatus.COMPLETED
    assert task.result == {"from": "child"}
    assert task.locked_by is None
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
