"""Flow-limit counters on both backends: every change of a task's state keeps them exact.

A claim reads each limit's counter (``flow_limits.leased``) instead of counting the leased
tasks, so the counter must equal the count after whatever changed the tasks: claims,
outcomes, retries, reclaimed leases, cancels, deletes, limits set while tasks run.
Rate limits count claims per bucket of ``period / RATE_BUCKETS``: never more than the
limit in any window, and no fewer than ``N * B / (B + 1)`` per period when saturated.
"""

from __future__ import annotations

import math

import pytest
from fakes import sqlite_file_at_version

from prismq.queue import Ack, FIFOStrategy, QueueClient, QueueDatabase, QueueWorker
from prismq.queue.backends.sqlite.backend import FLOW_TRIGGERS
from prismq.queue.flow import RATE_BUCKETS, rate_bucket_end

RECOUNT = (
    "SELECT l.task_type, l.concurrency_key, l.leased{released}, (SELECT count(*) FROM tasks t "
    "WHERE t.status = 'leased' AND (l.task_type = '' OR t.task_type = l.task_type) "
    "AND (l.concurrency_key = '' OR t.concurrency_key = l.concurrency_key)) "
    "FROM flow_limits l ORDER BY 1, 2"
)
# PostgreSQL writes releases beside the counter (flow_released) until a claim folds them in.
PENDING_RELEASES = (
    " - coalesce((SELECT sum(r.released) FROM flow_released r "
    "WHERE r.task_type = l.task_type AND r.concurrency_key = l.concurrency_key), 0)"
)


def counters(db: QueueDatabase) -> list[tuple[str, str, int, int]]:
    """Per limit: (type, key, its counter, the leased tasks of its scope counted now)."""
    sql = RECOUNT.format(released=PENDING_RELEASES if db.backend.name == "postgresql" else "")
    rows = db.backend.db.read(lambda conn: conn.execute(sql).fetchall())  # type: ignore[attr-defined]
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def assert_exact(db: QueueDatabase) -> list[int]:
    found = counters(db)
    assert found, "no limit is set"
    assert [(t, k, c) for t, k, c, _ in found] == [(t, k, n) for t, k, _, n in found]
    return [c for _, _, c, _ in found]


def set_three_limits(client: QueueClient) -> None:
    client.set_concurrency_limit(1000, task_type="email")
    client.set_concurrency_limit(1000, key="tenant-1")
    client.set_concurrency_limit(1000, task_type="email", key="tenant-1")


def test_counters_follow_every_change_of_state(make_db, clock) -> None:
    db = make_db(clock=clock)
    client = QueueClient(db)
    set_three_limits(client)
    ids = [client.enqueue("email", {"n": n}, concurrency_key="tenant-1") for n in range(6)]
    ids += [client.enqueue("report", concurrency_key="tenant-1") for _ in range(2)]
    ids += [client.enqueue("email") for _ in range(2)]
    worker = QueueWorker(db, worker_id="w1", lease_duration=30.0)
    batch = worker.claim_batch(10)
    assert len(batch) == 10
    # In scope order: ('', tenant-1), (email, ''), (email, tenant-1).
    assert assert_exact(db) == [8, 8, 6]
    worker.complete_task(batch[0])
    worker.fail_task(batch[1], "boom")  # retried: back to queued
    worker.fail_task(batch[2], "boom", retry=False)  # dead
    worker.release_task(batch[3])
    assert assert_exact(db) == [4, 4, 2]  # the first four were email tasks of tenant-1
    client.cancel(batch[4].id)  # a leased task: cancel requested, it stays leased
    assert assert_exact(db) == [4, 4, 2]
    # An expired lease reclaimed by another worker's claim.
    clock.advance(31)
    other = QueueWorker(db, worker_id="w2", lease_duration=30.0)
    again = other.claim_batch(20)
    assert {t.id for t in again} >= {t.id for t in batch[5:]}
    assert client.get(batch[4].id).status == "cancelled"  # its cancel was requested
    assert_exact(db)
    for task in again:
        other.complete_task(task)
    assert assert_exact(db) == [0, 0, 0]
    # Finished tasks deleted and retried; a retried dead task is queued, not leased.
    client.retry(batch[2].id)
    client.delete(batch[0].id)
    assert assert_exact(db) == [0, 0, 0]
    worker.close()
    other.close()


