"""Flow control on both backends: concurrency and rate limits in the claim, unique enqueues."""

from __future__ import annotations

import pytest

from prismq.queue import (
    DuplicateTaskError,
    Enqueued,
    FIFOStrategy,
    FlowLimit,
    PriorityStrategy,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    TaskSpec,
    TaskStatus,
    Unique,
    ValidationError,
    WeightedRandomStrategy,
)
from prismq.queue.backends.base import TaskUpdate
from prismq.queue.flow import plan_claim


def claim(db: QueueDatabase, count: int, task_types: list[str] | None = None, strategy=None) -> list[int]:
    tasks = db.backend.claim("w", task_types, strategy or FIFOStrategy(), count, 60.0, db.now())
    return [t.id for t in tasks]


def test_type_limit_caps_leased_tasks_and_frees_on_completion(client: QueueClient, db: QueueDatabase) -> None:
    client.set_concurrency_limit(2, task_type="email")
    ids = [client.enqueue("email", {"n": n}) for n in range(5)]
    other = client.enqueue("report")
    # A claim takes at most the room left under the limits it is under (2 here) ...
    assert claim(db, 10) == [ids[0], ids[1]]
    # ... and a reached limit holds back only the tasks it covers.
    assert claim(db, 10) == [other]
    assert claim(db, 10, ["email"]) == []
    held = client.get(ids[0])
    db.backend.complete_tasks([TaskUpdate(held.id, "w", held.lease_token or "")], ["null"], db.now())
    assert claim(db, 10, ["email"]) == [ids[2]]
    assert claim(db, 10, ["email"]) == []


@pytest.mark.parametrize(
    "strategy", [FIFOStrategy(), PriorityStrategy(), WeightedRandomStrategy({"a": 1, "b": 1})]
)
def test_key_limit_applies_across_types_and_strategies(
    client: QueueClient, db: QueueDatabase, strategy
) -> None:
    client.set_concurrency_limit(1, key="tenant-1")
    a = [client.enqueue("a", concurrency_key="tenant-1") for _ in range(3)]
    b = [client.enqueue("b", concurrency_key="tenant-1") for _ in range(3)]
    free = client.enqueue("a", concurrency_key="tenant-2")
    got = claim(db, 10, ["a", "b"], strategy)
    assert len(got) == 1
    assert got[0] in a + b + [free]
    got += claim(db, 10, ["a", "b"], strategy)
    got += claim(db, 10, ["a", "b"], strategy)
    assert free in got
    assert len([i for i in got if i in a + b]) == 1


def test_type_and_key_limit_and_claim_of_every_type(client: QueueClient, db: QueueDatabase) -> None:
    client.set_concurrency_limit(2, task_type="api", key="host-a")
    hosts = [client.enqueue("api", concurrency_key="host-a") for _ in range(4)]
    others = [client.enqueue("api", concurrency_key="host-b") for _ in range(3)]
    got = claim(db, 20)  # every type; 2 is the room left
    assert got == hosts[:2]
    assert claim(db, 20) == others
    assert claim(db, 20) == []


def test_batch_never_overshoots_the_room_left(client: QueueClient, db: QueueDatabase) -> None:
    client.set_concurrency_limit(3, task_type="t")
    for _ in range(10):
        client.enqueue("t")
    assert len(claim(db, 2)) == 2
    assert len(claim(db, 10)) == 1
    assert claim(db, 10) == []
    assert client.count_by_status()["leased"] == 3


def test_expired_lease_reclaimed_frees_its_place(make_db, clock) -> None:
    db = make_db(clock=clock)
    client = QueueClient(db)
    client.set_concurrency_limit(1, task_type="t")
    first, second = client.enqueue("t"), client.enqueue("t")
    assert db.backend.claim("w", ["t"], FIFOStrategy(), 5, 10.0, db.now())
    assert True
    assert db.backend.claim("w", ["t"], FIFOStrategy(), 5, 10.0, db.now()) == []
    clock.advance(11)
    got = db.backend.claim("w", ["t"], FIFOStrategy(), 5, 10.0, db.now(), reclaim_first=True)
    # The expired lease went back to the queue, so its place is free again: one claim.
    assert len(got) == 1
    assert got[0].id in (first, second)
    assert client.count_by_status() == {**client.count_by_status(), "leased": 1, "queued": 1}


