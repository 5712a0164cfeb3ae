"""PostgreSQL-specific behaviour: real processes, LISTEN/NOTIFY, leases, schema checks.

The behaviour both backends share is tested through the ``db`` fixture (parametrised over
both); this file covers what only the server backend has. Each test works in a schema of
its own, dropped afterwards (see ``postgres_schema`` in conftest).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")

from prismq.queue import QueueClient, QueueDatabase, QueueWorker, Unique  # noqa: E402
from prismq.queue.backends.base import TaskUpdate  # noqa: E402
from prismq.queue.backends.postgres import SCHEMA_VERSION, PostgresBackend  # noqa: E402
from prismq.queue.errors import (  # noqa: E402
    BackendUnavailableError,
    BackupError,
    LeaseLostError,
    NotAQueueDatabaseError,
    QueueBusyError,
    SchemaVersionError,
)
from prismq.queue.models import TaskStatus  # noqa: E402

pytestmark = pytest.mark.postgres

SPAWN = multiprocessing.get_context("spawn")
LEASE = 2.0
"""Seconds of the lease the killed worker holds."""


def open_db(url: str, schema: str, **kwargs: Any) -> QueueDatabase:
    return QueueDatabase(backend=PostgresBackend(url, schema=schema, max_size=4), **kwargs)


def raw_execute(url: str, schema: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement in the test schema, outside the queue (to tamper with it)."""
    with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def pg(postgres_schema: tuple[str, str]) -> tuple[str, str]:
    """``(url, schema)`` with the queue's schema initialised."""
    url, schema = postgres_schema
    with open_db(url, schema) as database:
        database.initialize_schema()
    return url, schema


@pytest.fixture
def pgdb(pg: tuple[str, str]) -> Iterator[QueueDatabase]:
    database = open_db(*pg)
    yield database
    database.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def collect(out: Any, procs: list[Any], count: int, timeout: float) -> list[Any]:
    """``count`` reports from child processes; fails early when a child died without one."""
    import queue

    deadline = time.monotonic() + timeout
    reports: list[Any] = []
    while len(reports) < count:
        try:
            reports.append(out.get(timeout=0.5))
        except queue.Empty:
            if time.monotonic() > deadline:
                pytest.fail(f"got {len(reports)} of {count} reports from the children in {timeout} s")
            if not any(p.is_alive() for p in procs) and out.empty():
                codes = [p.exitcode for p in procs]
                pytest.fail(f"children exited (codes {codes}) after {len(reports)} of {count} reports")
    return reports


# -- processes (module-level so "spawn" children can import them) ------------------------
def drain_worker(url: str, schema: str, name: str, out: Any) -> None:
    """Claim and complete until the queue is empty; report the ids this process claimed."""
    claimed: list[int] = []
    with open_db(url, schema) as database:
        worker = QueueWorker(database, worker_id=name, register=False)
        idle = 0
        while idle < 3:
            tasks = worker.claim_batch(7)
            if not tasks:
                idle += 1
                time.sleep(0.05)
                continue
            idle = 0
            claimed.extend(t.id for t in tasks)
            worker.complete_many(tasks, [name] * len(tasks))
    out.put((name, claimed))


def enqueue_later(url: str, schema: str, delay: float) -> None:
    time.sleep(delay)
    with open_db(url, schema) as database:
        QueueClient(database).enqueue("wake", {"from": "child"})


def claim_and_hang(url: str, schema: str, out: Any) -> None:
    """Claim one task with a short lease, report the lease, then hang until killed."""
    with open_db(url, schema) as database:
        worker = QueueWorker(database, worker_id="doomed", lease_duration=LEASE, register=False)
        task = worker.claim_next_task()
        assert task is not None
        out.put((task.id, task.locked_by, task.lease_token))
        time.sleep(600)


