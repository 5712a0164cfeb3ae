"""QueueClient: enqueue, get, list, counts, stats, idempotency, cancel, retry, prune, wait."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from prismq.queue import (
    DEFAULT_PRIORITY,
    QueueClient,
    QueueDatabase,
    QueueTimeoutError,
    QueueWorker,
    RetryPolicy,
    TaskNotFoundError,
    TaskSpec,
    TaskStateError,
    TaskStatus,
    ValidationError,
)

if TYPE_CHECKING:
    from conftest import FakeClock


def ts(task_time: datetime | None) -> float | None:
    return None if task_time is None else task_time.timestamp()


# -- enqueue and get ---------------------------------------------------------------------


def test_enqueue_and_get_round_trip(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    payload = {"to": "a@example.com", "n": [1, 2.5, None, True], "é": "ü"}
    task_id = client.enqueue("send_email", payload, priority=7, max_attempts=4, idempotency_key="mail-1")
    task = client.get(task_id)
    assert task.id == task_id
    assert task.task_type == "send_email"
    assert task.payload == payload
    assert task.status is TaskStatus.QUEUED
    assert task.priority == 7
    assert task.attempts == 0
    assert task.max_attempts == 4
    assert task.attempts_left == 4
    assert task.idempotency_key == "mail-1"
    assert ts(task.created_at) == pytest.approx(clock.now, abs=1e-5)
    assert ts(task.run_after) == pytest.approx(clock.now, abs=1e-5)
    assert task.created_at.tzinfo is not None
    assert task.lease_until is None
    assert task.locked_by is None
    assert task.lease_token is None
    assert task.result is None
    assert task.cancel_requested is False
    assert task.started_at is None
    assert task.finished_at is None
    assert not task.is_terminal


def test_enqueue_defaults(client: QueueClient) -> None:
    task = client.get(client.enqueue("job"))
    assert task.payload is None
    assert task.priority == DEFAULT_PRIORITY == 100
    assert task.max_attempts == RetryPolicy().max_attempts
    assert task.retry_policy == RetryPolicy().to_dict()
    assert task.idempotency_key is None


@pytest.mark.parametrize("payload", [None, 0, -1.5, "text", [], {}, [1, "a", {"b": None}], True])
def test_any_json_value_is_a_payload(client: QueueClient, payload: object) -> None:
    assert client.get(client.enqueue("job", payload)).payload == payload


def test_priority_bounds_are_inclusive(client: QueueClient) -> None:
    assert client.get(client.enqueue("job", priority=0)).priority == 0
    assert client.get(client.enqueue("job", priority=1000)).priority == 1000


def test_delay_and_run_after(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    delayed = client.get(client.enqueue("job", delay=30))
    assert ts(delayed.run_after) == pytest.approx(clock.now + 30, abs=1e-5)
    when = datetime.fromtimestamp(clock.now + 3600, tz=timezone.utc)
    at = client.get(client.enqueue("job", run_after=when))
    assert at.run_after == when
    other_zone = when.astimezone(timezone(timedelta(hours=-5)))
    assert client.get(client.enqueue("job", run_after=other_zone)).run_after == when
    epoch = client.get(client.enqueue("job", run_after=clock.now + 10))
    assert ts(epoch.run_after) == pytest.approx(clock.now + 10, abs=1e-5)
    # A run_after in the past is allowed: the task is ready at once.
    past = client.get(client.enqueue("job", run_after=clock.now - 100))
    assert ts(past.run_after) == pytest.approx(clock.now - 100, abs=1e-5)


def test_get_unknown_id_raises(client: QueueClient) -> None:
    with pytest.raises(TaskNotFoundError):
        client.get(12345)


def test_get_accepts_a_task(client: QueueClient) -> None:
    task = client.get(client.enqueue("job"))
    assert client.get(task) == task  # type: ignore[arg-type]


# -- idempotency -------------------------------------------------------------------------


def test_idempotency_key_returns_existing_id(client: QueueClient) -> None:
    first = client.enqueue("job", {"v": 1}, idempotency_key="order-42")
    second = client.enqueue("job", {"v": 2}, idempotency_key="order-42")
    third = client.enqueue("other", idempotency_key="order-42")
    assert first == second == third
    assert client.get(first).payload == {"v": 1}
    assert sum(client.count_by_status().values()) == 1
    assert client.enqueue("job", idempotency_key="order-43") != first


def test_idempotency_within_one_batch_and_across_batches(client: QueueClient) -> None:
    ids = client.enqueue_many(
        [
            {"task_type": "job", "idempotency_key": "a"},
            {"task_type": "job"},
            {"task_type": "job", "idempotency_key": "a"},
            {"task_type": "job", "idempotency_key": "b"},
        ]
    )
    assert ids[0] == ids[2]
    assert len(set(ids)) == 3
    again = client.enqueue_many([TaskSpec("job", idempotency_key="b"), TaskSpec("job", idempotency_key="c")])
    assert again[0] == ids[3]
    assert sum(client.count_by_status().values()) == 4


def test_idempotency_key_is_free_again_after_prune(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    first = client.enqueue("job", idempotency_key="k")
    client.cancel(first)
    newest = client.enqueue("other")
    clock.advance(100)
    assert client.prune(10) == 1
    again = client.enqueue("job", idempotency_key="k")
    assert again != first
    assert again > newest


def test_prune_keeps_the_newest_task_so_ids_are_never_reused(
    clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    client = QueueClient(clocked_db)
    ids = client.enqueue_many([{"task_type": "job"} for _ in range(3)])
    for task_id in ids:
        client.cancel(task_id)
    clock.advance(100)
    assert client.prune(10) == 2
    assert [t.id for t in client.list()] == [ids[-1]]
    assert client.enqueue("job") == ids[-1] + 1


# -- enqueue_many ------------------------------------------------------------------------


def test_enqueue_many_returns_ids_in_order(client: QueueClient) -> None:
    specs = [TaskSpec(f"t{n % 3}", {"n": n}, priority=n) for n in range(25)]
    ids = client.enqueue_many(specs)
    assert len(ids) == 25
    assert ids == sorted(ids)
    for n, task_id in enumerate(ids):
        task = client.get(task_id)
        assert task.payload == {"n": n}
        assert task.task_type == f"t{n % 3}"
        assert task.priority == n


def test_enqueue_many_accepts_dicts_and_generators(client: QueueClient) -> None:
    ids = client.enqueue_many({"task_type": "gen", "payload": n} for n in range(5))
    assert [client.get(i).payload for i in ids] == [0, 1, 2, 3, 4]


def test_enqueue_many_applies_each_tasks_own_policy(db: QueueDatabase) -> None:
    slow = RetryPolicy(max_attempts=7, base_delay=5.0)
    own = RetryPolicy(max_attempts=2, base_delay=9.0)
    client = QueueClient(db, retry_policies={"slow": slow})
    specs = [
        TaskSpec("fast"),
        TaskSpec("slow"),
        {"task_type": "slow", "max_attempts": 4},
        TaskSpec("slow", retry_policy=own),
        {"task_type": "fast", "retry_policy": own, "max_attempts": 9},
        TaskSpec("slow"),
        TaskSpec("fast"),
    ]
    tasks = [client.get(i) for i in client.enqueue_many(specs)]
    default = RetryPolicy().to_dict()
    assert [(t.max_attempts, t.retry_policy) for t in tasks] == [
        (3, default),
        (7, slow.to_dict()),
        (4, slow.to_dict()),
        (2, own.to_dict()),
        (9, own.to_dict()),
        (7, slow.to_dict()),
        (3, default),
    ]


def test_each_enqueue_stores_its_own_short_lived_policy(client: QueueClient) -> None:
    # Policies made and dropped per call may reuse a freed object's id; the stored policy
    # must still be the one given.
    ids = [client.enqueue("job", retry_policy=RetryPolicy(n, base_delay=n)) for n in range(1, 21)]
    for n, task_id in enumerate(ids, start=1):
        task = client.get(task_id)
        assert task.max_attempts == n
        assert task.retry_policy == RetryPolicy(max_attempts=n, base_delay=n).to_dict()


def test_enqueue_many_dicts_and_specs_store_the_same(client: QueueClient) -> None:
    fields = {"task_type": "job", "payload": {"a": [1, "é"]}, "priority": 7, "delay": 30, "max_attempts": 5}
    first, second = client.enqueue_many([TaskSpec(**fields), fields])  # type: ignore[arg-type]
    a, b = client.get(first), client.get(second)
    assert (a.task_type, a.payload, a.priority, a.run_after, a.max_attempts, a.retry_policy) == (
        b.task_type,
        b.payload,
        b.priority,
        b.run_after,
        b.max_attempts,
        b.retry_policy,
    )


def test_enqueue_many_empty(client: QueueClient) -> None:
    assert client.enqueue_many([]) == []
    assert sum(client.count_by_status().values()) == 0


def test_enqueue_many_joins_outer_transaction(db: QueueDatabase, client: QueueClient) -> None:
    def enqueue_then_fail() -> None:
        with db.transaction():
            client.enqueue_many([{"task_type": "a"}, {"task_type": "b"}])
            client.enqueue("c")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    assert sum(client.count_by_status().values()) == 0


def test_readers_see_a_batch_all_or_nothing(client: QueueClient) -> None:
    observed: set[int] = set()
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        # Another thread: its own connection, reading while the batches are written.
        try:
            while not stop.is_set():
                observed.add(sum(client.count_by_status().values()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):
            client.enqueue_many([{"task_type": "job"}] * 2000)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert observed
    assert observed <= {0, 2000, 4000, 6000}
    assert sum(client.count_by_status().values()) == 6000


# -- list --------------------------------------------------------------------------------


@pytest.fixture
def populated(clocked_db: QueueDatabase, clock: FakeClock) -> tuple[QueueClient, dict[str, list[int]]]:
    """Tasks of three types, enqueued one second apart, in several statuses."""
    client = QueueClient(clocked_db)
    ids: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    for n in range(12):
        task_type = "abc"[n % 3]
        ids[task_type].append(client.enqueue(task_type, {"n": n}))
        clock.advance(1)
    worker = QueueWorker(clocked_db, "w-list", task_types=["b"], lease_duration=300)
    done = worker.claim_next_task()
    assert done is not None
    worker.complete_task(done, {"ok": 1})
    running = worker.claim_next_task()
    assert running is not None
    client.cancel(ids["c"][0])
    return client, ids


def test_list_orders_and_pages(populated: tuple[QueueClient, dict[str, list[int]]]) -> None:
    client, ids = populated
    every = sorted(i for group in ids.values() for i in group)
    assert [t.id for t in client.list()] == every[::-1]
    assert [t.id for t in client.list(newest_first=False)] == every
    assert [t.id for t in client.list(limit=3)] == every[::-1][:3]
    assert [t.id for t in client.list(limit=3, offset=3)] == every[::-1][3:6]
    assert [t.id for t in client.list(limit=5, offset=10, newest_first=False)] == every[10:]
    assert client.list(offset=100) == []


def test_list_filters_by_status(populated: tuple[QueueClient, dict[str, list[int]]]) -> None:
    client, ids = populated
    completed = client.list(status="completed")
    assert [t.id for t in completed] == [ids["b"][0]]
    assert [t.id for t in client.list(status=TaskStatus.LEASED)] == [ids["b"][1]]
    assert [t.id for t in client.list(status="cancelled")] == [ids["c"][0]]
    finished = client.list(status=["completed", TaskStatus.CANCELLED], newest_first=False)
    assert [t.id for t in finished] == sorted([ids["b"][0], ids["c"][0]])
    assert len(client.list(status="queued")) == 9
    assert client.list(status="dead") == []


def test_list_filters_by_type(populated: tuple[QueueClient, dict[str, list[int]]]) -> None:
    client, ids = populated
    assert [t.id for t in client.list(task_type="a", newest_first=False)] == ids["a"]
    both = client.list(task_type=["a", "c"], newest_first=False)
    assert [t.id for t in both] == sorted(ids["a"] + ids["c"])
    assert client.list(task_type="nope") == []
    queued_b = client.list(task_type="b", status="queued", newest_first=False)
    assert [t.id for t in queued_b] == ids["b"][2:]


def test_list_filters_by_created_range(
    populated: tuple[QueueClient, dict[str, list[int]]], clock: FakeClock
) -> None:
    client, _ = populated
    every = [t.id for t in client.list(newest_first=False)]
    start = clock.now - 12  # the first task's creation time
    # created_after is inclusive, created_before exclusive.
    window = client.list(created_after=start + 3, created_before=start + 6, newest_first=False)
    assert [t.id for t in window] == every[3:6]
    as_datetime = client.list(
        created_after=datetime.fromtimestamp(start + 10, tz=timezone.utc), newest_first=False
    )
    assert [t.id for t in as_datetime] == every[10:]
    assert [t.id for t in client.list(created_before=start + 1)] == every[:1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"limit": 10_001},
        {"limit": "5"},
        {"limit": True},
        {"offset": -1},
        {"offset": 1.5},
        {"status": "running"},
        {"status": ["queued", "bogus"]},
        {"task_type": ""},
        {"created_after": datetime(2030, 1, 1)},
        {"created_before": "yesterday"},
    ],
)
def test_list_rejects_bad_filters(client: QueueClient, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        client.list(**kwargs)  # type: ignore[arg-type]


# -- counts and stats --------------------------------------------------------------------


def test_counts(populated: tuple[QueueClient, dict[str, list[int]]]) -> None:
    client, _ = populated
    assert client.count_by_status() == {"queued": 9, "leased": 1, "completed": 1, "dead": 0, "cancelled": 1}
    assert client.count_by_type() == {
        "a": {"queued": 4},
        "b": {"completed": 1, "leased": 1, "queued": 2},
        "c": {"cancelled": 1, "queued": 3},
    }


def test_counts_of_empty_queue(client: QueueClient) -> None:
    assert client.count_by_status() == {s.value: 0 for s in TaskStatus}
    assert client.count_by_type() == {}
    stats = client.stats()
    assert stats.total == 0
    assert stats.ready == 0
    assert stats.delayed == 0
    assert stats.oldest_ready_age is None


def test_stats(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    client.enqueue("ready")
    clock.advance(10)
    client.enqueue("ready")
    client.enqueue("later", delay=500)
    worker = QueueWorker(clocked_db, "w-stats", task_types=["ready"], lease_duration=5)
    finished = worker.claim_next_task()
    assert finished is not None
    worker.complete_task(finished)
    clock.advance(120)
    worker.claim_next_task()  # leased, lease runs out at +5 s
    clock.advance(30)

    stats = client.stats()
    assert stats.by_status == {"queued": 1, "leased": 1, "completed": 1, "dead": 0, "cancelled": 0}
    assert stats.by_type == {"ready": {"completed": 1, "leased": 1}, "later": {"queued": 1}}
    assert stats.total == 3
    assert stats.ready == 0
    assert stats.delayed == 1
    assert stats.oldest_ready_age is None
    assert stats.expired_leases == 1
    # The completion was 150 s ago: outside the last minute, inside the last 5 minutes.
    assert stats.finished_last_minute == 0
    assert stats.finished_last_5_minutes == 1
    assert [w.worker_id for w in stats.workers] == ["w-stats"]

    clock.advance(400)
    stats = client.stats()
    assert stats.ready == 1
    assert stats.delayed == 0
    assert stats.oldest_ready_age == pytest.approx(50.0, abs=1e-3)
    assert stats.finished_last_5_minutes == 0


# -- cancel --------------------------------------------------------------------------------


def test_cancel_queued_task(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job")
    clock.advance(3)
    task = client.cancel(task_id)
    assert task.status is TaskStatus.CANCELLED
    assert ts(task.finished_at) == pytest.approx(clock.now, abs=1e-5)
    assert client.get(task_id) == task
    assert QueueWorker(clocked_db, "w").claim_next_task() is None


def test_cancel_leased_task_requests_cancellation(clocked_db: QueueDatabase) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job")
    worker = QueueWorker(clocked_db, "w-cancel", lease_duration=60)
    claimed = worker.claim_next_task()
    assert claimed is not None
    assert worker.is_cancel_requested(task_id) is False
    flagged = client.cancel(task_id)
    assert flagged.status is TaskStatus.LEASED
    assert flagged.cancel_requested is True
    assert flagged.lease_token == claimed.lease_token
    assert worker.is_cancel_requested(task_id) is True
    assert worker.renew_lease(task_id).cancel_requested is True
    done = worker.acknowledge_cancel(task_id)
    assert done.status is TaskStatus.CANCELLED
    assert done.last_error == "cancelled on request"
    assert done.finished_at is not None
    assert done.lease_token is None


def test_cancel_requested_task_whose_lease_expires_becomes_cancelled(
    clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job", max_attempts=5)
    QueueWorker(clocked_db, "w-gone", lease_duration=5).claim_next_task()
    client.cancel(task_id)
    clock.advance(6)
    assert QueueWorker(clocked_db, "w-next").claim_next_task() is None
    assert client.get(task_id).status is TaskStatus.CANCELLED


@pytest.mark.parametrize("finish", ["complete", "dead", "cancelled"])
def test_cancel_finished_task_is_state_error(clocked_db: QueueDatabase, finish: str) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job")
    if finish == "cancelled":
        client.cancel(task_id)
    else:
        worker = QueueWorker(clocked_db, "w")
        task = worker.claim_next_task()
        assert task is not None
        if finish == "complete":
            worker.complete_task(task)
        else:
            worker.fail_task(task, "x", retry=False)
    before = client.get(task_id)
    with pytest.raises(TaskStateError):
        client.cancel(task_id)
    assert client.get(task_id) == before


def test_cancel_unknown_task(client: QueueClient) -> None:
    with pytest.raises(TaskNotFoundError):
        client.cancel(999)


# -- retry ---------------------------------------------------------------------------------


def test_retry_dead_task(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job", max_attempts=2, retry_policy=RetryPolicy(base_delay=0, jitter=0))
    worker = QueueWorker(clocked_db, "w")
    for _ in range(2):
        task = worker.claim_next_task()
        assert task is not None
        worker.fail_task(task, "bad")
    assert client.get(task_id).status is TaskStatus.DEAD
    clock.advance(7)
    again = client.retry(task_id)
    assert again.status is TaskStatus.QUEUED
    assert again.attempts == 0
    assert again.finished_at is None
    assert ts(again.run_after) == pytest.approx(clock.now, abs=1e-5)
    assert again.last_error == "bad"


def test_retry_cancelled_task(client: QueueClient) -> None:
    task_id = client.enqueue("job")
    client.cancel(task_id)
    assert client.retry(task_id).status is TaskStatus.QUEUED


@pytest.mark.parametrize("state", ["queued", "leased", "completed"])
def test_retry_live_or_completed_task_is_state_error(
    db: QueueDatabase, client: QueueClient, state: str
) -> None:
    task_id = client.enqueue("job")
    if state != "queued":
        worker = QueueWorker(db, "w")
        task = worker.claim_next_task()
        assert task is not None
        if state == "completed":
            worker.complete_task(task)
    before = client.get(task_id)
    with pytest.raises(TaskStateError):
        client.retry(task_id)
    assert client.get(task_id) == before


def test_retry_unknown_task(client: QueueClient) -> None:
    with pytest.raises(TaskNotFoundError):
        client.retry(999)


# -- prune ---------------------------------------------------------------------------------


def test_prune_only_old_finished_tasks(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    worker = QueueWorker(clocked_db, "w", lease_duration=10_000)
    old_completed = client.enqueue("job")
    old_cancelled = client.enqueue("job")
    old_dead = client.enqueue("job", max_attempts=1)
    queued = client.enqueue("job", delay=10_000)
    leased = client.enqueue("job", priority=0)
    for task in worker.claim_batch(3):
        if task.id == old_completed:
            worker.complete_task(task)
        elif task.id == old_dead:
            worker.fail_task(task, "x")
        else:
            worker.release_task(task)
    client.cancel(old_cancelled)
    assert [t.id for t in worker.claim_batch(5)] == [leased]
    clock.advance(3600)
    new_completed = client.enqueue("job")
    fresh = worker.claim_batch(1)
    assert [t.id for t in fresh] == [new_completed]
    worker.complete_task(new_completed)

    assert client.prune(timedelta(minutes=30)) == 2  # completed + cancelled by default
    remaining = {t.id for t in client.list()}
    assert remaining == {old_dead, queued, leased, new_completed}
    assert client.prune(1800, statuses=["dead"]) == 1
    assert {t.id for t in client.list()} == {queued, leased, new_completed}
    # The recent completion is too young.
    assert client.prune(60) == 0
    clock.advance(61)
    # The newest task is never pruned (ids are never reused): once a newer one exists, it goes.
    assert client.prune(60, statuses=[TaskStatus.COMPLETED]) == 0
    newer = client.enqueue("job")
    assert client.prune(60, statuses=[TaskStatus.COMPLETED]) == 1
    assert {t.id for t in client.list()} == {queued, leased, newer}


@pytest.mark.parametrize("statuses", [["queued"], ["leased"], ["completed", "leased"]])
def test_prune_refuses_live_statuses(client: QueueClient, statuses: list[str]) -> None:
    client.enqueue("job")
    with pytest.raises(ValidationError):
        client.prune(0, statuses=statuses)
    assert sum(client.count_by_status().values()) == 1


@pytest.mark.parametrize("age", [-1, float("nan"), "1h"])
def test_prune_refuses_bad_age(client: QueueClient, age: object) -> None:
    with pytest.raises(ValidationError):
        client.prune(age)  # type: ignore[arg-type]


# -- results and waiting -------------------------------------------------------------------


def test_get_result(db: QueueDatabase, client: QueueClient) -> None:
    task_id = client.enqueue("job")
    with pytest.raises(TaskStateError, match="queued"):
        client.get_result(task_id)
    worker = QueueWorker(db, "w")
    task = worker.claim_next_task()
    assert task is not None
    worker.complete_task(task, {"answer": 42, "list": [1, 2]})
    assert client.get_result(task_id) == {"answer": 42, "list": [1, 2]}
    with pytest.raises(TaskNotFoundError):
        client.get_result(task_id + 100)


def test_get_result_of_dead_task_names_the_error(db: QueueDatabase, client: QueueClient) -> None:
    task_id = client.enqueue("job", max_attempts=1)
    worker = QueueWorker(db, "w")
    task = worker.claim_next_task()
    assert task is not None
    worker.fail_task(task, "disk on fire")
    with pytest.raises(TaskStateError, match="disk on fire"):
        client.get_result(task_id)


def test_wait_returns_when_another_thread_completes(db: QueueDatabase, client: QueueClient) -> None:
    task_id = client.enqueue("job")
    errors: list[BaseException] = []

    def complete_later() -> None:
        try:
            time.sleep(0.3)
            worker = QueueWorker(db, "w-thread")
            task = worker.claim_next_task()
            assert task is not None
            worker.complete_task(task, "done")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=complete_later)
    thread.start()
    try:
        task = client.wait(task_id, timeout=30)
    finally:
        thread.join()
    assert not errors
    assert task.status is TaskStatus.COMPLETED
    assert task.result == "done"


def test_wait_returns_at_once_for_finished_task(client: QueueClient) -> None:
    task_id = client.enqueue("job")
    client.cancel(task_id)
    assert client.wait(task_id, timeout=0).status is TaskStatus.CANCELLED


def test_wait_times_out(client: QueueClient) -> None:
    task_id = client.enqueue("job")
    started = time.monotonic()
    with pytest.raises(QueueTimeoutError):
        client.wait(task_id, timeout=0.2)
    assert time.monotonic() - started >= 0.2
    assert client.get(task_id).status is TaskStatus.QUEUED


def test_wait_unknown_task(client: QueueClient) -> None:
    with pytest.raises(TaskNotFoundError):
        client.wait(424242, timeout=1)
