"""Maintenance on SQLite: checkpoint, vacuum, analyze, integrity check, backup and restore.

SQLite-specific: databases are built from the ``db_path`` fixture.
"""

from __future__ import annotations

import shutil
import sqlite3
import stat
import sys
import threading
from pathlib import Path

import pytest

from prismq.queue import BackupError, ConfigError, QueueClient, QueueDatabase, QueueWorker
from prismq.queue.backends.sqlite import SCHEMA_VERSION


def rows_in(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, task_type FROM tasks ORDER BY id").fetchall()
    finally:
        conn.close()


def snapshot(client: QueueClient) -> list[tuple[int, str, str, object]]:
    return [
        (t.id, t.task_type, t.status.value, t.payload) for t in client.list(limit=10_000, newest_first=False)
    ]


# -- checkpoint, vacuum, analyze, integrity ---------------------------------------------


@pytest.mark.parametrize("mode", ["PASSIVE", "FULL", "RESTART", "TRUNCATE", "passive", " truncate "])
def test_checkpoint_modes(sqlite_db: QueueDatabase, db_path: Path, mode: str) -> None:
    client = QueueClient(sqlite_db)
    client.enqueue_many([{"task_type": "job", "payload": {"n": n}} for n in range(200)])
    busy, log_frames, checkpointed = sqlite_db.checkpoint(mode)
    assert busy == 0
    assert log_frames >= 0
    assert checkpointed >= 0
    if mode.strip().upper() == "TRUNCATE":
        assert db_path.with_name(db_path.name + "-wal").stat().st_size == 0
        assert (log_frames, checkpointed) == (0, 0)
    else:
        assert log_frames > 0
        assert checkpointed == log_frames
    assert client.count_by_status()["queued"] == 200


def test_checkpoint_default_mode_is_passive(sqlite_db: QueueDatabase) -> None:
    QueueClient(sqlite_db).enqueue("job")
    busy, log_frames, checkpointed = sqlite_db.checkpoint()
    assert busy == 0
    assert checkpointed == log_frames > 0


@pytest.mark.parametrize("mode", ["EVERYTHING", "", "PASSIVE; DROP TABLE tasks"])
def test_checkpoint_bad_mode_is_config_error(sqlite_db: QueueDatabase, mode: str) -> None:
    with pytest.raises(ConfigError):
        sqlite_db.checkpoint(mode)
    assert sqlite_db.integrity_check() == ["ok"]


def test_vacuum_returns_space_and_keeps_data(sqlite_db: QueueDatabase, db_path: Path) -> None:
    client = QueueClient(sqlite_db)
    ids = client.enqueue_many([{"task_type": "job", "payload": "x" * 2000} for _ in range(500)])
    keep = client.enqueue("keep", {"k": 1})
    for task_id in ids:
        client.cancel(task_id)
    assert client.prune(0) == 500
    sqlite_db.checkpoint("TRUNCATE")
    before = db_path.stat().st_size
    sqlite_db.vacuum()
    sqlite_db.checkpoint("TRUNCATE")
    assert db_path.stat().st_size < before
    assert client.get(keep).payload == {"k": 1}
    assert sqlite_db.integrity_check() == ["ok"]


def test_analyze_fills_planner_statistics(sqlite_db: QueueDatabase) -> None:
    QueueClient(sqlite_db).enqueue_many([{"task_type": f"t{n % 3}"} for n in range(50)])
    sqlite_db.analyze()
    conn = sqlite_db.backend.connection()  # type: ignore[attr-defined]
    indexed = {row[0] for row in conn.execute("SELECT idx FROM sqlite_stat1 WHERE tbl = 'tasks'")}
    assert "idx_tasks_ready_type" in indexed


def test_integrity_check_ok(sqlite_db: QueueDatabase) -> None:
    assert sqlite_db.integrity_check() == ["ok"]
    QueueClient(sqlite_db).enqueue_many([{"task_type": "job"} for _ in range(10)])
    assert sqlite_db.integrity_check() == ["ok"]


# -- backup ------------------------------------------------------------------------------


def test_backup_while_another_connection_writes(sqlite_db: QueueDatabase, tmp_path: Path) -> None:
    client = QueueClient(sqlite_db)
    before = client.enqueue_many([{"task_type": "before", "payload": {"n": n}} for n in range(300)])
    stop = threading.Event()
    written: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        # Another thread: its own connection to the same file.
        try:
            while not stop.is_set():
                written.append(client.enqueue("during"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    (tmp_path / "backups").mkdir()
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 20:
            threading.Event().wait(0.005)
        copy = sqlite_db.backup(tmp_path / "backups" / "copy.db")
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert copy == tmp_path / "backups" / "copy.db"
    copied = rows_in(copy)
    copied_ids = [row[0] for row in copied]
    assert copied_ids[: len(before)] == before
    # A consistent copy: a prefix of the ids, without gaps.
    assert copied_ids == list(range(copied_ids[0], copied_ids[0] + len(copied_ids)))
    assert len(copied_ids) >= len(before) + 20
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    assert not list((tmp_path / "backups").glob("*.partial"))
    if sys.platform != "win32":
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600


def test_backup_replaces_existing_destination(sqlite_db: QueueDatabase, tmp_path: Path) -> None:
    client = QueueClient(sqlite_db)
    client.enqueue("first")
    target = tmp_path / "copy.db"
    sqlite_db.backup(target)
    client.enqueue("second")
    sqlite_db.backup(target)
    assert [row[1] for row in rows_in(target)] == ["first", "second"]


def test_backup_onto_live_file_is_refused(sqlite_db: QueueDatabase, db_path: Path) -> None:
    QueueClient(sqlite_db).enqueue("job")
    with pytest.raises(BackupError):
        sqlite_db.backup(db_path)
    # Also through another spelling of the same path.
    with pytest.raises(BackupError):
        sqlite_db.backup(db_path.parent / "." / db_path.name)
    assert QueueClient(sqlite_db).count_by_status()["queued"] == 1
    assert sqlite_db.integrity_check() == ["ok"]


def test_backup_into_missing_folder_is_refused(sqlite_db: QueueDatabase, tmp_path: Path) -> None:
    with pytest.raises(BackupError):
        sqlite_db.backup(tmp_path / "no" / "such" / "folder" / "copy.db")
    assert not (tmp_path / "no").exists()


def test_backup_onto_a_directory_is_refused(sqlite_db: QueueDatabase, tmp_path: Path) -> None:
    folder = tmp_path / "adir"
    folder.mkdir()
    with pytest.raises(BackupError):
        sqlite_db.backup(folder)


# -- restore -----------------------------------------------------------------------------


@pytest.fixture
def backup_file(sqlite_db: QueueDatabase, tmp_path: Path) -> Path:
    client = QueueClient(sqlite_db)
    client.enqueue_many([{"task_type": "saved", "payload": {"n": n}} for n in range(50)])
    return sqlite_db.backup(tmp_path / "saved.db")


def test_restore_replaces_content_with_wal_files_present(
    sqlite_db: QueueDatabase, db_path: Path, backup_file: Path
) -> None:
    client = QueueClient(sqlite_db)
    saved = snapshot(client)
    client.enqueue_many([{"task_type": "later"} for _ in range(30)])
    worker = QueueWorker(sqlite_db, "w-restore")
    claimed = worker.claim_next_task()
    assert claimed is not None
    # A second, independent handle on the live file, opened before the restore.
    other = QueueDatabase(db_path)
    try:
        assert QueueClient(other).count_by_type().keys() == {"saved", "later"}
        assert db_path.with_name(db_path.name + "-wal").exists()
        assert db_path.with_name(db_path.name + "-shm").exists()

        sqlite_db.restore(backup_file)

        assert snapshot(client) == saved
        assert snapshot(QueueClient(other)) == saved
        assert sqlite_db.integrity_check() == ["ok"]
        assert other.integrity_check() == ["ok"]
        assert sqlite_db.schema_version() == SCHEMA_VERSION
        # Still a working queue afterwards.
        new_id = client.enqueue("after-restore")
        assert QueueClient(other).get(new_id).task_type == "after-restore"
    finally:
        other.close()
    # And what a fresh process would read from disk: the restored rows, still in WAL mode.
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    assert [row[1] for row in rows_in(db_path)].count("saved") == 50
    assert "later" not in {row[1] for row in rows_in(db_path)}


def _assert_refused_and_unchanged(sqlite_db: QueueDatabase, source: Path) -> None:
    client = QueueClient(sqlite_db)
    client.enqueue("live", {"keep": True})
    before = snapshot(client)
    with pytest.raises(BackupError):
        sqlite_db.restore(source)
    assert snapshot(client) == before
    assert sqlite_db.integrity_check() == ["ok"]


def test_restore_from_missing_file_is_refused(sqlite_db: QueueDatabase, tmp_path: Path) -> None:
    _assert_refused_and_unchanged(sqlite_db, tmp_path / "missing.db")


def test_restore_from_non_sqlite_file_is_refused(sqlite_db: QueueDatabase, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 500)
    _assert_refused_and_unchanged(sqlite_db, junk)


def test_restore_from_truncated_backup_is_refused(
    sqlite_db: QueueDatabase, tmp_path: Path, backup_file: Path
) -> None:
    data = backup_file.read_bytes()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(data[: len(data) // 2])
    _assert_refused_and_unchanged(sqlite_db, truncated)


def test_restore_from_corrupt_backup_is_refused(
    sqlite_db: QueueDatabase, tmp_path: Path, backup_file: Path
) -> None:
    data = bytearray(backup_file.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    # Overwrite every page after the first with garbage; the header stays valid.
    for offset in range(page_size, len(data)):
        data[offset] = (offset * 131) % 251
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(bytes(data))
    _assert_refused_and_unchanged(sqlite_db, corrupt)


def test_restore_from_foreign_sqlite_file_is_refused(sqlite_db: QueueDatabase, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, task_type TEXT)")
    conn.execute("INSERT INTO tasks (task_type) VALUES ('imposter')")
    conn.commit()
    conn.close()
    _assert_refused_and_unchanged(sqlite_db, foreign)


def test_restore_from_newer_version_is_refused(
    sqlite_db: QueueDatabase, tmp_path: Path, backup_file: Path
) -> None:
    newer = tmp_path / "newer.db"
    shutil.copyfile(backup_file, newer)
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    _assert_refused_and_unchanged(sqlite_db, newer)
