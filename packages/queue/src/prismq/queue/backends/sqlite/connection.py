"""Opening SQLite connections safely: file checks, PRAGMAs, transactions, busy retries.

Nothing here knows about tasks; :mod:`.backend` builds the queue on top.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from ...errors import (
    ConfigError,
    NotAQueueDatabaseError,
    QueueBusyError,
    QueueError,
    ReadOnlyStorageError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
)
from ...validation import is_int
from ..sqlfile import load_migrations, load_queries

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_PRAGMAS",
    "SCHEMA_VERSION",
    "ConnectionManager",
    "translate_error",
]

T = TypeVar("T")

APPLICATION_ID = 0x50524D51
"""Written to the database header (``PRAGMA application_id``); marks a PrismQ Queue file."""

MIGRATIONS = load_migrations(__package__)
SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this release writes (``PRAGMA user_version``)."""

SQLITE_HEADER = b"SQLite format 3\x00"

_FILE_SHAPE = load_queries(__package__, "file_checks.sql")["file_shape"]

DEFAULT_PRAGMAS: dict[str, str | int] = {
    "journal_mode": "WAL",
    "synchronous": "NORMAL",
    "busy_timeout": 5000,
    "wal_autocheckpoint": 1000,
    "foreign_keys": "ON",
    "temp_store": "MEMORY",
    "mmap_size": 134217728,
    "page_size": 4096,
    "cache_size": -20000,
}
"""PRAGMAs applied to every connection, and why:

- ``journal_mode=WAL``: readers never block the writer and the writer never blocks readers;
  one write transaction at a time, which is what a queue's short claims need.
- ``synchronous=NORMAL``: in WAL mode a commit is durable against a process crash and
  the database is never corrupted; only a power loss may drop the last transactions.
  ``FULL`` fsyncs every commit (slower, durable against power loss).
- ``busy_timeout=5000``: a connection waits up to 5 s for the write lock inside SQLite
  before reporting busy; the queue then retries with backoff before raising
  :class:`~prismq.queue.errors.QueueBusyError`.
- ``wal_autocheckpoint=1000``: fold the WAL back into the database every ~1000 pages
  (4 MB), keeping the WAL file small without a manual checkpoint.
- ``foreign_keys=ON``: enforce references (kept on for your own tables sharing the file).
- ``temp_store=MEMORY``: temporary tables and sorts stay in memory, off the disk.
- ``mmap_size=134217728``: read up to 128 MiB through memory mapping, saving copies.
- ``page_size=4096``: matches the usual filesystem block; only takes effect on a new file,
  before WAL is switched on, so it is set first.
- ``cache_size=-20000``: about 20 MB of page cache per connection (negative means KiB).
"""

# PRAGMAs that may be set, with the values they accept (a set of words, or int).
_PRAGMA_VALUES: dict[str, frozenset[str] | type[int]] = {
    "journal_mode": frozenset({"WAL", "DELETE", "TRUNCATE", "PERSIST", "MEMORY", "OFF"}),
    "synchronous": frozenset({"OFF", "NORMAL", "FULL", "EXTRA", "0", "1", "2", "3"}),
    "busy_timeout": int,
    "wal_autocheckpoint": int,
    "foreign_keys": frozenset({"ON", "OFF", "0", "1"}),
    "temp_store": frozenset({"DEFAULT", "FILE", "MEMORY", "0", "1", "2"}),
    "mmap_size": int,
    "page_size": int,
    "cache_size": int,
    "max_page_count": int,
    "journal_size_limit": int,
    "secure_delete": frozenset({"ON", "OFF", "FAST", "0", "1", "2"}),
    "cell_size_check": frozenset({"ON", "OFF", "0", "1"}),
}

_BUSY_MARKERS = ("database is locked", "database table is locked", "database is busy")


