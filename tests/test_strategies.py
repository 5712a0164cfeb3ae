"""Scheduling strategies: claim order of FIFO, LIFO and Priority; Weighted Random shares."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from prismq.queue import (
    ConfigError,
    FIFOStrategy,
    LIFOStrategy,
    PriorityStrategy,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    RetryPolicy,
    SchedulingStrategy,
    WeightedRandomStrategy,
)
from prismq.queue.strategies import Ordering, resolve_strategy

if TYPE_CHECKING:
    from conftest import FakeClock

# Chi-square critical value for 2 degrees of freedom at p = 0.001.
CHI2_CRITICAL_DF2_P001 = 13.816


def chi_square(observed: dict[str, int], weights: dict[str, float]) -> float:
    total = sum(observed.values())
    weight_sum = sum(weights.values())
    statistic = 0.0
    for key, weight in weights.items():
        expected = total * weight / weight_sum
        statistic += (observed.get(key, 0) - expected) ** 2 / expected
    return statistic


# -- ordering ------------------------------------------------------------------------------


@pytest.fixture
def ordered_tasks(clocked_db: QueueDatabase, clock: FakeClock) -> dict[str, int]:
    """Seven tasks with known run_after, priority and type; returns label -> id.

    ========  ====  ========  =========  ====================
    label     type  priority  run_after  note
    ========  ====  ========  =========  ====================
    x1        a     5         +0         x1..x3 enqueued together (tie)
    x2        b     5         +0
    x3        a     1         +0
    y1        b     1         +1
    z1        c     0         +7         delayed by 5 s at +2
    w1        a     5         +3
    v1        c     1         +4
    ========  ====  ========  =========  ====================
    """
    client = QueueClient(clocked_db)
    labels: dict[str, int] = {}
    x = client.enqueue_many(
        [
            {"task_type": "a", "priority": 5},
            {"task_type": "b", "priority": 5},
            {"task_type": "a", "priority": 1},
        ]
    )
    labels.update(zip(["x1", "x2", "x3"], x, strict=True))
    clock.advance(1)
    labels["y1"] = client.enqueue("b", priority=1)
    clock.advance(1)
    labels["z1"] = client.enqueue("c", priority=0, delay=5)
    clock.advance(1)
    labels["w1"] = client.enqueue("a", priority=5)
    clock.advance(1)
    labels["v1"] = client.enqueue("c", priority=1)
    return labels


EXPECTED_ORDER: dict[tuple[str, tuple[str, ...] | None], list[str]] = {
    ("fifo", None): ["x1", "x2", "x3", "y1", "w1", "v1", "z1"],
    ("lifo", None): ["z1", "v1", "w1", "y1", "x3", "x2", "x1"],
    ("priority", None): ["z1", "x3", "y1", "v1", "x1", "x2", "w1"],
    ("fifo", ("a",)): ["x1", "x3", "w1"],
    ("lifo", ("a",)): ["w1", "x3", "x1"],
    ("priority", ("a",)): ["x3", "x1", "w1"],
    ("fifo", ("a", "c")): ["x1", "x3", "w1", "v1", "z1"],
    ("lifo", ("a", "c")): ["z1", "v1", "w1", "x3", "x1"],
    ("priority", ("a", "c")): ["z1", "x3", "v1", "x1", "w1"],
    ("fifo", ("c", "b")): ["x2", "y1", "v1", "z1"],
    ("lifo", ("c", "b")): ["z1", "v1", "y1", "x2"],
    ("priority", ("c", "b")): ["z1", "y1", "v1", "x2"],
}
CASES = [pytest.param(s, t, id=f"{s}-{'+'.join(t) if t else 'any'}") for s, t in EXPECTED_ORDER]


@pytest.mark.parametrize(("strategy", "types"), CASES)
def test_claim_order_one_at_a_time(
    clocked_db: QueueDatabase,
    clock: FakeClock,
    ordered_tasks: dict[str, int],
    strategy: str,
    types: tuple[str, ...] | None,
) -> None:
    clock.advance(10)  # every task is ready, z1 included
    worker = QueueWorker(clocked_db, "w", strategy=strategy, task_types=types)
    claimed = []
    while (task := worker.claim_next_task()) is not None:
        claimed.append(task.id)
    assert claimed == [ordered_tasks[label] for label in EXPECTED_ORDER[(strategy, types)]]


@pytest.mark.parametrize(("strategy", "types"), CASES)
def test_claim_order_in_batches(
    clocked_db: QueueDatabase,
    clock: FakeClock,
    ordered_tasks: dict[str, int],
    strategy: str,
    types: tuple[str, ...] | None,
) -> None:
    clock.advance(10)
    expected = [ordered_tasks[label] for label in EXPECTED_ORDER[(strategy, types)]]
    worker = QueueWorker(clocked_db, "w", strategy=strategy, task_types=types)
    first = worker.claim_batch(2)
    rest = worker.claim_batch(100)
    assert [t.id for t in first] == expected[:2]
    assert [t.id for t in rest] == expected[2:]


@pytest.mark.parametrize(("strategy", "types"), CASES)
def test_delayed_task_waits_whatever_its_rank(
    clocked_db: QueueDatabase,
    clock: FakeClock,
    ordered_tasks: dict[str, int],
    strategy: str,
    types: tuple[str, ...] | None,
) -> None:
    # At +5, z1 (due at +7) is not ready, although it has the best priority and is newest.
    clock.advance(1)
    worker = QueueWorker(clocked_db, "w", strategy=strategy, task_types=types)
    before = [t.id for t in worker.claim_batch(100)]
    expected = [ordered_tasks[label] for label in EXPECTED_ORDER[(strategy, types)] if label != "z1"]
    assert before == expected
    if "z1" in EXPECTED_ORDER[(strategy, types)]:
        clock.advance(1.99)
        assert worker.claim_next_task() is None
        clock.advance(0.02)
        task = worker.claim_next_task()
        assert task is not None
        assert task.id == ordered_tasks["z1"]


def test_retried_task_rejoins_fifo_line_at_its_backoff_end(
    clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    client = QueueClient(clocked_db)
    first = client.enqueue("job", retry_policy=RetryPolicy(base_delay=10, jitter=0))
    clock.advance(1)
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    assert task.id == first
    worker.fail_task(task, "retry me")  # ready again at +11
    clock.advance(5)
    second = client.enqueue("job")  # ready at +6
    clock.advance(20)
    claimed = [t.id for t in worker.claim_batch(5)]
    assert claimed == [second, first]


def test_many_ties_break_by_id(clocked_db: QueueDatabase) -> None:
    client = QueueClient(clocked_db)
    ids = client.enqueue_many([{"task_type": f"t{n % 3}", "priority": 7} for n in range(30)])
    fifo = QueueWorker(clocked_db, "fifo", strategy="fifo")
    assert [t.id for t in fifo.claim_batch(10)] == ids[:10]
    lifo = QueueWorker(clocked_db, "lifo", strategy="lifo")
    assert [t.id for t in lifo.claim_batch(10)] == ids[::-1][:10]
    prio = QueueWorker(clocked_db, "prio", strategy="priority", task_types=["t0", "t1"])
    remaining = [i for n, i in enumerate(ids[10:20], start=10) if n % 3 in (0, 1)]
    assert [t.id for t in prio.claim_batch(100)] == remaining


# -- weighted random -------------------------------------------------------------------------


def test_weighted_random_matches_weights_chi_square(clocked_db: QueueDatabase, backend_name: str) -> None:
    weights = {"a": 1.0, "b": 3.0, "c": 6.0}
    client = QueueClient(clocked_db)
    # Enough of each type that none runs out during 3,000 claims.
    client.enqueue_many([{"task_type": t} for t in weights for _ in range(3100)])
    strategy = WeightedRandomStrategy(weights, seed=20240601)
    worker = QueueWorker(clocked_db, "w-weighted", strategy=strategy)
    observed: Counter[str] = Counter()
    if backend_name == "sqlite":
        for _ in range(3000):
            task = worker.claim_next_task()
            assert task is not None
            observed[task.task_type] += 1
    else:
        # A server round trip per claim is slow; batches draw each task's type the same way.
        for _ in range(120):
            observed.update(t.task_type for t in worker.claim_batch(25))
    assert sum(observed.values()) == 3000
    assert chi_square(dict(observed), weights) < CHI2_CRITICAL_DF2_P001
    # The statistic can fail: grossly wrong shares are far over the critical value.
    assert chi_square({"a": 1000, "b": 1000, "c": 1000}, weights) > CHI2_CRITICAL_DF2_P001


def test_weighted_random_allocation_chi_square() -> None:
    weights = {"a": 1.0, "b": 3.0, "c": 6.0}
    strategy = WeightedRandomStrategy(weights, seed=7)
    allocation = strategy.allocate(["a", "b", "c"], 6000)
    assert allocation is not None
    assert sum(allocation.values()) == 6000
    assert chi_square(allocation, weights) < CHI2_CRITICAL_DF2_P001


def test_weighted_random_within_type_is_oldest_first(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    ids = []
    for _ in range(5):
        ids.append(client.enqueue("only"))
        clock.advance(1)
    worker = QueueWorker(clocked_db, "w", strategy=WeightedRandomStrategy({"only": 2}, seed=1))
    assert [t.id for t in worker.claim_batch(5)] == ids


def test_zero_weight_types_only_when_others_are_empty(clocked_db: QueueDatabase) -> None:
    client = QueueClient(clocked_db)
    client.enqueue_many([{"task_type": t} for _ in range(15) for t in ("z", "a", "b")])
    strategy = WeightedRandomStrategy({"a": 1, "b": 2, "z": 0}, seed=3)
    worker = QueueWorker(clocked_db, "w", strategy=strategy)
    claimed = []
    while (task := worker.claim_next_task()) is not None:
        claimed.append(task.task_type)
    assert len(claimed) == 45
    assert set(claimed[:30]) == {"a", "b"}
    assert claimed[30:] == ["z"] * 15


def test_only_zero_weight_types_share_evenly(clocked_db: QueueDatabase) -> None:
    client = QueueClient(clocked_db)
    client.enqueue_many([{"task_type": t} for _ in range(20) for t in ("y", "z")])
    worker = QueueWorker(clocked_db, "w", strategy=WeightedRandomStrategy({"y": 0, "z": 0}, seed=11))
    first_half = Counter(t.task_type for t in worker.claim_batch(20))
    assert set(first_half) == {"y", "z"}


def test_zero_weight_type_in_batch_claims(clocked_db: QueueDatabase) -> None:
    client = QueueClient(clocked_db)
    client.enqueue_many([{"task_type": t} for _ in range(5) for t in ("z", "a")])
    worker = QueueWorker(clocked_db, "w", strategy=WeightedRandomStrategy({"a": 1, "z": 0}, seed=5))
    batch = [t.task_type for t in worker.claim_batch(8)]
    # The five "a" first (the batch is drawn among positively weighted types first).
    assert Counter(batch) == Counter({"a": 5, "z": 3})


def test_weighted_random_skips_types_whose_tasks_are_all_delayed(
    clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    client = QueueClient(clocked_db)
    client.enqueue_many([{"task_type": "heavy", "delay": 100} for _ in range(10)])
    client.enqueue_many([{"task_type": "light"} for _ in range(10)])
    strategy = WeightedRandomStrategy({"heavy": 1000, "light": 1}, seed=2)
    worker = QueueWorker(clocked_db, "w", strategy=strategy)
    assert [t.task_type for t in worker.claim_batch(10)] == ["light"] * 10
    assert worker.claim_next_task() is None
    clock.advance(100)
    assert [t.task_type for t in worker.claim_batch(10)] == ["heavy"] * 10


def test_weighted_random_respects_task_types_filter(clocked_db: QueueDatabase) -> None:
    client = QueueClient(clocked_db)
    client.enqueue_many([{"task_type": t} for _ in range(10) for t in ("a", "b", "c")])
    strategy = WeightedRandomStrategy({"a": 1, "b": 1, "c": 100}, seed=9)
    worker = QueueWorker(clocked_db, "w", strategy=strategy, task_types=["a", "b"])
    claimed = [t.task_type for t in worker.claim_batch(50)]
    assert Counter(claimed) == Counter({"a": 10, "b": 10})


def test_default_weight_applies_to_unlisted_types() -> None:
    strategy = WeightedRandomStrategy({"a": 5}, default_weight=0.5, seed=1)
    assert strategy.weight_of("a") == 5.0
    assert strategy.weight_of("other") == 0.5
    allocation = strategy.allocate(["a", "other"], 5500)
    assert allocation is not None
    assert chi_square(allocation, {"a": 5.0, "other": 0.5}) < 10.828  # df=1, p=0.001


def test_allocate_edge_cases() -> None:
    strategy = WeightedRandomStrategy(seed=1)
    assert strategy.allocate([], 5) == {}
    assert strategy.allocate(["a"], 0) == {}
    assert strategy.allocate(["a", "a"], 3) == {"a": 3}
    assert FIFOStrategy().allocate(["a"], 3) is None


def test_seed_makes_draws_reproducible() -> None:
    first = WeightedRandomStrategy({"a": 1, "b": 1}, seed=42).allocate(["a", "b"], 100)
    second = WeightedRandomStrategy({"a": 1, "b": 1}, seed=42).allocate(["a", "b"], 100)
    assert first == second


@pytest.mark.parametrize(
    ("weights", "default"),
    [
        ({"a": -1}, 1.0),
        ({"a": float("nan")}, 1.0),
        ({"a": float("inf")}, 1.0),
        ({"a": "3"}, 1.0),
        ({"a": True}, 1.0),
        ({}, -0.5),
        ({}, float("nan")),
    ],
)
def test_bad_weights_are_config_errors(weights: dict[str, Any], default: float) -> None:
    with pytest.raises(ConfigError):
        WeightedRandomStrategy(weights, default_weight=default)


# -- resolve_strategy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("fifo", FIFOStrategy),
        ("FIFO", FIFOStrategy),
        (" lifo ", LIFOStrategy),
        ("priority", PriorityStrategy),
        ("Priority", PriorityStrategy),
        ("weighted_random", WeightedRandomStrategy),
        ("weighted-random", WeightedRandomStrategy),
        ("weighted", WeightedRandomStrategy),
    ],
)
def test_resolve_strategy_by_name(name: str, cls: type[SchedulingStrategy]) -> None:
    strategy = resolve_strategy(name)
    assert type(strategy) is cls


def test_resolve_strategy_object_and_none() -> None:
    custom = WeightedRandomStrategy({"a": 2})
    assert resolve_strategy(custom) is custom
    assert isinstance(resolve_strategy(None), FIFOStrategy)


@pytest.mark.parametrize("bad", ["random", "", "fifo2", 3, ["fifo"], FIFOStrategy])
def test_resolve_strategy_rejects_unknown(bad: Any) -> None:
    with pytest.raises(ConfigError):
        resolve_strategy(bad)


def test_strategy_descriptions() -> None:
    assert (FIFOStrategy.name, FIFOStrategy.ordering) == ("fifo", Ordering.OLDEST_FIRST)
    assert (LIFOStrategy.name, LIFOStrategy.ordering) == ("lifo", Ordering.NEWEST_FIRST)
    assert (PriorityStrategy.name, PriorityStrategy.ordering) == ("priority", Ordering.PRIORITY)
    assert WeightedRandomStrategy.splits_by_type is True
    assert FIFOStrategy.splits_by_type is False
    assert repr(FIFOStrategy()) == "FIFOStrategy()"
    assert "weights={'a': 2}" in repr(WeightedRandomStrategy({"a": 2}))
