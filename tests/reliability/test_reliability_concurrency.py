"""Concurrency across real processes: fencing of a paused worker, and write contention."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from reliability_support import (
    POSIX,
    SOAK_ONLY,
    SPAWN,
    contention_reader,
    contention_writer,
    kill_all,
    paused_worker,
    sized,
    with_signal,
)

from prismq.queue import QueueClient, QueueDatabase, QueueWorker


@pytest.mark.skipif(not POSIX, reason="SIGSTOP/SIGCONT are POSIX-only")
def test_worker_paused_past_its_lease_is_fenced_off(tmp_path: Path) -> None:
    db_path = tmp_path / "fence.db"
    db = QueueDatabase(db_path)
    db.initialize_schema()
    client = QueueClient(db)
    task_id = client.enqueue("fenced", {"n": 1}, max_attempts=5)
    parent_end, child_end = SPAWN.Pipe()
    proc = SPAWN.Process(target=paused_worker, args=(str(db_path), child_end), daemon=True)
    proc.start()
    try:
        assert parent_end.poll(60), "the paused worker never claimed"
        kind, claimed_id, first_token = parent_end.recv()
        assert (kind, claimed_id) == ("claimed", task_id)

        # While the worker runs, it renews its 0.5 s lease: nobody else can claim the task.
        other = QueueWorker(db, worker_id="second-worker", lease_duration=30, reclaim_interval=0.0)
        time.sleep(0.8)
        assert other.claim_next_task() is None
        assert client.get(task_id).locked_by == "paused-worker"

        # Pause it past its lease; the second worker reclaims and claims the task.
        with_signal(proc.pid, signal.SIGSTOP)
        time.sleep(1.2)
        stolen = other.claim_next_task()
        assert stolen is not None
        assert stolen.id == task_id
        assert stolen.attempts == 2
        assert stolen.lease_token != first_token
        other.update_progress(task_id, 10, "second worker at work")
        before = client.get(task_id)

        parent_end.send("go")
        with_signal(proc.pid, signal.SIGCONT)
        assert parent_end.poll(60), "the resumed worker did not report"
        kind, results = parent_end.recv()
        assert kind == "results"
        proc.join(30)
    finally:
        with_signal(proc.pid, signal.SIGCONT)
        kill_all([proc])

    for name in ("renew_lease", "update_progress", "fail_task", "complete_task", "release_task"):
        exc_name, message = results[name]
        assert exc_name == "LeaseLostError", f"{name}: {results[name]}"
        assert "second-worker" in message, message
        assert "lease" in message, message
    # complete_many skips a lost lease (and logs it) instead of raising.
    assert results["complete_many"] == ["ok", "[]"]

    after = client.get(task_id)
    assert after == before, "a fenced-off call changed the task"
    assert after.status.value == "leased"
    assert after.locked_by == "second-worker"
    assert after.progress == 10
    assert after.result is None
    assert after.last_error is not None
    other.complete_task(task_id, {"by": "second-worker"})
    assert client.get(task_id).result == {"by": "second-worker"}
    assert db.integrity_check() == ["ok"]
    db.close()


def run_contention(tmp_path: Path, seconds: float, writers: int = 8, readers: int = 2) -> None:
    db_path = tmp_path / "contention.db"
    with QueueDatabase(db_path) as db:
        db.initialize_schema()
    out = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=contention_writer, args=(str(db_path), slot, seconds, out), daemon=True)
        for slot in range(writers)
    ] + [
        SPAWN.Process(target=contention_reader, args=(str(db_path), slot, seconds, out), daemon=True)
        for slot in range(readers)
    ]
    try:
        for proc in procs:
            proc.start()
        reports = [out.get(timeout=seconds + 120) for _ in procs]
        for proc in procs:
            proc.join(30)
            assert proc.exitcode == 0
    finally:
        kill_all(procs)

    writer_reports = [r for r in reports if r[0] == "writer"]
    reader_reports = [r for r in reports if r[0] == "reader"]
    assert len(writer_reports) == writers
    assert len(reader_reports) == readers
    enqueued: list[int] = []
    completed: list[int] = []
    for _, slot, ids, done, busy, errors in writer_reports:
        assert busy == 0, f"writer {slot} saw {busy} busy/locked errors"
        assert errors == [], f"writer {slot}: {errors[:3]}"
        assert ids, f"writer {slot} enqueued nothing"
        enqueued += ids
        completed += done
    for _, slot, reads, busy, errors in reader_reports:
        assert busy == 0, f"reader {slot} saw {busy} busy/locked errors"
        assert errors == [], f"reader {slot}: {errors[:3]}"
        assert reads > 0

    assert len(set(enqueued)) == len(enqueued), "two enqueues returned the same id"
    assert len(set(completed)) == len(completed), "a task was completed twice"
    assert set(completed) <= set(enqueued)
    with QueueDatabase(db_path) as db:
        assert db.integrity_check() == ["ok"]
        counts = QueueClient(db).count_by_status()
        stored_completed = (
            {t.id for t in QueueClient(db).list(status="completed", limit=10_000)}
            if len(completed) <= 10_000
            else None
        )
    assert sum(counts.values()) == len(enqueued), counts
    assert counts["completed"] == len(completed), counts
    assert counts["queued"] == len(enqueued) - len(completed)
    assert counts["leased"] == 0
    assert counts["dead"] == 0
    if stored_completed is not None:
        assert stored_completed == set(completed)


def test_eight_writers_two_readers_never_see_busy(tmp_path: Path) -> None:
    run_contention(tmp_path, seconds=sized(10, 60))


@pytest.mark.soak
@SOAK_ONLY
def test_contention_soak_sixteen_writers(tmp_path: Path) -> None:
    run_contention(tmp_path, seconds=60, writers=16, readers=4)
