"""A process killed mid-run: the next manager reports the run interrupted, and re-runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prismq.queue import QueueClient, QueueDatabase, TaskStatus
from prismq.queue.integrations import BackgroundTaskManager, Run, RunRegistry, RunStatus

from .conftest import Mode, eventually, run_async

CHILD = Path(__file__).with_name("crash_child.py")


def start_and_kill(database: str, tmp_path: Path, rerunnable: bool) -> None:
    """Run the child on ``database`` (path or URL) until its run is running, then SIGKILL it."""
    marker = tmp_path / "running.marker"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), database, str(marker), "1" if rerunnable else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            if child.poll() is not None:
                _, err = child.communicate()
                raise AssertionError(f"child exited early ({child.returncode}): {err.decode()}")
            if time.monotonic() > deadline:
                raise AssertionError("child never reported its run as running")
            time.sleep(0.02)
    finally:
        if child.poll() is None:
            if hasattr(signal, "SIGKILL"):
                os.kill(child.pid, signal.SIGKILL)
            else:  # Windows: TerminateProcess, just as abrupt
                child.kill()
        child.communicate(timeout=30)
    if hasattr(signal, "SIGKILL"):
        assert child.returncode == -signal.SIGKILL


def wait_for_lease_expiry(db: QueueDatabase, run_id: str) -> None:
    registry = RunRegistry(queue=db)
    run = registry.get_run(run_id)
    assert run is not None
    assert run.task_id is not None
    task = QueueClient(db).get(run.task_id)
    assert task.status is TaskStatus.LEASED
    assert task.lease_until is not None
    time.sleep(max(task.lease_until.timestamp() - time.time(), 0) + 0.05)


@pytest.mark.slow
def test_killed_process_leaves_an_interrupted_run_that_is_rerun(durable: Mode, tmp_path: Path) -> None:
    start_and_kill(durable.target, tmp_path, rerunnable=True)
    db = durable.database()
    registry = RunRegistry(queue=db)
    left = registry.get_run("crash-run")
    assert left is not None
    # The dead process cannot say so: the record still reads running...
    assert left.status is RunStatus.RUNNING
    assert (left.progress_percent, left.items_processed, left.items_total) == (40.0, 4, 10)
    wait_for_lease_expiry(db, "crash-run")

    async def scenario() -> None:
        manager = BackgroundTaskManager(registry, queue=db, lease_duration=1.0)
        await manager.start()
        interrupted = await asyncio.to_thread(registry.get_run, "crash-run")
        assert interrupted is not None
        assert interrupted.status is RunStatus.INTERRUPTED
        assert interrupted.completed_at is not None
        assert interrupted.started_at is not None
        assert interrupted.completed_at > interrupted.started_at
        assert "stopped renewing" in (interrupted.error_message or "")
        assert interrupted.items_processed == 4  # what was recorded before the crash stays
        task = await asyncio.to_thread(QueueClient(db).get, interrupted.task_id)
        assert task.status is TaskStatus.DEAD

        seen: list[Run] = []

        async def resume(run: Run) -> int:
            seen.append(run)
            manager.report_progress(run.run_id, 100, items_processed=run.parameters["n"])
            return 0

        manager.register_module("ingest", resume)
        await eventually(lambda: seen)
        await manager.wait_all()
        rerun = await asyncio.to_thread(registry.get_run, "crash-run")
        assert rerun is not None
        assert rerun.status is RunStatus.COMPLETED
        assert rerun.attempts == 2
        assert rerun.items_processed == 10
        assert rerun.started_at is not None
        assert rerun.started_at > interrupted.completed_at
        task = await asyncio.to_thread(QueueClient(db).get, rerun.task_id)
        assert task.status is TaskStatus.COMPLETED
        assert task.attempts == 2
        await manager.shutdown()

    run_async(scenario())


@pytest.mark.slow
def test_killed_run_not_rerunnable_stays_interrupted(durable: Mode, tmp_path: Path) -> None:
    start_and_kill(durable.target, tmp_path, rerunnable=False)
    db = durable.database()
    wait_for_lease_expiry(db, "crash-run")

    async def scenario() -> None:
        manager = BackgroundTaskManager(RunRegistry(), queue=db, lease_duration=1.0)
        calls: list[Run] = []

        async def resume(run: Run) -> None:
            calls.append(run)

        manager.register_module("ingest", resume)
        await manager.start()
        await manager.wait_all()
        run = await asyncio.to_thread(manager.registry.get_run, "crash-run")
        assert run is not None
        assert run.status is RunStatus.INTERRUPTED
        assert calls == []
        await manager.shutdown()

    run_async(scenario())
