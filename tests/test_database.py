"""QueueDatabase on SQLite: PRAGMAs, file checks, schema, transactions, busy handling.

This file is SQLite-specific: it builds its databases from the ``db_path`` fixture.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import sqlite_file_at_version

from prismq.queue import (
    ConfigError,
    LeaseLostError,
    NotAQueueDatabaseError,
    PayloadError,
    QueueBusyError,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    SchemaVersionError,
    StorageError,
    TaskNotFoundError,
    TaskStateError,
)
from prismq.queue.backends.sqlite import DEFAULT_PRAGMAS, SCHEMA_VERSION

SYNCHRONOUS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}
TEMP_STORE = {"DEFAULT": 0, "FILE": 1, "MEMORY": 2}


def total_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    finally:
        conn.close()


def open_queue(path: Path) -> None:
    """Open a QueueDatabase on ``path`` and initialise it, closing it whatever happens."""
    database = QueueDatabase(path)
    try:
        database.initialize_schema()
    finally:
        database.close()


def read_pragmas(conn: sqlite3.Connection) -> dict[str, Any]:
    names = ["journal_mode", "synchronous", "busy_timeout", "wal_autocheckpoint", "foreign_keys"]
    names += ["temp_store", "cache_size", "page_size"]
    return {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names}


def expected_pragmas(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    merged = {**DEFAULT_PRAGMAS, **(overrides or {})}
    return {
        "journal_mode": str(merged["journal_mode"]).lower(),
        "synchronous": SYNCHRONOUS[str(merged["synchronous"]).upper()],
        "busy_timeout": int(merged["busy_timeout"]),
        "wal_autocheckpoint": int(merged["wal_autocheckpoint"]),
        "foreign_keys": 1 if str(merged["foreign_keys"]).upper() in ("ON", "1") else 0,
        "temp_store": TEMP_STORE[str(merged["temp_store"]).upper()],
        "cache_size": int(merged["cache_size"]),
        "page_size": int(merged["page_size"]),
    }


# -- PRAGMAs ----------------------------------------------------------------------------


def test_pragmas_applied_on_every_thread_connection(sqlite_db: QueueDatabase) -> None:
    seen: list[tuple[sqlite3.Connection, dict[str, Any]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    # Every thread stays alive until all have read, so each one has its own connection.
    together = threading.Barrier(4)

    def read() -> None:
        try:
            conn = sqlite_db.backend.connection()  # type: ignore[attr-defined]
            values = read_pragmas(conn)
            with lock:
                seen.append((conn, values))
            together.wait(timeout=30)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    main_conn = sqlite_db.backend.connection()  # type: ignore[attr-defined]
    seen.append((main_conn, read_pragmas(main_conn)))
    assert not errors
    assert len({id(conn) for conn, _ in seen}) == 5
    assert [values for _, values in seen] == [expected_pragmas()] * 5


def test_journal_mode_is_wal(sqlite_db: QueueDatabase) -> None:
    assert sqlite_db.backend.journal_mode == "wal"  # type: ignore[attr-defined]
    raw = sqlite3.connect(sqlite_db.path)  # type: ignore[arg-type]
    try:
        # WAL is persistent in the file, so a plain connection sees it too.
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_pragma_overrides_take_effect(db_path: Path) -> None:
    overrides = {"busy_timeout": 1234, "synchronous": "full", "cache_size": -1000, "temp_store": "FILE"}
    with QueueDatabase(db_path, pragmas=overrides) as database:
        database.initialize_schema()
        values = read_pragmas(database.backend.connection())  # type: ignore[attr-defined]
        assert values == expected_pragmas({**overrides, "synchronous": "FULL", "temp_store": "FILE"})
        assert values["busy_timeout"] == 1234
        assert values["synchronous"] == 2
        assert database.pragmas["busy_timeout"] == 1234


def test_pragma_integer_given_as_string_is_accepted(db_path: Path) -> None:
    with QueueDatabase(db_path, pragmas={"busy_timeout": "250"}) as database:
        conn = database.backend.connection()  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 250


@pytest.mark.parametrize(
    "pragmas",
    [
        {"not_a_pragma": 1},
        {"writable_schema": "ON"},
        {"synchronous": "SOMETIMES"},
        {"journal_mode": "wall"},
        {"busy_timeout": "soon"},
        {"busy_timeout": -1},
        {"cache_size": 1.5},
        {"foreign_keys": "maybe"},
    ],
)
def test_unknown_pragma_or_bad_value_is_config_error(db_path: Path, pragmas: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        QueueDatabase(db_path, pragmas=pragmas)


def test_page_size_takes_effect_on_new_file(tmp_path: Path) -> None:
    path = tmp_path / "big-pages.db"
    with QueueDatabase(path, pragmas={"page_size": 8192}) as database:
        database.initialize_schema()
        conn = database.backend.connection()  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 8192
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA page_size").fetchone()[0] == 8192
    finally:
        raw.close()


def test_default_page_size_is_4096(sqlite_db: QueueDatabase) -> None:
    conn = sqlite_db.backend.connection()  # type: ignore[attr-defined]
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096


# -- the file ----------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_new_file_is_owner_only(db_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with QueueDatabase(db_path) as database:
            database.initialize_schema()
            QueueClient(database).enqueue("job")
            assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
            wal = db_path.with_name(db_path.name + "-wal")
            assert wal.exists()
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_timestamps_are_stored_as_real(db_path: Path) -> None:
    with QueueDatabase(db_path) as database:
        database.initialize_schema()
        client = QueueClient(database)
        done_id = client.enqueue("job", run_after=2_000_000_000)
        cancel_id = client.enqueue("job")
        client.cancel(cancel_id)
        worker = QueueWorker(database, "w-real", lease_duration=30)
        leased_id = client.enqueue("other")
        claimed = worker.claim_batch(5)
        assert [t.id for t in claimed] == [leased_id]
    raw = sqlite3.connect(db_path)
    try:
        rows = raw.execute(
            "SELECT id, typeof(created_at), typeof(updated_at), typeof(run_after), "
            "typeof(started_at), typeof(lease_until), typeof(finished_at) FROM tasks ORDER BY id"
        ).fetchall()
        by_id = {row[0]: row[1:] for row in rows}
        assert by_id[done_id] == ("real", "real", "real", "null", "null", "null")
        assert by_id[cancel_id] == ("real", "real", "real", "null", "null", "real")
        assert by_id[leased_id] == ("real", "real", "real", "real", "real", "null")
        worker_types = raw.execute(
            "SELECT typeof(started_at), typeof(last_heartbeat) FROM workers"
        ).fetchall()
        assert worker_types == [("real", "real")]
    finally:
        raw.close()


def test_whole_second_clock_values_are_still_stored_as_real(db_path: Path) -> None:
    with QueueDatabase(db_path, clock=lambda: 1_800_000_000) as database:  # an int clock
        database.initialize_schema()
        QueueClient(database).enqueue("job", run_after=1_900_000_000)
    raw = sqlite3.connect(db_path)
    try:
        row = raw.execute(
            "SELECT typeof(created_at), typeof(run_after), typeof(updated_at) FROM tasks"
        ).fetchone()
        assert row == ("real", "real", "real")
    finally:
        raw.close()


def test_non_sqlite_file_is_refused_and_untouched(db_path: Path) -> None:
    content = b"this is a plain text file, not a database\n" * 100
    db_path.write_bytes(content)
    with pytest.raises(NotAQueueDatabaseError):
        open_queue(db_path)
    assert db_path.read_bytes() == content
    assert not db_path.with_name(db_path.name + "-wal").exists()


def test_foreign_sqlite_database_is_refused_and_untouched(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)")
    raw.execute("INSERT INTO people (name) VALUES ('someone')")
    raw.commit()
    raw.close()
    before = db_path.read_bytes()
    with pytest.raises(NotAQueueDatabaseError, match="people"):
        open_queue(db_path)
    assert db_path.read_bytes() == before
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert raw.execute("SELECT name FROM people").fetchall() == [("someone",)]
    finally:
        raw.close()


def test_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotAQueueDatabaseError):
        QueueDatabase(tmp_path)


def test_newer_schema_version_is_refused_and_untouched(db_path: Path) -> None:
    with QueueDatabase(db_path) as database:
        database.initialize_schema()
        QueueClient(database).enqueue("job", {"keep": True})
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.execute("PRAGMA journal_mode = DELETE")
    raw.close()
    before = db_path.read_bytes()
    with pytest.raises(SchemaVersionError, match="newer"):
        open_queue(db_path)
    assert db_path.read_bytes() == before


def test_initialize_schema_is_idempotent(db_path: Path) -> None:
    with QueueDatabase(db_path) as database:
        assert database.schema_version() == 0
        assert database.initialize_schema() == SCHEMA_VERSION
        task_id = QueueClient(database).enqueue("job", {"x": 1})
        assert database.initialize_schema() == SCHEMA_VERSION
        assert database.initialize_schema() == SCHEMA_VERSION
        assert database.schema_version() == SCHEMA_VERSION
        assert QueueClient(database).get(task_id).payload == {"x": 1}
    # And from a second object on the same file.
    with QueueDatabase(db_path) as again:
        assert again.initialize_schema() == SCHEMA_VERSION
        assert total_rows(db_path) == 1


def test_identity_properties(sqlite_db: QueueDatabase, db_path: Path) -> None:
    assert sqlite_db.backend_name == "sqlite"
    assert sqlite_db.path == db_path
    assert sqlite_db.location == str(db_path)
    assert "sqlite" in repr(sqlite_db)
    assert sqlite_db.pragmas["journal_mode"] == "WAL"
    before = time.time()
    assert before - 5 <= sqlite_db.now() <= time.time() + 5


def test_closed_database_refuses_use(db_path: Path) -> None:
    database = QueueDatabase(db_path)
    database.initialize_schema()
    client = QueueClient(database)
    client.enqueue("job")
    database.close()
    with pytest.raises(StorageError):
        client.enqueue("job")


# -- transactions ------------------------------------------------------------------------


def test_transaction_is_begin_immediate(sqlite_db: QueueDatabase, db_path: Path) -> None:
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        with sqlite_db.transaction() as conn:
            assert conn.in_transaction
            # The write lock is already held before this transaction wrote anything.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_transaction_rolls_back_on_exception(sqlite_db: QueueDatabase, db_path: Path) -> None:
    client = QueueClient(sqlite_db)

    class Boom(Exception):
        pass

    def enqueue_twice_then_fail() -> None:
        with sqlite_db.transaction():
            client.enqueue("job", {"n": 1})
            client.enqueue("job", {"n": 2})
            raise Boom

    with pytest.raises(Boom):
        enqueue_twice_then_fail()
    assert client.count_by_status()["queued"] == 0
    assert total_rows(db_path) == 0
    assert not sqlite_db.backend.connection().in_transaction  # type: ignore[attr-defined]


def test_nested_calls_join_transaction_and_commit_together(sqlite_db: QueueDatabase, db_path: Path) -> None:
    client = QueueClient(sqlite_db)
    with sqlite_db.transaction() as conn:
        first = client.enqueue("job", {"n": 1})
        second = client.enqueue_many([{"task_type": "job"}, {"task_type": "job"}])
        conn.execute("CREATE TABLE IF NOT EXISTS my_app_table (x INTEGER)")
        conn.execute("INSERT INTO my_app_table VALUES (1)")
        # Another connection does not see the uncommitted rows.
        assert total_rows(db_path) == 0
    assert total_rows(db_path) == 3
    assert [t.id for t in client.list(newest_first=False)] == [first, *second]


def test_own_statement_failure_rolls_back_queue_calls(sqlite_db: QueueDatabase, db_path: Path) -> None:
    client = QueueClient(sqlite_db)

    def enqueue_then_bad_statement() -> None:
        with sqlite_db.transaction() as conn:
            client.enqueue("job")
            conn.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(sqlite3.OperationalError):
        enqueue_then_bad_statement()
    assert total_rows(db_path) == 0


def test_no_transaction_left_open_after_public_calls(sqlite_db: QueueDatabase) -> None:
    conn = sqlite_db.backend.connection()  # type: ignore[attr-defined]
    client = QueueClient(sqlite_db)
    worker = QueueWorker(sqlite_db, "w-tx", lease_duration=30)

    def check(call: Any, *args: Any, raises: type[BaseException] | None = None, **kwargs: Any) -> Any:
        if raises is None:
            result = call(*args, **kwargs)
        else:
            with pytest.raises(raises):
                call(*args, **kwargs)
            result = None
        assert not conn.in_transaction, f"{call.__name__} left a transaction open"
        return result

    task_id = check(client.enqueue, "job", {"a": 1})
    check(client.enqueue, "job", {1, 2}, raises=PayloadError)
    check(client.enqueue_many, [{"task_type": "job"}, {"task_type": "job", "idempotency_key": "k"}])
    check(client.enqueue, "job", idempotency_key="k")
    check(client.get, task_id)
    check(client.get, 10**9, raises=TaskNotFoundError)
    check(client.list, status="queued", task_type="job")
    check(client.count_by_status)
    check(client.count_by_type)
    check(client.stats)
    check(client.list_workers)
    task = check(worker.claim_next_task)
    check(worker.renew_lease, task)
    check(worker.update_progress, task, 50.0, "half")
    check(worker.heartbeat)
    check(client.cancel, task.id)
    check(worker.acknowledge_cancel, task)
    check(client.retry, task.id)
    check(client.get_result, task.id, raises=TaskStateError)
    batch = check(worker.claim_batch, 10)
    check(worker.complete_task, batch[0], {"ok": True})
    check(worker.complete_task, batch[0], raises=LeaseLostError)
    check(worker.complete_many, [batch[1]])
    check(worker.fail_task, batch[2], "err")
    check(client.cancel, batch[0].id, raises=TaskStateError)
    check(client.retry, batch[0].id, raises=TaskStateError)
    check(client.prune, 0)
    check(sqlite_db.checkpoint)
    check(sqlite_db.integrity_check)
    check(sqlite_db.analyze)
    check(sqlite_db.vacuum)
    check(worker.close)
    check(sqlite_db.initialize_schema)


# -- busy ----------------------------------------------------------------------------------


def test_long_lock_raises_queue_busy_error_and_writes_nothing(
    sqlite_db: QueueDatabase, db_path: Path
) -> None:
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        impatient = QueueDatabase(db_path, pragmas={"busy_timeout": 20}, busy_retries=2)
        try:
            started = time.monotonic()
            with pytest.raises(QueueBusyError):
                QueueClient(impatient).enqueue("job")
            # Bounded: three tries of 20 ms plus short backoffs, far under a second or so.
            assert time.monotonic() - started < 5.0
            conn = impatient.backend.connection()  # type: ignore[attr-defined]
            assert not conn.in_transaction
            worker = QueueWorker(impatient, "w-busy", register=False)
            with pytest.raises(QueueBusyError):
                worker.claim_next_task()
        finally:
            impatient.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert total_rows(db_path) == 0


def test_short_lock_is_waited_out(sqlite_db: QueueDatabase, db_path: Path) -> None:
    holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_soon() -> None:
        time.sleep(0.3)
        holder.execute("ROLLBACK")
        released.set()

    patient = QueueDatabase(db_path, pragmas={"busy_timeout": 50}, busy_retries=12)
    thread = threading.Thread(target=release_soon)
    try:
        thread.start()
        task_id = QueueClient(patient).enqueue("job", {"waited": True})
        assert released.is_set()
        assert QueueClient(patient).get(task_id).payload == {"waited": True}
    finally:
        thread.join()
        holder.close()
        patient.close()


_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
conn.close()
"""


