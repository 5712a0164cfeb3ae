"""The database file and schema under concurrent or hostile conditions.

- Several processes creating the same new database at once all succeed (SQLite file, fresh
  PostgreSQL schema): the check of what the file holds and the schema creation cannot
  interleave.
- A file another program made is refused before the queue writes anything: byte for byte
  the same afterwards, and no ``-wal``, ``-shm`` or ``-journal`` file appears.
- ``restore()`` gives up with ``QueueBusyError`` after the busy budget every write gets,
  instead of waiting for the write lock without end.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import SPAWN, kill_all, sized
from storage_children import hold_write_lock, initialise_each_file, initialise_each_schema

from prismq.queue import (
    NotAQueueDatabaseError,
    QueueBusyError,
    QueueClient,
    QueueDatabase,
)
from prismq.queue.backends.sqlite.connection import APPLICATION_ID
from prismq.queue.backends.sqlite.connection import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION


def run_initialisers(target: Callable[..., None], args: tuple[object, ...], processes: int) -> list[str]:
    """Run ``processes`` spawned children of ``target(*args, barrier, out)``; their failures."""
    out = SPAWN.Queue()
    barrier = SPAWN.Barrier(processes, timeout=120)
    children = [
        SPAWN.Process(target=target, args=(*args, barrier, out), daemon=True) for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        failures = [line for _ in children for line in out.get(timeout=300)]
        for child in children:
            child.join(30)
            assert child.exitcode == 0
    finally:
        kill_all(children)
    return failures


# -- item: several processes initialising a new database at once ----------------------------


def test_processes_initialising_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """What ``worker --processes N`` does on a new file; before the fix about one trial in
    thirty failed with ``holds other data (tables: runs, tasks, workers)`` or ``QueueBusyError``."""
    trials = sized(150, 1500)
    failures = run_initialisers(initialise_each_file, (str(tmp_path), trials), processes=4)
    assert failures == []
    for trial in range(trials):
        conn = sqlite3.connect(tmp_path / f"q{trial}.db")
        try:
            assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SQLITE_SCHEMA_VERSION
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()


@pytest.mark.postgres
def test_processes_creating_a_fresh_postgres_schema_at_once_all_succeed(postgres_url: str) -> None:
    import psycopg

    from prismq.queue.backends.postgres.connection import SCHEMA_VERSION

    prefix = f"prismq_init_{secrets.token_hex(4)}_"
    trials = sized(20, 200)
    try:
        failures = run_initialisers(initialise_each_schema, (postgres_url, prefix, trials), processes=4)
        assert failures == []
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for trial in range(trials):
                rows = conn.execute(f"SELECT version FROM {prefix}{trial}.prismq_schema_version").fetchall()
                assert rows == [(SCHEMA_VERSION,)]
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for trial in range(trials):
                conn.execute(f"DROP SCHEMA IF EXISTS {prefix}{trial} CASCADE")


# -- item: files another program made are never written ---------------------------------------

FOREIGN_SHAPES: dict[str, tuple[list[str], str]] = {
    # name: (statements that make the file, what the refusal must name)
    "foreign application_id": (["PRAGMA application_id = 305419896"], "application_id 0x12345678"),
    "foreign application_id and a view": (
        ["PRAGMA application_id = 305419896", "CREATE VIEW report AS SELECT 1 AS x"],
        "views: report",
    ),
    "only a view": (["CREATE VIEW report AS SELECT 1 AS x"], "views: report"),
    "a view with a trigger": (
        [
            "CREATE VIEW report AS SELECT 1 AS x",
            "CREATE TRIGGER on_report INSTEAD OF INSERT ON report BEGIN SELECT 1; END",
        ],
        "triggers: on_report",
    ),
    "user_version set, no tables": (["PRAGMA user_version = 1"], "user_version 1 but no tables"),
    "user_version and application_id": (
        ["PRAGMA user_version = 7", "PRAGMA application_id = -1"],
        "application_id 0xFFFFFFFF",
    ),
    "a table and an index": (
        ["CREATE TABLE notes (body TEXT)", "CREATE INDEX notes_body ON notes (body)"],
        "indexes: notes_body; tables: notes",
    ),
    "a queue-like table": (["CREATE TABLE tasks (id INTEGER PRIMARY KEY)"], "tables: tasks"),
    "an FTS5 virtual table": (["CREATE VIRTUAL TABLE search USING fts5(body)"], "search"),
    "an R*Tree virtual table": (["CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1)"], "boxes"),
    "a table in WAL mode": (["PRAGMA journal_mode = WAL", "CREATE TABLE notes (body TEXT)"], "tables: notes"),
}


def make_foreign_file(path: Path, statements: list[str]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            try:
                conn.execute(statement)
            except sqlite3.OperationalError as exc:
                if "no such module" in str(exc):
                    pytest.skip(f"this SQLite build lacks the module: {exc}")
                raise
        conn.execute("INSERT INTO notes VALUES ('mine')") if "notes" in " ".join(statements) else None
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("shape", list(FOREIGN_SHAPES))
def test_foreign_file_is_refused_before_anything_is_written(tmp_path: Path, shape: str) -> None:
    statements, named = FOREIGN_SHAPES[shape]
    path = tmp_path / "app.db"
    make_foreign_file(path, statements)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
    before = digest(path)
    db = QueueDatabase(path)
    try:
        with pytest.raises(NotAQueueDatabaseError) as info:
            db.initialize_schema()
        with pytest.raises(NotAQueueDatabaseError):  # every later call refuses the same way
            QueueClient(db).enqueue("x", {})
    finally:
        db.close()
    message = str(info.value)
    assert named in message
    assert "left untouched" in message
    assert "separate file" in message
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


FOREIGN_SCHEMA_OBJECTS = {
    "a workers table": ("CREATE TABLE workers (name text)", "table or index 'workers'"),
    "a runs table": ("CREATE TABLE runs (id int)", "table or index 'runs'"),
    "an index named as the queue's": (
        "CREATE TABLE mine (x int); CREATE INDEX idx_runs_created ON mine (x)",
        "table or index 'idx_runs_created'",
    ),
    "a sequence named as the queue's": ("CREATE SEQUENCE prismq_data_version", "'prismq_data_version'"),
    "a function named as the queue's": (
        "CREATE FUNCTION prismq_tasks_changed() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "function 'prismq_tasks_changed'",
    ),
}


@pytest.mark.postgres
@pytest.mark.parametrize("shape", list(FOREIGN_SCHEMA_OBJECTS))
def test_postgres_schema_with_objects_in_the_way_is_refused_untouched(
    postgres_schema: tuple[str, str], shape: str
) -> None:
    import psycopg

    url, schema = postgres_schema
    ddl, named = FOREIGN_SCHEMA_OBJECTS[shape]
    catalog = (
        "SELECT relname, relkind FROM pg_class WHERE relnamespace = %(s)s::regnamespace "
        "UNION ALL SELECT proname, 'f' FROM pg_proc WHERE pronamespace = %(s)s::regnamespace ORDER BY 1"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        conn.execute(ddl)
        before = conn.execute(catalog, {"s": schema}).fetchall()
    with pytest.raises(NotAQueueDatabaseError) as info, QueueDatabase(f"{url}?schema={schema}") as db:
        db.initialize_schema()
    assert named in str(info.value)
    assert "left untouched" in str(info.value)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(catalog, {"s": schema}).fetchall() == before


# Parts another program's file may be made of; any non-empty mix must be refused untouched.
FOREIGN_PARTS = {
    "table": "CREATE TABLE t_{n} (body TEXT)",
    "index": "CREATE TABLE ti_{n} (body TEXT); CREATE INDEX i_{n} ON ti_{n} (body)",
    "view": "CREATE VIEW v_{n} AS SELECT {n} AS x",
    "trigger": "CREATE VIEW tv_{n} AS SELECT 1 AS x; "
    "CREATE TRIGGER tr_{n} INSTEAD OF INSERT ON tv_{n} BEGIN SELECT 1; END",
    "rows": "CREATE TABLE r_{n} (body TEXT); INSERT INTO r_{n} VALUES ('kept')",
}


@settings(
    max_examples=sized(60, 600),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    application_id=st.one_of(st.just(0), st.integers(-(2**31), 2**31 - 1)),
    user_version=st.one_of(st.just(0), st.integers(-(2**31), 2**31 - 1)),
    parts=st.lists(st.sampled_from(sorted(FOREIGN_PARTS)), max_size=4),
    journal=st.sampled_from(["DELETE", "TRUNCATE", "WAL"]),
)
def test_fuzz_any_foreign_file_is_refused_untouched(
    application_id: int, user_version: int, parts: list[str], journal: str
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "other.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(f"PRAGMA journal_mode = {journal}")
        conn.execute(f"PRAGMA application_id = {application_id}")
        conn.execute(f"PRAGMA user_version = {user_version}")
        for n, part in enumerate(parts):
            conn.executescript(FOREIGN_PARTS[part].format(n=n))
        conn.close()
        empty = application_id == 0 and user_version == 0 and not parts
        foreign_app = application_id not in (0, APPLICATION_ID)
        before = {p.name: digest(p) for p in Path(folder).iterdir()}  # a TRUNCATE journal stays
        with QueueDatabase(path) as db:
            if empty:  # nothing of another program's to protect: it becomes a queue
                assert db.initialize_schema() == SQLITE_SCHEMA_VERSION
                return
            if application_id == APPLICATION_ID:  # the queue's own marker: not foreign
                return
            with pytest.raises(NotAQueueDatabaseError) as info:
                db.initialize_schema()
        assert "left untouched" in str(info.value)
        assert ("application_id" in str(info.value)) == foreign_app
        assert {p.name: digest(p) for p in Path(folder).iterdir()} == before


def test_empty_sqlite_file_from_another_tool_becomes_a_queue(tmp_path: Path) -> None:
    """A database with no schema objects and no marker holds nothing to protect."""
    path = tmp_path / "empty.db"
    conn = sqlite3.connect(path)
    conn.execute("VACUUM")  # writes a header page, nothing else
    conn.close()
    assert path.stat().st_size > 0
    with QueueDatabase(path) as db:
        assert db.initialize_schema() == SQLITE_SCHEMA_VERSION
        assert QueueClient(db).enqueue("x", {"n": 1}) == 1


# -- item: restore waits for the write lock no longer than other writes ------------------------


def test_restore_gives_up_with_queue_busy_error_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    backup = tmp_path / "backup.db"
    with QueueDatabase(path) as db:
        db.initialize_schema()
        QueueClient(db).enqueue_many([{"task_type": "x", "payload": {"n": n}} for n in range(5)])
        db.backup(backup)
        QueueClient(db).enqueue_many([{"task_type": "x", "payload": {"n": n}} for n in range(5, 8)])
    locked, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=hold_write_lock, args=(str(path), locked, release), daemon=True)
    holder.start()
    outcome: list[BaseException | None] = []
    db = QueueDatabase(path, pragmas={"busy_timeout": 200}, busy_retries=2)  # a budget of 0.6 s
    try:
        assert locked.wait(60)

        def restore() -> None:
            try:
                db.restore(backup)
                outcome.append(None)
            except BaseException as exc:  # recorded for the assertion below
                outcome.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=restore, daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "restore() kept waiting for the write lock"
        elapsed = time.monotonic() - started
        assert isinstance(outcome[0], QueueBusyError), outcome
        assert "nothing was restored" in str(outcome[0])
        assert elapsed < 10
    finally:
        release.set()
        holder.join(30)
        kill_all([holder])
    try:
        assert QueueClient(db).count_by_status()["queued"] == 8  # nothing was replaced
        db.restore(backup)  # with the lock free, the same restore goes through
        assert QueueClient(db).count_by_status()["queued"] == 5
    finally:
        db.close()


@pytest.mark.postgres
def test_postgres_restore_gives_up_with_queue_busy_error_while_a_row_is_locked(
    postgres_schema: tuple[str, str], tmp_path: Path
) -> None:
    """The PostgreSQL restore was bounded already (lock_timeout, busy retries); kept covered."""
    import psycopg

    from prismq.queue.backends.postgres import PostgresBackend

    url, schema = postgres_schema
    backend = PostgresBackend(url, schema=schema, lock_timeout=0.2, busy_retries=2)
    with QueueDatabase(backend=backend) as db:
        db.initialize_schema()
        client = QueueClient(db)
        client.enqueue_many([{"task_type": "x", "payload": {"n": n}} for n in range(5)])
        dump = db.backup(tmp_path / "queue.dump")
        client.enqueue_many([{"task_type": "x", "payload": {"n": n}} for n in range(5, 8)])
        with psycopg.connect(url) as holder:  # a writer in the middle of a long transaction
            holder.execute(f"SELECT id FROM {schema}.tasks WHERE id = 1 FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(QueueBusyError):
                db.restore(dump)
            assert time.monotonic() - started < 10
            holder.rollback()
        assert client.count_by_status()["queued"] == 8  # nothing was replaced
        db.restore(dump)
        assert client.count_by_status()["queued"] == 5
