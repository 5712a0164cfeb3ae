"""Storage faults: each raises a specific QueueError whose message says what to do, and
leaves the database consistent with its earlier data intact."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_support import IS_ROOT, POSIX, run_python_as_nobody

from prismq.queue import (
    BackupError,
    ConfigError,
    NotAQueueDatabaseError,
    QueueClient,
    QueueDatabase,
    ReadOnlyStorageError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
)
from prismq.queue.backends.sqlite.connection import SCHEMA_VERSION, translate_error
from prismq.queue.cli import main as cli_main


def seed(path: Path, count: int = 20, pad: int = 50) -> list[int]:
    with QueueDatabase(path) as db:
        db.initialize_schema()
        return QueueClient(db).enqueue_many(
            {"task_type": "seed", "payload": {"n": n, "pad": "p" * pad}} for n in range(count)
        )


def snapshot(path: Path) -> list[tuple[int, str, object]]:
    with QueueDatabase(path) as db:
        assert db.integrity_check() == ["ok"]
        return [
            (t.id, t.status.value, t.payload) for t in QueueClient(db).list(limit=10_000, newest_first=False)
        ]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        from prismq.queue.cli import output

        old = output.console.file, output.error_console.file
        output.console.file, output.error_console.file = out, err
        try:
            code = cli_main(list(argv))
        finally:
            output.console.file, output.error_console.file = old
    return code, out.getvalue(), err.getvalue()


# -- disk full ------------------------------------------------------------------------


def test_disk_full_raises_storage_full_and_keeps_earlier_tasks(db_path: Path) -> None:
    ids = seed(db_path)
    with QueueDatabase(db_path) as probe:
        pages = probe.backend.connection().execute("PRAGMA page_count").fetchone()[0]
    big = {"blob": "x" * 60_000}
    accepted: list[int] = []
    with QueueDatabase(db_path, pragmas={"max_page_count": pages + 40}) as db:
        client = QueueClient(db)
        full = None
        for _ in range(100):
            try:
                accepted.append(client.enqueue("big", big))
            except StorageFullError as exc:
                full = exc
                break
        assert full is not None, "100 large payloads fitted under the page limit"
        message = str(full)
        assert "max_page_count" in message
        assert "Free disk space" in message
        assert "committed tasks are intact" in message
        # A batch that does not fit is refused whole.
        with pytest.raises(StorageFullError):
            client.enqueue_many([{"task_type": "big", "payload": big}] * 5)
        assert db.integrity_check() == ["ok"]
        assert [client.get(i).payload["n"] for i in ids] == list(range(len(ids)))
        assert client.count_by_type()["big"]["queued"] == len(accepted)
        assert 0 < len(accepted) < 100
    # With the limit raised, enqueues work again.
    with QueueDatabase(db_path, pragmas={"max_page_count": pages + 10_000}) as db:
        client = QueueClient(db)
        new_ids = client.enqueue_many([{"task_type": "big", "payload": big}] * 5)
        assert client.get(new_ids[-1]).payload == big
        assert client.count_by_type()["big"]["queued"] == len(accepted) + 5
        assert db.integrity_check() == ["ok"]


# -- read-only file and folder ---------------------------------------------------------

READ_ONLY_PROBE = r"""
import json, sys
from prismq.queue import QueueClient, QueueDatabase, QueueError
results = {}
def attempt(name, call):
    try:
        value = call()
    except QueueError as exc:
        results[name] = [type(exc).__name__, str(exc)]
    except Exception as exc:
        results[name] = ["UNEXPECTED " + type(exc).__name__, str(exc)]
    else:
        results[name] = ["ok", repr(value)]
target = sys.argv[1]
def open_and_enqueue():
    db = QueueDatabase(target)
    try:
        db.initialize_schema()
        return QueueClient(db).enqueue("after", {"x": 1})
    finally:
        db.close()
attempt("enqueue", open_and_enqueue)
if len(sys.argv) > 2:
    def backup():
        db = QueueDatabase(target)
        try:
            return str(db.backup(sys.argv[2]))
        finally:
            db.close()
    attempt("backup", backup)
