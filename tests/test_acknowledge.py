"""``QueueWorker.acknowledge``: group-committed outcomes of many attempts plus the next claim."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from prismq.queue import (
    Ack,
    AckKind,
    LeaseLostError,
    PayloadError,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    TaskStatus,
    ValidationError,
)

if TYPE_CHECKING:
    from conftest import FakeClock


def _enqueue(db: QueueDatabase, count: int, **options: object) -> list[int]:
    return QueueClient(db).enqueue_many(
        [{"task_type": "job", "payload": {"n": n}, **options} for n in range(count)]
    )


def test_mixed_outcomes_are_written_together_and_the_claim_rides_along(db: QueueDatabase) -> None:
    ids = _enqueue(db, 7, max_attempts=3)
    worker = QueueWorker(db, "w1")
    tasks = worker.claim_batch(5)
    done, retried, dead, cancelled, released = tasks
    results, following = worker.acknowledge(
        [
            Ack.complete(done.id, {"ok": 1}),
            Ack.fail(retried.id, ValueError("flaky")),
            Ack.fail(dead.id, "bad input", retry=False),
            Ack.cancel(cancelled.id, "user asked"),
            Ack.release(released.id),
        ],
        claim=10,
    )
    assert [r.saved for r in results] == [True] * 5
    assert [r.status for r in results] == [
        TaskStatus.COMPLETED,
        TaskStatus.QUEUED,
        TaskStatus.DEAD,
        TaskStatus.CANCELLED,
        TaskStatus.QUEUED,
    ]
    # The claim in the same transaction sees the released and retried-later tasks correctly:
    # the released one is ready again, the retried one waits for its backoff.
    assert sorted(t.id for t in following) == sorted([*ids[5:], released.id])
    client = QueueClient(db)
    assert client.get(done.id).result == {"ok": 1}
    stored_retry = client.get(retried.id)
    assert stored_retry.status is TaskStatus.QUEUED
    assert stored_retry.last_error == "ValueError: flaky"
    assert "ValueError" in (stored_retry.last_traceback or "") or stored_retry.last_traceback is None
    assert client.get(dead.id).last_error == "bad input"
    assert client.get(cancelled.id).status is TaskStatus.CANCELLED
    assert client.get(released.id).attempts == 1  # released (0) then claimed again (1)
    assert results[4].attempts == 0
    assert set(worker.held_tasks) == {t.id for t in following}


def test_a_lost_lease_in_a_batch_is_reported_for_that_task_only(
    clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    _enqueue(clocked_db, 3)
    slow = QueueWorker(clocked_db, "slow", lease_duration=1, reclaim_interval=1000)
    first, second = slow.claim_batch(2)
    clock.advance(2)  # both leases of "slow" expire
    (third,) = slow.claim_batch(1)  # a fresh lease, still its own
    thief = QueueWorker(clocked_db, "thief", lease_duration=60, reclaim_interval=0)
    stolen = thief.claim_batch(2)  # reclaims the expired leases and takes both tasks
    assert {t.id for t in stolen} == {first.id, second.id}
    fourth = QueueClient(clocked_db).enqueue("job")
    results, following = slow.acknowledge(
        [Ack.complete(first.id, "a"), Ack.complete(second.id, "b"), Ack.complete(third.id, "c")],
        claim=5,
    )
    assert [r.saved for r in results] == [False, False, True]
    for lost in results[:2]:
        assert isinstance(lost.error, LeaseLostError)
        assert "thief" in str(lost.error)
        assert str(lost.ack.task_id) in str(lost.error)
    assert [t.id for t in following] == [fourth]  # the claim was still made
    client = QueueClient(clocked_db)
    assert client.get(first.id).status is TaskStatus.LEASED  # the thief's attempt is untouched
    assert client.get(first.id).locked_by == "thief"
    assert client.get(third.id).result == "c"
    assert set(slow.held_tasks) == {fourth}


def test_an_unstorable_result_is_refused_and_the_task_stays_held(db: QueueDatabase) -> None:
    _enqueue(db, 2)
    worker = QueueWorker(db, "w1", max_result_bytes=64)
    one, two = worker.claim_batch(2)
    results, _ = worker.acknowledge([Ack.complete(one.id, "x" * 500), Ack.complete(two.id, {1, 2})])
    assert [r.saved for r in results] == [False, False]
    assert all(isinstance(r.error, PayloadError) for r in results)
    assert set(worker.held_tasks) == {one.id, two.id}
    assert QueueClient(db).get(one.id).status is TaskStatus.LEASED
    # The runner then fails such a task for good; that works on the same lease.
    results, _ = worker.acknowledge([Ack.fail(one.id, "result too large", retry=False)])
    assert results[0].status is TaskStatus.DEAD


def test_a_task_not_held_is_reported_and_nothing_else_is_stopped(db: QueueDatabase) -> None:
    _enqueue(db, 2)
    worker = QueueWorker(db, "w1")
    (task,) = worker.claim_batch(1)
    results, following = worker.acknowledge([Ack.complete(999_999), Ack.complete(task.id)], claim=1)
    assert results[0].saved is False
    assert isinstance(results[0].error, LeaseLostError)
    assert results[1].saved is True
    assert len(following) == 1


@pytest.mark.parametrize(
    ("acks", "claim", "message"),
    [
        ([], -1, "claim must be an integer from 0 to 1000"),
        ([], 1001, "claim must be an integer from 0 to 1000"),
        ([], True, "claim must be an integer"),
        ([Ack.complete(1), Ack.fail(1, "x")], 0, "task 1 is acknowledged twice"),
        ([Ack.complete("x")], 0, "task id must be an integer"),  # type: ignore[arg-type]
    ],
)
def test_bad_calls_are_refused_before_anything_is_written(
    db: QueueDatabase, acks: list[Ack], claim: int, message: str
) -> None:
    _enqueue(db, 1)
    worker = QueueWorker(db, "w1")
    (task,) = worker.claim_batch(1)
    with pytest.raises(ValidationError, match=message):
        worker.acknowledge(acks, claim=claim)
    assert set(worker.held_tasks) == {task.id}
    assert QueueClient(db).get(task.id).status is TaskStatus.LEASED


def test_a_release_delay_is_validated_per_ack(db: QueueDatabase) -> None:
    _enqueue(db, 1)
    worker = QueueWorker(db, "w1")
    (task,) = worker.claim_batch(1)
    with pytest.raises(ValidationError):
        worker.acknowledge([Ack.release(task.id, delay=-1)])
    assert set(worker.held_tasks) == {task.id}


def test_ack_kinds_name_the_outcome() -> None:
    assert Ack.complete(1, 5) == Ack(1, AckKind.COMPLETE, result=5)
    assert Ack.fail(2, "x", retry=False).retry is False
    assert Ack.cancel(3).kind is AckKind.CANCEL
    assert Ack.release(4, 2.5).delay == 2.5


@pytest.mark.sqlite_only
def test_held_leases_stay_consistent_under_threads(db: QueueDatabase) -> None:
    """The thread-safety contract: progress from handler threads never resurrects a lease
    that the database thread has settled meanwhile."""
    _enqueue(db, 200)
    worker = QueueWorker(db, "w1")
    tasks = worker.claim_batch(200)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reporter(chunk: list[int]) -> None:
        while not stop.is_set():
            for tid in chunk:
                try:
                    worker.update_progress(tid, 50)
                except LeaseLostError:
                    pass
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)
                    return

    ids = [t.id for t in tasks]
    threads = [threading.Thread(target=reporter, args=(ids[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        for start in range(0, 200, 20):
            results, _ = worker.acknowledge([Ack.complete(tid) for tid in ids[start : start + 20]])
            assert all(r.saved for r in results)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert worker.held_tasks == {}
    assert QueueClient(db).count_by_status()["completed"] == 200