def test_a_limit_set_while_tasks_run_starts_from_them(db: QueueDatabase, client: QueueClient) -> None:
    for _ in range(5):
        client.enqueue("email", concurrency_key="tenant-1")
    worker = QueueWorker(db, worker_id="w")
    held = worker.claim_batch(3)
    client.set_concurrency_limit(4, task_type="email")
    assert assert_exact(db) == [3]
    # Room for one more: the counter, not the tasks, decides the claim.
    assert len(worker.claim_batch(5)) == 1
    client.set_rate_limit(100, 60.0, key="tenant-1")
    assert assert_exact(db) == [4, 4]
    worker.complete_many(held)
    assert assert_exact(db) == [1, 1]
    # Setting a limit again keeps (recounts) its counter; removing one keeps the others exact.
    client.set_concurrency_limit(10, task_type="email")
    client.remove_rate_limit(key="tenant-1")
    assert assert_exact(db) == [1]
    worker.close()


def test_deleting_a_leased_task_uncounts_it(db: QueueDatabase, client: QueueClient) -> None:
    client.set_concurrency_limit(5, task_type="email")
    task_id = client.enqueue("email")
    QueueWorker(db, worker_id="w").claim_batch(1)
    assert assert_exact(db) == [1]
    db.backend.db.write(lambda conn: conn.execute(f"DELETE FROM tasks WHERE id = {int(task_id)}"))  # type: ignore[attr-defined]
    assert assert_exact(db) == [0]


def test_many_claims_in_one_batch_keep_the_limit_and_the_counter(
    db: QueueDatabase, client: QueueClient
) -> None:
    client.set_concurrency_limit(7, key="tenant-1")
    for n in range(20):
        client.enqueue("a" if n % 2 else "b", concurrency_key="tenant-1")
    worker = QueueWorker(db, worker_id="w")
    first = worker.claim_batch(20)
    assert len(first) == 7
    assert worker.claim_batch(20) == []
    # Outcomes and the next claim in one transaction: the places freed count at once.
    results, more = worker.acknowledge([Ack.complete(t.id) for t in first[:4]], claim=20)
    assert all(r.saved for r in results)
    assert len(more) == 4
    assert assert_exact(db) == [7]
    worker.close()


# -- SQLite: the counting triggers exist only while a limit does --------------------------
def _triggers(db: QueueDatabase) -> set[str]:
    conn = db.backend.connection()  # type: ignore[attr-defined]
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}


def test_sqlite_counting_triggers_come_and_go_with_the_limits(sqlite_db: QueueDatabase) -> None:
    client = QueueClient(sqlite_db)
    wanted = {f"flow_count_{name}" for name in FLOW_TRIGGERS}
    assert len(wanted) == 4
    assert not _triggers(sqlite_db) & wanted  # a queue with no limit pays nothing
    client.set_concurrency_limit(3, task_type="email")
    client.set_rate_limit(5, 1.0, task_type="email")
    assert wanted <= _triggers(sqlite_db)
    client.remove_concurrency_limit(task_type="email")
    assert wanted <= _triggers(sqlite_db)  # the rate limit is still there
    client.remove_rate_limit(task_type="email")
    assert not _triggers(sqlite_db) & wanted


def test_sqlite_missing_triggers_are_restored_with_exact_counters(sqlite_db: QueueDatabase) -> None:
    client = QueueClient(sqlite_db)
    client.set_concurrency_limit(10, task_type="email")
    for _ in range(4):
        client.enqueue("email")
    conn = sqlite_db.backend.connection()  # type: ignore[attr-defined]
    for name in FLOW_TRIGGERS:  # as a file restored from a copy made without them would be
        conn.execute(f"DROP TRIGGER flow_count_{name}")
    conn.commit()
    QueueWorker(sqlite_db, worker_id="w").claim_batch(3)
    assert counters(sqlite_db) == [("email", "", 0, 3)]  # drifted: nothing counted
    sqlite_db.initialize_schema()
    assert assert_exact(sqlite_db) == [3]
    assert {f"flow_count_{name}" for name in FLOW_TRIGGERS} <= _triggers(sqlite_db)


