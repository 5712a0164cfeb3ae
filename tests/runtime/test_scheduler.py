"""The scheduler loop inside the worker runtime: code schedules run their handlers on time,
schedules added or paused at run time are followed, and the loop can be switched off."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from runtime_helpers import ThreadedWorker, wait_until

from prismq.queue import QueueClient, QueueDatabase
from prismq.queue.models import TaskStatus
from prismq.queue.runtime import HandlerRegistry, TaskContext
from prismq.queue.worker import QueueWorker

Threaded = Callable[..., ThreadedWorker]


def test_a_code_schedule_runs_its_handler_once_per_tick(file_db: QueueDatabase, threaded: Threaded) -> None:
    registry = HandlerRegistry()
    ran: list[datetime] = []
    lock = threading.Lock()

    @registry.periodic("* * * * * *", payload={"from": "code"})  # every second
    def heartbeat(ctx: TaskContext) -> str:
        with lock:
            ran.append(ctx.task.run_after)
        assert ctx.payload == {"from": "code"}
        return "ok"

    runner = threaded(QueueWorker(file_db, "w-sched"), registry, idle_timeout=0.05)
    wait_until(lambda: len(ran) >= 3, timeout=15)
    runner.join()
    client = QueueClient(file_db)
    (stored,) = client.schedules.list()
    assert stored.name == "heartbeat"
    assert stored.definition.source == "code"
    tasks = client.list(task_type="heartbeat", newest_first=False)
    ticks = [t.run_after.timestamp() for t in tasks]
    assert ticks == [ticks[0] + n for n in range(len(ticks))]  # consecutive seconds, none twice
    assert {t.idempotency_key.split("@")[0] for t in tasks} == {"prismq.schedule:heartbeat"}
    assert sorted(ran) == [t.run_after for t in tasks if t.status is TaskStatus.COMPLETED]
    assert tasks[0].run_after.timestamp() > stored.created_at.timestamp()


def test_schedules_added_and_paused_at_run_time_are_followed(
    file_db: QueueDatabase, threaded: Threaded
) -> None:
    registry = HandlerRegistry()
    registry.register("job", lambda ctx: None)
    client = QueueClient(file_db)
    runner = threaded(QueueWorker(file_db, "w-api"), registry, idle_timeout=0.05)
    client.schedules.add("api-made", "* * * * * *", "job")
    wait_until(lambda: client.count_by_status()["completed"] >= 2, timeout=15)
    client.schedules.pause("api-made")
    time.sleep(0.3)  # a tick being enqueued as the pause commits still runs
    settled = len(client.list(task_type="job"))
    time.sleep(2.5)
    assert len(client.list(task_type="job")) == settled  # no tick while paused
    client.schedules.resume("api-made")
    wait_until(lambda: len(client.list(task_type="job")) > settled, timeout=15)
    runner.join()


def test_the_scheduler_can_be_switched_off(file_db: QueueDatabase) -> None:
    registry = HandlerRegistry()
    registry.periodic("* * * * * *", task_type="tick")(lambda ctx: None)
    summary = QueueWorker(file_db, "w-off").run(registry, burst=True, scheduler=False)
    assert summary.started == 0
    assert QueueClient(file_db).schedules.list() == []
    QueueWorker(file_db, "w-on").run(registry, burst=True)
    assert [s.name for s in QueueClient(file_db).schedules.list()] == ["tick"]


def test_an_idle_scheduler_opens_no_write_transaction(file_db: QueueDatabase, monkeypatch) -> None:
    from prismq.queue import Schedules
    from prismq.queue.runtime.scheduler import SchedulerLoop

    schedules = Schedules(file_db)
    writes: list[int] = []
    real = schedules.fire_due
    monkeypatch.setattr(schedules, "fire_due", lambda limit: writes.append(limit) or real(limit))
    loop = SchedulerLoop(schedules, poll_interval=0.5)
    assert loop.fire() == ([], 0.5)  # no schedules: a read, then sleep the poll interval
    schedules.add("hourly", "0 * * * *", "job")
    ticks, wait = loop.fire()
    assert ticks == []
    assert 0 < wait <= 0.5  # not due: sleep until due, at most the poll interval
    assert writes == []
    schedules.add("now", "* * * * * *", "job")
    wait_until(lambda: loop.fire()[0], timeout=5)
    assert writes  # due: the write transaction that enqueues the tick


def test_the_loop_survives_errors_and_stops_when_asked(file_db: QueueDatabase, caplog) -> None:
    import asyncio

    from prismq.queue import QueueBusyError, Schedules
    from prismq.queue.runtime.scheduler import SchedulerLoop

    loop = SchedulerLoop(Schedules(file_db), poll_interval=0.01)
    failures: list[Exception] = [QueueBusyError("locked"), RuntimeError("a bug")]
    calls = 0

    async def scenario() -> None:
        stop = asyncio.Event()

        async def call(func):
            nonlocal calls
            calls += 1
            if failures:
                raise failures.pop(0)
            if calls >= 4:
                stop.set()
            return func()

        await asyncio.wait_for(loop.run(call, stop), 5)

    with caplog.at_level("INFO"):
        asyncio.run(scenario())
    assert calls == 4  # two failures, then looks until stopped
    assert "scheduler: locked; trying again" in caplog.text
    assert "scheduler: unexpected error; trying again" in caplog.text
