"""``complete_and_claim``: finish one task and lease the next in one transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from prismq.queue import (
    LeaseLostError,
    PayloadError,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    TaskStatus,
)

if TYPE_CHECKING:
    from conftest import FakeClock


def test_drains_in_order_and_stores_each_result(db: QueueDatabase) -> None:
    client = QueueClient(db)
    ids = client.enqueue_many([{"task_type": "job", "payload": {"n": n}} for n in range(5)])
    worker = QueueWorker(db, "w1")
    task = worker.claim_next_task()
    seen = []
    while task is not None:
        seen.append(task.id)
        assert task.status is TaskStatus.LEASED
        assert task.locked_by == "w1"
        assert set(worker.held_tasks) == {task.id}
        task = worker.complete_and_claim(task, {"done": task.payload["n"]})
    assert seen == ids
    assert worker.held_tasks == {}
    for n, task_id in enumerate(ids):
        stored = client.get(task_id)
        assert stored.status is TaskStatus.COMPLETED
        assert stored.result == {"done": n}
        assert stored.lease_token is None
        assert stored.locked_by is None
    assert client.count_by_status()["completed"] == 5


def test_follows_the_worker_strategy_and_types(db: QueueDatabase) -> None:
    client = QueueClient(db)
    client.enqueue("other", {})
    low = client.enqueue("job", {}, priority=500)
    high = client.enqueue("job", {}, priority=1)
    first = client.enqueue("job", {}, priority=0)
    worker = QueueWorker(db, "w1", strategy="priority", task_types=["job"])
    task = worker.claim_next_task()
    assert task is not None
    assert task.id == first
    task = worker.complete_and_claim(task)
    assert task is not None
    assert task.id == high
    task = worker.complete_and_claim(task)
    assert task is not None
    assert task.id == low
    assert worker.complete_and_claim(task) is None
    assert client.count_by_status()["queued"] == 1  # "other" is not this worker's type


def test_lost_lease_claims_nothing_and_changes_nothing(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    first = client.enqueue("job", {})
    slow = QueueWorker(clocked_db, "slow", lease_duration=5)
    task = slow.claim_next_task()
    assert task is not None
    assert task.id == first
    clock.advance(6)
    rescuer = QueueWorker(clocked_db, "rescuer")
    rescued = rescuer.claim_next_task()
    assert rescued is not None
    assert rescued.id == first
    second = client.enqueue("job", {})
    with pytest.raises(LeaseLostError, match="no task was claimed"):
        slow.complete_and_claim(task, "late")
    assert client.get(second).status is TaskStatus.QUEUED
    assert client.get(first).locked_by == "rescuer"
    assert client.get(first).result is None
    assert slow.held_tasks == {}


def test_unserialisable_result_changes_nothing(db: QueueDatabase) -> None:
    client = QueueClient(db)
    first, second = client.enqueue_many([{"task_type": "job"}, {"task_type": "job"}])
    worker = QueueWorker(db, "w1")
    task = worker.claim_next_task()
    assert task is not None
    with pytest.raises(PayloadError):
        worker.complete_and_claim(task, {"bad": object()})
    assert client.get(first).status is TaskStatus.LEASED
    assert client.get(second).status is TaskStatus.QUEUED
    assert set(worker.held_tasks) == {first}
    following = worker.complete_and_claim(task, {"ok": True})
    assert following is not None
    assert following.id == second


def test_task_not_held_is_refused(db: QueueDatabase) -> None:
    client = QueueClient(db)
    task_id = client.enqueue("job", {})
    worker = QueueWorker(db, "w1")
    with pytest.raises(LeaseLostError, match="does not hold it"):
        worker.complete_and_claim(task_id)
    assert client.get(task_id).status is TaskStatus.QUEUED


def test_complete_many_in_one_statement_reports_each_task(
    clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    client = QueueClient(clocked_db)
    ids = client.enqueue_many([{"task_type": "job"} for _ in range(4)])
    worker = QueueWorker(clocked_db, "w1", lease_duration=5)
    held = worker.claim_batch(4)
    for task in held[1:]:
        worker.renew_lease(task, extend_by=100)
    clock.advance(6)
    thief = QueueWorker(clocked_db, "thief")
    assert [t.id for t in thief.claim_batch(4)] == [ids[0]]
    # The same task twice and a lost lease in one batch: each completed once, the lost one skipped.
    done = worker.complete_many([held[1], held[1], held[0], held[2], held[3]], [1, 1, 0, 2, 3])
    assert done == [ids[1], ids[2], ids[3]]
    assert [client.get(i).result for i in ids[1:]] == [1, 2, 3]
    assert client.get(ids[0]).locked_by == "thief"
    assert client.get(ids[0]).result is None
