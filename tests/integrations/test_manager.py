"""One behavioural suite, run against the in-memory and the queue-backed manager.

Every test here is parametrised by the ``mode`` fixture: the same calls must give the
same observable results whether runs live in memory or in the queue database.
"""

from __future__ import annotations

import asyncio
import warnings
from datetime import datetime, timedelta, timezone

import pytest

from prismq.queue import PayloadError, ValidationError
from prismq.queue.integrations import BackgroundTaskManager, Run, RunNotFoundError, RunStatus

from .conftest import Mode, eventually, run_async


def make_run(run_id: str, module_id: str = "youtube-source", **fields: object) -> Run:
    return Run(run_id=run_id, module_id=module_id, module_name="YouTube Source", **fields)  # type: ignore[arg-type]


def test_legacy_flow_add_then_start_completes_with_every_timestamp(mode: Mode) -> None:
    async def scenario() -> None:
        registry = mode.registry()
        manager = mode.manager(registry)
        run = make_run("r1", parameters={"channel": "example"})
        registry.add_run(run)
        queued = await asyncio.to_thread(registry.get_run, "r1")
        assert queued is not None
        assert queued.status is RunStatus.QUEUED
        assert queued.created_at is not None
        assert queued.started_at is None
        assert queued.completed_at is None

        async def work() -> int:
            for step in range(1, 5):
                manager.report_progress("r1", step * 25, items_processed=step, items_total=4)
                await asyncio.sleep(0.005)
            return 0

        assert manager.start_task(run, work()) == "r1"
        assert await manager.wait_all() is True
        done = await asyncio.to_thread(registry.get_run, "r1")
        assert done is not None
        assert done.status is RunStatus.COMPLETED
        assert done.exit_code == 0
        assert done.progress_percent == 100.0
        assert (done.items_processed, done.items_total) == (4, 4)
        assert done.parameters == {"channel": "example"}
        assert done.started_at is not None
        assert done.completed_at is not None
        assert done.created_at <= done.started_at <= done.completed_at
        assert done.duration is not None
        assert done.duration >= 0.0
        assert done.attempts == 1
        assert done.error_message is None
        # The caller's object is kept up to date too.
        assert run.status is RunStatus.COMPLETED
        assert run.completed_at == done.completed_at
        await manager.shutdown()

    run_async(scenario())


def test_start_without_registering_first_records_the_run(mode: Mode) -> None:
    async def scenario() -> None:
        registry = mode.registry()
        manager = mode.manager(registry)

        async def work() -> None:
            await asyncio.sleep(0)

        manager.start_task(make_run("direct"), work())
        await manager.wait_all()
        stored = await asyncio.to_thread(registry.get_run, "direct")
        assert stored is not None
        assert stored.status is RunStatus.COMPLETED
        await manager.shutdown()

    run_async(scenario())


def test_every_status_change_sets_its_timestamp(mode: Mode) -> None:
    async def scenario() -> None:
        registry = mode.registry()
        manager = mode.manager(registry)
        seen: dict[str, Run] = {}
        release = asyncio.Event()

        async def work() -> None:
            await manager.flush()
            snapshot = await asyncio.to_thread(registry.get_run, "t1")
            assert snapshot is not None
            seen["running"] = snapshot
            await release.wait()

        before = datetime.now(timezone.utc) - timedelta(seconds=1)
        manager.start_task(make_run("t1"), work())
        await eventually(lambda: "running" in seen)
        running = seen["running"]
        assert running.status is RunStatus.RUNNING
        assert running.started_at is not None
        assert running.started_at >= before
        assert running.completed_at is None
        assert running.duration is not None
        release.set()
        await manager.wait_all()
        done = await asyncio.to_thread(registry.get_run, "t1")
        assert done is not None
        assert done.status is RunStatus.COMPLETED
        assert done.started_at == running.started_at
        assert done.completed_at is not None
        assert done.completed_at >= done.started_at
        assert done.updated_at is not None
        assert done.updated_at >= done.completed_at
        await manager.shutdown()

    run_async(scenario())


def test_exception_marks_the_run_failed_with_its_message(mode: Mode) -> None:
    async def scenario() -> None:
        registry = mode.registry()
        manager = mode.manager(registry)

        async def work() -> None:
            await asyncio.sleep(0)
            raise ValueError("Something went wrong")

        manager.start_task(make_run("bad"), work())
        await manager.wait_all()
        failed = await asyncio.to_thread(registry.get_run, "bad")
        assert failed is not None
        assert failed.status is RunStatus.FAILED
        assert failed.error_message == "Something went wrong"
        assert failed.completed_at is not None
        await manager.shutdown()

    run_async(scenario())


