"""Delete one task; retry, cancel and delete every task matching a filter; keyset pages."""

from __future__ import annotations

import pytest

from prismq.queue import (
    QueueClient,
    QueueDatabase,
    QueueWorker,
    TaskNotFoundError,
    TaskStateError,
    ValidationError,
)


def _dead(client: QueueClient, db: QueueDatabase, task_type: str, n: int, error: str = "boom") -> list[int]:
    ids = client.enqueue_many(
        [{"task_type": task_type, "payload": {"k": i}, "max_attempts": 1} for i in range(n)]
    )
    worker = QueueWorker(db, "killer", task_types=[task_type])
    for task in worker.claim_batch(n):
        worker.fail_task(task, f"{error} {task.id}", retry=False)
    return ids


def test_retry_many_requeues_matching_dead_tasks_only(client: QueueClient, db: QueueDatabase) -> None:
    dead_a = _dead(client, db, "a", 7, "timeout")
    dead_b = _dead(client, db, "b", 3)
    assert client.retry_many(task_type="a") == 7
    assert {client.get(i).status.value for i in dead_a} == {"queued"}
    assert all(client.get(i).attempts == 0 for i in dead_a)
    assert {client.get(i).status.value for i in dead_b} == {"dead"}
    # Text in the error narrows the filter.
    assert client.retry_many(search=f"boom {dead_b[0]}") == 1
    assert client.get(dead_b[0]).status.value == "queued"
    with pytest.raises(ValidationError, match="retry applies to dead, cancelled"):
        client.retry_many(status="queued")


def test_cancel_many_cancels_queued_and_flags_running(client: QueueClient, db: QueueDatabase) -> None:
    ids = client.enqueue_many([{"task_type": "c"} for _ in range(6)])
    running = QueueWorker(db, "w").claim_batch(2)
    assert client.cancel_many(task_type="c") == 6
    statuses = {client.get(i).status.value for i in ids if i not in {t.id for t in running}}
    assert statuses == {"cancelled"}
    assert all(client.get(t.id).cancel_requested for t in running)
    assert client.cancel_many(task_type="c") == 0  # nothing left to change


def test_delete_and_delete_many(client: QueueClient, db: QueueDatabase) -> None:
    ids = client.enqueue_many([{"task_type": "d"} for _ in range(5)])
    running = QueueWorker(db, "w").claim_next_task()
    assert running is not None
    assert running.id == ids[0]
    with pytest.raises(TaskStateError, match="running"):
        client.delete(running.id)
    client.delete(ids[1])
    with pytest.raises(TaskNotFoundError):
        client.get(ids[1])
    with pytest.raises(TaskNotFoundError):
        client.delete(ids[1])
    with pytest.raises(TaskStateError, match="newest"):
        client.delete(ids[-1])
    # Every queued "d" task but the newest (kept so its id is never reused).
    assert client.delete_many(status="queued", task_type="d") == 2
    assert [t.id for t in client.list(task_type="d")] == [ids[4], ids[0]]
    with pytest.raises(ValidationError, match="not leased"):
        client.delete_many(status="leased")


def test_pages_walk_every_task_once_in_order(client: QueueClient, db: QueueDatabase) -> None:
    ids = client.enqueue_many(
        [{"task_type": t, "payload": {"n": n}} for n, t in enumerate(["x", "y", "z"] * 20)]
    )
    seen: list[int] = []
    cursor = None
    while True:
        page = client.page(status="queued", limit=7, cursor=cursor)
        seen += [t.id for t in page.tasks]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(ids)
    by_type = [client.get(i).task_type for i in seen]
    assert by_type == sorted(by_type)  # queued tasks come by task type, then due time
    newest = client.page(limit=5)
    assert [t.id for t in newest.tasks] == sorted(ids, reverse=True)[:5]
    assert [t.id for t in client.page(search='"n":7}').tasks] == [ids[7]]
    with pytest.raises(ValidationError, match="cursor"):
        client.page(cursor="not a cursor")
    with pytest.raises(ValidationError, match="search"):
        client.page(search="")
    with pytest.raises(ValidationError, match="unknown status"):
        client.page(status="sleeping")