def test_rate_limit_counts_claims_within_the_period(make_db, clock) -> None:
    db = make_db(clock=clock)
    client = QueueClient(db)
    client.set_rate_limit(3, 10.0, key="api.example.com")
    for _ in range(10):
        client.enqueue("call", concurrency_key="api.example.com")
    unkeyed = client.enqueue("call")
    got = [t.id for t in db.backend.claim("w", None, FIFOStrategy(), 10, 600.0, db.now())]
    assert len(got) == 3
    assert unkeyed not in got
    got = [t.id for t in db.backend.claim("w", None, FIFOStrategy(), 10, 600.0, db.now())]
    assert got == [unkeyed]
    assert db.backend.claim("w", None, FIFOStrategy(), 10, 600.0, db.now()) == []
    clock.advance(5)
    assert db.backend.claim("w", None, FIFOStrategy(), 10, 600.0, db.now()) == []
    clock.advance(5.5)
    assert len(db.backend.claim("w", None, FIFOStrategy(), 10, 600.0, db.now())) == 3
    assert db.backend.limit_usage(db.now()) == {
        ("", "api.example.com"): (0, 3)
    }  # no concurrency limit: not counted


def test_concurrency_and_rate_on_one_scope(client: QueueClient, db: QueueDatabase) -> None:
    client.set_concurrency_limit(5, task_type="t")
    client.set_rate_limit(2, 3600, task_type="t")
    for _ in range(6):
        client.enqueue("t")
    assert len(claim(db, 10)) == 2
    assert client.list_limits() == [FlowLimit("t", "", 5, 2, 3600.0)]
    assert client.remove_rate_limit(task_type="t") is True
    assert client.remove_rate_limit(task_type="t") is False
    assert len(claim(db, 10)) == 3
    assert client.list_limits() == [FlowLimit("t", "", 5, None, None)]
    assert client.remove_concurrency_limit(task_type="t") is True
    assert client.list_limits() == []
    assert len(claim(db, 10)) == 1


def test_set_limit_replaces_the_old_value(client: QueueClient, db: QueueDatabase) -> None:
    client.set_concurrency_limit(1, task_type="t")
    client.set_concurrency_limit(4, task_type="t")
    for _ in range(6):
        client.enqueue("t")
    assert len(claim(db, 10)) == 4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.set_concurrency_limit(1), "needs a task_type, a key"),
        (lambda c: c.set_concurrency_limit(0, task_type="t"), "limit must be an integer"),
        (lambda c: c.set_concurrency_limit(True, task_type="t"), "limit must be an integer"),
        (lambda c: c.set_rate_limit(1, 0, task_type="t"), "period must be seconds"),
        (lambda c: c.set_rate_limit(1, float("nan"), key="k"), "period must be seconds"),
        (lambda c: c.set_concurrency_limit(1, key=""), "key must be a non-empty string"),
        (lambda c: c.enqueue("t", concurrency_key="x" * 201), "concurrency_key is 201 characters"),
        (lambda c: c.enqueue("t", unique="yes"), "unique must be a Unique"),
        (lambda c: c.enqueue("t", unique=Unique(), idempotency_key="k"), "either idempotency_key or unique"),
    ],
)
def test_bad_limit_and_enqueue_arguments_are_refused(client: QueueClient, call, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        call(client)
    assert client.list_limits() == []
    assert client.count_by_status()["queued"] == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"states": "done"}, {"on_duplicate": "merge"}, {"period": -1}, {"key": ""}],
)
def test_bad_unique_options_are_refused(kwargs) -> None:
    with pytest.raises(ValidationError):
        Unique(**kwargs)


def test_unique_by_payload_merges_while_queued(client: QueueClient, db: QueueDatabase) -> None:
    first = client.enqueue("sync", {"a": 1, "b": 2}, unique=Unique())
    assert client.enqueue("sync", {"b": 2, "a": 1}, unique=Unique()) == first
    assert client.enqueue("sync", {"a": 2}, unique=Unique()) != first
    assert client.enqueue("other", {"a": 1, "b": 2}, unique=Unique()) != first
    assert claim(db, 1, ["sync"]) == [first]
    # Leased is not "queued": a new equal task is accepted ...
    second = client.enqueue("sync", {"a": 1, "b": 2}, unique=Unique())
    assert second != first
    # ... but not under states="active" while the leased or queued one exists.
    assert client.enqueue("sync", {"a": 1, "b": 2}, unique=Unique(states="active")) == second