print(json.dumps(results))
"""


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder an unprivileged child can reach (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="prismq-ro-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            with contextlib.suppress(OSError):
                path.chmod(0o700 if path.is_dir() else 0o600)
        shutil.rmtree(folder, ignore_errors=True)


def give_to_child(*paths: Path) -> None:
    """Let the unprivileged child own ``paths`` (as root, that is user nobody)."""
    if IS_ROOT:
        for path in paths:
            os.chown(path, 65534, 65534)


def probe_as_child(*args: str) -> dict[str, list[str]]:
    code, out, err = run_python_as_nobody(READ_ONLY_PROBE, *args)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not POSIX, reason="file modes are POSIX")
def test_read_only_database_file(shared_folder: Path) -> None:
    # As root, permissions are ignored, so the child drops to user nobody: a real
    # permission check, not a simulation.
    folder = shared_folder / "data"
    folder.mkdir()
    db_path = folder / "queue.db"
    seed(db_path)
    before = snapshot(db_path)
    give_to_child(folder, db_path)
    db_path.chmod(0o400)
    results = probe_as_child(str(db_path))
    name, message = results["enqueue"]
    assert name == "ReadOnlyStorageError", results
    assert "write permission" in message or "writable" in message, message
    db_path.chmod(0o600)
    assert snapshot(db_path) == before


@pytest.mark.skipif(not POSIX, reason="file modes are POSIX")
def test_read_only_folder_and_missing_parent(shared_folder: Path) -> None:
    folder = shared_folder / "data"
    folder.mkdir()
    db_path = folder / "queue.db"
    seed(db_path)
    before = snapshot(db_path)
    give_to_child(folder, db_path)
    folder.chmod(0o555)
    # The file is writable, the folder is not: SQLite cannot create -wal/-shm beside it.
    results = probe_as_child(str(db_path))
    name, message = results["enqueue"]
    assert name == "ReadOnlyStorageError", results
    assert "directory" in message or "folder" in message, message
    # A database in a missing folder under the read-only one cannot be created.
    results = probe_as_child(str(folder / "missing" / "deeper" / "queue.db"))
    name, message = results["enqueue"]
    assert name == "ReadOnlyStorageError", results
    assert "cannot create the folder" in message
    assert "writable location" in message
    assert not (folder / "missing").exists()
    folder.chmod(0o755)
    assert snapshot(db_path) == before


@pytest.mark.skipif(not POSIX, reason="file modes are POSIX")
def test_backup_to_unwritable_folder_is_backup_error(shared_folder: Path) -> None:
    data = shared_folder / "data"
    locked = shared_folder / "locked"
    data.mkdir()
    locked.mkdir()
    db_path = data / "queue.db"
    seed(db_path)
    before = snapshot(db_path)
    give_to_child(data, db_path, locked)
    locked.chmod(0o555)
    results = probe_as_child(str(db_path), str(locked / "backup.db"))
    assert results["enqueue"][0] == "ok", results
    name, message = results["backup"]
    assert name == "BackupError", results
    assert "writable folder" in message
    assert list(locked.iterdir()) == []
    locked.chmod(0o755)
    assert len(snapshot(db_path)) == len(before) + 1


def test_translate_error_on_a_real_read_only_connection(tmp_path: Path) -> None:
    """The exception SQLite raises when writing through a read-only handle maps correctly."""
    path = tmp_path / "queue.db"
    seed(path)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        with pytest.raises(sqlite3.OperationalError) as info:
            conn.execute("DELETE FROM tasks")
    finally:
        conn.close()
    translated = translate_error(info.value, str(path))
    assert isinstance(translated, ReadOnlyStorageError)
    assert "write permission" in str(translated)


def test_backup_destination_errors(tmp_path: Path) -> None:
    db_path = tmp_path / "queue.db"
    seed(db_path)
    with QueueDatabase(db_path) as db:
        with pytest.raises(BackupError, match="does not exist; create it first"):
            db.backup(tmp_path / "no-such-folder" / "b.db")
        with pytest.raises(BackupError, match="is a directory"):
            db.backup(tmp_path)
        with pytest.raises(BackupError, match="live database itself"):
            db.backup(db_path)
        assert db.integrity_check() == ["ok"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("queue.db")) == []


def test_names_the_filesystem_cannot_hold(tmp_path: Path) -> None:
    long_name = "x" * 300
    with pytest.raises(StorageError, match="choose another path"):
        QueueDatabase(tmp_path / long_name)
    db_path = tmp_path / "queue.db"
    seed(db_path)
    with QueueDatabase(db_path) as db:
        with pytest.raises(BackupError, match="choose another path"):
            db.backup(tmp_path / long_name)
        with pytest.raises(BackupError, match="cannot read backup file"):
            db.restore(tmp_path / long_name)
        # Names no filesystem can hold: a NUL, a lone surrogate.
        for bad in ("a\x00b.db", "\ud800.db"):
            with pytest.raises(BackupError):
                db.backup(tmp_path / bad)
            with pytest.raises(BackupError):
                db.restore(tmp_path / bad)
            with pytest.raises(ConfigError):
                QueueDatabase(tmp_path / bad)
        assert db.integrity_check() == ["ok"]
    assert len(snapshot(db_path)) == 20


# -- corrupt, foreign and newer files ---------------------------------------------------


def corrupt_middle(path: Path, fraction: float = 0.5) -> None:
    size = path.stat().st_size
    page = 4096
    pages = size // page
    start = max(2, int(pages * (1 - fraction) / 2)) * page
    with open(path, "r+b") as handle:
        handle.seek(start)
        handle.write(random.Random(pages).randbytes(int(pages * fraction) * page))


def test_corrupt_file_raises_storage_error_and_doctor_reports_it(db_path: Path) -> None:
    seed(db_path, count=3000, pad=200)
    corrupt_middle(db_path)
    with QueueDatabase(db_path) as db:
        client = QueueClient(db)

        def use() -> None:
            client.count_by_status()
            client.list(limit=10_000)
            client.enqueue_many({"task_type": "x", "payload": {"n": n}} for n in range(500))

        with pytest.raises(StorageError) as info:
            use()
        message = str(info.value)
        assert "corrupt" in message, message
        assert "doctor" in message, message
        assert "backup" in message, message
        assert db.integrity_check() != ["ok"]
    code, out, err = run_cli("--db", str(db_path), "doctor", "--json")
    assert code == 1, (out, err)
    report = json.loads(out)
    assert report["healthy"] is False
    integrity = next(c for c in report["checks"] if c["check"] == "integrity")
    assert integrity["status"] == "fail"
    assert "restore the latest backup" in integrity["detail"]


def test_non_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = digest(path)
    with pytest.raises(NotAQueueDatabaseError) as info:
        QueueDatabase(path).initialize_schema()
    assert "left untouched" in str(info.value)
    assert "new path" in str(info.value)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT)")
    conn.execute("INSERT INTO tasks (title) VALUES ('mine')")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(NotAQueueDatabaseError, match="separate file"):
        QueueDatabase(path).initialize_schema()
    assert digest(path) == before


def test_newer_schema_is_refused_untouched(db_path: Path) -> None:
    seed(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = digest(db_path)
    for action in ("initialize", "read"):
        db = QueueDatabase(db_path)
        try:
            call = db.initialize_schema if action == "initialize" else QueueClient(db).count_by_status
            with pytest.raises(SchemaVersionError) as info:
                call()
        finally:
            db.close()
        assert "Upgrade prismq-queue" in str(info.value)
        assert "untouched" in str(info.value)
    assert digest(db_path) == before


# -- restore from a bad backup ---------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not_sqlite", "empty", "newer"])
def test_restore_from_bad_backup_replaces_nothing(tmp_path: Path, damage: str) -> None:
    live = tmp_path / "live.db"
    seed(live, count=2000, pad=100)
    backup = tmp_path / "backup.db"
    with QueueDatabase(live) as db:
        db.backup(backup)
        QueueClient(db).enqueue("after-backup", {"kept": True})
    if damage == "truncated":
        with open(backup, "r+b") as handle:
            handle.truncate(backup.stat().st_size // 2)
    elif damage == "corrupt":
        corrupt_middle(backup, 0.3)
    elif damage == "not_sqlite":
        backup.write_bytes(b"PK\x03\x04 a zip file" * 100)
    elif damage == "empty":
        backup.write_bytes(b"")
    else:
        conn = sqlite3.connect(backup)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
        conn.close()
    before = snapshot(live)
    with QueueDatabase(live) as db:
        with pytest.raises(BackupError) as info:
            db.restore(backup)
        message = str(info.value)
        assert "nothing was restored" in message or "upgrade prismq-queue" in message, message
        assert db.integrity_check() == ["ok"]
    after = snapshot(live)
    assert after == before
    assert after[-1][2] == {"kept": True}
    # The CLI says the same with exit code 1.
    code, _out, err = run_cli("--db", str(live), "restore", str(backup), "--yes")
    assert code == 1
    assert "BackupError" in err
    assert "Traceback" not in err
    assert snapshot(live) == before
