"""Pausing a task type: its tasks keep queueing and no worker in any process claims them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from prismq.queue import QueueClient, QueueDatabase, QueueWorker, TaskStatus, TaskTypeError
from prismq.queue.strategies import WeightedRandomStrategy

CHILD = Path(__file__).with_name("pause_child.py")


def test_paused_type_keeps_queueing_and_is_never_claimed(client: QueueClient, db: QueueDatabase) -> None:
    assert client.pause("video") is True
    assert client.pause("video") is False  # already paused
    assert set(client.paused()) == {"video"}
    ids = client.enqueue_many([{"task_type": t} for t in ["video", "email"] * 5])
    assert len(ids) == 10
    for task_types in (None, ["video"], ["video", "email"], ["email", "video"]):
        claimed = QueueWorker(db, "w", task_types=task_types).claim_batch(10)
        assert {t.task_type for t in claimed} <= {"email"}
    worker = QueueWorker(db, "w")
    assert client.count_by_type()["video"] == {"queued": 5}
    assert client.count_by_type()["email"] == {"leased": 5}
    # An idle worker does not see a paused type's due tasks as work to wake up for.
    assert db.backend.next_run_after(None) is None
    assert db.backend.next_run_after(["video"]) is None

    assert client.resume("video") is True
    assert client.resume("video") is False
    assert client.paused() == {}
    assert db.backend.next_run_after(None) is not None
    assert {t.task_type for t in worker.claim_batch(10)} == {"video"}


def test_pause_holds_for_every_strategy(client: QueueClient, db: QueueDatabase) -> None:
    client.enqueue_many([{"task_type": t} for t in ["a", "b", "c"] * 4])
    client.pause("b")
    client.pause("c")
    strategy = WeightedRandomStrategy({"a": 1, "b": 5, "c": 5})
    worker = QueueWorker(db, "w", strategy=strategy)
    claimed = worker.claim_batch(12)
    assert [t.task_type for t in claimed] == ["a"] * 4
    assert worker.claim_batch(12) == []


def test_pause_refuses_a_bad_task_type(client: QueueClient) -> None:
    with pytest.raises(TaskTypeError):
        client.pause("")
    with pytest.raises(TaskTypeError):
        client.resume("x" * 201)


def started(client: QueueClient, task_type: str) -> set[int]:
    """Ids of the tasks of a type that are running or completed."""
    return {
        t.id
        for status in ("leased", "completed")
        for t in client.list(status=status, task_type=task_type, limit=10_000)
    }


@pytest.mark.slow
def test_no_process_claims_a_paused_type(
    make_db: Callable[..., QueueDatabase],
    backend_name: str,
    db_path: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Four worker processes drain; "a" is paused mid-drain, then resumed.

    No task of "a" starts after ``pause`` (and the claims in flight) until ``resume``; "b"
    drains meanwhile;
    after the resume every task completes exactly once.
    """
    db = make_db()
    client = QueueClient(db)
    if backend_name == "postgresql":
        url, schema = request.getfixturevalue("postgres_schema")
        target = f"{url}#{schema}"
    else:
        target = str(db_path)
    ids = client.enqueue_many([{"task_type": t} for t in ["a", "b"] * 1500])
    stop = tmp_path / "stop"
    outs = [tmp_path / f"child{n}.txt" for n in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(CHILD), target, str(out), str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        deadline = time.monotonic() + 120
        while client.count_by_status()["completed"] < 300:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        client.pause("a")
        # Claims already inside their transaction when the pause committed may still
        # lease "a"; they end within milliseconds. From then on, no "a" task may start.
        time.sleep(0.2)
        started_before = started(client, "a")
        while client.count_by_type()["b"].get("completed", 0) < 1500:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # the workers keep asking for work while "a" is paused
        assert client.page(status="queued", task_type="a", limit=10).tasks, "nothing left to prove"
        late = started(client, "a") - started_before
        assert late == set(), f"tasks of a paused type started after pause(): {sorted(late)[:10]}"
        client.resume("a")
        while client.count_by_status()["completed"] < len(ids):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        stop.touch()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
    for proc in procs:
        assert proc.returncode == 0
    done = Counter(line.split()[0] for out in outs for line in out.read_text().splitlines())
    assert sorted(int(i) for i in done) == sorted(ids)
    assert set(done.values()) == {1}
    assert client.count_by_status()[TaskStatus.COMPLETED.value] == len(ids)


def test_pauses_travel_with_a_backup(client: QueueClient, db: QueueDatabase, tmp_path: Path) -> None:
    client.enqueue("video", {})
    client.pause("video")
    backup = db.backup(tmp_path / "queue.backup")
    client.resume("video")
    client.pause("email")
    db.restore(backup)
    assert set(client.paused()) == {"video"}
    assert QueueWorker(db, "w").claim_batch(5) == []
