"""RetryPolicy arithmetic, and retry timing and dead-lettering through a worker (fake clock)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prismq.queue import (
    QueueClient,
    QueueDatabase,
    QueueWorker,
    RetryPolicy,
    ScheduleError,
    TaskStatus,
)

if TYPE_CHECKING:
    from conftest import FakeClock

# -- RetryPolicy ------------------------------------------------------------------------


def test_exponential_backoff_without_jitter() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=2.0, multiplier=3.0, max_delay=100.0, jitter=0.0)
    assert [policy.delay_for(n) for n in range(1, 7)] == [2.0, 6.0, 18.0, 54.0, 100.0, 100.0]


def test_constant_delay_with_multiplier_one() -> None:
    policy = RetryPolicy(base_delay=5.0, multiplier=1.0, jitter=0.0)
    assert {policy.delay_for(n) for n in range(1, 20)} == {5.0}


def test_zero_failed_attempts_uses_base_delay() -> None:
    assert RetryPolicy(base_delay=4.0, jitter=0.0).delay_for(0) == 4.0


def test_huge_attempt_number_is_capped_not_overflowing() -> None:
    policy = RetryPolicy(max_attempts=1000, base_delay=1.0, multiplier=10.0, max_delay=60.0, jitter=0.0)
    assert policy.delay_for(1000) == 60.0


def test_jitter_stays_within_bounds_and_varies() -> None:
    policy = RetryPolicy(base_delay=10.0, multiplier=2.0, max_delay=1000.0, jitter=0.25)
    rng = random.Random(1234)
    for failed in (1, 2, 3):
        nominal = 10.0 * 2 ** (failed - 1)
        delays = [policy.delay_for(failed, rng) for _ in range(500)]
        assert all(nominal * 0.75 <= d <= nominal * 1.25 for d in delays)
        # Spread both ways: the jitter is not a constant offset.
        assert min(delays) < nominal < max(delays)


def test_jitter_never_exceeds_max_delay() -> None:
    policy = RetryPolicy(base_delay=100.0, max_delay=100.0, jitter=1.0)
    rng = random.Random(7)
    delays = [policy.delay_for(5, rng) for _ in range(500)]
    assert all(0.0 <= d <= 100.0 for d in delays)


def test_seeded_rng_is_reproducible() -> None:
    policy = RetryPolicy(jitter=0.5)
    first = [policy.delay_for(2, random.Random(99)) for _ in range(3)]
    second = [policy.delay_for(2, random.Random(99)) for _ in range(3)]
    assert first == second


def test_round_trip_through_dict() -> None:
    policy = RetryPolicy(max_attempts=7, base_delay=0.5, multiplier=1.5, max_delay=30.0, jitter=0.2)
    data = policy.to_dict()
    assert data == {"max_attempts": 7, "base_delay": 0.5, "multiplier": 1.5, "max_delay": 30.0, "jitter": 0.2}
    assert RetryPolicy.from_dict({**data, "unknown": 1}) == policy
    assert RetryPolicy.from_dict({}) == RetryPolicy()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": 1001},
        {"max_attempts": 2.0},
        {"max_attempts": True},
        {"max_attempts": "3"},
        {"base_delay": -1.0},
        {"base_delay": float("nan")},
        {"base_delay": float("inf")},
        {"base_delay": "1"},
        {"base_delay": True},
        {"multiplier": 0.5},
        {"max_delay": -0.1},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_out_of_range_values_raise_schedule_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ScheduleError):
        RetryPolicy(**kwargs)


# -- retry timing through the queue -----------------------------------------------------


def _run_after(task: Any) -> float:
    return task.run_after.timestamp()


def test_exact_backoff_then_dead_letter(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=2.0, multiplier=3.0, max_delay=100.0, jitter=0.0)
    client = QueueClient(clocked_db)
    task_id = client.enqueue("flaky", {"n": 1}, retry_policy=policy)
    worker = QueueWorker(clocked_db, "w-retry", lease_duration=30)

    claimed = worker.claim_next_task()
    assert claimed is not None
    assert claimed.attempts == 1
    failed = worker.fail_task(claimed, "boom 1")
    assert failed.status is TaskStatus.QUEUED
    assert failed.attempts == 1
    assert _run_after(failed) == pytest.approx(clock.now + 2.0, abs=1e-5)
    assert failed.last_error == "boom 1"
    assert failed.lease_token is None
    assert failed.locked_by is None

    # Not claimable before the backoff ends, claimable right after.
    clock.advance(1.999)
    assert worker.claim_next_task() is None
    clock.advance(0.002)
    second = worker.claim_next_task()
    assert second is not None
    assert second.id == task_id
    assert second.attempts == 2

    failed = worker.fail_task(second, "boom 2")
    assert failed.status is TaskStatus.QUEUED
    assert _run_after(failed) == pytest.approx(clock.now + 6.0, abs=1e-5)

    clock.advance(6.001)
    third = worker.claim_next_task()
    assert third is not None
    assert third.attempts == 3
    dead = worker.fail_task(third, "boom 3")
    assert dead.status is TaskStatus.DEAD
    assert dead.attempts == 3
    assert dead.last_error == "boom 3"
    assert dead.finished_at is not None
    assert dead.finished_at.timestamp() == pytest.approx(clock.now, abs=1e-5)

    clock.advance(10_000)
    assert worker.claim_next_task() is None
    assert client.count_by_status()["dead"] == 1


def test_per_type_policy_from_client_is_stored_with_task(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(
        clocked_db,
        default_retry_policy=RetryPolicy(max_attempts=5, base_delay=1.0, jitter=0.0),
        retry_policies={"slow": RetryPolicy(max_attempts=2, base_delay=50.0, jitter=0.0)},
    )
    slow_id = client.enqueue("slow")
    fast_id = client.enqueue("fast")
    assert client.get(slow_id).max_attempts == 2
    assert client.get(fast_id).max_attempts == 5
    assert client.get(slow_id).retry_policy["base_delay"] == 50.0

    worker = QueueWorker(clocked_db, "w", lease_duration=30)
    for task in worker.claim_batch(2):
        after = worker.fail_task(task, "x")
        expected = 50.0 if task.id == slow_id else 1.0
        assert _run_after(after) == pytest.approx(clock.now + expected, abs=1e-5)


def test_max_attempts_override_beats_policy(clocked_db: QueueDatabase) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job", max_attempts=1, retry_policy=RetryPolicy(max_attempts=9))
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    assert task.id == task_id
    assert worker.fail_task(task, "only once").status is TaskStatus.DEAD


def test_fail_backoff_respects_jitter_bounds(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=10.0, jitter=0.5)
    client = QueueClient(clocked_db)
    client.enqueue_many([{"task_type": "j", "retry_policy": policy} for _ in range(40)])
    worker = QueueWorker(clocked_db, "w")
    delays = []
    for task in worker.claim_batch(40):
        delays.append(_run_after(worker.fail_task(task, "err")) - clock.now)
    assert all(5.0 - 1e-5 <= d <= 15.0 + 1e-5 for d in delays)
    assert len({round(d, 6) for d in delays}) > 1


def test_fail_with_retry_false_is_dead_at_once(clocked_db: QueueDatabase) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job", max_attempts=5)
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    dead = worker.fail_task(task, "fatal", retry=False)
    assert dead.status is TaskStatus.DEAD
    assert dead.attempts == 1
    assert client.get(task_id).status is TaskStatus.DEAD


def test_dead_task_can_be_retried_with_attempts_reset(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    client = QueueClient(clocked_db)
    task_id = client.enqueue("job", max_attempts=1)
    worker = QueueWorker(clocked_db, "w")
    task = worker.claim_next_task()
    assert task is not None
    worker.fail_task(task, "nope")
    clock.advance(5)
    again = client.retry(task_id)
    assert again.status is TaskStatus.QUEUED
    assert again.attempts == 0
    assert again.finished_at is None
    assert again.run_after.timestamp() == pytest.approx(clock.now, abs=1e-5)
    reclaimed = worker.claim_next_task()
    assert reclaimed is not None
    assert reclaimed.attempts == 1


def test_retry_without_reset_allows_exactly_one_more_attempt(clocked_db: QueueDatabase) -> None:
    client = QueueClient(clocked_db)
    policy = RetryPolicy(max_attempts=2, base_delay=0.0, jitter=0.0)
    task_id = client.enqueue("job", retry_policy=policy)
    worker = QueueWorker(clocked_db, "w")
    for expected_status in (TaskStatus.QUEUED, TaskStatus.DEAD):
        task = worker.claim_next_task()
        assert task is not None
        assert worker.fail_task(task, "e").status is expected_status
    dead = client.get(task_id)
    assert dead.attempts == 2
    again = client.retry(task_id, reset_attempts=False)
    assert again.status is TaskStatus.QUEUED
    assert again.attempts == 2
    assert again.max_attempts == 3
    claimed = worker.claim_next_task()
    assert claimed is not None
    assert claimed.attempts == 3
    assert worker.fail_task(claimed, "last").status is TaskStatus.DEAD


# -- properties ----------------------------------------------------------------------------

finite = {"allow_nan": False, "allow_infinity": False}


@given(
    base=st.floats(min_value=0, max_value=1e6, **finite),
    multiplier=st.floats(min_value=1, max_value=100, **finite),
    max_delay=st.floats(min_value=0, max_value=1e6, **finite),
    failed=st.integers(min_value=0, max_value=2000),
)
def test_delay_without_jitter_is_the_capped_exponential(
    base: float, multiplier: float, max_delay: float, failed: int
) -> None:
    policy = RetryPolicy(
        max_attempts=5, base_delay=base, multiplier=multiplier, max_delay=max_delay, jitter=0
    )
    delay = policy.delay_for(failed)
    try:
        nominal = min(base * multiplier ** max(failed - 1, 0), max_delay)
    except OverflowError:
        nominal = max_delay
    assert delay == pytest.approx(nominal)
    assert 0 <= delay <= max_delay


@given(
    base=st.floats(min_value=0, max_value=1e6, **finite),
    max_delay=st.floats(min_value=0, max_value=1e6, **finite),
    jitter=st.floats(min_value=0, max_value=1, **finite),
    failed=st.integers(min_value=1, max_value=50),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_with_jitter_stays_in_bounds(
    base: float, max_delay: float, jitter: float, failed: int, seed: int
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=max_delay, jitter=jitter)
    nominal = min(base * 2.0 ** (failed - 1), max_delay)
    delay = policy.delay_for(failed, random.Random(seed))
    assert 0 <= delay <= max_delay
    assert nominal * (1 - jitter) - 1e-6 <= delay <= nominal * (1 + jitter) + 1e-6