def test_unique_raise_names_the_existing_task(client: QueueClient) -> None:
    first = client.enqueue("sync", unique=Unique(key="nightly", on_duplicate="raise"))
    with pytest.raises(DuplicateTaskError, match=f"task {first}") as caught:
        client.enqueue("sync", unique=Unique(key="nightly", on_duplicate="raise"))
    assert caught.value.existing_id == first
    assert client.count_by_status()["queued"] == 1


def test_unique_period_and_finished_tasks(make_db, clock) -> None:
    db = make_db(clock=clock)
    client = QueueClient(db)
    first = client.enqueue("sync", unique=Unique(key="k", period=60))
    clock.advance(30)
    assert client.enqueue("sync", unique=Unique(key="k", period=60)) == first
    clock.advance(31)
    later = client.enqueue("sync", unique=Unique(key="k", period=60))
    assert later != first
    client.cancel(later)
    client.cancel(first)
    # Finished tasks never block.
    assert client.enqueue("sync", unique=Unique(key="k")) not in (first, later)


def test_concurrency_key_with_idempotency_key(client: QueueClient) -> None:
    first = client.enqueue("t", concurrency_key="c", idempotency_key="once")
    assert client.enqueue("t", concurrency_key="c", idempotency_key="once") == first
    assert client.count_by_status()["queued"] == 1


def test_worker_runs_under_a_limit(client: QueueClient, db: QueueDatabase) -> None:
    client.set_concurrency_limit(1, task_type="t")
    for n in range(3):
        client.enqueue("t", {"n": n})
    worker = QueueWorker(db, "w")
    batch = worker.claim_batch(3)
    assert len(batch) == 1
    worker.complete_task(batch[0], None)
    assert len(worker.claim_batch(3)) == 1
    assert client.count_by_status()[TaskStatus.COMPLETED.value] == 1


def test_plan_claim_takes_the_smallest_room() -> None:
    limits = [FlowLimit("a", "", 5), FlowLimit("", "k", 2), FlowLimit("b", "", None, 3, 1.0)]
    gate = plan_claim(limits, [("a", "", 4, 0), ("", "k", 1, 0), ("b", "", 0, 3)], 10)
    assert gate.count == 1
    assert gate.blocked == (("b", ""),)
    assert [limit.task_type for limit in gate.rated] == ["b"]


def test_migrate_keeps_concurrency_and_unique_keys(make_db, tmp_path) -> None:
    from prismq.queue.migrate import migrate

    source = QueueDatabase(tmp_path / "source.db")
    source.initialize_schema()
    try:
        producer = QueueClient(source)
        keyed = [producer.enqueue("t", {"n": n}, concurrency_key="tenant") for n in range(3)]
        unique = producer.enqueue("t", {"u": 1}, unique=Unique())
        target = make_db()
        migrate(source, target)
    finally:
        source.close()
    client = QueueClient(target)
    assert client.enqueue("t", {"u": 1}, unique=Unique()) == unique
    client.set_concurrency_limit(1, key="tenant")
    got = claim(target, 10, ["t"])
    got += claim(target, 10, ["t"])
    assert len([i for i in got if i in keyed]) == 1


def test_enqueue_many_with_keys_and_unique(client: QueueClient, db: QueueDatabase) -> None:
    client.set_concurrency_limit(1, key="tenant")
    ids = client.enqueue_many(
        [
            TaskSpec("t", {"n": 1}, concurrency_key="tenant"),
            {"task_type": "t", "payload": {"n": 2}, "concurrency_key": "tenant"},
            TaskSpec("t", {"n": 3}),
            TaskSpec("u", {"same": 1}, unique=Unique()),
            {"task_type": "u", "payload": {"same": 1}, "unique": Unique()},
        ]
    )
    assert ids[3] == ids[4]
    assert len(set(ids)) == 4
    got = claim(db, 10, ["t"]) + claim(db, 10, ["t"]) + claim(db, 10, ["t"])
    assert ids[2] in got
    assert len([i for i in got if i in ids[:2]]) == 1
    with pytest.raises(DuplicateTaskError):
        client.enqueue_many([TaskSpec("v"), TaskSpec("u", {"same": 1}, unique=Unique(on_duplicate="raise"))])
    assert client.count_by_type().get("v") is None  # the whole batch was refused
    with pytest.raises(ValidationError, match="task #1: concurrency_key must be a non-empty string"):
        client.enqueue_many([TaskSpec("t"), TaskSpec("t", concurrency_key="")])