def test_returned_exit_code_is_recorded_and_nonzero_fails(mode: Mode) -> None:
    async def scenario() -> None:
        registry = mode.registry()
        manager = mode.manager(registry)

        async def exits(code: int) -> int:
            await asyncio.sleep(0)
            return code

        manager.start_task(make_run("ok"), exits(0))
        manager.start_task(make_run("nonzero"), exits(3))
        await manager.wait_all()
        ok = await asyncio.to_thread(registry.get_run, "ok")
        bad = await asyncio.to_thread(registry.get_run, "nonzero")
        assert ok is not None
        assert (ok.status, ok.exit_code) == (RunStatus.COMPLETED, 0)
        assert bad is not None
        assert (bad.status, bad.exit_code) == (RunStatus.FAILED, 3)
        assert bad.error_message == "exited with code 3"
        await manager.shutdown()

    run_async(scenario())


def test_cancel_really_cancels_the_coroutine(mode: Mode) -> None:
    async def scenario() -> None:
        registry = mode.registry()
        manager = mode.manager(registry)
        started = asyncio.Event()
        observed: list[str] = []

        async def long_operation() -> None:
            started.set()
            try:
                for _ in range(1000):
                    await asyncio.sleep(0.01)
                observed.append("finished")
            except asyncio.CancelledError:
                observed.append("cancelled")
                raise

        manager.start_task(make_run("long"), long_operation())
        await started.wait()
        assert manager.is_task_active("long")
        assert await manager.cancel_task("long") is True
        assert observed == ["cancelled"]
        assert not manager.is_task_active("long")
        await manager.flush()
        cancelled = await asyncio.to_thread(registry.get_run, "long")
        assert cancelled is not None
        assert cancelled.status is RunStatus.CANCELLED
        assert cancelled.completed_at is not None
        assert cancelled.started_at is not None
        assert await manager.cancel_task("long") is False
        assert await manager.cancel_task("never-existed") is False
        await manager.shutdown()

    run_async(scenario())


def test_active_task_tracking(mode: Mode) -> None:
    async def scenario() -> None:
        manager = mode.manager(mode.registry())
        gate = asyncio.Event()

        async def work() -> None:
            await gate.wait()

        for index in range(3):
            manager.start_task(make_run(f"a{index}"), work())
        assert manager.get_active_task_count() == 3
        assert sorted(manager.get_active_task_ids()) == ["a0", "a1", "a2"]
        assert manager.is_task_active("a1")
        assert not manager.is_task_active("zzz")
        assert manager.get_active_run("a1") is not None
        assert await manager.wait_all(timeout=0.05) is False
        assert manager.get_active_task_count() == 3
        gate.set()
        assert await manager.wait_all(timeout=5) is True
        assert manager.get_active_task_count() == 0
        assert manager.get_active_task_ids() == []
        await manager.shutdown()

    run_async(scenario())


def test_a_run_cannot_be_started_twice(mode: Mode) -> None:
    async def scenario() -> None:
        registry = mode.registry()
        manager = mode.manager(registry)
        gate = asyncio.Event()

        async def work() -> None:
            await gate.wait()

        run = make_run("once")
        manager.start_task(run, work())
        second = work()
        with pytest.raises(ValidationError, match="already active"):
            manager.start_task(run, second)
        gate.set()
        await manager.wait_all()
        with pytest.raises(ValidationError, match="already completed"):
            manager.start_task(run, work())
        await manager.shutdown()

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # refused coroutines are closed
        run_async(scenario())


def test_start_task_needs_a_running_loop(mode: Mode) -> None:
    manager = mode.manager(mode.registry())

    async def work() -> None:
        await asyncio.sleep(0)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeError):
            manager.start_task(make_run("no-loop"), work())


def test_report_progress_is_validated(mode: Mode) -> None:
    async def scenario() -> None:
        manager = mode.manager(mode.registry())
        errors: list[type[BaseException]] = []

        async def work() -> None:
            for bad in ({"percent": 101}, {"percent": -1}, {"percent": 5, "items_processed": -2}):
                try:
                    manager.report_progress("p", **bad)  # type: ignore[arg-type]
                except ValidationError as exc:
                    errors.append(type(exc))
            manager.report_progress("p", 50, message="half way")

        manager.start_task(make_run("p"), work())
        await manager.wait_all()
        assert errors == [ValidationError] * 3
        with pytest.raises(RunNotFoundError):
            manager.report_progress("p", 10)
        done = await asyncio.to_thread(manager.registry.get_run, "p")
        assert done is not None
        assert done.progress_message == "half way"
        await manager.shutdown()

    run_async(scenario())


def test_parameters_must_be_json(mode: Mode) -> None:
    registry = mode.registry()
    with pytest.raises(PayloadError):
        registry.add_run(make_run("nonjson", parameters={"when": object()}))
    assert registry.get_run("nonjson") is None


