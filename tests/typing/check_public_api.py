"""Checked by mypy in the lint session (never run): the public signatures are precise.

``assert_type`` fails the check when a call's inferred type is not exactly the one
written, and each ``# type: ignore[code]`` must stay needed (``warn_unused_ignores``):
it marks a call the signatures must refuse, so a signature that loosened to ``Any``
would fail the check too.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

from prismq.queue import (
    AsyncQueueClient,
    Enqueued,
    QueueClient,
    QueueDatabase,
    QueueStats,
    QueueWorker,
    Task,
    TaskSpec,
    Unique,
    WorkerInfo,
)
from prismq.queue.tasks import TaskFunction, TaskRegistry
from prismq.queue.testing import DrainReport, Outcome, TestClock, drain


def sync_client(db: QueueDatabase) -> None:
    client = QueueClient(db)
    assert_type(client.enqueue("mail", {"to": "a"}, priority=5, delay=1.5), int)
    assert_type(client.enqueue_many([TaskSpec("mail"), {"task_type": "mail"}]), list[int])
    outcome = client.enqueue_outcome("mail", {"to": "a"}, unique=Unique(period=60.0))
    assert_type(outcome, Enqueued)
    assert_type(outcome.created, bool)
    assert_type(client.get(1), Task)
    assert_type(client.list(status="queued", limit=10), list[Task])
    assert_type(client.stats(), QueueStats)
    assert_type(client.count_by_status(), dict[str, int])
    assert_type(client.list_workers(), list[WorkerInfo])
    assert_type(client.cancel(1), Task)
    assert_type(client.retry(1, reset_attempts=False), Task)
    assert_type(client.prune(60.0), int)
    assert_type(client.wait(1, timeout=5), Task)
    assert_type(client.get_result(1), Any)
    client.enqueue("mail", priority="high")  # type: ignore[arg-type]
    client.get("1")  # type: ignore[arg-type]


async def async_client(db: QueueDatabase) -> None:
    async with AsyncQueueClient(db, max_threads=2) as client:
        assert_type(client, AsyncQueueClient)
        assert_type(await client.enqueue("mail", {"to": "a"}, idempotency_key="k"), int)
        assert_type(await client.enqueue_many([TaskSpec("mail")]), list[int])
        assert_type(await client.enqueue_outcome("mail", idempotency_key="k"), Enqueued)
        assert_type(await client.get(1), Task)
        assert_type(await client.list(task_type=["a", "b"]), list[Task])
        assert_type(await client.stats(), QueueStats)
        assert_type(await client.cancel(1), Task)
        assert_type(await client.retry(1), Task)
        assert_type(await client.wait(1, timeout=1.0), Task)
        assert_type(client.sync_client, QueueClient)
        await client.enqueue("mail", delay="soon")  # type: ignore[arg-type]


def task_functions(client: QueueClient) -> None:
    tasks = TaskRegistry(client)

    @tasks.task
    def add(a: int, b: int = 0) -> int:
        return a + b

    @tasks.task("mail.send", priority=10)
    async def send(to: str, cc: list[str] | None = None) -> None:
        return None

    assert_type(add(1, 2), int)
    assert_type(add.enqueue(1, b=2), int)
    assert_type(add.enqueue_many([{"a": 1}]), list[int])
    assert_type(add.options(delay=5).enqueue(1), int)
    assert_type(add.spec(1), TaskSpec)
    assert_type(send.enqueue("a@example.com", cc=["b@example.com"]), int)
    assert_type(tasks["add"], TaskFunction[Any, Any])
    add.enqueue("one")  # type: ignore[arg-type]
    add.enqueue(1, c=3)  # type: ignore[call-arg]
    send.enqueue(to=5)  # type: ignore[arg-type]


def testing_helpers(db: QueueDatabase, worker: QueueWorker) -> None:
    clock = TestClock(start=0)
    assert_type(clock(), float)
    report = drain(db, TaskRegistry())
    assert_type(report, DrainReport)
    assert_type(report.outcomes, list[Outcome])
    assert_type(report.results, dict[int, Any])
    assert_type(worker.claim_next_task(), Task | None)