# -- SKIP LOCKED across processes --------------------------------------------------------
@pytest.mark.slow
def test_four_processes_drain_2000_tasks_exactly_once(pg: tuple[str, str], pgdb: QueueDatabase) -> None:
    url, schema = pg
    client = QueueClient(pgdb)
    ids = client.enqueue_many([{"task_type": "job", "payload": {"n": n}} for n in range(2000)])
    assert ids == list(range(ids[0], ids[0] + 2000))
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=drain_worker, args=(url, schema, f"w{i}", out)) for i in range(4)]
    for proc in procs:
        proc.start()
    try:
        reports = dict(collect(out, procs, len(procs), timeout=120))
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():  # pragma: no cover - only on a hang
                proc.kill()
    claimed = [task_id for ids_of in reports.values() for task_id in ids_of]
    assert len(claimed) == 2000
    assert sorted(claimed) == ids
    assert sum(1 for ids_of in reports.values() if ids_of) >= 2, "the work was not shared"
    assert client.count_by_status()["completed"] == 2000
    done = client.list(status=TaskStatus.COMPLETED, limit=2000)
    assert {t.attempts for t in done} == {1}
    assert {t.id: t.result for t in done} == {
        task_id: name for name, ids_of in reports.items() for task_id in ids_of
    }


def test_concurrent_claimers_skip_each_others_rows(pgdb: QueueDatabase, pg: tuple[str, str]) -> None:
    client = QueueClient(pgdb)
    client.enqueue_many([{"task_type": "job", "payload": n} for n in range(4)])
    other = open_db(*pg)
    try:
        first = QueueWorker(pgdb, worker_id="first", register=False)
        second = QueueWorker(other, worker_id="second", register=False)
        with pgdb.transaction():
            # first's claim holds its row locks until this transaction ends...
            mine = first.claim_batch(2)
            # ...and a claim on another connection passes over them instead of waiting.
            started = time.monotonic()
            theirs = second.claim_batch(4)
            assert time.monotonic() - started < 2
        assert {t.id for t in mine}.isdisjoint({t.id for t in theirs})
        assert len(mine) == 2
        assert len(theirs) == 2
    finally:
        other.close()


def test_idempotency_key_is_atomic_across_connections(pg: tuple[str, str]) -> None:
    databases = [open_db(*pg) for _ in range(4)]
    barrier = threading.Barrier(len(databases))
    results: list[int] = []

    def enqueue(database: QueueDatabase) -> None:
        barrier.wait()
        results.append(QueueClient(database).enqueue("job", {}, idempotency_key="same"))

    threads = [threading.Thread(target=enqueue, args=(d,)) for d in databases]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 4
        assert len(set(results)) == 1
        assert QueueClient(databases[0]).count_by_status()["queued"] == 1
    finally:
        for database in databases:
            database.close()


# -- LISTEN / NOTIFY ---------------------------------------------------------------------
def test_notify_wakes_a_waiter_from_another_process(pg: tuple[str, str], pgdb: QueueDatabase) -> None:
    backend = pgdb.backend
    assert backend.wait_for_change(0) is True  # type: ignore[attr-defined]  # starts listening: look again
    child = SPAWN.Process(target=enqueue_later, args=(*pg, 0.5))
    started = time.monotonic()
    child.start()
    try:
        assert backend.wait_for_change(60) is True  # type: ignore[attr-defined]
        assert time.monotonic() - started < 30
    finally:
        child.join(timeout=30)
    assert QueueClient(pgdb).count_by_status()["queued"] == 1
    assert backend.wait_for_change(0) is False  # type: ignore[attr-defined]  # nothing new since
    backend.stop_listening()  # type: ignore[attr-defined]
    assert backend.wait_for_change(0) is True  # type: ignore[attr-defined]  # listening again: look


def test_wait_for_change_times_out_and_ignores_other_schemas(pgdb: QueueDatabase, postgres_url: str) -> None:
    backend = pgdb.backend
    assert backend.wait_for_change(0) is True  # type: ignore[attr-defined]  # starts listening
    other_schema = f"{backend.schema}_other"  # type: ignore[attr-defined]
    try:
        with open_db(postgres_url, other_schema) as other:
            other.initialize_schema()
            QueueClient(other).enqueue("elsewhere", {})
        started = time.monotonic()
        assert backend.wait_for_change(0.3) is False  # type: ignore[attr-defined]
        assert time.monotonic() - started >= 0.25
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {other_schema} CASCADE")