def test_rate_limit_holds_when_claims_commit_out_of_time_order(
    client: QueueClient, db: QueueDatabase
) -> None:
    # A claim takes its time before it waits for the lock, so a claim with an earlier time
    # can commit after one with a later time; the later one must not forget starts the
    # earlier one still has to count.
    client.set_rate_limit(2, 10.0, task_type="t")
    strategy = FIFOStrategy()
    base = db.now() + 1000  # every task is ready by then
    client.enqueue("t")
    client.enqueue("t")
    assert len(db.backend.claim("w", ["t"], strategy, 5, 600.0, base)) == 2  # two starts at base
    client.enqueue("t")
    assert len(db.backend.claim("w", ["t"], strategy, 5, 600.0, base + 10.5)) == 1  # one more, at base + 10.5
    client.enqueue("t")
    # At base + 5 the window (base - 5, base + 5] already holds the two starts at base.
    assert db.backend.claim("w", ["t"], strategy, 5, 600.0, base + 5) == []


def test_async_client_limits_and_flow_enqueues(client: QueueClient, db: QueueDatabase) -> None:
    import asyncio

    from prismq.queue.aio import AsyncQueueClient

    async def main() -> list[int]:
        async with AsyncQueueClient(db) as aclient:
            await aclient.set_concurrency_limit(1, key="k")
            await aclient.set_rate_limit(5, 60.0, task_type="t")
            assert await aclient.list_limits() == [FlowLimit("", "k", 1), FlowLimit("t", "", None, 5, 60.0)]
            first = await aclient.enqueue("t", {"a": 1}, concurrency_key="k", unique=Unique())
            again = await aclient.enqueue("t", {"a": 1}, unique=Unique())
            many = await aclient.enqueue_many([TaskSpec("t", {"a": 1}, unique=Unique()), TaskSpec("t")])
            assert await aclient.limit_usage() == {("", "k"): (0, 0), ("t", ""): (0, 0)}
            QueueWorker(db, "w").claim_batch(1)
            # One task of type t with key k is leased: it counts under both limits.
            assert await aclient.limit_usage() == {("", "k"): (1, 0), ("t", ""): (0, 1)}
            assert await aclient.remove_rate_limit(task_type="t") is True
            assert await aclient.remove_concurrency_limit(key="k") is True
            return [first, again, *many]

    first, again, merged, plain = asyncio.run(main())
    assert first == again == merged
    assert plain != first
    assert client.list_limits() == []


def test_enqueue_outcome_tells_new_from_existing(client: QueueClient, db: QueueDatabase) -> None:
    first = client.enqueue_outcome("t", {"a": 1}, unique=Unique())
    assert first == Enqueued(first.task_id, created=True)
    assert client.enqueue_outcome("t", {"a": 1}, unique=Unique()) == Enqueued(first.task_id, False)
    assert client.enqueue_outcome("t", {"a": 2}, unique=Unique()).created is True
    keyed = client.enqueue_outcome("t", idempotency_key="k")
    assert keyed.created is True
    assert client.enqueue_outcome("t", idempotency_key="k") == Enqueued(keyed.task_id, False)
    assert client.enqueue_outcome("t", concurrency_key="c").created is True
    with pytest.raises(DuplicateTaskError) as raised:
        client.enqueue_outcome("t", {"a": 1}, unique=Unique(on_duplicate="raise"))
    assert raised.value.existing_id == first.task_id
    assert client.count_by_status()["queued"] == 4


def test_async_enqueue_outcome_tells_new_from_existing(client: QueueClient, db: QueueDatabase) -> None:
    import asyncio

    from prismq.queue.aio import AsyncQueueClient

    async def main() -> list[Enqueued]:
        async with AsyncQueueClient(db) as aclient:
            return [
                await aclient.enqueue_outcome("t", {"a": 1}, unique=Unique()),
                await aclient.enqueue_outcome("t", {"a": 1}, unique=Unique()),
                await aclient.enqueue_outcome("t", idempotency_key="k"),
                await aclient.enqueue_outcome("t", idempotency_key="k"),
            ]

    unique_new, unique_seen, keyed_new, keyed_seen = asyncio.run(main())
    assert unique_new.created
    assert keyed_new.created
    assert unique_seen == Enqueued(unique_new.task_id, False)
    assert keyed_seen == Enqueued(keyed_new.task_id, False)
    assert client.count_by_status()["queued"] == 2
