"""QueueWorker primitives: claim, lease, renew, heartbeat, progress, finish, registry."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import pytest

from prismq.queue import (
    ConfigError,
    LeaseLostError,
    PayloadError,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    RetryPolicy,
    ScheduleError,
    TaskStatus,
    TaskTypeError,
    ValidationError,
)

if TYPE_CHECKING:
    from conftest import FakeClock


def ts(value: Any) -> float | None:
    return None if value is None else value.timestamp()


@pytest.fixture
def qc(clocked_db: QueueDatabase) -> QueueClient:
    return QueueClient(clocked_db)


# -- construction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"worker_id": ""}, ValidationError),
        ({"worker_id": "   "}, ValidationError),
        ({"worker_id": "w" * 201}, ValidationError),
        ({"worker_id": 5}, ValidationError),
        ({"lease_duration": 0.01}, ScheduleError),
        ({"lease_duration": -5}, ScheduleError),
        ({"lease_duration": float("nan")}, ScheduleError),
        ({"task_types": []}, ValidationError),
        ({"task_types": ["ok", ""]}, TaskTypeError),
        ({"strategy": "random-ish"}, ConfigError),
        ({"reclaim_interval": -1}, ScheduleError),
    ],
)
def test_bad_worker_settings(db: QueueDatabase, kwargs: dict[str, Any], error: type[Exception]) -> None:
    args = {"worker_id": "w", **kwargs}
    with pytest.raises(error):
        QueueWorker(db, **args)
    # A refused worker did not register.
    assert QueueClient(db).list_workers() == []


def test_worker_id_and_lease_from_environment(db: QueueDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISMQ_QUEUE_WORKER_ID", "env-worker")
    monkeypatch.setenv("PRISMQ_QUEUE_LEASE_DURATION", "42")
    worker = QueueWorker(db)
    assert worker.worker_id == "env-worker"
    assert worker.lease_duration == 42.0
    monkeypatch.delenv("PRISMQ_QUEUE_WORKER_ID")
    monkeypatch.delenv("PRISMQ_QUEUE_LEASE_DURATION")
    default = QueueWorker(db, register=False)
    assert default.worker_id == f"{socket.gethostname()}-{os.getpid()}"
    assert default.lease_duration == 60.0


def test_task_types_are_deduplicated(db: QueueDatabase) -> None:
    worker = QueueWorker(db, "w", task_types=["a", "b", "a"])
    assert worker.task_types == ("a", "b")
    assert "QueueWorker('w'" in repr(worker)


# -- claiming ----------------------------------------------------------------------------


def test_claim_next_task_leases_it(clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock) -> None:
    task_id = qc.enqueue("job", {"x": 1})
    worker = QueueWorker(clocked_db, "w-1", lease_duration=30)
    clock.advance(2)
    task = worker.claim_next_task()
    assert task is not None
    assert task.id == task_id
    assert task.status is TaskStatus.LEASED
    assert task.attempts == 1
    assert task.locked_by == "w-1"
    assert task.lease_token
    assert ts(task.lease_until) == pytest.approx(clock.now + 30, abs=1e-5)
    assert ts(task.started_at) == pytest.approx(clock.now, abs=1e-5)
    assert task.payload == {"x": 1}
    assert qc.get(task_id) == task
    assert worker.held_tasks == {task_id: task}
    assert worker.claim_next_task() is None


def test_every_claim_gets_a_fresh_token(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    tokens = set()
    for _ in range(5):
        task = worker.claim_next_task()
        assert task is not None
        tokens.add(task.lease_token)
        worker.release_task(task)
    assert len(tokens) == 5


def test_claim_batch(clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock) -> None:
    ids = qc.enqueue_many([{"task_type": "job", "payload": n} for n in range(10)])
    worker = QueueWorker(clocked_db, "w-batch", lease_duration=20)
    batch = worker.claim_batch(4)
    assert [t.id for t in batch] == ids[:4]
    assert all(t.status is TaskStatus.LEASED and t.attempts == 1 for t in batch)
    assert all(t.locked_by == "w-batch" for t in batch)
    assert all(ts(t.lease_until) == pytest.approx(clock.now + 20, abs=1e-5) for t in batch)
    assert len({t.lease_token for t in batch}) == 1
    rest = worker.claim_batch(100)
    assert [t.id for t in rest] == ids[4:]
    assert worker.claim_batch(5) == []
    assert set(worker.held_tasks) == set(ids)
    assert qc.count_by_status()["leased"] == 10


@pytest.mark.parametrize("count", [0, -1, 1001, 2.0, True, "3"])
def test_claim_batch_bad_count(db: QueueDatabase, count: Any) -> None:
    QueueClient(db).enqueue("job")
    with pytest.raises(ValidationError):
        QueueWorker(db, "w").claim_batch(count)
    assert QueueClient(db).count_by_status()["queued"] == 1


def test_task_types_filter(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    qc.enqueue_many([{"task_type": t} for t in ["a", "b", "c", "a", "b", "c", "d"]])
    only_b = QueueWorker(clocked_db, "w-b", task_types=["b"])
    a_or_c = QueueWorker(clocked_db, "w-ac", task_types=["a", "c"])
    claimed_b = only_b.claim_batch(10)
    assert [t.task_type for t in claimed_b] == ["b", "b"]
    claimed_ac = []
    while (task := a_or_c.claim_next_task()) is not None:
        claimed_ac.append(task.task_type)
    assert sorted(claimed_ac) == ["a", "a", "c", "c"]
    assert only_b.claim_next_task() is None
    assert [t.task_type for t in qc.list(status="queued")] == ["d"]


def test_delayed_task_not_claimed_before_run_after(
    clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock
) -> None:
    task_id = qc.enqueue("job", delay=30)
    worker = QueueWorker(clocked_db, "w")
    typed = QueueWorker(clocked_db, "w-typed", task_types=["job", "other"])
    assert worker.claim_next_task() is None
    clock.advance(29.99)
    assert worker.claim_next_task() is None
    assert typed.claim_batch(5) == []
    clock.advance(0.02)
    task = typed.claim_next_task()
    assert task is not None
    assert task.id == task_id


# -- while running -------------------------------------------------------------------------


def test_renew_lease(clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock) -> None:
    qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w", lease_duration=10)
    task = worker.claim_next_task()
    assert task is not None
    clock.advance(8)
    renewed = worker.renew_lease(task)
    assert ts(renewed.lease_until) == pytest.approx(clock.now + 10, abs=1e-5)
    assert renewed.lease_token == task.lease_token
    longer = worker.renew_lease(task.id, extend_by=120)
    assert ts(longer.lease_until) == pytest.approx(clock.now + 120, abs=1e-5)
    # Renewed in time: a later claim does not reclaim it.
    clock.advance(60)
    assert QueueWorker(clocked_db, "other").claim_next_task() is None
    assert qc.get(task.id).locked_by == "w"
    with pytest.raises(ScheduleError):
        worker.renew_lease(task, extend_by=-1)


def test_heartbeat_renews_every_held_lease_and_the_registry(
    clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock
) -> None:
    qc.enqueue_many([{"task_type": "job"} for _ in range(3)])
    worker = QueueWorker(clocked_db, "w-hb", lease_duration=10)
    held = worker.claim_batch(3)
    clock.advance(7)
    renewed = worker.heartbeat()
    assert sorted(t.id for t in renewed) == sorted(t.id for t in held)
    assert all(ts(t.lease_until) == pytest.approx(clock.now + 10, abs=1e-5) for t in renewed)
    (info,) = qc.list_workers()
    assert ts(info.last_heartbeat) == pytest.approx(clock.now, abs=1e-5)


def test_heartbeat_drops_lost_leases_without_raising(
    clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock
) -> None:
    qc.enqueue_many([{"task_type": "job"}, {"task_type": "job"}])
    slow = QueueWorker(clocked_db, "slow", lease_duration=5)
    first, second = slow.claim_batch(2)
    slow.renew_lease(second, extend_by=100)
    clock.advance(6)
    thief = QueueWorker(clocked_db, "thief", lease_duration=50)
    stolen = thief.claim_next_task()
    assert stolen is not None
    assert stolen.id == first.id
    renewed = slow.heartbeat()
    assert [t.id for t in renewed] == [second.id]
    assert set(slow.held_tasks) == {second.id}
    assert qc.get(first.id).locked_by == "thief"


def test_update_progress(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    assert worker.update_progress(task, 0).progress == 0
    updated = worker.update_progress(task, 42.5, "decoding frames")
    assert updated.progress == 42.5
    assert updated.progress_message == "decoding frames"
    assert qc.get(task.id).progress == 42.5
    assert worker.update_progress(task, 100, "x" * 1000).progress == 100


@pytest.mark.parametrize(
    ("percent", "message"),
    [
        (-0.1, None),
        (100.1, None),
        (float("nan"), None),
        (True, None),
        ("50", None),
        (50, "m" * 1001),
        (50, 7),
    ],
)
def test_update_progress_bounds(
    clocked_db: QueueDatabase, qc: QueueClient, percent: Any, message: Any
) -> None:
    qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    worker.update_progress(task, 10, "before")
    with pytest.raises(ValidationError):
        worker.update_progress(task, percent, message)
    stored = qc.get(task.id)
    assert stored.progress == 10
    assert stored.progress_message == "before"


def test_progress_is_reset_by_a_new_claim(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    worker.update_progress(task, 80, "almost")
    worker.release_task(task)
    again = worker.claim_next_task()
    assert again is not None
    assert again.progress is None
    assert again.progress_message is None


# -- finishing -----------------------------------------------------------------------------


def test_complete_task_with_result(clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock) -> None:
    task_id = qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    clock.advance(4)
    worker.complete_task(task, {"frames": 120, "ok": True})
    done = qc.get(task_id)
    assert done.status is TaskStatus.COMPLETED
    assert done.result == {"frames": 120, "ok": True}
    assert ts(done.finished_at) == pytest.approx(clock.now, abs=1e-5)
    assert done.lease_token is None
    assert done.locked_by is None
    assert done.lease_until is None
    assert done.progress == 100
    assert done.attempts == 1
    assert worker.held_tasks == {}
    # Completing twice is refused.
    with pytest.raises(LeaseLostError):
        worker.complete_task(task)


def test_complete_without_result(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    task_id = qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    assert worker.claim_next_task() is not None
    worker.complete_task(task_id)
    assert qc.get(task_id).status is TaskStatus.COMPLETED
    assert qc.get_result(task_id) is None


def test_complete_with_bad_result_keeps_task_leased(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    task_id = qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w", max_result_bytes=50)
    task = worker.claim_next_task()
    assert task is not None
    for bad in ({1, 2}, float("inf"), "y" * 100):
        with pytest.raises(PayloadError):
            worker.complete_task(task, bad)
        assert qc.get(task_id).status is TaskStatus.LEASED
        assert task_id in worker.held_tasks
    worker.complete_task(task, "fine")
    assert qc.get_result(task_id) == "fine"


def test_complete_many(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    ids = qc.enqueue_many([{"task_type": "job"} for _ in range(4)])
    worker = QueueWorker(clocked_db, "w")
    batch = worker.claim_batch(4)
    done = worker.complete_many(batch[:3], results=[{"n": 0}, None, [1]])
    assert done == ids[:3]
    assert [qc.get(i).result for i in ids[:3]] == [{"n": 0}, None, [1]]
    assert qc.get(ids[3]).status is TaskStatus.LEASED
    # Not held any more: skipped, not raised.
    assert worker.complete_many([ids[0], ids[3]]) == [ids[3]]
    assert qc.count_by_status()["completed"] == 4
    assert worker.complete_many([]) == []
    with pytest.raises(ValidationError):
        worker.complete_many([ids[0]], results=[1, 2])


def test_fail_task_with_retry_keeps_error_and_traceback(
    clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock
) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=4.0, jitter=0.25)
    task_id = qc.enqueue("job", retry_policy=policy)
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    try:
        raise RuntimeError("the handler broke")
    except RuntimeError as exc:
        failed = worker.fail_task(task, exc)
    assert failed.status is TaskStatus.QUEUED
    assert failed.attempts == 1
    assert failed.last_error == "RuntimeError: the handler broke"
    assert failed.last_traceback is not None
    assert "Traceback" in failed.last_traceback
    assert "the handler broke" in failed.last_traceback
    assert clock.now + 3.0 - 1e-5 <= ts(failed.run_after) <= clock.now + 5.0 + 1e-5
    assert failed.finished_at is None
    assert failed.lease_token is None
    assert worker.held_tasks == {}
    assert qc.get(task_id) == failed


def test_fail_task_with_message_and_traceback_text(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    failed = worker.fail_task(task, "x" * 20_000, traceback="tb text")
    assert failed.last_error == "x" * 10_000
    assert failed.last_traceback == "tb text"


def test_dead_after_max_attempts(clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock) -> None:
    task_id = qc.enqueue("job", max_attempts=3, retry_policy=RetryPolicy(base_delay=1, jitter=0))
    worker = QueueWorker(clocked_db, "w")
    statuses = []
    for attempt in range(1, 4):
        task = worker.claim_next_task()
        assert task is not None
        assert task.attempts == attempt
        statuses.append(worker.fail_task(task, f"fail {attempt}").status)
        clock.advance(100)
    assert statuses == [TaskStatus.QUEUED, TaskStatus.QUEUED, TaskStatus.DEAD]
    dead = qc.get(task_id)
    assert dead.attempts == 3
    assert dead.attempts_left == 0
    assert dead.last_error == "fail 3"
    assert dead.is_terminal
    assert worker.claim_next_task() is None


def test_fail_with_retry_false_is_dead(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    task_id = qc.enqueue("job", max_attempts=10)
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    assert worker.fail_task(task, ValueError("bad input"), retry=False).status is TaskStatus.DEAD
    assert qc.get(task_id).last_error == "ValueError: bad input"


def test_release_task_does_not_count_the_attempt(
    clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock
) -> None:
    task_id = qc.enqueue("job", max_attempts=1)
    worker = QueueWorker(clocked_db, "w")
    for _ in range(3):
        task = worker.claim_next_task()
        assert task is not None
        assert task.attempts == 1
        released = worker.release_task(task)
        assert released.status is TaskStatus.QUEUED
        assert released.attempts == 0
        assert released.lease_token is None
    task = worker.claim_next_task()
    assert task is not None
    delayed = worker.release_task(task, delay=15)
    assert ts(delayed.run_after) == pytest.approx(clock.now + 15, abs=1e-5)
    assert worker.claim_next_task() is None
    clock.advance(15.01)
    assert worker.claim_next_task() is not None
    assert qc.get(task_id).status is TaskStatus.LEASED


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), "soon"])
def test_release_with_bad_delay_changes_nothing_and_keeps_the_lease(
    clocked_db: QueueDatabase, qc: QueueClient, delay: Any
) -> None:
    task_id = qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    with pytest.raises(ScheduleError):
        worker.release_task(task, delay=delay)
    assert qc.get(task_id) == task
    # Still held: the worker can carry on with its lease.
    assert task_id in worker.held_tasks
    worker.complete_task(task, "finished after all")
    assert qc.get_result(task_id) == "finished after all"


def test_acknowledge_cancel(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    task_id = qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    qc.cancel(task_id)
    assert worker.is_cancel_requested(task)
    cancelled = worker.acknowledge_cancel(task, reason="user asked")
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.last_error == "user asked"
    assert worker.held_tasks == {}
    assert not worker.is_cancel_requested(999_999)


def test_calls_on_tasks_never_claimed_raise_lease_lost(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    task_id = qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    before = qc.get(task_id)
    for call in (
        lambda: worker.complete_task(task_id),
        lambda: worker.fail_task(task_id, "x"),
        lambda: worker.renew_lease(task_id),
        lambda: worker.update_progress(task_id, 5),
        lambda: worker.release_task(task_id),
        lambda: worker.acknowledge_cancel(task_id),
    ):
        with pytest.raises(LeaseLostError):
            call()
    assert qc.get(task_id) == before


def test_close_releases_held_tasks_and_deregisters(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    qc.enqueue_many([{"task_type": "job"} for _ in range(2)])
    with QueueWorker(clocked_db, "w-close") as worker:
        worker.claim_batch(2)
        assert [w.worker_id for w in qc.list_workers()] == ["w-close"]
    assert qc.count_by_status()["queued"] == 2
    assert all(t.attempts == 0 for t in qc.list())
    assert qc.list_workers() == []


def test_close_without_release_leaves_leases(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w")
    worker.claim_next_task()
    worker.close(release=False)
    assert qc.count_by_status()["leased"] == 1


# -- registry --------------------------------------------------------------------------------


def test_worker_registry(clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock) -> None:
    started = clock.now
    first = QueueWorker(clocked_db, "w-a", task_types=["x", "y"], strategy="priority")
    unregistered = QueueWorker(clocked_db, "w-hidden", register=False)
    clock.advance(100)
    second = QueueWorker(clocked_db, "w-b")
    workers = {w.worker_id: w for w in qc.list_workers()}
    assert set(workers) == {"w-a", "w-b"}
    info = workers["w-a"]
    assert info.hostname == socket.gethostname()
    assert info.pid == os.getpid()
    assert info.task_types == ("x", "y")
    assert info.strategy == "priority"
    assert ts(info.started_at) == pytest.approx(started, abs=1e-5)
    assert workers["w-b"].task_types is None
    assert workers["w-b"].strategy == "fifo"

    # w-a has been silent for 100 s, w-b just registered.
    assert [w.worker_id for w in qc.list_workers(stale_after=50)] == ["w-a"]
    first.heartbeat()
    clock.advance(30)
    assert [w.worker_id for w in qc.list_workers(stale_after=50)] == []
    assert {w.worker_id for w in qc.list_workers(stale_after=10)} == {"w-a", "w-b"}

    second.deregister()
    second.deregister()  # harmless twice
    assert [w.worker_id for w in qc.list_workers()] == ["w-a"]
    unregistered.register()
    assert [w.worker_id for w in qc.list_workers()] == ["w-a", "w-hidden"]


def test_claiming_refreshes_the_registry_heartbeat(
    clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock
) -> None:
    worker = QueueWorker(clocked_db, "w", lease_duration=8)
    clock.advance(50)
    assert worker.claim_next_task() is None
    (info,) = qc.list_workers()
    assert ts(info.last_heartbeat) == pytest.approx(clock.now, abs=1e-5)


def test_registering_same_id_again_replaces_the_entry(clocked_db: QueueDatabase, qc: QueueClient) -> None:
    QueueWorker(clocked_db, "same", strategy="fifo")
    QueueWorker(clocked_db, "same", strategy="lifo")
    (info,) = qc.list_workers()
    assert info.strategy == "lifo"


def test_update_progress_renews_the_lease(
    clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock
) -> None:
    """Reporting progress keeps a long task's lease alive, like renew_lease()."""
    qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w", lease_duration=60)
    task = worker.claim_next_task()
    assert task is not None
    assert task.lease_until is not None
    claimed_until = task.lease_until.timestamp()
    clock.now += 50
    updated = worker.update_progress(task, 30, "still going")
    assert updated.lease_until is not None
    assert updated.lease_until.timestamp() == clock.now + 60 > claimed_until
    # Past the claim's original lease: the task is not reclaimed, the worker still holds it.
    clock.now += 50
    assert QueueWorker(clocked_db, "thief").claim_next_task() is None
    worker.complete_task(task)
    assert qc.get(task.id).status.value == "completed"


def test_update_progress_never_shortens_a_longer_lease(
    clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock
) -> None:
    qc.enqueue("job")
    worker = QueueWorker(clocked_db, "w", lease_duration=60)
    task = worker.claim_next_task()
    assert task is not None
    long = worker.renew_lease(task, extend_by=600)
    assert long.lease_until is not None
    updated = worker.update_progress(task, 10)
    assert updated.lease_until == long.lease_until


def test_update_progress_after_reclaim_does_not_renew(
    clocked_db: QueueDatabase, qc: QueueClient, clock: FakeClock
) -> None:
    """The renewal is fenced: a worker whose lease was reclaimed cannot extend the new holder's."""
    qc.enqueue("job")
    late = QueueWorker(clocked_db, "late", lease_duration=60)
    task = late.claim_next_task()
    assert task is not None
    clock.now += 61
    fresh = QueueWorker(clocked_db, "fresh", lease_duration=60)
    taken = fresh.claim_next_task()
    assert taken is not None
    assert taken.id == task.id
    with pytest.raises(LeaseLostError):
        late.update_progress(task, 90)
    assert qc.get(task.id).lease_until == taken.lease_until
    assert qc.get(task.id).locked_by == "fresh"