def test_notify_only_when_work_becomes_queued(pgdb: QueueDatabase) -> None:
    backend = pgdb.backend
    client = QueueClient(pgdb)
    task_id = client.enqueue("job", {})
    assert backend.wait_for_change(0) is True  # type: ignore[attr-defined]  # starts listening
    worker = QueueWorker(pgdb, worker_id="w", register=False)
    task = worker.claim_next_task()
    assert task is not None
    assert task.id == task_id
    assert backend.wait_for_change(0.2) is False  # type: ignore[attr-defined]  # a claim is not work
    worker.release_task(task)
    assert backend.wait_for_change(5) is True  # type: ignore[attr-defined]  # released: work again
    with pgdb.transaction():
        client.enqueue("job", {})
        assert backend.wait_for_change(0.2) is False  # type: ignore[attr-defined]  # not committed
    assert backend.wait_for_change(5) is True  # type: ignore[attr-defined]


# -- leases ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_killed_worker_task_is_reclaimed_and_its_late_completion_refused(
    pg: tuple[str, str], pgdb: QueueDatabase
) -> None:
    client = QueueClient(pgdb)
    task_id = client.enqueue("job", {"n": 1})
    out = SPAWN.Queue()
    child = SPAWN.Process(target=claim_and_hang, args=(*pg, out))
    child.start()
    try:
        claimed_id, locked_by, token = collect(out, [child], 1, timeout=60)[0]
        claimed_at = time.monotonic()
    finally:
        child.kill()
        child.join(timeout=30)
    assert child.exitcode == -9
    assert claimed_id == task_id
    assert client.get(task_id).status is TaskStatus.LEASED
    rescuer = QueueWorker(pgdb, worker_id="rescuer", register=False, reclaim_interval=0.1)
    if time.monotonic() - claimed_at < LEASE / 2:
        assert rescuer.claim_next_task() is None  # the lease still protects the task
    time.sleep(max(claimed_at + LEASE + 0.3 - time.monotonic(), 0))
    task = rescuer.claim_next_task()
    assert task is not None
    assert task.id == task_id
    assert task.attempts == 2
    assert task.locked_by == "rescuer"
    assert "lease expired" in (task.last_error or "")
    late = TaskUpdate(task_id=task_id, worker_id=locked_by, lease_token=token)
    assert pgdb.backend.complete_tasks([late], ['"late"'], time.time()) == [False]
    with pytest.raises(LeaseLostError, match="leased by 'rescuer'"):
        pgdb.backend.finish_attempt(late, TaskStatus.DEAD, None, "late", None, True, time.time())
    rescuer.complete_task(task, "rescued")
    assert client.get_result(task_id) == "rescued"


# -- data_version ------------------------------------------------------------------------
def test_data_version_changes_only_once_a_change_is_visible(pg: tuple[str, str], pgdb: QueueDatabase) -> None:
    reader = open_db(*pg)
    try:
        before = reader.backend.data_version()
        assert reader.backend.data_version() == before
        inside = threading.Event()
        release = threading.Event()

        def write() -> None:
            with pgdb.transaction():
                QueueClient(pgdb).enqueue("job", {})
                inside.set()
                release.wait(30)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert inside.wait(30)
            during = {reader.backend.data_version() for _ in range(3)}
            # Mid-commit values never repeat and never equal a settled version.
            assert len(during) == 3
            assert before not in during
        finally:
            release.set()
            writer.join()
        after = reader.backend.data_version()
        assert after not in during
        assert after != before
        assert reader.backend.data_version() == after
        assert QueueClient(reader).count_by_status()["queued"] == 1
        # An empty claim changes nothing, so the version stays.
        QueueWorker(reader, worker_id="idle", register=False, task_types=["none"]).claim_next_task()
        assert reader.backend.data_version() == after
    finally:
        reader.close()