def test_registry_queries(mode: Mode) -> None:
    registry = mode.registry()
    now = datetime.now(timezone.utc)
    old = now - timedelta(days=40)
    registry.add_run(make_run("old-done", status=RunStatus.COMPLETED, created_at=old, completed_at=old))
    registry.add_run(make_run("old-failed", "other", status=RunStatus.FAILED, created_at=old + timedelta(1)))
    registry.add_run(make_run("new-done", status=RunStatus.COMPLETED, created_at=now - timedelta(hours=1)))
    registry.add_run(make_run("queued", "other", created_at=now))
    with pytest.raises(ValidationError, match="already exists"):
        registry.add_run(make_run("queued"))

    assert [r.run_id for r in registry.get_recent_runs(2)] == ["queued", "new-done"]
    assert [r.run_id for r in registry.get_active_runs()] == ["queued"]
    assert [r.run_id for r in registry.get_runs_by_module("other")] == ["queued", "old-failed"]
    assert [r.run_id for r in registry.get_runs_by_status(RunStatus.COMPLETED)] == ["new-done", "old-done"]
    assert [r.run_id for r in registry.get_runs_by_status("failed")] == ["old-failed"]
    with pytest.raises(ValidationError):
        registry.get_runs_by_status("sleeping")

    changed = registry.get_run("new-done")
    assert changed is not None
    changed.rerunnable = True
    changed.error_message = "note"
    registry.update_run(changed)
    again = registry.get_run("new-done")
    assert again is not None
    assert again.rerunnable
    assert again.error_message == "note"
    with pytest.raises(RunNotFoundError):
        registry.update_run(make_run("ghost"))

    assert registry.cleanup_old_runs(30) == 2
    assert sorted(r.run_id for r in registry.get_all_runs()) == ["new-done", "queued"]
    assert registry.cleanup_old_runs(0) == 1  # finished runs only; the queued one stays
    assert [r.run_id for r in registry.get_all_runs()] == ["queued"]


def test_shutdown_interrupts_and_a_registered_module_reruns(mode: Mode) -> None:
    async def scenario() -> None:
        registry = mode.registry()
        first = mode.manager(registry)
        started = asyncio.Event()
        running: list[str] = []
        observed: list[str] = []

        async def endless() -> None:
            running.append("running")
            if len(running) == 2:
                started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                observed.append("stopped")
                raise

        first.start_task(make_run("keep", "ingest", rerunnable=True, parameters={"n": 3}), endless())
        first.start_task(make_run("drop", "ingest"), endless())
        await asyncio.wait_for(started.wait(), timeout=30)  # both coroutines are inside their body
        await first.shutdown()
        assert observed == ["stopped", "stopped"]
        for run_id in ("keep", "drop"):
            stopped = await asyncio.to_thread(registry.get_run, run_id)
            assert stopped is not None
            assert stopped.status is RunStatus.INTERRUPTED
            assert stopped.completed_at is not None
            assert "shut down" in (stopped.error_message or "")

        second = mode.manager(mode.registry())
        rerun_with: list[Run] = []

        async def resume(run: Run) -> int:
            rerun_with.append(run)
            second.report_progress(run.run_id, 100, items_processed=run.parameters["n"])
            return 0

        second.register_module("ingest", resume)
        await second.start()
        await eventually(lambda: rerun_with)
        await second.wait_all()
        assert [r.run_id for r in rerun_with] == ["keep"]
        assert rerun_with[0].parameters == {"n": 3}
        again = await asyncio.to_thread(second.registry.get_run, "keep")
        assert again is not None
        assert again.status is RunStatus.COMPLETED
        assert again.attempts == 2
        assert again.items_processed == 3
        assert again.error_message is None
        still = await asyncio.to_thread(second.registry.get_run, "drop")
        assert still is not None
        assert still.status is RunStatus.INTERRUPTED
        await second.shutdown()

    run_async(scenario())


def test_wait_all_with_no_runs_returns_at_once(mode: Mode) -> None:
    async def scenario() -> None:
        manager = mode.manager(mode.registry())
        assert await manager.wait_all(timeout=0.01) is True
        await manager.shutdown()

    run_async(scenario())


def test_manager_without_registry_creates_one(mode: Mode) -> None:
    db = mode.database() if mode.durable else None
    manager = BackgroundTaskManager(queue=db)
    assert manager.registry.durable is mode.durable


def test_a_shut_down_manager_refuses_new_runs(mode: Mode) -> None:
    async def scenario() -> None:
        manager = mode.manager(mode.registry())
        await manager.shutdown()

        async def work() -> None:
            await asyncio.sleep(0)

        with pytest.raises(RuntimeError, match="shut down"):
            manager.start_task(make_run("late"), work())

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        run_async(scenario())


def test_cancel_right_after_start_still_records_the_cancellation(mode: Mode) -> None:
    async def scenario() -> None:
        registry = mode.registry()
        manager = mode.manager(registry)

        async def work() -> None:
            await asyncio.sleep(3600)

        manager.start_task(make_run("instant"), work())
        assert await manager.cancel_task("instant") is True
        await manager.flush()
        run = await asyncio.to_thread(registry.get_run, "instant")
        assert run is not None
        assert run.status is RunStatus.CANCELLED
        assert run.completed_at is not None
        await manager.shutdown()

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        run_async(scenario())
