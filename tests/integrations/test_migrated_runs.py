"""Active runs moved by ``migrate``: the target's managers recover them as after a crash.

The source is an SQLite file where a live manager executes two runs (one re-runnable) when
the queue is copied; the target is the ``durable`` database (SQLite or PostgreSQL), so the
moves SQLite -> SQLite and SQLite -> PostgreSQL are both covered.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prismq.queue import QueueClient, QueueDatabase, QueueWorker, TaskStatus
from prismq.queue.integrations import BackgroundTaskManager, Run, RunRegistry, RunStatus
from prismq.queue.migrate import MigrationReport, migrate

from .conftest import Mode, eventually, run_async


def copy_while_running(source: QueueDatabase, target: QueueDatabase) -> MigrationReport:
    """Start two runs and a queue task on ``source``; copy the queue while they run."""

    async def scenario() -> MigrationReport:
        manager = BackgroundTaskManager(RunRegistry(), queue=source, lease_duration=30)
        gate = asyncio.Event()

        async def work(run_id: str) -> int:
            manager.report_progress(run_id, 40, items_processed=4, items_total=10)
            await gate.wait()
            return 0

        async def quick() -> int:
            return 0

        manager.start_task(Run(run_id="finished", module_id="ingest"), quick())
        for run_id, rerunnable in (("again", True), ("once", False)):
            run = Run(run_id=run_id, module_id="ingest", parameters={"n": 10}, rerunnable=rerunnable)
            manager.start_task(run, work(run_id))

        def both_running() -> bool:
            runs = [manager.registry.get_run(run_id) for run_id in ("again", "once", "finished")]
            return [r.status if r else None for r in runs] == [
                RunStatus.RUNNING,
                RunStatus.RUNNING,
                RunStatus.COMPLETED,
            ] and all(r is not None and r.progress_percent == 40 for r in runs[:2])

        await eventually(both_running)
        report = await asyncio.to_thread(migrate, source, target)
        gate.set()  # the source's runs finish there; the target keeps what was copied
        await manager.wait_all()
        await manager.shutdown()
        return report

    source.initialize_schema()
    client = QueueClient(source)
    client.enqueue("mail", {"to": "a@example.com"})
    busy = client.enqueue("video", {"id": 7})
    assert QueueWorker(source, worker_id="old-worker", task_types=["video"]).claim_next_task() is not None
    report = run_async(scenario())
    assert report.verified
    assert QueueClient(target).get(busy).status is TaskStatus.QUEUED  # ordinary tasks: as before
    return report


def test_active_runs_are_rerun_or_interrupted_on_the_target(durable: Mode, tmp_path: Path) -> None:
    source = QueueDatabase(tmp_path / "source.db")
    target = durable.database()
    try:
        report = copy_while_running(source, target)
        source_tasks = {t.id: t.task_type for t in QueueClient(source).list(limit=100)}
    finally:
        source.close()
    assert (report.tasks_copied, report.runs_copied, report.runs_active) == (5, 3, 2)
    assert report.leases_requeued == 3  # the video task and the two runs' tasks
    registry = RunRegistry(queue=target)
    copied = {run_id: registry.get_run(run_id) for run_id in ("again", "once", "finished")}
    for run in copied.values():
        assert run is not None
    assert copied["again"].status is RunStatus.RUNNING  # type: ignore[union-attr]
    task_ids = {run_id: run.task_id for run_id, run in copied.items() if run is not None}

    async def recover() -> list[Run]:
        manager = BackgroundTaskManager(registry, queue=target, lease_duration=30)
        started: list[Run] = []

        async def resume(run: Run) -> int:
            started.append(run)
            manager.report_progress(run.run_id, 100, items_processed=run.parameters["n"])
            return 0

        manager.register_module("ingest", resume)
        await manager.start()
        await eventually(lambda: started)
        await manager.wait_all()
        await manager.shutdown()
        return started

    started = run_async(recover())
    assert [run.run_id for run in started] == ["again"]
    again = registry.get_run("again")
    assert again is not None
    assert (again.status, again.attempts, again.items_processed) == (RunStatus.COMPLETED, 2, 10)
    client = QueueClient(target)
    task = client.get(task_ids["again"])  # type: ignore[arg-type]
    assert (task.status, task.attempts) == (TaskStatus.COMPLETED, 2)

    once = registry.get_run("once")
    assert once is not None
    assert once.status is RunStatus.INTERRUPTED
    assert "released to the queue" in (once.error_message or "")
    assert (once.progress_percent, once.items_processed) == (40.0, 4)  # what was recorded stays
    task = client.get(task_ids["once"])  # type: ignore[arg-type]
    assert (task.status, task.attempts) == (TaskStatus.DEAD, 1)

    # Nothing lost, nothing twice: the target has exactly the source's tasks, each run keeps
    # its task, and no run task was added for the re-run.
    target_tasks = {t.id: t.task_type for t in client.list(limit=100)}
    assert target_tasks == source_tasks
    assert sorted(task_ids.values()) == sorted(  # type: ignore[type-var]
        task_id for task_id, task_type in target_tasks.items() if task_type == "prismq.run:ingest"
    )
    assert client.count_by_type()["prismq.run:ingest"] == {"completed": 2, "dead": 1}
    assert len(registry.get_all_runs()) == 3


def test_without_a_registered_module_both_runs_wait_interrupted(durable: Mode, tmp_path: Path) -> None:
    source = QueueDatabase(tmp_path / "source.db")
    target = durable.database()
    try:
        copy_while_running(source, target)
    finally:
        source.close()
    registry = RunRegistry(queue=target)

    async def start_plain_manager() -> None:
        manager = BackgroundTaskManager(registry, queue=target, lease_duration=30)
        await manager.start()
        await manager.shutdown()

    run_async(start_plain_manager())
    for run_id in ("again", "once"):
        run = registry.get_run(run_id)
        assert run is not None
        assert run.status is RunStatus.INTERRUPTED
        assert QueueClient(target).get(run.task_id).status is TaskStatus.DEAD  # type: ignore[arg-type]
    # The re-runnable one still runs again once a manager knows its module.
    taken = registry.store.take_rerunnable(["ingest"], "later", time.time() + 60)
    assert [record["run_id"] for record in taken] == ["again"]
