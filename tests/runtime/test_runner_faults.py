"""The runtime when handlers misbehave or the database fails while an outcome is saved.

Runs on both backends: a handler's ``BaseException`` never leaves its task leased, a
timed-out sync handler keeps its lease and slot until its thread returns (attempts never
overlap), a transient error while saving an outcome is retried instead of running a
finished handler again, and lease-loss warnings say which task and attempt they are about.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from runtime_helpers import ThreadedWorker, wait_until

from prismq.queue import (
    BackendUnavailableError,
    QueueBusyError,
    QueueClient,
    QueueDatabase,
    RetryPolicy,
)
from prismq.queue.models import TaskStatus
from prismq.queue.runtime import HandlerRegistry, TaskContext
from prismq.queue.worker import QueueWorker

Threaded = Callable[..., ThreadedWorker]
NO_PAUSE = RetryPolicy(max_attempts=3, base_delay=0.0, jitter=0.0)


class Boom(BaseException):
    """A BaseException that is not an Exception, as some libraries raise."""


def leased(client: QueueClient) -> int:
    return client.count_by_status()["leased"]


# -- item 2: a BaseException from a handler ---------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_custom_base_exception_fails_the_attempt_and_it_is_retried(db: QueueDatabase, kind: str) -> None:
    client = QueueClient(db)
    task_id = client.enqueue("job", {"n": 1}, retry_policy=NO_PAUSE)
    attempts: list[int] = []
    registry = HandlerRegistry()

    def body(ctx: TaskContext) -> str:
        attempts.append(ctx.task.attempts)
        if ctx.task.attempts == 1:
            raise Boom("not an Exception")
        return "second time lucky"

    if kind == "sync":
        registry.register("job", body)
    else:

        async def run_async(ctx: TaskContext) -> str:
            return body(ctx)

        registry.register("job", run_async)
    summary = QueueWorker(db, "w").run(registry, burst=True)
    task = client.get(task_id)
    assert attempts == [1, 2]
    assert task.status is TaskStatus.COMPLETED
    assert task.result == "second time lucky"
    assert summary.retried == 1
    assert summary.completed == 1
    assert leased(client) == 0


def test_cancelled_error_from_an_awaited_future_fails_the_attempt(db: QueueDatabase) -> None:
    client = QueueClient(db)
    task_id = client.enqueue("job", None, max_attempts=1)
    other_id = client.enqueue("job", None, max_attempts=1)
    registry = HandlerRegistry()

    @registry.handler("job")
    async def job(ctx: TaskContext) -> str:
        if ctx.task_id != task_id:
            return "ok"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.cancel()  # another part of the program gave up on it
        await future
        return "unreachable"

    summary = QueueWorker(db, "w").run(registry, burst=True)
    task = client.get(task_id)
    assert task.status is TaskStatus.DEAD
    assert task.last_error.startswith("CancelledError")
    assert client.get(other_id).status is TaskStatus.COMPLETED
    assert summary.dead == 1
    assert summary.completed == 1
    assert leased(client) == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_keyboard_interrupt_releases_the_task_and_stops_the_worker(db: QueueDatabase, kind: str) -> None:
    client = QueueClient(db)
    first = client.enqueue("job", None)
    second = client.enqueue("job", None, delay=0.3)
    registry = HandlerRegistry()

    def body(ctx: TaskContext) -> None:
        raise KeyboardInterrupt

    if kind == "sync":
        registry.register("job", body)
    else:

        async def run_async(ctx: TaskContext) -> None:
            body(ctx)

        registry.register("job", run_async)
    # Not burst: only the interrupt can end this run.
    summary = QueueWorker(db, "w").run(registry, idle_timeout=0.05)
    task = client.get(first)
    assert task.status is TaskStatus.QUEUED
    assert task.attempts == 0  # released: the attempt was not used
    assert task.locked_by is None
    assert summary.released == 1
    assert summary.started == 1
    assert client.get(second).attempts == 0  # the worker stopped instead of going on
    assert leased(client) == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_system_exit_fails_the_attempt_stops_the_worker_and_is_reraised(db: QueueDatabase, kind: str) -> None:
    client = QueueClient(db)
    first = client.enqueue("job", None, retry_policy=NO_PAUSE)
    second = client.enqueue("job", None, delay=0.3)
    registry = HandlerRegistry()

    def body(ctx: TaskContext) -> None:
        raise SystemExit(3)

    if kind == "sync":
        registry.register("job", body)
    else:

        async def run_async(ctx: TaskContext) -> None:
            body(ctx)

        registry.register("job", run_async)
    with pytest.raises(SystemExit) as raised:
        QueueWorker(db, "w").run(registry, idle_timeout=0.05)
    assert raised.value.code == 3
    task = client.get(first)
    assert task.status is TaskStatus.QUEUED  # failed, with attempts left: retried later
    assert task.attempts == 1
    assert task.last_error == "SystemExit: 3"
    assert client.get(second).attempts == 0
    assert leased(client) == 0


# -- item 5: a timed-out sync handler ---------------------------------------------------


def test_timed_out_sync_handler_keeps_its_lease_and_slot_until_its_thread_returns(
    db: QueueDatabase, make_db: Callable[..., QueueDatabase], threaded: Threaded
) -> None:
    """Attempt 2 of a hung task never starts while attempt 1's thread still runs, on this
    worker (the slot is kept) or another one (the lease is kept renewed)."""
    client = QueueClient(db)
    hung_id = client.enqueue("hang", None, retry_policy=NO_PAUSE)
    quick_id = client.enqueue("quick", None, delay=0.1)
    release = threading.Event()
    events: list[str] = []
    lock = threading.Lock()
    registry = HandlerRegistry()

    @registry.handler("hang")
    def hang(ctx: TaskContext) -> int:
        with lock:
            events.append(f"start {ctx.task.attempts}")
        if ctx.task.attempts == 1:
            release.wait(20)  # a call that hangs past the timeout, then returns
        with lock:
            events.append(f"end {ctx.task.attempts}")
        return ctx.task.attempts

    @registry.handler("quick")
    def quick(ctx: TaskContext) -> str:
        return "served"

    try:
        runner = threaded(
            QueueWorker(db, "w-1", lease_duration=0.4, reclaim_interval=0.05),
            registry,
            concurrency=1,
            task_timeout=0.3,
            idle_timeout=0.05,
        )
        wait_until(lambda: events == ["start 1"])
        assert client.get(hung_id).locked_by == "w-1"
        # A second worker takes the task over as soon as its lease runs out.
        threaded(
            QueueWorker(make_db(), "w-2", lease_duration=0.4, reclaim_interval=0.05, task_types=["hang"]),
            registry,
            idle_timeout=0.05,
        )
        time.sleep(1.5)  # the timeout and three lease durations pass
        task = client.get(hung_id)
        assert events == ["start 1"], "a retry ran while the timed-out attempt still did"
        assert task.status is TaskStatus.LEASED
        assert task.attempts == 1
        assert client.get(quick_id).status is TaskStatus.QUEUED  # its slot is still taken
    finally:
        release.set()
    wait_until(lambda: client.get(hung_id).status is TaskStatus.COMPLETED)
    assert events == ["start 1", "end 1", "start 2", "end 2"]
    hung = client.get(hung_id)
    assert hung.attempts == 2
    assert hung.result == 2
    assert client.wait(quick_id, timeout=10).result == "served"
    summary = runner.join()
    assert summary.timed_out == 1
    assert summary.retried == 1


# -- item 3: a transient error while saving an outcome ----------------------------------


def transient_error(backend_name: str) -> type[Exception]:
    """What a passing fault looks like on each backend: a busy file, a dropped connection."""
    return QueueBusyError if backend_name == "sqlite" else BackendUnavailableError


class FlakySaves:
    """Make the backend's finishing calls fail ``failures`` times, then work (or never)."""

    def __init__(self, worker: QueueWorker, error: type[Exception], failures: float) -> None:
        self.error = error
        self.failures = failures
        self.raised = 0
        backend = worker.backend
        for name in ("complete_and_claim", "settle_and_claim", "complete_tasks", "finish_attempt"):
            setattr(backend, name, self._flaky(getattr(backend, name), name))

    def _flaky(self, original: Callable[..., Any], name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            # A claim alone saves nothing.
            saving = name not in ("complete_and_claim", "settle_and_claim") or bool(args[0])
            if saving and self.raised < self.failures:
                self.raised += 1
                raise self.error("injected: the database is not reachable right now")
            return original(*args, **kwargs)

        return call


@pytest.mark.parametrize("outcome", ["complete", "fail"])
def test_transient_error_while_saving_an_outcome_is_retried_not_run_again(
    db: QueueDatabase, backend_name: str, outcome: str
) -> None:
    client = QueueClient(db)
    task_id = client.enqueue("job", None, max_attempts=1)
    runs: list[int] = []
    registry = HandlerRegistry()

    @registry.handler("job")
    def job(ctx: TaskContext) -> str:
        runs.append(ctx.task.attempts)
        if outcome == "fail":
            raise ValueError("the handler's own failure")
        return "done once"

    worker = QueueWorker(db, "w")
    faults = FlakySaves(worker, transient_error(backend_name), failures=3)
    summary = worker.run(registry, burst=True)
    task = client.get(task_id)
    assert faults.raised == 3
    assert runs == [1]
    assert summary.abandoned == 0
    if outcome == "complete":
        assert task.status is TaskStatus.COMPLETED
        assert task.result == "done once"
        assert summary.completed == 1
    else:
        assert task.status is TaskStatus.DEAD
        assert task.last_error == "ValueError: the handler's own failure"
        assert summary.dead == 1
    assert leased(client) == 0


def test_outcome_given_up_when_the_lease_would_expire(
    db: QueueDatabase, backend_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bounded: once retrying outlasts the lease, the attempt is given up (not renewed any
    more), logged, and the task runs again after the lease expires."""
    client = QueueClient(db)
    task_id = client.enqueue("job", None)
    registry = HandlerRegistry()
    registry.register("job", lambda ctx: "lost")
    worker = QueueWorker(db, "w", lease_duration=0.4)
    faults = FlakySaves(worker, transient_error(backend_name), failures=float("inf"))
    caplog.set_level(logging.WARNING, logger="prismq.queue.runtime")
    started = time.monotonic()
    summary = worker.run(registry, max_tasks=1)
    assert time.monotonic() - started < 5
    assert summary.abandoned == 1
    assert summary.completed == 0
    assert worker.held_tasks == {}  # no longer renewed
    task = client.get(task_id)
    assert task.status is TaskStatus.LEASED
    assert task.locked_by == "w"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "could not be saved" in r.message]
    assert len(errors) == 1
    assert (errors[0].task_id, errors[0].task_type, errors[0].attempt) == (task_id, "job", 1)
    # Once the database is back and the lease expired, another worker runs it again.
    faults.failures = 0
    time.sleep(0.5)
    again = QueueWorker(db, "w-2").run(registry, burst=True)
    assert again.completed == 1
    assert client.get(task_id).attempts == 2


# -- item 11: lease-loss warnings carry the task's fields -------------------------------


def test_lease_loss_warning_from_the_worker_names_task_type_and_attempt(
    db: QueueDatabase, make_db: Callable[..., QueueDatabase], caplog: pytest.LogCaptureFixture
) -> None:
    """QUEUE_OPERATIONS.md: every worker log record carries worker id, task id, task type
    and attempt."""
    client = QueueClient(db)
    task_id = client.enqueue("resize", None)
    slow = QueueWorker(db, "slow", lease_duration=0.1)
    task = slow.claim_next_task()
    assert task is not None
    time.sleep(0.3)
    thief = QueueWorker(make_db(), "fast", lease_duration=30, reclaim_interval=0)
    assert thief.claim_next_task() is not None
    caplog.set_level(logging.WARNING, logger="prismq.queue.worker")
    assert slow.heartbeat() == []
    records = [r for r in caplog.records if r.name == "prismq.queue.worker"]
    assert len(records) == 1
    record = records[0]
    assert (record.worker_id, record.task_id, record.task_type, record.attempt) == (
        "slow",
        task_id,
        "resize",
        1,
    )
    assert "no longer holds" in record.getMessage()
