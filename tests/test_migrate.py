"""prismq.queue.migrate: copying a queue between databases, on both backends.

The ``make_db`` database (SQLite or PostgreSQL, per case) is the target of a copy from an
SQLite file, and the source of a copy back into another SQLite file. Tasks and the runs of
``prismq.queue.integrations`` are copied both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from prismq.queue import QueueClient, QueueDatabase, QueueWorker, TaskStatus
from prismq.queue.errors import ConfigError
from prismq.queue.integrations import Run, RunRegistry, RunStatus
from prismq.queue.migrate import MigrationError, migrate

if TYPE_CHECKING:
    from conftest import FakeClock


def fill(database: QueueDatabase, clock: FakeClock) -> dict[str, int]:
    """One task in every state a queue can hold; returns their ids by name."""
    client = QueueClient(database)
    ids = {
        "ready": client.enqueue("mail", {"to": "a@example.com", "n": 1.5}, priority=5),
        "delayed": client.enqueue("mail", {"later": True}, delay=3600),
        "keyed": client.enqueue("report", {"k": 1}, idempotency_key="report-1"),
        "running": client.enqueue("video", {"id": 7}),
        "stopping": client.enqueue("video", {"id": 8}),
        "done": client.enqueue("video", {"id": 9}),
        "dead": client.enqueue("video", {"id": 10}, max_attempts=1),
        "cancelled": client.enqueue("mail", {}),
    }
    client.cancel(ids["cancelled"])
    worker = QueueWorker(database, worker_id="old-worker", task_types=["video"])
    held = {t.id: t for t in worker.claim_batch(4)}
    assert set(held) == {ids["running"], ids["stopping"], ids["done"], ids["dead"]}
    worker.update_progress(ids["running"], 40, "halfway")
    worker.complete_task(ids["done"], {"frames": [1, 2, 3], "ok": True})
    worker.fail_task(ids["dead"], "broken input")
    client.cancel(ids["stopping"])  # running: cancellation requested
    clock.advance(5)
    return ids


@pytest.fixture
def sqlite_source(tmp_path: Path, clock: FakeClock) -> Iterator[QueueDatabase]:
    database = QueueDatabase(tmp_path / "source.db", clock=clock)
    database.initialize_schema()
    yield database
    database.close()


def test_copy_keeps_ids_states_and_results(
    sqlite_source: QueueDatabase, make_db: Callable[..., QueueDatabase], clock: FakeClock
) -> None:
    ids = fill(sqlite_source, clock)
    target = make_db(clock=clock)
    seen: list[tuple[int, int]] = []
    report = migrate(
        sqlite_source, target, batch_size=3, progress=lambda done, total: seen.append((done, total))
    )
    assert report.verified
    assert report.tasks_copied == 8
    assert report.leases_requeued == 2
    assert seen == [(3, 8), (6, 8), (8, 8)]
    assert report.by_status == {"queued": 4, "completed": 1, "dead": 1, "cancelled": 2}
    assert report.target == target.location
    assert "verified" in report.summary()

    source_tasks = {t.id: t for t in QueueClient(sqlite_source).list(limit=100)}
    copied = {t.id: t for t in QueueClient(target).list(limit=100)}
    assert set(copied) == set(ids.values())
    for name in ("ready", "delayed", "keyed", "done", "dead", "cancelled"):
        assert copied[ids[name]] == source_tasks[ids[name]], name
    assert copied[ids["done"]].result == {"frames": [1, 2, 3], "ok": True}
    running = copied[ids["running"]]
    assert running.status is TaskStatus.QUEUED
    assert running.attempts == 0
    assert (running.locked_by, running.lease_token, running.lease_until) == (None, None, None)
    stopping = copied[ids["stopping"]]
    assert stopping.status is TaskStatus.CANCELLED
    assert stopping.finished_at is not None
    # The copy is a working queue: ids continue, keys still deduplicate, work is claimable.
    client = QueueClient(target)
    assert client.enqueue("mail", {}) > max(ids.values())
    assert client.enqueue("report", {"k": 1}, idempotency_key="report-1") == ids["keyed"]
    claimed = QueueWorker(target, worker_id="new-worker", strategy="priority").claim_next_task()
    assert claimed is not None
    assert claimed.id == ids["ready"]


def test_running_again_is_idempotent_and_catches_up(
    sqlite_source: QueueDatabase, make_db: Callable[..., QueueDatabase], clock: FakeClock
) -> None:
    ids = fill(sqlite_source, clock)
    target = make_db(clock=clock)
    first = migrate(sqlite_source, target)
    again = migrate(sqlite_source, target)
    assert again.checksum == first.checksum
    assert QueueClient(target).count_by_status() == QueueClient(sqlite_source).count_by_status() | {
        "leased": 0,
        "queued": 4,
        "cancelled": 2,
    }
    worker = QueueWorker(sqlite_source, worker_id="late", task_types=["mail"])
    task = worker.claim_next_task()
    assert task is not None
    worker.complete_task(task, "sent")
    third = migrate(sqlite_source, target)
    assert third.checksum != first.checksum
    assert QueueClient(target).get(task.id).result == "sent"
    assert QueueClient(target).get(ids["ready"]).status is TaskStatus.COMPLETED


def test_copy_back_to_sqlite(make_db: Callable[..., QueueDatabase], clock: FakeClock, tmp_path: Path) -> None:
    source = make_db(clock=clock)
    fill(source, clock)
    with QueueDatabase(tmp_path / "back.db", clock=clock) as back:
        report = migrate(source, back, batch_size=2)
        assert report.verified
        assert report.tasks_copied == 8
        originals = {t.id: t for t in QueueClient(source).list(limit=100)}
        for task in QueueClient(back).list(limit=100):
            if originals[task.id].status is not TaskStatus.LEASED:
                assert task == originals[task.id]
        assert back.integrity_check() == ["ok"]


def test_conflicting_idempotency_key_in_target_is_reported(
    sqlite_source: QueueDatabase, make_db: Callable[..., QueueDatabase], clock: FakeClock
) -> None:
    QueueClient(sqlite_source).enqueue("a", {})
    QueueClient(sqlite_source).enqueue("b", {}, idempotency_key="shared")
    target = make_db(clock=clock)
    client = QueueClient(target)
    client.enqueue_many([{"task_type": "x"}, {"task_type": "y"}])
    assert client.enqueue("other", {}, idempotency_key="shared") == 3
    with pytest.raises(MigrationError, match=r"copying tasks 1\.\.2"):
        migrate(sqlite_source, target)


def test_same_database_and_bad_batch_size_are_refused(
    make_db: Callable[..., QueueDatabase], sqlite_source: QueueDatabase
) -> None:
    database = make_db()
    with pytest.raises(MigrationError, match="same database"):
        migrate(database, make_db())
    for bad in (0, -1, 100_001, 2.5, True):
        with pytest.raises(ConfigError):
            migrate(sqlite_source, database, batch_size=bad)  # type: ignore[arg-type]


def fill_runs(database: QueueDatabase) -> RunRegistry:
    """Runs in every state a registry holds, the active ones leased by a live registry."""
    registry = RunRegistry(queue=database, lease_duration=3600)
    registry.add_run(
        Run(
            run_id="done",
            module_id="ingest",
            module_name="Ingest",
            status=RunStatus.COMPLETED,
            parameters={"n": 3, "tags": ["a", "ü"]},
            progress_percent=100.0,
            items_processed=3,
            items_total=3,
            exit_code=0,
            attempts=1,
        )
    )
    registry.add_run(
        Run(run_id="broken", module_id="ingest", status=RunStatus.FAILED, error_message="boom", exit_code=2)
    )
    registry.add_run(Run(run_id="waiting", module_id="report", rerunnable=True))
    registry.add_run(
        Run(
            run_id="busy",
            module_id="ingest",
            status=RunStatus.RUNNING,
            rerunnable=True,
            progress_percent=40.0,
            progress_message="halfway",
            items_processed=4,
            items_total=10,
            attempts=1,
        )
    )
    return registry


def test_runs_are_copied_after_their_tasks_and_counted(
    sqlite_source: QueueDatabase, make_db: Callable[..., QueueDatabase], clock: FakeClock
) -> None:
    fill(sqlite_source, clock)
    source_runs = fill_runs(sqlite_source)
    target = make_db(clock=clock)
    seen: list[tuple[int, int]] = []
    report = migrate(sqlite_source, target, batch_size=3, progress=lambda d, t: seen.append((d, t)))
    assert report.verified
    assert (report.tasks_copied, report.runs_copied, report.runs_active) == (12, 4, 2)
    assert report.leases_requeued == 4  # every leased task, run tasks included
    assert seen[-1] == (16, 16)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert "and 4 runs" in report.summary()
    assert "2 active runs left to recover" in report.summary()

    # Every run arrives as it is; the tasks of the active ones are released like any other.
    copied = RunRegistry(queue=target)
    for original in source_runs.get_all_runs():
        copy = copied.get_run(original.run_id)
        assert copy is not None
        assert copy.to_dict() == original.to_dict()
    assert copied.get_run("done").parameters == {"n": 3, "tags": ["a", "ü"]}  # type: ignore[union-attr]
    for run_id in ("waiting", "busy"):
        run = copied.get_run(run_id)
        assert run is not None
        task = QueueClient(target).get(run.task_id)  # type: ignore[arg-type]
        assert task.task_type == f"prismq.run:{run.module_id}"
        assert (task.status, task.attempts, task.locked_by) == (TaskStatus.QUEUED, 0, None)
    assert QueueClient(target).count_by_type()["prismq.run:ingest"] == {
        "completed": 1,
        "dead": 1,
        "queued": 1,
    }
    # No manager holds the active runs on the target: recovery interrupts them as after a
    # crash (tasks dead), then a manager takes the re-runnable ones.
    assert sorted(copied.store.interrupt_orphans()) == ["busy", "waiting"]
    assert copied.store.interrupt_orphans() == []
    for run_id in ("waiting", "busy"):
        run = copied.get_run(run_id)
        assert run is not None
        assert run.status is RunStatus.INTERRUPTED
        assert "released to the queue" in (run.error_message or "")
        task = QueueClient(target).get(run.task_id)  # type: ignore[arg-type]
        assert (task.status, task.attempts, task.max_attempts) == (TaskStatus.DEAD, 1, 1)
        assert task.last_error == run.error_message
    busy = copied.get_run("busy")
    assert busy is not None
    assert (busy.progress_percent, busy.items_processed, busy.items_total) == (40.0, 4, 10)
    assert QueueClient(target).count_by_type()["prismq.run:ingest"] == {"completed": 1, "dead": 2}
    taken = copied.store.take_rerunnable(["ingest", "report"], "new-manager", clock() + 60)
    assert sorted(r["run_id"] for r in taken) == ["busy", "waiting"]
    for record in taken:
        task = QueueClient(target).get(record["task_id"])
        assert (task.status, task.locked_by) == (TaskStatus.LEASED, "new-manager")


def test_runs_copy_again_idempotently_and_the_checksum_covers_them(
    sqlite_source: QueueDatabase, make_db: Callable[..., QueueDatabase], clock: FakeClock
) -> None:
    registry = fill_runs(sqlite_source)
    target = make_db(clock=clock)
    first = migrate(sqlite_source, target)
    again = migrate(sqlite_source, target)
    assert again.checksum == first.checksum
    assert again.runs_copied == first.runs_copied == 4
    assert len(RunRegistry(queue=target).get_all_runs()) == 4
    done = registry.get_run("done")
    assert done is not None
    done.progress_message = "re-counted"
    registry.update_run(done)
    third = migrate(sqlite_source, target)
    assert third.checksum != first.checksum  # a run-only change shows in the checksum
    assert third.tasks_copied == first.tasks_copied
    copied = RunRegistry(queue=target).get_run("done")
    assert copied is not None
    assert copied.progress_message == "re-counted"


def test_runs_copy_back_to_sqlite(
    make_db: Callable[..., QueueDatabase], clock: FakeClock, tmp_path: Path
) -> None:
    source = make_db(clock=clock)
    fill(source, clock)
    registry = fill_runs(source)
    with QueueDatabase(tmp_path / "back.db", clock=clock) as back:
        report = migrate(source, back, batch_size=2)
        assert report.verified
        assert (report.runs_copied, report.runs_active) == (4, 2)
        copied = RunRegistry(queue=back)
        for original in registry.get_all_runs():
            copy = copied.get_run(original.run_id)
            assert copy is not None
            assert copy.to_dict() == original.to_dict()
            task = QueueClient(back).get(copy.task_id)  # type: ignore[arg-type]
            if original.status.is_active:
                assert (task.status, task.locked_by) == (TaskStatus.QUEUED, None)
        assert back.integrity_check() == ["ok"]
        # A copy of the copy writes the same rows: the same checksum, tasks and runs.
        with QueueDatabase(tmp_path / "again.db", clock=clock) as again:
            assert migrate(back, again).checksum == migrate(back, source).checksum


def test_a_run_whose_task_id_holds_another_run_in_the_target_is_reported(
    sqlite_source: QueueDatabase, make_db: Callable[..., QueueDatabase], clock: FakeClock
) -> None:
    RunRegistry(queue=sqlite_source).add_run(Run(run_id="theirs", module_id="m", status=RunStatus.COMPLETED))
    target = make_db(clock=clock)
    RunRegistry(queue=target).add_run(Run(run_id="ours", module_id="m", status=RunStatus.COMPLETED))
    with pytest.raises(MigrationError, match=r"runs of tasks 1\.\.1"):
        migrate(sqlite_source, target)