def normalize_pragmas(overrides: Mapping[str, str | int] | None) -> dict[str, str | int]:
    """Merge ``overrides`` over :data:`DEFAULT_PRAGMAS`, checking every name and value.

    Raises:
        ConfigError: An unknown PRAGMA, or a value it does not accept.
    """
    merged: dict[str, str | int] = dict(DEFAULT_PRAGMAS)
    for raw_name, value in (overrides or {}).items():
        name = str(raw_name).strip().lower()
        allowed = _PRAGMA_VALUES.get(name)
        if allowed is None:
            raise ConfigError(
                f"unsupported PRAGMA {raw_name!r}; supported: {', '.join(sorted(_PRAGMA_VALUES))}"
            )
        if allowed is int:
            if not is_int(value):
                try:
                    value = int(str(value))
                except ValueError:
                    raise ConfigError(f"PRAGMA {name} takes an integer, got {value!r}") from None
        else:
            word = str(value).strip().upper()
            assert isinstance(allowed, frozenset)
            if word not in allowed:
                raise ConfigError(f"PRAGMA {name} takes one of {', '.join(sorted(allowed))}, got {value!r}")
            value = word
        merged[name] = value
    if int(merged["busy_timeout"]) < 0:
        raise ConfigError("PRAGMA busy_timeout must be >= 0 milliseconds")
    return merged


def is_busy(exc: BaseException) -> bool:
    """True when ``exc`` is SQLite reporting a lock held by another connection."""
    return isinstance(exc, sqlite3.OperationalError) and any(
        marker in str(exc).lower() for marker in _BUSY_MARKERS
    )


def translate_error(exc: sqlite3.Error, location: str) -> QueueError:
    """Map an ``sqlite3`` error to the queue's hierarchy with an actionable message."""
    text = str(exc)
    lower = text.lower()
    if is_busy(exc):
        return QueueBusyError(
            f"{location} stayed locked by another writer: {text}. Raise busy_timeout or "
            "reduce long write transactions."
        )
    if "disk is full" in lower or "database or disk is full" in lower:
        return StorageFullError(
            f"{location} cannot grow: {text}. Free disk space (or raise PRAGMA max_page_count), "
            "then retry; committed tasks are intact."
        )
    if "readonly" in lower or "read-only" in lower:
        return ReadOnlyStorageError(
            f"{location} is read-only: {text}. The process needs write permission on the file "
            "and on its directory (SQLite creates -wal and -shm files beside it)."
        )
    if "unable to open database file" in lower:
        return ReadOnlyStorageError(
            f"cannot open {location}: {text}. Check that the directory exists and is writable "
            "by this process."
        )
    if "file is not a database" in lower or "not a database" in lower:
        return NotAQueueDatabaseError(
            f"{location} is not an SQLite database ({text}); point the queue at a queue "
            "database file or a new path."
        )
    if "malformed" in lower or "corrupt" in lower:
        return StorageError(
            f"{location} is corrupt: {text}. Run 'prismq-queue doctor', then restore the latest backup."
        )
    return StorageError(f"SQLite error on {location}: {text}")


class _ThreadState(threading.local):
    connection: sqlite3.Connection | None = None
    depth: int = 0


