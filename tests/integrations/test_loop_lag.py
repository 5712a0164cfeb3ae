"""Liveness: database work never stalls the event loop, even with 1,000 busy runs.

A ticker task records the largest gap between its wake-ups while runs report progress;
the bound is generous on purpose (a liveness check, not a speed target, on a machine
that may be shared). The slow-storage test makes every storage call take milliseconds:
a manager that touched the database on the loop would stall it for seconds there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prismq.queue import QueueClient
from prismq.queue.integrations import BackgroundTaskManager, Run, RunRegistry, RunStatus

from .conftest import Mode, run_async

RUNS = 1000
REPORTS = 10
MAX_GAP = 0.5
"""Seconds. Generous: the test machine may be shared by many busy processes (an idle one
shows gaps under 0.1 s here), while a manager that wrote on the loop would stall it for
seconds in the slow-storage test."""


class Ticker:
    """Wakes every 5 ms and records the longest gap between two wake-ups."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _tick(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            last = now


class SlowStore:
    """A run store whose every call first sleeps, like a disk or a lock under load."""

    def __init__(self, inner: Any, delay: float) -> None:
        self._inner = inner
        self._delay = delay
        self.durable = inner.durable
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name in ("now", "batch") or not callable(target):
            return target

        def slow(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            time.sleep(self._delay)
            return target(*args, **kwargs)

        return slow


def test_loop_stays_live_while_1000_runs_report_progress(mode: Mode) -> None:
    async def scenario() -> float:
        manager = mode.manager()
        await manager.start()

        async def work(run_id: str) -> None:
            for step in range(1, REPORTS + 1):
                manager.report_progress(
                    run_id, step * 100 / REPORTS, items_processed=step, items_total=REPORTS
                )
                await asyncio.sleep(0.002)

        async with Ticker() as ticker:
            for index in range(RUNS):
                run_id = f"bulk-{index:04d}"
                manager.start_task(Run(run_id=run_id, module_id="bulk"), work(run_id))
                if index % 100 == 99:
                    await asyncio.sleep(0)  # the caller yields now and then, as a server does
            assert await manager.wait_all(timeout=120) is True

        completed = await asyncio.to_thread(manager.registry.get_runs_by_status, RunStatus.COMPLETED)
        assert len(completed) == RUNS
        assert all(r.items_processed == REPORTS and r.progress_percent == 100 for r in completed)
        if mode.durable:
            client = QueueClient(mode.database())
            counts = await asyncio.to_thread(client.count_by_type)
            assert counts["prismq.run:bulk"] == {"completed": RUNS}
        await manager.shutdown()
        return ticker.worst

    worst = run_async(scenario(), timeout=180)
    assert worst < MAX_GAP, f"the event loop stalled for {worst:.3f} s"


def test_slow_storage_never_stalls_the_loop(durable: Mode) -> None:
    runs, delay = 200, 0.005

    async def scenario() -> tuple[float, int]:
        registry = RunRegistry(queue=durable.database())
        store = SlowStore(registry.store, delay)
        registry.store = store
        manager = BackgroundTaskManager(registry)
        await manager.start()

        async def work(run_id: str) -> None:
            for step in range(1, 6):
                manager.report_progress(run_id, step * 20, items_processed=step)
                await asyncio.sleep(0.002)

        async with Ticker() as ticker:
            for index in range(runs):
                run_id = f"slow-{index:03d}"
                manager.start_task(Run(run_id=run_id, module_id="slow"), work(run_id))
            assert await manager.wait_all(timeout=120) is True
        done = await asyncio.to_thread(registry.get_runs_by_status, RunStatus.COMPLETED)
        assert len(done) == runs
        await manager.shutdown()
        return ticker.worst, store.calls

    worst, calls = run_async(scenario(), timeout=180)
    # On the loop, these calls would have stalled it for calls * delay seconds in all.
    assert calls * delay > 2 * MAX_GAP
    assert worst < MAX_GAP, f"the event loop stalled for {worst:.3f} s"
