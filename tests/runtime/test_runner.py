"""WorkerRunner in one process: type filtering, sync/async handlers, context, failures,
timeouts, delayed tasks and log records."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from runtime_helpers import PYTHON, ThreadedWorker, child_env

from prismq.queue import QueueClient, QueueDatabase
from prismq.queue.models import TaskStatus
from prismq.queue.retry import RetryPolicy
from prismq.queue.runtime import HandlerRegistry, TaskCancelled, TaskContext, TaskFailed
from prismq.queue.worker import QueueWorker

Threaded = Callable[..., ThreadedWorker]


def test_worker_never_claims_a_type_without_handler(file_db: QueueDatabase) -> None:
    client = QueueClient(file_db)
    a_ids = [client.enqueue("a", {"n": n}) for n in range(3)]
    b_id = client.enqueue("b", {"n": 99})
    seen: list[str] = []
    registry = HandlerRegistry()

    @registry.handler("a")
    def handle_a(ctx: TaskContext) -> int:
        seen.append(ctx.task.task_type)
        return ctx.payload["n"]

    worker = QueueWorker(file_db, "w-a")
    summary = worker.run(registry, burst=True)

    assert worker.task_types == ("a",)
    assert summary.completed == 3
    assert seen == ["a", "a", "a"]
    assert [client.get(i).status for i in a_ids] == [TaskStatus.COMPLETED] * 3
    b = client.get(b_id)
    assert b.status is TaskStatus.QUEUED
    assert b.attempts == 0
    assert b.locked_by is None
    assert b.started_at is None


def test_runner_refuses_task_types_it_cannot_run(file_db: QueueDatabase) -> None:
    from prismq.queue.errors import ConfigError

    registry = HandlerRegistry()
    registry.register("a", lambda ctx: None)
    with pytest.raises(ConfigError, match="no handler: b"):
        QueueWorker(file_db, "w", task_types=["a", "b"]).run(registry, burst=True)
    with pytest.raises(ConfigError, match="registry is empty"):
        QueueWorker(file_db, "w2").run(HandlerRegistry(), burst=True)


def test_sync_and_async_handlers_run_and_async_ones_are_awaited(file_db: QueueDatabase) -> None:
    client = QueueClient(file_db)
    sync_id = client.enqueue("sync", {"x": 2})
    async_id = client.enqueue("async", {"x": 3})
    events: list[str] = []
    registry = HandlerRegistry()

    @registry.handler("sync")
    def sync_handler(ctx: TaskContext) -> dict[str, Any]:
        events.append("sync")
        return {"double": ctx.payload["x"] * 2, "thread": threading.current_thread().name}

    @registry.handler("async")
    async def async_handler(ctx: TaskContext) -> dict[str, Any]:
        events.append("async:before")
        await asyncio.sleep(0.05)
        events.append("async:resumed")
        return {"triple": ctx.payload["x"] * 3, "resumed": True}

    summary = QueueWorker(file_db, "w").run(registry, burst=True, concurrency=2)

    assert summary.completed == 2
    assert "async:resumed" in events
    assert events.index("async:before") < events.index("async:resumed")
    sync_result = client.get_result(sync_id)
    assert sync_result["double"] == 4
    assert sync_result["thread"].startswith("prismq-queue-handler")
    assert client.get_result(async_id) == {"triple": 9, "resumed": True}


def test_handler_sees_payload_attempt_and_progress_while_running(
    file_db: QueueDatabase, threaded: Threaded
) -> None:
    client = QueueClient(file_db)
    task_id = client.enqueue("report", {"pages": 4})
    halfway = threading.Event()
    proceed = threading.Event()
    seen: dict[str, Any] = {}
    registry = HandlerRegistry()

    @registry.handler("report")
    def report(ctx: TaskContext) -> str:
        seen.update(payload=ctx.payload, attempt=ctx.attempt, task_id=ctx.task_id, worker=ctx.worker_id)
        ctx.report_progress(50, "half way")
        halfway.set()
        proceed.wait(10)
        ctx.report_progress(100, "done")
        return "ok"

    runner = threaded(QueueWorker(file_db, "w-progress"), registry)
    assert halfway.wait(10)
    running = client.get(task_id)
    assert running.status is TaskStatus.LEASED
    assert running.progress == 50
    assert running.progress_message == "half way"
    proceed.set()
    done = client.wait(task_id, timeout=10)
    runner.join()
    assert done.status is TaskStatus.COMPLETED
    assert done.progress == 100
    assert done.result == "ok"
    assert seen == {"payload": {"pages": 4}, "attempt": 1, "task_id": task_id, "worker": "w-progress"}


def test_cancel_running_sync_handler(file_db: QueueDatabase, threaded: Threaded) -> None:
    client = QueueClient(file_db)
    task_id = client.enqueue("long", None)
    started = threading.Event()
    polls: list[bool] = []
    registry = HandlerRegistry()

    @registry.handler("long")
    def long(ctx: TaskContext) -> None:
        started.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            polls.append(ctx.cancel_requested)
            if ctx.cancel_requested:
                raise TaskCancelled("stopping on request")
            time.sleep(0.02)
        raise AssertionError("cancellation never arrived")

    runner = threaded(QueueWorker(file_db, "w", lease_duration=0.4), registry)
    assert started.wait(10)
    flagged = client.cancel(task_id)
    assert flagged.status is TaskStatus.LEASED
    assert flagged.cancel_requested
    final = client.wait(task_id, timeout=10)
    summary = runner.join()
    assert final.status is TaskStatus.CANCELLED
    assert polls[0] is False
    assert polls[-1] is True
    assert summary.cancelled == 1
    assert summary.completed == 0


def test_cancel_running_async_handler_gets_cancelled_error(
    file_db: QueueDatabase, threaded: Threaded
) -> None:
    client = QueueClient(file_db)
    task_id = client.enqueue("long", None)
    started = threading.Event()
    outcome: list[str] = []
    registry = HandlerRegistry()

    @registry.handler("long")
    async def long(ctx: TaskContext) -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            outcome.append(f"cancelled, flag={ctx.cancel_requested}")
            raise
        outcome.append("finished")

    runner = threaded(QueueWorker(file_db, "w", lease_duration=0.4), registry)
    assert started.wait(10)
    client.cancel(task_id)
    final = client.wait(task_id, timeout=10)
    summary = runner.join()
    assert final.status is TaskStatus.CANCELLED
    assert outcome == ["cancelled, flag=True"]
    assert summary.cancelled == 1


def test_exception_is_retried_with_backoff_then_dead(file_db: QueueDatabase, threaded: Threaded) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.15, multiplier=2.0, jitter=0.0)
    client = QueueClient(file_db, default_retry_policy=policy)
    task_id = client.enqueue("flaky", None)
    attempts: list[tuple[int, float]] = []
    registry = HandlerRegistry()

    @registry.handler("flaky")
    def flaky(ctx: TaskContext) -> None:
        attempts.append((ctx.attempt, time.monotonic()))
        raise ConnectionError(f"boom on attempt {ctx.attempt}")

    runner = threaded(QueueWorker(file_db, "w"), registry, idle_timeout=0.05)
    final = client.wait(task_id, timeout=15)
    summary = runner.join()
    assert final.status is TaskStatus.DEAD
    assert final.attempts == 3
    assert final.last_error == "ConnectionError: boom on attempt 3"
    assert "Traceback" in final.last_traceback
    assert [a for a, _ in attempts] == [1, 2, 3]
    # Backoff: the second attempt waits at least base_delay, the third base_delay * 2.
    assert attempts[1][1] - attempts[0][1] >= 0.15 - 0.02
    assert attempts[2][1] - attempts[1][1] >= 0.30 - 0.02
    assert summary.retried == 2
    assert summary.dead == 1


def test_task_failed_without_retry_is_dead_at_once(file_db: QueueDatabase) -> None:
    client = QueueClient(file_db)
    task_id = client.enqueue("import", {"row": 7}, max_attempts=5)
    registry = HandlerRegistry()

    @registry.handler("import")
    def do_import(ctx: TaskContext) -> None:
        raise TaskFailed(f"row {ctx.payload['row']} is malformed", retry=False)

    summary = QueueWorker(file_db, "w").run(registry, burst=True)
    task = client.get(task_id)
    assert task.status is TaskStatus.DEAD
    assert task.attempts == 1
    assert task.last_error == "TaskFailed: row 7 is malformed"
    assert summary.dead == 1
    assert summary.retried == 0


def test_non_json_result_is_dead_with_payload_error(file_db: QueueDatabase) -> None:
    client = QueueClient(file_db)
    task_id = client.enqueue("bad_result", None, max_attempts=3)
    registry = HandlerRegistry()
    registry.register("bad_result", lambda ctx: {"when": object()})

    summary = QueueWorker(file_db, "w").run(registry, burst=True)
    task = client.get(task_id)
    assert task.status is TaskStatus.DEAD
    assert task.attempts == 1
    assert task.last_error.startswith("PayloadError:")
    assert task.result is None
    assert summary.dead == 1


def test_handler_timeout_overrides_the_worker_default(file_db: QueueDatabase) -> None:
    client = QueueClient(file_db)
    task_id = client.enqueue("slow_async", None, max_attempts=1)
    registry = HandlerRegistry()

    @registry.handler("slow_async", timeout=0.2)
    async def slow(ctx: TaskContext) -> None:
        await asyncio.sleep(10)

    started = time.monotonic()
    summary = QueueWorker(file_db, "w").run(registry, burst=True, task_timeout=60)
    assert time.monotonic() - started < 8
    task = client.get(task_id)
    assert task.status is TaskStatus.DEAD
    assert "timeout of 0.2 s" in task.last_error
    assert summary.timed_out == 1


def test_delayed_task_starts_when_due_not_after_the_idle_timeout(
    file_db: QueueDatabase, threaded: Threaded
) -> None:
    client = QueueClient(file_db)
    registry = HandlerRegistry()
    registry.register("later", lambda ctx: "ran")
    runner = threaded(QueueWorker(file_db, "w"), registry, idle_timeout=5.0, wake_mode="poll")
    time.sleep(0.3)  # the worker is idle, in a 5 s wait
    task_id = client.enqueue("later", None, delay=0.3)
    task = client.wait(task_id, timeout=10)
    runner.join()
    waited = (task.started_at - task.created_at).total_seconds()
    assert task.status is TaskStatus.COMPLETED
    assert 0.3 - 0.01 <= waited < 2.5


def test_long_task_keeps_its_lease_by_auto_renewal(
    file_db: QueueDatabase, threaded: Threaded, db_path: Any
) -> None:
    client = QueueClient(file_db)
    task_id = client.enqueue("long", None)
    started = threading.Event()
    calls: list[int] = []
    registry = HandlerRegistry()

    @registry.handler("long")
    def long(ctx: TaskContext) -> str:
        calls.append(ctx.attempt)
        started.set()
        time.sleep(2.0)
        return "done"

    runner = threaded(QueueWorker(file_db, "w-main", lease_duration=0.5), registry)
    assert started.wait(10)
    # Another worker process polls (and reclaims expired leases) while the task runs.
    rival = subprocess.run(
        [
            PYTHON,
            "-c",
            "import sys, time\n"
            "from prismq.queue import QueueDatabase\n"
            "from prismq.queue.worker import QueueWorker\n"
            "db = QueueDatabase(sys.argv[1])\n"
            "w = QueueWorker(db, 'w-rival', lease_duration=0.5, reclaim_interval=0.0)\n"
            "claimed, polls = [], 0\n"
            "end = time.monotonic() + 1.5\n"
            "while time.monotonic() < end:\n"
            "    t = w.claim_next_task(); polls += 1\n"
            "    if t: claimed.append(t.id)\n"
            "    time.sleep(0.02)\n"
            "print(polls, claimed)\n",
            str(db_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
    )
    assert rival.returncode == 0, rival.stderr
    polls, claimed = rival.stdout.split(" ", 1)
    assert int(polls) > 10
    assert claimed.strip() == "[]"
    final = client.wait(task_id, timeout=10)
    summary = runner.join()
    assert final.status is TaskStatus.COMPLETED
    assert final.locked_by is None
    assert final.attempts == 1
    assert calls == [1]
    assert summary.completed == 1
    assert summary.lease_lost == 0


def test_runtime_log_records_carry_task_fields(
    file_db: QueueDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    client = QueueClient(file_db)
    ok_id = client.enqueue("ok", None)
    bad_id = client.enqueue("bad", None, max_attempts=1)
    registry = HandlerRegistry()

    @registry.handler("ok")
    def ok(ctx: TaskContext) -> None:
        ctx.logger.info("working on it")

    @registry.handler("bad")
    def bad(ctx: TaskContext) -> None:
        raise ValueError("nope")

    caplog.set_level(logging.DEBUG, logger="prismq.queue.runtime")
    QueueWorker(file_db, "w-log").run(registry, burst=True)

    records = [r for r in caplog.records if r.name.startswith("prismq.queue.runtime")]
    about_tasks = [r for r in records if getattr(r, "task_id", "-") != "-"]
    for record in records:
        for field in ("task_id", "task_type", "attempt", "worker_id"):
            assert hasattr(record, field), (field, record.getMessage())
        assert record.worker_id == "w-log"
    by_task = {ok_id: "ok", bad_id: "bad"}
    assert {r.task_id for r in about_tasks} == {ok_id, bad_id}
    for record in about_tasks:
        assert record.task_type == by_task[record.task_id]
        assert record.attempt == 1
    messages = {(r.task_id, r.getMessage()) for r in about_tasks}
    assert (ok_id, "working on it") in messages
    assert any(tid == bad_id and "nope" in msg for tid, msg in messages)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_completions_are_group_committed_with_the_next_claim(
    file_db: QueueDatabase, concurrency: int
) -> None:
    client = QueueClient(file_db)
    ids = client.enqueue_many([{"task_type": "job", "payload": {"n": n}} for n in range(300)])
    registry = HandlerRegistry()
    ran: list[int] = []

    @registry.handler("job")
    def job(ctx: TaskContext) -> int:
        ran.append(ctx.task_id)
        return int(ctx.payload["n"])

    worker = QueueWorker(file_db, "w")
    calls: list[tuple[list[int], int]] = []
    plain = worker.acknowledge

    def counting(acks: Any, claim: int = 0) -> Any:
        calls.append(([ack.task_id for ack in acks], claim))
        return plain(acks, claim)

    worker.acknowledge = counting  # type: ignore[method-assign]
    summary = worker.run(registry, burst=True, concurrency=concurrency, prefetch=20, linger=0.05)

    assert summary.completed == 300
    assert sorted(ran) == ids
    assert [client.get_result(task_id) for task_id in ids] == list(range(300))
    acknowledged = [tid for acked, _ in calls for tid in acked]
    assert sorted(acknowledged) == ids  # each outcome written exactly once
    # Outcomes are written in groups, and the claims ride on the same transactions:
    # far fewer commits than tasks, and no claim made on its own while work was flowing.
    assert len(calls) < 300 / 5
    with_outcomes = [claim for acked, claim in calls if acked]
    assert sum(1 for claim in with_outcomes if claim > 0) >= len(with_outcomes) - 2
    assert max(len(acked) for acked, _ in calls) > 1
    assert client.count_by_status()["completed"] == 300
    assert worker.held_tasks == {}


def test_max_tasks_is_not_overshot_by_claims_made_with_completions(file_db: QueueDatabase) -> None:
    client = QueueClient(file_db)
    client.enqueue_many([{"task_type": "job"} for _ in range(20)])
    registry = HandlerRegistry()
    registry.register("job", lambda ctx: None)
    summary = QueueWorker(file_db, "w").run(registry, max_tasks=7, concurrency=3)
    assert summary.started == 7
    assert summary.completed == 7
    counts = client.count_by_status()
    assert counts["completed"] == 7
    assert counts["queued"] == 13
    assert counts["leased"] == 0
