"""Fault suite for the runtime: handlers that raise any kind of BaseException, and
transient database errors at any point while outcomes are saved, on both backends.

The invariants: no task is left leased by a worker that has moved on, every handler that
finished runs exactly once, and every outcome ends up saved.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import FaultySaves, sized

from prismq.queue import (
    BackendUnavailableError,
    QueueBusyError,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    RetryPolicy,
)
from prismq.queue.models import TaskStatus
from prismq.queue.runtime import HandlerRegistry, TaskContext


class CustomBase(BaseException):
    pass


BASE_EXCEPTIONS: dict[str, Any] = {
    "custom": lambda: CustomBase("custom"),
    "generator_exit": GeneratorExit,
    "cancelled": asyncio.CancelledError,
    "keyboard_interrupt": KeyboardInterrupt,
    "system_exit": lambda: SystemExit(0),
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("raised", list(BASE_EXCEPTIONS))
def test_no_base_exception_leaves_a_task_leased(db: QueueDatabase, raised: str, kind: str) -> None:
    client = QueueClient(db)
    task_id = client.enqueue("job", None, retry_policy=RetryPolicy(max_attempts=2, base_delay=60))
    registry = HandlerRegistry()

    def body(ctx: TaskContext) -> None:
        raise BASE_EXCEPTIONS[raised]()

    async def body_async(ctx: TaskContext) -> None:
        body(ctx)

    registry.register("job", body if kind == "sync" else body_async)
    worker = QueueWorker(db, "w")
    try:
        summary = worker.run(registry, burst=True)
    except SystemExit:
        assert raised == "system_exit"
        summary = None
    assert (summary is None) == (raised == "system_exit")  # SystemExit is raised again
    task = client.get(task_id)
    assert worker.held_tasks == {}
    assert client.count_by_status()["leased"] == 0
    if raised == "keyboard_interrupt":
        assert (task.status, task.attempts, task.last_error) == (TaskStatus.QUEUED, 0, None)
        assert summary is not None
        assert summary.released == 1
    else:
        # Failed, with an attempt left: back in the queue after the policy's 60 s pause.
        assert (task.status, task.attempts) == (TaskStatus.QUEUED, 1)
        assert task.last_error is not None
        assert task.last_error.split(":")[0] in {
            "CustomBase",
            "GeneratorExit",
            "CancelledError",
            "SystemExit",
        }


def no_long_outages(schedule: list[bool]) -> bool:
    """At most four failures in a row: the retries then fit well inside the lease."""
    return all(len(list(run)) <= 4 for failed, run in itertools.groupby(schedule) if failed)


COUNTER = itertools.count()


@settings(
    max_examples=sized(6, 60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=st.lists(st.booleans(), max_size=12).filter(no_long_outages))
def test_transient_faults_while_saving_never_run_a_handler_twice(
    db: QueueDatabase, backend_name: str, schedule: list[bool]
) -> None:
    task_type = f"job{next(COUNTER)}"  # this example's own tasks in the shared database
    client = QueueClient(db)
    ok_ids = [client.enqueue(task_type, {"fail": False}) for _ in range(3)]
    bad_ids = [client.enqueue(task_type, {"fail": True}, max_attempts=1) for _ in range(2)]
    runs: dict[int, int] = {}
    registry = HandlerRegistry()

    @registry.handler(task_type)
    def job(ctx: TaskContext) -> int:
        runs[ctx.task_id] = runs.get(ctx.task_id, 0) + 1
        if ctx.payload["fail"]:
            raise ValueError("the handler's own failure")
        return ctx.task_id

    worker = QueueWorker(db, f"w-{task_type}", lease_duration=10)
    error = QueueBusyError if backend_name == "sqlite" else BackendUnavailableError
    faults = FaultySaves(db.backend, error, schedule)
    try:
        summary = worker.run(registry, burst=True, concurrency=2)
    finally:
        faults.schedule = []
    assert runs == dict.fromkeys(ok_ids + bad_ids, 1)
    assert summary.abandoned == 0
    assert (summary.completed, summary.dead) == (3, 2)
    for task_id in ok_ids:
        assert client.get(task_id).result == task_id
    for task_id in bad_ids:
        assert client.get(task_id).status is TaskStatus.DEAD
    assert client.count_by_status()["leased"] == 0


@pytest.mark.sqlite_only
def test_a_real_lock_held_while_the_outcome_is_saved_is_waited_out(
    make_db: Any, db_path: Any, backend_name: str
) -> None:
    """No injection: another connection holds SQLite's write lock past the busy budget just
    as the handler returns; the completion is saved once the lock is gone."""
    db = make_db(pragmas={"busy_timeout": 20}, busy_retries=1)
    client = QueueClient(db)
    task_id = client.enqueue("job", None)
    holder = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
    runs: list[int] = []
    registry = HandlerRegistry()

    @registry.handler("job")
    def job(ctx: TaskContext) -> str:
        runs.append(ctx.task.attempts)
        holder.execute("BEGIN IMMEDIATE")  # taken as the handler returns
        threading.Timer(0.6, holder.execute, ("COMMIT",)).start()
        return "saved once"

    try:
        summary = QueueWorker(db, "w", lease_duration=10).run(registry, burst=True)
    finally:
        time.sleep(0.7)
        holder.close()
    assert runs == [1]
    assert summary.completed == 1
    assert summary.abandoned == 0
    assert client.get(task_id).result == "saved once"
