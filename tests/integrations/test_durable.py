"""What only the queue-backed manager does: sharing, queue visibility, remote cancel."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from prismq.queue import ConfigError, QueueClient, QueueDatabase, QueueWorker, TaskStatus, ValidationError
from prismq.queue.integrations import BackgroundTaskManager, Run, RunRegistry, RunStatus

from .conftest import Mode, eventually, run_async


def test_schema_has_the_runs_migration(durable: Mode) -> None:
    if durable.backend_name == "postgresql":
        from prismq.queue.backends.postgres import SCHEMA_VERSION
    else:
        from prismq.queue.backends.sqlite import SCHEMA_VERSION
    db = durable.database()
    RunRegistry(queue=db)
    assert SCHEMA_VERSION >= 2
    assert db.schema_version() == SCHEMA_VERSION
    assert db.integrity_check() == ["ok"]


def test_runs_are_queue_tasks_visible_to_other_connections(durable: Mode) -> None:
    async def scenario() -> None:
        manager = durable.manager()
        other = RunRegistry(queue=durable.database())  # as another process would see it
        client = QueueClient(durable.database())
        gate = asyncio.Event()

        async def work() -> None:
            manager.report_progress("shared", 30, items_processed=3, items_total=10, message="3 of 10")
            await gate.wait()

        manager.start_task(Run(run_id="shared", module_id="ingest"), work())
        seen = await eventually(
            lambda: (r := other.get_run("shared")) is not None and r.progress_percent == 30 and r
        )
        assert seen.status is RunStatus.RUNNING
        assert seen.items_processed == 3
        task = await asyncio.to_thread(client.get, seen.task_id)
        assert task.task_type == "prismq.run:ingest"
        assert task.status is TaskStatus.LEASED
        assert task.locked_by == manager.owner_id
        assert task.progress == 30
        assert task.progress_message == "3 of 10"
        assert task.payload["run_id"] == "shared"

        # A queue worker never claims a run's task: it is leased by its manager.
        worker = QueueWorker(durable.database(), worker_id="generic", register=False)
        assert await asyncio.to_thread(worker.claim_next_task) is None

        gate.set()
        await manager.wait_all()
        stats = await asyncio.to_thread(client.stats)
        assert stats.by_type["prismq.run:ingest"] == {"completed": 1}
        task = await asyncio.to_thread(client.get, seen.task_id)
        assert task.status is TaskStatus.COMPLETED
        assert task.result == {"run_id": "shared", "exit_code": None}
        await manager.shutdown()

    run_async(scenario())


def test_failed_and_cancelled_runs_map_to_task_statuses(durable: Mode) -> None:
    async def scenario() -> None:
        manager = durable.manager()
        client = QueueClient(durable.database())
        started = asyncio.Event()

        async def boom() -> None:
            raise RuntimeError("disk on fire")

        async def wait_forever() -> None:
            started.set()
            await asyncio.sleep(3600)

        manager.start_task(Run(run_id="f", module_id="m"), boom())
        manager.start_task(Run(run_id="c", module_id="m"), wait_forever())
        await started.wait()
        await manager.cancel_task("c")
        await manager.wait_all()
        failed = await asyncio.to_thread(manager.registry.get_run, "f")
        cancelled = await asyncio.to_thread(manager.registry.get_run, "c")
        assert failed is not None
        assert cancelled is not None
        failed_task = await asyncio.to_thread(client.get, failed.task_id)
        cancelled_task = await asyncio.to_thread(client.get, cancelled.task_id)
        assert failed_task.status is TaskStatus.DEAD
        assert failed_task.last_error == "disk on fire"
        assert cancelled_task.status is TaskStatus.CANCELLED
        assert failed_task.finished_at is not None
        assert cancelled_task.finished_at is not None
        await manager.shutdown()

    run_async(scenario())


def test_leases_are_renewed_while_a_run_outlives_them(durable: Mode) -> None:
    async def scenario() -> None:
        owner = durable.manager(lease_duration=0.3)
        watcher = durable.manager(lease_duration=0.3)
        await watcher.start()  # recovers orphans at every renewal, every 0.1 s

        async def work() -> int:
            await asyncio.sleep(1.2)  # four lease lengths
            return 0

        owner.start_task(Run(run_id="long-lived", module_id="m"), work())
        await owner.wait_all()
        run = await asyncio.to_thread(watcher.registry.get_run, "long-lived")
        assert run is not None
        assert run.status is RunStatus.COMPLETED
        assert run.error_message is None
        await owner.shutdown()
        await watcher.shutdown()

    run_async(scenario())


def test_cancel_from_another_manager_reaches_the_owner(durable: Mode) -> None:
    async def scenario() -> None:
        owner = durable.manager(lease_duration=0.3)
        remote = durable.manager(lease_duration=0.3)
        started = asyncio.Event()
        observed: list[str] = []

        async def work() -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                observed.append("cancelled")
                raise

        owner.start_task(Run(run_id="remote", module_id="m"), work())
        await owner.start()
        await started.wait()
        await owner.flush()
        assert not remote.is_task_active("remote")
        assert await remote.cancel_task("remote") is True
        await asyncio.wait_for(owner.wait_all(), 5)
        assert observed == ["cancelled"]
        run = await asyncio.to_thread(remote.registry.get_run, "remote")
        assert run is not None
        assert run.status is RunStatus.CANCELLED
        assert await remote.cancel_task("remote") is False
        await owner.shutdown()
        await remote.shutdown()

    run_async(scenario())


def test_queue_client_cancel_of_a_run_task_cancels_the_run(durable: Mode) -> None:
    async def scenario() -> None:
        manager = durable.manager(lease_duration=0.3)
        client = QueueClient(durable.database())
        started = asyncio.Event()

        async def work() -> None:
            started.set()
            await asyncio.sleep(3600)

        run = Run(run_id="via-client", module_id="m")
        manager.start_task(run, work())
        await started.wait()
        assert run.task_id is not None
        await asyncio.to_thread(client.cancel, run.task_id)
        await asyncio.wait_for(manager.wait_all(), 5)
        assert run.status is RunStatus.CANCELLED
        task = await asyncio.to_thread(client.get, run.task_id)
        assert task.status is TaskStatus.CANCELLED
        await manager.shutdown()

    run_async(scenario())


def test_prune_of_finished_run_tasks_removes_their_runs(durable: Mode) -> None:
    async def scenario() -> None:
        manager = durable.manager()

        async def work() -> None:
            await asyncio.sleep(0)

        manager.start_task(Run(run_id="gone", module_id="m"), work())
        await manager.wait_all()
        client = QueueClient(durable.database())
        # prune always keeps the newest task (so no id is handed out twice): add one.
        await asyncio.to_thread(client.enqueue, "later", {})
        assert await asyncio.to_thread(client.prune, 0) == 1
        assert await asyncio.to_thread(manager.registry.get_run, "gone") is None
        await manager.shutdown()

    run_async(scenario())


def test_a_run_added_but_never_started_is_interrupted_after_its_lease(durable: Mode) -> None:
    async def scenario() -> None:
        registry = RunRegistry(queue=durable.database(), lease_duration=0.1)
        registry.add_run(Run(run_id="orphan", module_id="m"))
        await asyncio.sleep(0.2)
        manager = durable.manager(RunRegistry(queue=durable.database()))
        await manager.start()
        run = await asyncio.to_thread(registry.get_run, "orphan")
        assert run is not None
        assert run.status is RunStatus.INTERRUPTED
        await manager.shutdown()

    run_async(scenario())


def test_a_run_held_by_a_live_manager_cannot_be_started_elsewhere(durable: Mode) -> None:
    async def scenario() -> None:
        first = durable.manager()
        second = durable.manager()
        gate = asyncio.Event()
        ran: list[str] = []

        async def work(name: str) -> None:
            ran.append(name)
            await gate.wait()

        first.start_task(Run(run_id="held", module_id="m"), work("first"))
        await eventually(lambda: ran)
        second.start_task(Run(run_id="held", module_id="m"), work("second"))
        await second.wait_all()
        assert ran == ["first"]
        gate.set()
        await first.wait_all()
        run = await asyncio.to_thread(first.registry.get_run, "held")
        assert run is not None
        assert run.status is RunStatus.COMPLETED
        await first.shutdown()
        await second.shutdown()

    run_async(scenario())


def test_schedule_task_enqueues_for_queue_workers(durable: Mode) -> None:
    async def scenario() -> None:
        manager = durable.manager()
        task_id = await manager.schedule_task("send_email", {"to": "a@example.com"}, priority=5)
        worker = QueueWorker(
            durable.database(), worker_id="mailer", task_types=["send_email"], register=False
        )
        task = await asyncio.to_thread(worker.claim_next_task)
        assert task is not None
        assert task.id == task_id
        assert task.payload == {"to": "a@example.com"}
        assert task.priority == 5
        await manager.shutdown()

    run_async(scenario())


def test_schedule_task_needs_a_queue() -> None:
    async def scenario() -> None:
        manager = BackgroundTaskManager(RunRegistry())
        with pytest.raises(ConfigError, match="queue database"):
            await manager.schedule_task("send_email", {})

    run_async(scenario())


def test_registry_with_runs_in_memory_refuses_a_queue(durable: Mode) -> None:
    registry = RunRegistry()
    registry.add_run(Run(run_id="mem", module_id="m"))
    with pytest.raises(ConfigError, match="attach the queue"):
        BackgroundTaskManager(registry, queue=durable.database())


def test_runs_need_a_backend_with_a_run_store() -> None:
    class OtherBackend:
        name = "othersql"
        location = "othersql://db.example/queue"

    # A backend is a whole Backend or none: one without a run store is refused up front.
    with pytest.raises(ConfigError, match=r"backend OtherBackend lacks .*\brun_store\b"):
        RunRegistry(queue=QueueDatabase(backend=OtherBackend()))  # type: ignore[arg-type]


def test_the_store_matches_the_backend(durable: Mode) -> None:
    registry = RunRegistry(queue=durable.database())
    expected = {"sqlite": "SQLiteRunStore", "postgresql": "PostgresRunStore"}[str(durable.backend_name)]
    assert type(registry.store).__name__ == expected


def test_sqlite_runs_do_not_import_psycopg(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from prismq.queue import QueueDatabase\n"
        "from prismq.queue.integrations import Run, RunRegistry\n"
        f"registry = RunRegistry(queue=QueueDatabase({str(tmp_path / 'q.db')!r}))\n"
        "registry.add_run(Run(run_id='r', module_id='m'))\n"
        "assert 'psycopg' not in sys.modules, 'psycopg was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_concurrent_adds_of_one_run_id_store_one_run(durable: Mode) -> None:
    registries = [RunRegistry(queue=durable.database()) for _ in range(4)]
    barrier = threading.Barrier(len(registries))

    def add(registry: RunRegistry) -> str:
        barrier.wait()
        try:
            registry.add_run(Run(run_id="same", module_id="m", parameters={"by": id(registry)}))
        except ValidationError:
            return "refused"
        return "added"

    with concurrent.futures.ThreadPoolExecutor(len(registries)) as pool:
        outcomes = sorted(pool.map(add, registries))
    assert outcomes == ["added", "refused", "refused", "refused"]
    assert QueueClient(durable.database()).count_by_type() == {"prismq.run:m": {"leased": 1}}


def test_backup_and_restore_keep_the_runs(durable: Mode, tmp_path: Path) -> None:
    db = durable.database()
    registry = RunRegistry(queue=db)
    registry.add_run(
        Run(run_id="kept", module_id="m", status=RunStatus.COMPLETED, parameters={"a": [1]}, exit_code=0)
    )
    kept = registry.get_run("kept")
    backup = db.backup(tmp_path / "runs.backup")
    registry.add_run(Run(run_id="later", module_id="m", status=RunStatus.FAILED))
    db.restore(backup)
    restored = RunRegistry(queue=durable.database())
    assert [r.run_id for r in restored.get_all_runs()] == ["kept"]
    assert restored.get_run("kept") == kept
    assert QueueClient(durable.database()).count_by_type() == {"prismq.run:m": {"completed": 1}}