class ConnectionManager:
    """One connection per thread to one database file, with safe transactions.

    Args:
        path: The database file.
        pragmas: PRAGMAs after :func:`normalize_pragmas`.
        busy_retries: Times a busy ``BEGIN IMMEDIATE`` is retried after SQLite's own wait.
        busy_backoff: First backoff between those retries, in seconds (doubles, jittered).
    """

    def __init__(
        self,
        path: Path,
        pragmas: dict[str, str | int],
        busy_retries: int = 8,
        busy_backoff: float = 0.005,
    ) -> None:
        self.path = path
        self.location = str(path)
        self.pragmas = pragmas
        self.busy_retries = busy_retries
        self.busy_backoff = busy_backoff
        self._state = _ThreadState()
        # Connections by owning thread; those of finished threads are closed on the next open.
        self._all: dict[int, tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.journal_mode = ""
        self._prepare_file()

    # -- opening ---------------------------------------------------------------
    def _prepare_file(self) -> None:
        """Create the parent folder and an owner-only empty file, or check the existing one."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReadOnlyStorageError(
                f"cannot create the folder {self.path.parent} for the queue database: "
                f"{exc.strerror or exc}. Choose a writable location (PRISMQ_QUEUE_DB_PATH)."
            ) from None
        try:
            is_dir = self.path.is_dir()
        except OSError as exc:  # e.g. a name too long for the filesystem
            raise StorageError(
                f"cannot use {self.path} as the queue database: {exc.strerror or exc}; choose another path"
            ) from None
        if is_dir:
            raise NotAQueueDatabaseError(
                f"{self.path} is a directory; give the path of a database file inside it"
            )
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            self._check_header()
        except OSError as exc:
            raise ReadOnlyStorageError(
                f"cannot create the queue database {self.path}: {exc.strerror or exc}. "
                "Check the folder's permissions."
            ) from None
        else:
            os.close(fd)

    def _check_header(self) -> None:
        # The header is read through SQLite, never with open()/close() on the file: closing
        # any descriptor of a file drops every POSIX lock this process holds on it, including
        # the locks of this process's live connections; another process closing its last
        # connection would then checkpoint and delete the -wal and -shm files under them.
        # SQLite's own VFS defers such closes while a connection of this process holds locks.
        try:
            probe = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True)
            try:
                probe.execute("PRAGMA schema_version").fetchone()
            finally:
                probe.close()
        except sqlite3.DatabaseError as exc:
            if "not a database" not in str(exc).lower():
                raise translate_error(exc, self.location) from None
            raise NotAQueueDatabaseError(
                f"{self.path} is not an SQLite database (its header does not match); it was left "
                "untouched. Point the queue at a new path or at an existing queue database."
            ) from None

    def _connect(self) -> sqlite3.Connection:
        timeout = int(self.pragmas["busy_timeout"]) / 1000.0
        try:
            conn = sqlite3.connect(
                self.location, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise translate_error(exc, self.location) from None
        try:
            self._retry_busy(lambda: self._inspect(conn), "checking the file")
            self._retry_busy(lambda: self._apply_pragmas(conn), "applying PRAGMAs")
        except BaseException:
            conn.close()
            raise
        return conn

    def _inspect(self, conn: sqlite3.Connection) -> None:
        """Refuse foreign or newer databases before any PRAGMA could change the file.

        The marker, the schema version and the schema objects are read in one statement,
        so a process creating the queue's schema meanwhile is seen before or after its
        commit, never half-way (that was a race between processes opening a new file).
        """
        refuse_unless_queue_file(conn, self.location)

    def _retry_busy(self, action: Callable[[], T], what: str) -> T:
        """Run ``action``, retrying with backoff while SQLite reports the file busy.

        SQLite itself waits ``busy_timeout`` first, except for some lock waits (such as two
        processes switching a new file to WAL at once) that report busy at once.

        Raises:
            QueueBusyError: Still busy after ``busy_retries`` retries.
        """
        for attempt in range(self.busy_retries + 1):
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise translate_error(exc, self.location) from None
                if attempt == self.busy_retries:
                    raise QueueBusyError(
                        f"{self.location} stayed locked by other writers through "
                        f"{self.busy_retries + 1} tries of {self.pragmas['busy_timeout']} ms while "
                        f"{what}; a long transaction elsewhere is holding the write lock"
                    ) from None
                self._sleep_backoff(attempt)
            except sqlite3.Error as exc:
                raise translate_error(exc, self.location) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _apply_pragmas(self, conn: sqlite3.Connection) -> None:
        items = dict(self.pragmas)
        # page_size only takes effect on an empty file, before WAL is switched on.
        ordered = ["page_size", "journal_mode"] + [k for k in items if k not in ("page_size", "journal_mode")]
        for name in ordered:
            value = items[name]
            row = conn.execute(f"PRAGMA {name} = {value}").fetchone()
            if name == "journal_mode" and row is not None:
                self.journal_mode = str(row[0]).lower()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = self._state.connection
        if conn is None:
            if self._closed:
                raise StorageError(f"the queue database {self.location} was closed; open a new one")
            conn = self._connect()
            self._state.connection = conn
            current = threading.current_thread()
            with self._lock:
                finished = [
                    ident for ident, (ref, _) in self._all.items() if (t := ref()) is None or not t.is_alive()
                ]
                stale = [self._all.pop(ident)[1] for ident in finished]
                self._all[current.ident or 0] = (weakref.ref(current), conn)
            for old in stale:
                with contextlib.suppress(sqlite3.Error):
                    old.close()
        return conn

    def close(self) -> None:
        """Close every connection (from any thread); later use raises StorageError."""
        with self._lock:
            self._closed = True
            conns = [conn for _, conn in self._all.values()]
            self._all = {}
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._state.connection = None

    # -- transactions ----------------------------------------------------------
    @property
    def busy_budget(self) -> float:
        """Seconds a write may wait for the lock in all before giving up.

        Each of the ``busy_retries + 1`` tries waits up to ``busy_timeout`` inside SQLite;
        calls that cannot use those tries (a restore) wait this long in all.
        """
        return int(self.pragmas["busy_timeout"]) / 1000.0 * (self.busy_retries + 1)

    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`transaction` on this thread."""
        return self._state.depth > 0

    def _sleep_backoff(self, attempt: int) -> None:
        delay = min(self.busy_backoff * (2**attempt), 0.5)
        time.sleep(delay * random.uniform(0.5, 1.5))

    def _begin(self, conn: sqlite3.Connection, mode: str) -> None:
        self._retry_busy(lambda: conn.execute(f"BEGIN {mode}"), "starting a transaction")

    def _end(self, conn: sqlite3.Connection, commit: bool) -> None:
        """Commit (or roll back) the open transaction; a failed commit rolls back."""
        if not commit:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise translate_error(exc, self.location) from None

    @contextlib.contextmanager
    def transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """A transaction on this thread's connection; nested calls join the outer one.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction never fails
        half-way for a lock; busy starts are retried with backoff, then
        :class:`QueueBusyError` is raised. Any exception rolls back.
        """
        conn = self.connection()
        state = self._state
        if state.depth:
            state.depth += 1
            try:
                yield conn
            finally:
                state.depth -= 1
            return
        self._begin(conn, mode)
        state.depth = 1
        try:
            yield conn
        except BaseException:
            self._end(conn, commit=False)
            raise
        else:
            self._end(conn, commit=True)
        finally:
            state.depth = 0

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in a write transaction, retrying it whole while the file is busy.

        Inside an outer :meth:`transaction` it joins that one instead (no retry: the
        outer caller owns the transaction). This is :meth:`transaction` written out
        without a generator, as every claim and completion runs through it.
        """
        state = self._state
        if state.depth:
            try:
                return work(state.connection)  # type: ignore[arg-type]
            except sqlite3.Error as exc:
                raise translate_error(exc, self.location) from None
        for attempt in range(self.busy_retries + 1):
            conn = state.connection or self.connection()
            self._begin(conn, "IMMEDIATE")
            state.depth = 1
            try:
                result = work(conn)
            except sqlite3.Error as exc:
                self._end(conn, commit=False)
                if is_busy(exc) and attempt < self.busy_retries:
                    self._sleep_backoff(attempt)
                    continue
                raise translate_error(exc, self.location) from None
            except BaseException:
                self._end(conn, commit=False)
                raise
            else:
                self._end(conn, commit=True)
            finally:
                state.depth = 0
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, work: Callable[[sqlite3.Connection], T], snapshot: bool = False) -> T:
        """Run read-only ``work``; with ``snapshot`` inside one read transaction."""
        conn = self.connection()
        try:
            if snapshot and not self._state.depth:
                with self.transaction("DEFERRED") as tx:
                    return work(tx)
            return work(conn)
        except sqlite3.Error as exc:
            raise translate_error(exc, self.location) from None

    # -- schema ----------------------------------------------------------------
    def migrate(self) -> int:
        """Apply pending migrations in one transaction; return the schema version.

        Foreign keys are switched off while migrations run (SQLite ignores that switch
        inside a transaction, so it happens before): a migration that rebuilds a table
        drops the old one, and with foreign keys on, that drop would delete the rows
        that reference it. ``PRAGMA foreign_key_check`` must come back empty before the
        migration commits.
        """

        def work(conn: sqlite3.Connection) -> int:
            # Checked again under the write lock: the decision to create the schema is
            # taken by one process at a time, on what the file holds now.
            version = refuse_unless_queue_file(conn, self.location)
            for number, _name, sql in MIGRATIONS:
                if number > version:
                    for statement in _split_statements(sql):
                        conn.execute(statement)
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise StorageError(
                    f"migrating {self.location} would leave {len(broken)} rows whose references "
                    f"are missing (first: {tuple(broken[0])}); nothing was changed. Run "
                    "'prismq-queue doctor' and restore the latest backup."
                )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            return SCHEMA_VERSION

        conn = self.connection()
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            return self.write(work)
        finally:
            enforce = str(self.pragmas["foreign_keys"]) in ("ON", "1")
            conn.execute("PRAGMA foreign_keys = ON" if enforce else "PRAGMA foreign_keys = OFF")


def refuse_unless_queue_file(conn: sqlite3.Connection, location: str) -> int:
    """Check that ``conn``'s file is a queue database or empty; return its schema version.

    Reads only. An empty file (no schema objects, ``application_id`` and ``user_version``
    both 0) is a new queue database; a file carrying the queue's ``application_id`` is a
    queue database. Anything else belongs to another program and is refused.

    Raises:
        NotAQueueDatabaseError: Another program's file (foreign marker, schema objects
            or ``user_version``), named in the message.
        SchemaVersionError: A queue database written by a newer release.
    """
    app_id, version, listed = conn.execute(_FILE_SHAPE).fetchone()
    objects = [(str(kind), str(name)) for kind, name in json.loads(listed or "[]")]
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{location} has schema version {version}, written by a newer PrismQ Queue; "
                f"this release understands up to version {SCHEMA_VERSION}. Upgrade "
                "prismq-queue; the file was left untouched."
            )
        return int(version)
    found = []
    if app_id != 0:
        found.append(f"application_id 0x{app_id & 0xFFFFFFFF:08X}, not PrismQ Queue's 0x{APPLICATION_ID:08X}")
    if objects:
        found.append(_describe_objects(objects))
    elif version != 0:
        found.append(f"user_version {version} but no tables")
    if found:
        raise NotAQueueDatabaseError(
            f"{location} is an SQLite database that holds other data ({'; '.join(found)}); it was "
            "left untouched. Use a separate file for the queue."
        )
    return 0


def _describe_objects(objects: list[tuple[str, str]]) -> str:
    """``tables: a, b; views: v`` (at most five names per kind)."""
    by_kind: dict[str, list[str]] = {}
    for kind, name in objects:
        by_kind.setdefault(kind, []).append(name)
    plural = {"index": "indexes"}
    return "; ".join(
        f"{plural.get(kind, kind + 's')}: {', '.join(sorted(names)[:5])}"
        + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        for kind, names in sorted(by_kind.items())
    )


def _split_statements(sql: str) -> list[str]:
    """Split a migration file into statements (no semicolons inside literals there)."""
    without_comments = re.sub(r"--[^\n]*", "", sql)
    return [s.strip() for s in without_comments.split(";") if s.strip()]
