"""``QueueDatabase``: where the queue lives, its connections, schema and maintenance."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from .backends.base import Backend, missing_members
from .config import ENV_DB_PATH, default_db_path
from .errors import BackendUnavailableError, ConfigError

__all__ = ["QueueDatabase"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _sqlite_path(target: str | os.PathLike[str] | None) -> Path:
    if target is None:
        return default_db_path()
    text = os.fspath(target)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
        if not text:
            raise ConfigError("sqlite:/// URL needs a path, e.g. sqlite:///queue.db")
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        raise ConfigError(f"database path {text!r} has characters the filesystem cannot store") from None
    if "\x00" in text:
        raise ConfigError(f"database path {text!r} contains a NUL character")
    if text in (":memory:", "") or text.startswith("file::memory:"):
        raise ConfigError(
            "the queue needs a database file shared by every connection; an in-memory "
            "database is private to one connection. Use a file in a temporary folder instead."
        )
    return Path(text).expanduser()


class QueueDatabase:
    """The queue's database: connections, PRAGMAs, transactions, schema and maintenance.

    A path (or ``sqlite:///path``) selects the embedded SQLite backend; a
    ``postgresql://`` URL selects PostgreSQL (``pip install "prismq-queue[postgres]"``).
    One ``QueueDatabase`` is shared by every client and worker of a process; each thread
    gets its own connection.

    Args:
        target: A file path, ``sqlite:///`` URL or ``postgresql://`` URL. ``None`` uses
            ``PRISMQ_QUEUE_DB_PATH`` (a path or a URL) or the platform default (see
            :func:`prismq.queue.config.default_db_path`).
        pragmas: SQLite PRAGMA overrides, merged over
            :data:`~prismq.queue.backends.sqlite.DEFAULT_PRAGMAS` (SQLite only).
        busy_retries: Retries of a write that finds the database locked, after SQLite's own
            ``busy_timeout`` wait, before :class:`~prismq.queue.errors.QueueBusyError`.
        clock: Returns the current UTC epoch time; every time the queue stores or compares
            (leases, delays, retries) comes from it. ``None`` picks the backend's: this
            machine's clock for SQLite (one machine, so one clock for every process), the
            server's clock for PostgreSQL (read from the server, then advanced with this
            process's monotonic clock), so workers on hosts whose clocks disagree still
            agree on when a lease ends. Pass a clock to control time in tests.
        backend: A ready backend object, instead of ``target`` (for custom backends): it
            must define every member of :class:`~prismq.queue.backends.base.Backend`.

    Raises:
        NotAQueueDatabaseError: The file is not SQLite (raised here). An SQLite file of
            another program (its own ``application_id``, a ``user_version``, or any table,
            view, index or trigger) is refused when the first connection opens (at the
            first call), before anything is written, and is left byte for byte untouched.
        SchemaVersionError: The file was written by a newer release; raised when the first
            connection opens, leaving the file untouched.
        ReadOnlyStorageError: The file or folder cannot be created or written.
        ConfigError: A PRAGMA or URL is malformed, or ``backend`` lacks members of the
            backend interface (the message names them).

    Example:
        >>> import tempfile, pathlib
        >>> folder = tempfile.mkdtemp()
        >>> db = QueueDatabase(pathlib.Path(folder) / "queue.db")
        >>> db.initialize_schema() == db.schema_version()
        True
        >>> db.integrity_check()
        ['ok']
        >>> db.close()
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | None = None,
        *,
        pragmas: Mapping[str, str | int] | None = None,
        busy_retries: int = 8,
        clock: Callable[[], float] | None = None,
        backend: Backend | None = None,
    ) -> None:
        if target is None:
            configured = os.environ.get(ENV_DB_PATH, "").strip()
            target = configured or None
        if backend is not None:
            missing = missing_members(backend)
            if missing:
                raise ConfigError(
                    f"backend {type(backend).__name__} lacks {', '.join(missing)}: a backend "
                    "defines every member of prismq.queue.backends.base.Backend"
                )
            self.backend: Backend = backend
        elif target is not None and os.fspath(target).startswith(_POSTGRES_SCHEMES):
            if pragmas:
                raise ConfigError("pragmas apply to SQLite only; configure PostgreSQL on the server")
            self.backend = _open_postgres(os.fspath(target))
        else:
            from .backends.sqlite import SQLiteBackend

            self.backend = SQLiteBackend(
                _sqlite_path(target), pragmas=dict(pragmas or {}), busy_retries=busy_retries
            )
        self.clock: Callable[[], float] = clock if clock is not None else self.backend.clock

    # -- identity --------------------------------------------------------------
    @property
    def location(self) -> str:
        """The file path, or the server URL without its password."""
        return self.backend.location

    @property
    def backend_name(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.backend.name

    @property
    def path(self) -> Path | None:
        """The SQLite file, or ``None`` for a server database."""
        return self.backend.path

    @property
    def pragmas(self) -> dict[str, str | int]:
        """The PRAGMAs applied to every SQLite connection (empty for PostgreSQL)."""
        return dict(self.backend.pragmas)

    def now(self) -> float:
        """The current time from this database's clock (UTC epoch seconds)."""
        return self.clock()

    # -- schema and transactions -----------------------------------------------
    def initialize_schema(self) -> int:
        """Create the tables and indexes, or migrate an older schema. Idempotent.

        Returns:
            The schema version now in the database.
        """
        return self.backend.initialize_schema()

    def schema_version(self) -> int:
        """The schema version stored in the database (0 before initialisation)."""
        return self.backend.schema_version()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite) on this thread's connection.

        Queue calls made inside the block on the same thread join it, so several enqueues
        (and your own statements on the yielded connection) commit or roll back together.
        An exception inside the block rolls everything back.

        Yields:
            The backend's connection (``sqlite3.Connection`` or ``psycopg.Connection``).

        Raises:
            QueueBusyError: The write lock could not be taken within the retry bound.
        """
        with self.backend.transaction() as conn:
            yield conn

    # -- maintenance -----------------------------------------------------------
    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Copy the write-ahead log back into the database file.

        Args:
            mode: ``PASSIVE`` (never waits), ``FULL`` (waits for writers), ``RESTART``
                (also makes the next writer restart the log) or ``TRUNCATE`` (also
                truncates the ``-wal`` file to zero bytes).

        Returns:
            ``(busy, log_frames, checkpointed_frames)`` as SQLite reports them; ``busy`` is
            1 when a reader or writer prevented a complete checkpoint.
        """
        return self.backend.checkpoint(mode)

    def vacuum(self) -> None:
        """Rebuild the file to return free pages to the disk (takes the write lock)."""
        self.backend.vacuum()

    def analyze(self) -> None:
        """Refresh the planner's statistics (worth running after large prunes)."""
        self.backend.analyze()

    def integrity_check(self) -> list[str]:
        """Run ``PRAGMA integrity_check``; returns ``["ok"]`` for a healthy database."""
        return self.backend.integrity_check()

    def backup(self, destination: str | os.PathLike[str]) -> Path:
        """Write a consistent copy while workers keep running (SQLite backup API).

        The copy is written beside the destination under a temporary name, checked, and
        then renamed into place, so a half-written backup never appears. It is created
        readable by its owner only.

        Raises:
            BackupError: The destination is the live file, a folder, or not writable.
        """
        return self.backend.backup(Path(destination))

    def restore(self, source: str | os.PathLike[str]) -> None:
        """Replace the database's content with a backup, safely with WAL files present.

        The backup is verified first (SQLite header, integrity check, queue marker, schema
        version); a damaged or foreign file is refused and nothing is replaced. The copy
        then goes through SQLite's own locking, so the ``-wal`` and ``-shm`` files stay
        consistent. Stop workers first: their leases refer to the replaced content.

        Raises:
            BackupError: The backup is missing, damaged, foreign or too new.
            QueueBusyError: Another connection held the write lock longer than the busy
                budget every write gets (``busy_timeout`` times ``busy_retries + 1``);
                nothing was restored.
        """
        self.backend.restore(Path(source))

    def close(self) -> None:
        """Close every connection this object opened, on every thread.

        Call it once the threads using the database are done (``QueueWorker.run`` returns
        only after its own threads have left the database); later calls raise
        :class:`~prismq.queue.errors.StorageError`.
        """
        self.backend.close()

    def __enter__(self) -> QueueDatabase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"QueueDatabase({self.location!r}, backend={self.backend_name!r})"


def _open_postgres(url: str) -> Backend:
    try:
        from .backends.postgres import PostgresBackend
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the PostgreSQL backend needs its driver ({exc.name or exc}); install it with "
            "pip install 'prismq-queue[postgres]'"
        ) from None
    return PostgresBackend(url)