# -- schema, connection and identity -----------------------------------------------------
def test_newer_schema_version_is_refused_and_untouched(pg: tuple[str, str], pgdb: QueueDatabase) -> None:
    url, schema = pg
    QueueClient(pgdb).enqueue("job", {})
    raw_execute(url, schema, "UPDATE prismq_schema_version SET version = 99")
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        open_db(url, schema)
    assert raw_execute(url, schema, "SELECT version FROM prismq_schema_version") == [(99,)]
    assert raw_execute(url, schema, "SELECT count(*) FROM tasks") == [(1,)]


def test_foreign_tasks_table_is_refused(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.tasks (name text)")
    with pytest.raises(NotAQueueDatabaseError, match="did not create"):
        open_db(url, schema)


def test_migration_committed_mid_check_is_not_taken_for_foreign_objects(
    pg: tuple[str, str], pgdb: QueueDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening reads the catalog in several statements; another process's migration can
    commit between them, so the version table looks missing while the tables are there.
    Here every catalog read outside the migration lock sees that half-state: the refusal
    is confirmed under the lock, where the schema reads whole, and the open succeeds."""
    from prismq.queue.backends.postgres import backend as pg_backend

    url, schema = pg
    task_id = QueueClient(pgdb).enqueue("job", {})
    holds_migration_lock = (
        "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"
    )
    half_state = dict(pg_backend.Q)
    half_state["catalog_state"] = (
        f"SELECT to_regclass('prismq_schema_version') IS NOT NULL AND {holds_migration_lock}, "
        "to_regclass('tasks') IS NOT NULL"
    )
    monkeypatch.setattr(pg_backend, "Q", half_state)
    with open_db(url, schema) as reopened:
        assert reopened.initialize_schema() == SCHEMA_VERSION  # under the lock: nothing to do
        assert QueueClient(reopened).get(task_id).status is TaskStatus.QUEUED


def test_schema_is_created_and_versioned(pgdb: QueueDatabase) -> None:
    assert pgdb.schema_version() == SCHEMA_VERSION
    assert pgdb.initialize_schema() == SCHEMA_VERSION
    assert pgdb.backend_name == "postgresql"
    assert pgdb.integrity_check() == ["ok"]


def test_integrity_check_lists_missing_objects(pg: tuple[str, str], pgdb: QueueDatabase) -> None:
    raw_execute(*pg, "DROP INDEX idx_tasks_ready_priority")
    raw_execute(*pg, "DROP TRIGGER tasks_changed_delete ON tasks")
    raw_execute(*pg, "DROP TABLE flow_starts")
    assert pgdb.integrity_check() == [
        "missing table or sequence flow_starts",
        "missing index idx_tasks_ready_priority",
        "missing trigger tasks_changed_delete",
    ]


def test_password_never_appears_in_location(pg: tuple[str, str]) -> None:
    url, schema = pg
    secret = "s3cret-Passw0rd"
    with_password = url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    assert secret in with_password
    database = QueueDatabase(f"{with_password}?schema={schema}")
    try:
        assert secret not in database.location
        assert secret not in repr(database)
        assert database.location.startswith("postgresql://postgres@")
        assert database.schema_version() == SCHEMA_VERSION  # the schema= parameter was used
    finally:
        database.close()


def test_closed_port_raises_backend_unavailable_naming_the_host() -> None:
    port = free_port()
    secret = "hunter2-secret"
    with pytest.raises(BackendUnavailableError) as caught:
        QueueDatabase(f"postgresql://postgres:{secret}@127.0.0.1:{port}/test")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert secret not in message


def test_checkpoint_is_a_documented_no_op(pgdb: QueueDatabase) -> None:
    assert pgdb.checkpoint() == (0, 0, 0)
    assert pgdb.checkpoint("truncate") == (0, 0, 0)


def _maintained(pgdb: QueueDatabase, column: str) -> dict[str, bool]:
    sql = f"SELECT relname, {column} IS NOT NULL FROM pg_stat_user_tables WHERE schemaname = current_schema()"
    return dict(pgdb.backend.db.read(lambda conn: conn.execute(sql).fetchall()))  # type: ignore[attr-defined]


def test_vacuum_and_analyze_cover_every_table_of_the_queue(pgdb: QueueDatabase) -> None:
    # Every table the schema holds, read from the catalog: one a migration adds is covered
    # or this fails.
    analyzed_before = _maintained(pgdb, "last_analyze")
    assert {"tasks", "flow_released", "flow_starts"} <= set(analyzed_before)
    pgdb.analyze()
    assert set(_maintained(pgdb, "last_analyze").values()) == {True}
    assert set(_maintained(pgdb, "last_vacuum").values()) == {False}
    pgdb.vacuum()
    assert set(_maintained(pgdb, "last_vacuum").values()) == {True}


def test_claim_plans_use_the_ready_indexes(pgdb: QueueDatabase) -> None:
    plans = pgdb.backend.explain_claims()
    assert {"claim_oldest_first_any", "claim_priority_types", "reclaim_expired"} <= set(plans)
    for name, lines in plans.items():
        text = "\n".join(lines)
        if name.startswith("claim_"):
            assert "SKIP LOCKED" in text or "LockRows" in text, name
            assert "idx_tasks_ready" in text, f"{name} does not read a ready index:\n{text}"


# -- backup and restore ------------------------------------------------------------------
def test_backup_and_restore_round_trip(pgdb: QueueDatabase, tmp_path: Path) -> None:
    client = QueueClient(pgdb)
    ids = client.enqueue_many([{"task_type": "job", "payload": {"n": n, "text": "é"}} for n in range(5)])
    worker = QueueWorker(pgdb, worker_id="w")
    task = worker.claim_next_task()
    assert task is not None
    worker.complete_task(task, {"ok": [1, 2]})
    before = client.list(limit=100)
    path = pgdb.backup(tmp_path / "queue.jsonl")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    client.enqueue("extra", {})
    client.cancel(ids[1])
    pgdb.restore(path)
    assert client.list(limit=100) == before
    assert [w.worker_id for w in client.list_workers()] == ["w"]
    assert client.enqueue("after", {}) > ids[-1] + 1  # ids are never handed out twice


def test_damaged_backup_is_refused_and_nothing_changes(pgdb: QueueDatabase, tmp_path: Path) -> None:
    client = QueueClient(pgdb)
    client.enqueue("job", {"n": 1})
    path = pgdb.backup(tmp_path / "queue.jsonl")
    client.enqueue("job", {"n": 2})
    lines = path.read_bytes().splitlines(keepends=True)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(lines[0] + lines[1].replace(b'"job"', b'"jab"') + b"".join(lines[2:]))
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(b"".join(lines[:-1]))
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"hello": "world"}\n')
    assert tampered.read_bytes() != path.read_bytes()
    for bad in (tampered, truncated, foreign, tmp_path / "missing.jsonl"):
        with pytest.raises(BackupError):
            pgdb.restore(bad)
    assert client.count_by_status()["queued"] == 2


def test_dump_holds_limit_definitions_and_task_keys(pgdb: QueueDatabase, tmp_path: Path) -> None:
    client = QueueClient(pgdb)
    client.set_concurrency_limit(2, key="tenant-a")
    client.set_rate_limit(3, 60.0, task_type="job")
    keyed = client.enqueue(
        "job", {"n": 1}, concurrency_key="tenant-a", unique=Unique(key="one", states="active")
    )
    assert QueueWorker(pgdb, worker_id="w").claim_next_task() is not None  # one claim recorded
    path = pgdb.backup(tmp_path / "queue.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["limit"] for r in records if "limit" in r] == [
        {"task_type": "", "concurrency_key": "tenant-a", "max_leased": 2, "max_starts": None, "period": None},
        {"task_type": "job", "concurrency_key": "", "max_leased": None, "max_starts": 3, "period": 60.0},
    ]
    assert records[-1]["limits"] == 2
    assert not any("flow_start" in line for line in path.read_text().splitlines())
    client.remove_concurrency_limit(key="tenant-a")
    pgdb.restore(path)
    assert _task_keys(pgdb, keyed) == ("tenant-a", "key:one")
    assert (
        client.enqueue("job", {"n": 1}, unique=Unique(key="one", states="active")) == keyed
    )  # its unique key came back
    assert pgdb.backend.limit_usage(pgdb.now())[("", "tenant-a")] == (1, 0)
    assert pgdb.backend.limit_usage(pgdb.now())[("job", "")] == (0, 1)  # kept: its claim record stays

    # A changed limit count is refused; a dump of a release without limits or task keys restores.
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(path.read_text().replace('"limits":2', '"limits":1'))
    with pytest.raises(BackupError, match="damaged"):
        pgdb.restore(tampered)
    older = tmp_path / "older.jsonl"
    digest = hashlib.sha256()
    with open(older, "wb") as handle:
        for record in records[:-1]:
            if "limit" in record:
                continue
            if "task" in record:
                record["task"] = {
                    k: v for k, v in record["task"].items() if k not in ("concurrency_key", "unique_key")
                }
            line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
            digest.update(line)
            handle.write(line)
        end = {k: v for k, v in records[-1].items() if k != "limits"} | {"sha256": digest.hexdigest()}
        handle.write((json.dumps(end) + "\n").encode())
    pgdb.restore(older)
    assert client.list_limits() == []
    assert _task_keys(pgdb, keyed) == (None, None)


def _task_keys(database: QueueDatabase, task_id: int) -> tuple[str | None, str | None]:
    """A task's concurrency key and stored unique key (columns the Task model leaves out)."""
    (row,) = database.backend.copy_read_between("tasks", task_id, task_id)
    return row["concurrency_key"], row["unique_key"]


# -- busy --------------------------------------------------------------------------------
def test_row_locked_past_the_retries_raises_queue_busy(pg: tuple[str, str]) -> None:
    url, schema = pg
    database = QueueDatabase(backend=PostgresBackend(url, schema=schema, lock_timeout=0.1, busy_retries=1))
    try:
        client = QueueClient(database)
        task_id = client.enqueue("job", {})
        with psycopg.connect(url, options=f"-c search_path={schema}") as holder:
            holder.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
            with pytest.raises(QueueBusyError, match="conflicting writers"):
                client.cancel(task_id)
            holder.rollback()
        assert client.cancel(task_id).status is TaskStatus.CANCELLED
    finally:
        database.close()


def test_concurrent_initialisation_creates_the_schema_once(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    databases = [open_db(url, schema) for _ in range(4)]
    barrier = threading.Barrier(len(databases))
    versions: list[int] = []
    errors: list[BaseException] = []

    def initialise(database: QueueDatabase) -> None:
        barrier.wait()
        try:
            versions.append(database.initialize_schema())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=initialise, args=(d,)) for d in databases]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert versions == [SCHEMA_VERSION] * 4
        assert raw_execute(url, schema, "SELECT version FROM prismq_schema_version") == [(SCHEMA_VERSION,)]
        assert databases[0].integrity_check() == ["ok"]
    finally:
        for database in databases:
            database.close()


def test_uninitialised_schema_says_how_to_create_it(postgres_schema: tuple[str, str]) -> None:
    from prismq.queue.errors import StorageError

    url, schema = postgres_schema
    with open_db(url, schema) as database:
        assert database.schema_version() == 0
        with pytest.raises(StorageError, match="initialize_schema"):
            QueueClient(database).enqueue("job", {})


def test_vacuum_and_analyze_cover_every_table_and_keep_data(pgdb: QueueDatabase) -> None:
    client = QueueClient(pgdb)
    ids = client.enqueue_many([{"task_type": "job", "payload": {"n": n}} for n in range(50)])
    for task_id in ids[:25]:
        client.cancel(task_id)
    assert client.prune(0) == 25
    pgdb.vacuum()
    pgdb.analyze()
    assert pgdb.integrity_check() == ["ok"]
    assert [t.id for t in client.list(limit=100, newest_first=False)] == ids[25:]