def _spawn_lock_holder(db_path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(db_path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_held_by_another_process(sqlite_db: QueueDatabase, db_path: Path) -> None:
    # A process holding the write lock longer than busy_timeout x retries: QueueBusyError.
    proc = _spawn_lock_holder(db_path, 3.0)
    try:
        impatient = QueueDatabase(db_path, pragmas={"busy_timeout": 10}, busy_retries=1)
        with pytest.raises(QueueBusyError):
            QueueClient(impatient).enqueue("job")
        impatient.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert total_rows(db_path) == 0

    # A process holding it briefly: the write waits and succeeds.
    proc = _spawn_lock_holder(db_path, 0.3)
    try:
        patient = QueueDatabase(db_path, pragmas={"busy_timeout": 2000}, busy_retries=3)
        QueueClient(patient).enqueue("job")
        patient.close()
    finally:
        proc.wait(timeout=10)
    assert total_rows(db_path) == 1


_READ_AND_CLOSE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
print(conn.execute("SELECT count(*) FROM tasks").fetchone()[0], flush=True)
conn.close()
"""


def test_opening_the_file_again_keeps_other_processes_off_the_live_wal(
    sqlite_db: QueueDatabase, db_path: Path
) -> None:
    # Regression: the file check of a second QueueDatabase on the same file used to open
    # and close the file with Python's open(), which dropped this process's POSIX locks.
    # Another process closing its last connection then thought it was the last user,
    # checkpointed and deleted the -wal and -shm files under the live connections.
    client = QueueClient(sqlite_db)
    client.enqueue("job", {"n": 1})
    wal = db_path.with_name(db_path.name + "-wal")
    shm = db_path.with_name(db_path.name + "-shm")
    assert wal.exists()
    assert shm.exists()
    second = QueueDatabase(db_path)
    try:
        second.initialize_schema()
        out = subprocess.run(
            [sys.executable, "-c", _READ_AND_CLOSE, str(db_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert out.stdout.strip() == "1"
        assert wal.exists()
        assert shm.exists()
        client.enqueue("job", {"n": 2})
        assert QueueClient(second).count_by_status()["queued"] == 2
        assert total_rows(db_path) == 2
    finally:
        second.close()


def test_version_2_database_upgrades_to_the_current_schema(db_path: Path) -> None:
    # A file as version 2 wrote it: one queued task, one whose lease expired, one finished.
    raw = sqlite_file_at_version(db_path, 2)
    long_ago = time.time() - 86_400
    insert = (
        "INSERT INTO tasks (task_type, payload, status, attempts, run_after, lease_until, locked_by, "
        "lease_token, finished_at, created_at, updated_at) VALUES (?, '{}', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    raw.execute(insert, ("job", "completed", 1, long_ago, None, None, None, long_ago, long_ago, long_ago))
    raw.execute(insert, ("job", "leased", 1, long_ago, long_ago + 60, "gone", "t0", None, long_ago, long_ago))
    raw.execute(insert, ("job", "queued", 0, long_ago, None, None, None, None, long_ago, long_ago))
    raw.execute(
        "INSERT INTO runs (run_id, task_id, module_id, module_name, status, created_at, updated_at) "
        "VALUES ('run-1', 3, 'mod', 'Module', 'queued', ?, ?)",
        (long_ago, long_ago),
    )
    before = raw.execute("SELECT * FROM tasks ORDER BY id").fetchall()
    raw.commit()
    raw.close()

    with QueueDatabase(db_path) as db:
        assert db.initialize_schema() == SCHEMA_VERSION
        indexes = {
            row[0]
            for row in db.backend.connection().execute(  # type: ignore[attr-defined]
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
            )
        }
        assert "idx_tasks_leased_finished" in indexes
        assert not {"idx_tasks_leased", "idx_tasks_finished"} & indexes
        conn = db.backend.connection()  # type: ignore[attr-defined]
        # Every row and value survived the table rebuild, and so did the run that refers to a task.
        # Version 5 adds trace_context, version 7 the flow-control keys: NULL for older tasks.
        after = conn.execute("SELECT * FROM tasks ORDER BY id").fetchall()
        assert after == [(*row, None, None, None) for row in before]
        assert conn.execute("SELECT run_id, task_id FROM runs").fetchall() == [("run-1", 3)]
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        # The rebuilt table still refuses a status outside the five.
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            conn.execute("UPDATE tasks SET status = 'bogus' WHERE id = 1")
        # Foreign keys hold again: deleting the task deletes its run.
        conn.execute("DELETE FROM tasks WHERE id = 3")
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        conn.execute(  # put task 3 back, still queued, for the claims below
            "INSERT INTO tasks (id, task_type, payload, run_after, created_at, updated_at) "
            "VALUES (3, 'job', '{}', ?, ?, ?)",
            (long_ago, long_ago, long_ago),
        )
        client = QueueClient(db)
        stats = client.stats()
        assert stats.expired_leases == 1
        # The expired lease is reclaimed through the new index, then both tasks run.
        worker = QueueWorker(db, "after-upgrade")
        claimed = worker.claim_batch(5)
        assert sorted(t.id for t in claimed) == [2, 3]
        assert worker.complete_many(claimed) == [t.id for t in claimed]
        assert client.prune(older_than=3600) == 1
        assert client.count_by_status()["completed"] == 2
        assert db.integrity_check() == ["ok"]
