"""Pages of tasks stay index reads with 1,000,000 tasks in the table, on both backends.

The dashboard lists tasks with :meth:`QueueClient.page` (keyset pagination, one index per
status). These tests fill a table with a million rows in one ``INSERT ... SELECT`` from a
recursive CTE, refresh the planner's statistics, and check the plan of every page the
dashboard can ask for: no full table scan, no sort of every matching row.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from prismq.queue import QueueClient, QueueDatabase, TaskStatus
from prismq.queue.backends.base import PageQuery

pytestmark = pytest.mark.timeout(600)

ROWS = 1_000_000
# 90% completed, 5% dead, 2% cancelled, 2% queued, 1% leased; five task types.
FILL = """
INSERT INTO tasks (task_type, payload, status, priority, attempts, max_attempts, retry_policy,
                   run_after, lease_until, locked_by, lease_token, cancel_requested, last_error,
                   created_at, finished_at, updated_at)
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
SELECT 'type' || (i % 5),
       '{{"n":' || i || '}}',
       CASE WHEN i % 100 < 90 THEN 'completed' WHEN i % 100 < 95 THEN 'dead'
            WHEN i % 100 < 97 THEN 'cancelled' WHEN i % 100 < 99 THEN 'queued' ELSE 'leased' END,
       100, 1, 3, '{{}}',
       1800000000.0 + i,
       CASE WHEN i % 100 = 99 THEN 1900000000.0 + i END,
       CASE WHEN i % 100 = 99 THEN 'w' END,
       CASE WHEN i % 100 = 99 THEN 't' || i END,
       {false},
       CASE WHEN i % 100 BETWEEN 90 AND 94 THEN 'boom ' || i END,
       1800000000.0 + i,
       CASE WHEN i % 100 < 97 THEN 1800000000.0 + i + 5 END,
       1800000000.0 + i
FROM n
"""
SQLITE_BAD = re.compile(r"^SCAN tasks$|TEMP B-TREE")
POSTGRES_BAD = re.compile(r"Seq Scan|(^|->)\s*Sort\s+\(")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def million(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QueueDatabase]:
    """A queue database holding 1,000,000 tasks in every status, statistics fresh."""
    if request.param == "postgresql":
        from prismq.queue.backends.postgres import PostgresBackend

        url = request.getfixturevalue("postgres_url")
        schema = f"prismq_test_million_{int(time.time())}"
        database = QueueDatabase(backend=PostgresBackend(url, schema=schema, max_size=2))
        falsy = "false"
    else:
        database = QueueDatabase(tmp_path_factory.mktemp("million") / "queue.db")
        falsy = "0"
    database.initialize_schema()
    with database.backend.transaction() as conn:
        conn.execute(FILL.format(rows=ROWS, false=falsy))
    database.analyze()
    yield database
    database.close()
    if request.param == "postgresql":
        import psycopg
        from psycopg import sql

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _queries() -> list[PageQuery]:
    queries = []
    for status in (None, *TaskStatus):
        for task_type in (None, "type3"):
            first = PageQuery(status=status, task_type=task_type)
            queries.append(first)
            cursor: tuple[Any, ...]
            if status is None:
                cursor = (500_000,)
            elif status is TaskStatus.QUEUED and task_type is None:
                cursor = ("type2", 1_800_500_000.0, 500_000)
            else:
                cursor = (1_800_500_000.0, 500_000)
            queries.append(PageQuery(status=status, task_type=task_type, cursor=cursor))
            queries.append(PageQuery(status=status, task_type=task_type, search="boom 9"))
    return queries


def test_every_dashboard_page_reads_an_index(million: QueueDatabase) -> None:
    bad = SQLITE_BAD if million.backend.name == "sqlite" else POSTGRES_BAD
    for query in _queries():
        plan = million.backend.explain_page(query)
        offending = [line for line in plan if bad.search(line)]
        if query.status is TaskStatus.LEASED and any("idx_tasks_leased" in line for line in plan):
            # Sorting what the leased index holds is sorting the tasks in flight (a few
            # per worker), not the table.
            offending = [line for line in offending if "Seq Scan" in line]
        assert not offending, f"{query}: {plan}"


def test_pages_load_fast_and_walk_forward(million: QueueDatabase) -> None:
    client = QueueClient(million)
    for status in (None, "queued", "leased", "completed", "dead", "cancelled"):
        started = time.perf_counter()
        first = client.page(status=status, limit=50)
        second = client.page(status=status, limit=50, cursor=first.next_cursor)
        elapsed = time.perf_counter() - started
        assert len(first.tasks) == 50
        assert len(second.tasks) == 50
        assert not {t.id for t in first.tasks} & {t.id for t in second.tasks}
        if status is not None:
            assert {t.status.value for t in first.tasks + second.tasks} == {status}
        # Two pages of 50 out of a million rows: index reads take milliseconds. A scan
        # of the table takes a large part of a second even on a fast machine.
        assert elapsed < 0.25, f"{status}: {elapsed:.3f} s for two pages"
