"""Every claim statement is served by an index: no temp B-tree sorts, no table scans.

SQLite-specific: the plans come from ``EXPLAIN QUERY PLAN`` via ``explain_claims()``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from prismq.queue import QueueClient, QueueDatabase, QueueWorker

BARE_SCAN = re.compile(r"\bSCAN (tasks|workers)\b(?!.*\bUSING (COVERING )?INDEX\b)")


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueDatabase]:
    """20,000 tasks of several types and priorities in every status, then ANALYZE."""
    path: Path = tmp_path_factory.mktemp("plans") / "queue.db"
    database = QueueDatabase(path)
    database.initialize_schema()
    client = QueueClient(database)
    types = ["email", "video", "report", "thumbnail", "billing"]
    client.enqueue_many(
        [
            {
                "task_type": types[n % len(types)],
                "priority": (n * 37) % 1001,
                "delay": 3600 if n % 10 == 0 else None,
                "payload": {"n": n},
            }
            for n in range(20_000)
        ]
    )
    worker = QueueWorker(database, "plan-worker", lease_duration=600)
    claimed = worker.claim_batch(1000)
    worker.complete_many(claimed[:600])
    for task in claimed[600:700]:
        worker.fail_task(task, "boom", retry=False)
    database.analyze()
    yield database
    database.close()


def test_plans_cover_every_claim_statement(big_db: QueueDatabase) -> None:
    plans = big_db.backend.explain_claims()
    names = set(plans)
    for ordering in ("oldest_first", "newest_first", "priority"):
        assert f"claim_{ordering}_type" in names
        assert f"candidates_{ordering}_type" in names
    assert {
        "has_ready_of_type",
        "queued_task_types",
        "next_run_after_type",
        "reclaim_expired",
        "claim_by_ids",
    } <= names
    assert all(plans[name] for name in names)


def test_no_temp_btree_and_no_table_scan(big_db: QueueDatabase) -> None:
    plans = big_db.backend.explain_claims()
    problems = []
    for name, lines in plans.items():
        for line in lines:
            if "USE TEMP B-TREE" in line:
                problems.append(f"{name}: sorts in a temp B-tree: {line}")
            if BARE_SCAN.search(line):
                problems.append(f"{name}: scans the table: {line}")
    assert problems == []


def test_claims_read_the_ready_indexes(big_db: QueueDatabase) -> None:
    plans = big_db.backend.explain_claims()
    expected = {
        "claim_oldest_first_type": "idx_tasks_ready_type",
        "claim_newest_first_type": "idx_tasks_ready_type",
        "candidates_priority_type": "idx_tasks_ready_type_priority",
        "queued_task_types": "idx_tasks_ready_type",
        "next_run_after_type": "idx_tasks_ready_type",
        "claim_priority_type": "idx_tasks_ready_type_priority",
        "reclaim_expired": "idx_tasks_leased_finished",
        "count_expired_leases": "idx_tasks_leased_finished",
        "count_finished_since": "idx_tasks_leased_finished",
        "prune": "idx_tasks_leased_finished",
    }
    for name, index in expected.items():
        assert any(index in line for line in plans[name]), (name, plans[name])


def test_detector_catches_bad_plans() -> None:
    # The patterns above must be able to fail.
    assert BARE_SCAN.search("SCAN tasks")
    assert not BARE_SCAN.search("SCAN tasks USING INDEX idx_tasks_ready_type")
    assert not BARE_SCAN.search("SCAN tasks USING COVERING INDEX idx_tasks_finished")
    assert not BARE_SCAN.search("SCAN json_each VIRTUAL TABLE INDEX 1:")
    assert not BARE_SCAN.search("SCAN seen")


def test_claims_over_every_type_merge_the_per_type_heads(big_db: QueueDatabase) -> None:
    # No task_types filter: the claim walks the queued types and merges their heads, so the
    # global order holds across types.
    for strategy, key in (
        ("fifo", lambda t: (t.run_after, t.id)),
        ("priority", lambda t: (t.priority, t.run_after, t.id)),
    ):
        batch = QueueWorker(big_db, f"any-{strategy}", strategy=strategy).claim_batch(40)
        assert len(batch) == 40
        assert [key(t) for t in batch] == sorted(key(t) for t in batch)
        assert len({t.task_type for t in batch}) >= 1


def test_claims_still_work_on_the_big_database(big_db: QueueDatabase) -> None:
    worker = QueueWorker(big_db, "plan-check", strategy="priority", task_types=["video", "email"])
    batch = worker.claim_batch(50)
    assert len(batch) == 50
    keys = [(t.priority, t.run_after, t.id) for t in batch]
    assert keys == sorted(keys)
    assert {t.task_type for t in batch} <= {"video", "email"}
    worker.close()