def test_sqlite_upgrade_from_version_7_counts_and_buckets(db_path) -> None:
    raw = sqlite_file_at_version(db_path, 7)
    now = 1_000_000.0
    insert = (
        "INSERT INTO tasks (task_type, payload, status, run_after, lease_until, locked_by, lease_token, "
        "created_at, updated_at, concurrency_key) VALUES (?, '{}', ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    for status in ("leased", "leased", "queued"):
        leased = status == "leased"
        raw.execute(
            insert,
            (
                "email",
                status,
                now,
                now + 60 if leased else None,
                "w" if leased else None,
                "t" if leased else None,
                now,
                now,
                "tenant-1",
            ),
        )
    limits = "INSERT INTO flow_limits (task_type, concurrency_key, max_leased, max_starts, period) "
    raw.execute(limits + "VALUES ('email', '', 5, NULL, NULL)")
    raw.execute(limits + "VALUES ('', 'tenant-1', NULL, 9, 10.0)")
    starts = [now - 12.0, now - 3.2, now - 3.1, now - 0.2]
    raw.executemany(
        "INSERT INTO flow_starts (task_type, concurrency_key, started_at) VALUES ('', 'tenant-1', ?)",
        [(t,) for t in starts],
    )
    raw.commit()
    raw.close()
    with QueueDatabase(db_path) as db:
        db.initialize_schema()
        # Both scopes cover the two leased tasks (a rate-only limit keeps its counter too).
        assert assert_exact(db) == [2, 2]
        conn = db.backend.connection()  # type: ignore[attr-defined]
        buckets = conn.execute(
            "SELECT bucket_end, starts FROM flow_starts WHERE concurrency_key = 'tenant-1' ORDER BY 1"
        ).fetchall()
        expected: dict[float, int] = {}
        for t in starts:
            end = rate_bucket_end(t, 10.0)
            expected[end] = expected.get(end, 0) + 1
        assert [(pytest.approx(e), n) for e, n in sorted(expected.items())] == buckets
        # The claims of the last period still count: 3 of 9 taken, 6 left.
        usage = db.backend.limit_usage(now)
        assert usage[("", "tenant-1")] == (0, 3)


# -- rate limits in buckets --------------------------------------------------------------
def test_rate_bucket_end_holds_the_claim_time() -> None:
    for period in (0.001, 1.0, 7.5, 3600.0):
        width = period / RATE_BUCKETS
        for now in (0.0, 12.345, 1_700_000_000.123):
            end = rate_bucket_end(now, period)
            assert end - width <= now + 1e-9 * max(1.0, now)
            assert now < end


def test_claims_are_counted_into_the_bucket_of_their_start(make_db, clock) -> None:
    """Each claim adds its tasks to the bucket ``rate_bucket_end(claim time, period)`` of
    every rate limit covering them (PostgreSQL counts in its trigger, SQLite in Python:
    the same buckets); renewing, completing and releasing leases start nothing."""
    db = make_db(clock=clock)
    client = QueueClient(db)
    period = 7.3  # a bucket width (0.365 s) that no claim time below divides evenly
    client.set_rate_limit(1000, period, task_type="call")
    client.set_rate_limit(1000, period, key="tenant-1")
    client.set_concurrency_limit(1000, task_type="call")
    client.enqueue("call", {"keyed": False})  # FIFO: the first claim takes it with a keyed one
    for _ in range(6):
        client.enqueue("call", {"keyed": True}, concurrency_key="tenant-1")
    worker = QueueWorker(db, worker_id="w")
    expected: dict[tuple[str, str, float], int] = {}
    for batch in (2, 1, 1, 1, 1, 1):
        now = db.now()
        got = worker.claim_batch(batch)
        end = rate_bucket_end(now, period)
        keyed = sum(1 for task in got if task.payload["keyed"])
        for scope, n in ((("call", ""), len(got)), (("", "tenant-1"), keyed)):
            if n:
                expected[(*scope, end)] = expected.get((*scope, end), 0) + n
        worker.heartbeat()
        clock.advance(0.29)
    held = list(worker.held_tasks)
    worker.acknowledge([Ack.complete(held[0]), Ack.release(held[1])])
    rows = db.backend.db.read(  # type: ignore[attr-defined]
        lambda conn: conn.execute(
            "SELECT task_type, concurrency_key, bucket_end, starts FROM flow_starts ORDER BY 1, 2, 3"
        ).fetchall()
    )
    assert [(t, k, pytest.approx(e), n) for (t, k, e), n in sorted(expected.items())] == [
        tuple(row) for row in rows
    ]
    assert client.limit_usage()[("call", "")] == (5, 7)
    worker.close()


def test_buckets_left_a_period_ahead_by_a_clock_stepped_back_do_not_count(make_db, clock) -> None:
    """A rate bucket ends at most one bucket width after its claim, so one ending more
    than a period after now was left by a clock that was ahead (then stepped back): it
    does not hold the scope back until the clock catches up with it."""
    db = make_db(clock=clock)
    client = QueueClient(db)
    period = 60.0
    client.set_rate_limit(2, period, task_type="call")
    for _ in range(6):
        client.enqueue("call")
    worker = QueueWorker(db, worker_id="w")
    assert len(worker.claim_batch(5)) == 2  # the limit: 2 per minute
    clock.advance(-30.0)  # within a period of the claims: still counted
    assert worker.claim_batch(5) == []
    assert client.limit_usage()[("call", "")][1] == 2
    clock.advance(-3600.0)  # an hour back: the buckets lie beyond the window
    for _ in range(3):
        client.enqueue("call")  # due now (the first six wait for their enqueue time)
    assert len(worker.claim_batch(5)) == 2
    assert client.limit_usage()[("call", "")][1] == 2  # the two new claims, not four
    worker.close()


def test_saturated_rate_limit_never_exceeds_and_admits_enough(make_db, clock) -> None:
    db = make_db(clock=clock)
    client = QueueClient(db)
    limit, period = 10, 2.0
    client.set_rate_limit(limit, period, task_type="call")
    for _ in range(200):
        client.enqueue("call")
    step = period / 37  # not a divisor of the bucket width: claims fall anywhere in buckets
    claimed_at: list[float] = []
    start = clock()
    while clock() - start < 8 * period:
        got = db.backend.claim("w", None, FIFOStrategy(), 3, 600.0, db.now())
        claimed_at.extend([clock()] * len(got))
        clock.advance(step)
    # Never more than the limit in any window of one period ...
    for t in claimed_at:
        assert sum(1 for u in claimed_at if t - period < u <= t) <= limit
    # ... and, saturated, at least N * B / (B + 1) per period over the run.
    periods = 8
    floor = math.floor(periods * limit * RATE_BUCKETS / (RATE_BUCKETS + 1)) - limit
    assert len(claimed_at) >= floor


def _stale_first_gate(db: QueueDatabase, monkeypatch: pytest.MonkeyPatch, room: int) -> list[int]:
    """Make the first claim read a plan with ``room`` places and nothing blocked."""
    from prismq.queue.flow import ClaimGate

    real_gate = type(db.backend)._gate
    calls: list[int] = []

    def stale_first(self, rows, count):  # type: ignore[no-untyped-def]
        calls.append(count)
        gate = real_gate(self, rows, count)
        if len(calls) == 1 and gate is not None:
            return ClaimGate(room, (), gate.rated)
        return gate

    monkeypatch.setattr(type(db.backend), "_gate", stale_first)
    return calls


@pytest.mark.postgres_only  # the optimistic claim is PostgreSQL's; SQLite's claim runs alone
@pytest.mark.parametrize("binding", ["concurrency", "rate"])
def test_postgresql_claim_that_went_over_is_rolled_back_and_made_again_under_the_lock(
    db: QueueDatabase, client: QueueClient, monkeypatch: pytest.MonkeyPatch, binding: str
) -> None:
    # Room for 3 under the binding limit; the other one is far from binding.
    client.set_concurrency_limit(3 if binding == "concurrency" else 100, task_type="email")
    client.set_rate_limit(50 if binding == "concurrency" else 3, 60.0, task_type="email")
    for _ in range(10):
        client.enqueue("email")
    worker = QueueWorker(db, worker_id="w")
    assert len(worker.claim_batch(2)) == 2
    # As if other claims took the room between this claim's unlocked read and its claim:
    # the read says 5 places are left, the counters say 1.
    calls = _stale_first_gate(db, monkeypatch, 5)
    again = worker.claim_batch(10)
    assert len(calls) == 2  # the optimistic attempt, then the transaction made again under the lock
    assert len(again) == 1  # the one place there was, not five
    assert assert_exact(db) == [3]
    # The undone attempt left no start behind: 2 + 1 claims recorded, not 2 + 5 + 1.
    assert client.limit_usage()[("email", "")] == (3, 3)
    # Nothing else is refused by the check: a writer outside a claim may exceed a limit.
    db.backend.db.write(  # type: ignore[attr-defined]
        lambda conn: conn.execute(
            "UPDATE tasks SET status = 'leased', lease_token = 'x' WHERE status = 'queued'"
        )
    )
    assert client.limit_usage()[("email", "")][0] == 10
    worker.close()


@pytest.mark.postgres_only  # the optimistic claim is PostgreSQL's; SQLite's claim runs alone
def test_postgresql_claim_made_again_writes_the_outcomes_of_its_transaction_once(
    db: QueueDatabase, client: QueueClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.set_concurrency_limit(3, task_type="email")
    for _ in range(10):
        client.enqueue("email")
    worker = QueueWorker(db, worker_id="w")
    held = worker.claim_batch(2)
    calls = _stale_first_gate(db, monkeypatch, 5)
    # The completion and the claim share a transaction: the attempt that went over is
    # rolled back with the completion, and both are made again, the completion once (a
    # second write of it would find its lease gone and report it unsaved).
    results, claimed = worker.acknowledge([Ack.complete(held[0].id, "done")], claim=10)
    assert len(calls) == 2
    assert [r.saved for r in results] == [True]
    assert client.get(held[0].id).status.value == "completed"
    assert len(claimed) == 2  # 1 still held + 2 = the limit of 3
    assert assert_exact(db) == [3]
    worker.close()


@pytest.mark.postgres_only  # SQLite's claim holds the database's one write lock anyway
def test_postgresql_claim_inside_a_callers_transaction_locks_the_limits_before_reading_them(
    db: QueueDatabase, client: QueueClient
) -> None:
    import psycopg

    client.set_concurrency_limit(3, task_type="email")
    # A limit the claim counts nothing into: only a claim that locks its limits first holds it.
    client.set_concurrency_limit(5, key="tenant-9")
    for _ in range(5):
        client.enqueue("email")
    worker = QueueWorker(db, worker_id="w")
    other = db.backend.db.connect()  # type: ignore[attr-defined]
    lock_key_limit = "SELECT 1 FROM flow_limits WHERE concurrency_key = 'tenant-9' FOR UPDATE NOWAIT"
    try:
        with db.transaction():
            added = client.enqueue("report")
            # This transaction is the caller's: a claim in it cannot be rolled back and made
            # again, so it reads the limits under their locks and is exact the first time.
            assert len(worker.claim_batch(10)) == 3
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(lock_key_limit)
        other.execute(lock_key_limit)  # released at the caller's commit
        assert client.get(added).status.value == "queued"  # the caller's write stands
        assert assert_exact(db) == [0, 3]  # ("", "tenant-9"), ("email", "")
    finally:
        other.close()
        worker.close()
