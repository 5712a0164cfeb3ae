"""Flow-control limits travel with a backup and restore and with ``migrate``, on both backends.

Only the limit definitions travel; the rate limits' record of recent claims
(``flow_starts``) stays behind, except in an SQLite backup, which is a copy of the whole file.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from prismq.queue import FlowLimit, QueueClient, QueueDatabase, QueueWorker
from prismq.queue.migrate import migrate

SCOPE = ("report", "tenant-a")


def set_limits(client: QueueClient) -> list[FlowLimit]:
    """One limit of each shape: a type, a key, and a type and key with both kinds."""
    client.set_concurrency_limit(2, task_type="email")
    client.set_rate_limit(5, 60.0, key="api.example.com")
    client.set_concurrency_limit(1, task_type="report", key="tenant-a")
    client.set_rate_limit(3, 600.0, task_type="report", key="tenant-a")
    return [
        FlowLimit("", "api.example.com", None, 5, 60.0),
        FlowLimit("email", "", 2, None, None),
        FlowLimit("report", "tenant-a", 1, 3, 600.0),
    ]


def limits_of(db: QueueDatabase) -> list[FlowLimit]:
    return sorted(QueueClient(db).list_limits(), key=lambda limit: (limit.task_type, limit.key))


def start_one_report(db: QueueDatabase) -> int:
    """Enqueue and claim one task of ``SCOPE``: one leased, one claim recorded."""
    task_id = QueueClient(db).enqueue("report", {"n": 1}, concurrency_key="tenant-a")
    task = QueueWorker(db, "w", task_types=["report"]).claim_next_task()
    assert task is not None
    assert task.id == task_id
    return task_id


@contextmanager
def fresh_database(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[QueueDatabase]:
    """A new, empty database on the test's backend (a new file, or a new schema)."""
    if backend_name == "sqlite":
        with QueueDatabase(tmp_path / "fresh.db") as database:
            yield database
        return
    import psycopg
    from psycopg import sql

    from prismq.queue.backends.postgres import PostgresBackend

    url = request.getfixturevalue("postgres_url")
    schema = f"prismq_test_{secrets.token_hex(6)}"
    try:
        with QueueDatabase(backend=PostgresBackend(url, schema=schema, max_size=2)) as database:
            database.initialize_schema()
            yield database
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_backup_then_restore_into_a_fresh_database_keeps_the_limits(
    db: QueueDatabase, backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    expected = set_limits(QueueClient(db))
    start_one_report(db)
    backup = db.backup(tmp_path / "queue.backup")
    with fresh_database(backend_name, tmp_path, request) as fresh:
        fresh.restore(backup)
        assert limits_of(fresh) == expected
        leased, started = fresh.backend.limit_usage(fresh.now())[SCOPE]
        assert leased == 1  # the restored leased task counts under its limits
        # An SQLite backup is the whole file; a PostgreSQL dump holds no claim record.
        assert started == (1 if backend_name == "sqlite" else 0)
        # The restored limits hold: the type limit of 2 lets two of three emails run.
        client = QueueClient(fresh)
        client.enqueue_many([{"task_type": "email", "payload": {"n": n}} for n in range(3)])
        assert len(QueueWorker(fresh, "w2", task_types=["email"]).claim_batch(10)) == 2


def test_restore_replaces_the_limits_with_the_backups(db: QueueDatabase, tmp_path: Path) -> None:
    client = QueueClient(db)
    expected = set_limits(client)
    backup = db.backup(tmp_path / "queue.backup")
    client.set_concurrency_limit(9, task_type="email")  # changed
    client.remove_rate_limit(task_type="report", key="tenant-a")  # part removed
    client.remove_rate_limit(key="api.example.com")  # removed
    client.set_rate_limit(1, 1.0, task_type="other")  # added
    db.restore(backup)
    assert limits_of(db) == expected


def test_migrate_carries_the_limits_both_ways_and_again(
    make_db: Callable[..., QueueDatabase], tmp_path: Path
) -> None:
    with QueueDatabase(tmp_path / "source.db") as source:
        source.initialize_schema()
        expected = set_limits(QueueClient(source))
        start_one_report(source)
        assert source.backend.limit_usage(source.now())[SCOPE] == (1, 1)
        target = make_db()
        QueueClient(target).set_concurrency_limit(7, task_type="target-only")
        report = migrate(source, target)
        assert report.limits_copied == 3
        assert "3 limits" in report.summary()
        copied = [limit for limit in limits_of(target) if limit.task_type != "target-only"]
        assert copied == expected
        # The leased task arrives queued; no claim record travels with the rate limit.
        assert target.backend.limit_usage(target.now())[SCOPE] == (0, 0)

        again = migrate(source, target)  # nothing changed: the same limits, once each
        assert again.limits_copied == 3
        assert [limit for limit in limits_of(target) if limit.task_type != "target-only"] == expected

        # A scope changed on the source is written whole; a target-only scope stays.
        source_client = QueueClient(source)
        source_client.set_concurrency_limit(4, task_type="email")
        source_client.remove_rate_limit(task_type="report", key="tenant-a")
        migrate(source, target)
        assert limits_of(target) == [
            FlowLimit("", "api.example.com", None, 5, 60.0),
            FlowLimit("email", "", 4, None, None),
            FlowLimit("report", "tenant-a", 1, None, None),
            FlowLimit("target-only", "", 7, None, None),
        ]

    # And back, into a new SQLite file.
    with QueueDatabase(tmp_path / "back.db") as back:
        report = migrate(target, back)
        assert report.limits_copied == 4
        assert limits_of(back) == limits_of(target)
