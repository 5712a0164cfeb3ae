"""Connections to PostgreSQL: the pool, transactions, busy retries and error messages.

Nothing here knows about tasks; :mod:`.backend` builds the queue on top.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import (
    BackendUnavailableError,
    ConfigError,
    NotAQueueDatabaseError,
    QueueBusyError,
    QueueError,
    ReadOnlyStorageError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
)
from ..sqlfile import load_migrations

__all__ = ["SCHEMA_VERSION", "ConnectionManager", "parse_url", "redact", "translate_error"]

T = TypeVar("T")

MIGRATIONS = load_migrations(__package__)
SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this release writes (row in ``prismq_schema_version``)."""

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_CREATED = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|SEQUENCE|VIEW|FUNCTION)\s+(\w+)", re.IGNORECASE | re.MULTILINE
)


def created_names(after_version: int) -> list[str]:
    """Names of the tables, indexes, sequences and functions migrations after ``after_version`` create."""
    return sorted(
        {name for number, _, text in MIGRATIONS if number > after_version for name in _CREATED.findall(text)}
    )


_BUSY = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.LockNotAvailable,
)


def parse_url(url: str) -> tuple[str, str | None]:
    """Split a ``schema=`` query parameter off a ``postgresql://`` URL.

    libpq does not know ``schema``; the queue reads it as the schema to keep its tables
    in (``postgresql://host/db?schema=jobs``).

    Returns:
        The URL without ``schema``, and the schema (``None`` when absent).
    """
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:  # an unclosed "[" of an IPv6 host, for one
        raise ConfigError(f"malformed PostgreSQL URL {redact_text(url)}: {exc}") from None
    schemas = [value for key, value in query if key == "schema"]
    if not schemas:
        return url, None
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schemas[-1]


def check_schema_name(schema: str) -> str:
    """Accept a plain lower-case identifier (what ``search_path`` reads back unchanged).

    Raises:
        ConfigError: Anything else.
    """
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"schema must be a lower-case identifier (letters, digits, underscore; at most 63), "
            f"got {schema!r}"
        )
    return schema


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)\S*@")  # greedy: up to the last "@", safe side
_PARAM_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with any password in it (``user:PASSWORD@`` or ``password=...``) as ``***``.

    For messages about a URL too malformed to parse, where :func:`redact` cannot rebuild it.
    """
    return _PARAM_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def redact(conninfo: str) -> str:
    """A display form of a connection string: ``postgresql://user@host:port/dbname``.

    The password (from the URL or a ``password=`` parameter) never appears.
    """
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = params.get("user")
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = params.get("port")
    dbname = params.get("dbname") or user or ""
    netloc = f"{user}@" if user else ""
    netloc += host if "/" not in host else f"[{host}]"
    if port:
        netloc += f":{port}"
    return f"postgresql://{netloc}/{dbname}"


def _server_name(conninfo: str) -> str:
    params = conninfo_to_dict(conninfo)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}"


def is_busy(exc: BaseException) -> bool:
    """True for a conflict a retry resolves: serialization failure, deadlock, lock timeout."""
    return isinstance(exc, _BUSY)


def translate_error(exc: BaseException, location: str, secret: str | None = None) -> QueueError:
    """Map a psycopg or pool error to the queue's hierarchy with an actionable message.

    Args:
        exc: The error.
        location: The redacted server URL, for the message.
        secret: The password, scrubbed from the message should the server echo it.
    """
    text = str(exc).strip() or type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    if isinstance(exc, PoolTimeout):
        return BackendUnavailableError(
            f"no connection to PostgreSQL at {location} became available: {text}. The server "
            "may be down or unreachable, or every pooled connection is busy (raise max_size)."
        )
    if is_busy(exc):
        return QueueBusyError(
            f"{location} kept reporting conflicting writers ({text}); a long transaction "
            "elsewhere is holding locks on the queue's rows."
        )
    if isinstance(exc, pg_errors.DiskFull):
        return StorageFullError(f"PostgreSQL at {location} is out of disk space: {text}")
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return ReadOnlyStorageError(
            f"PostgreSQL at {location} is read-only ({text}); point the queue at the primary server."
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return StorageError(
            f"the PostgreSQL user lacks a privilege on {location}: {text}. Grant it access to the "
            "queue's schema."
        )
    if isinstance(exc, pg_errors.UndefinedTable):
        return StorageError(
            f"the queue's tables are missing at {location} ({text}); create them with "
            "QueueDatabase.initialize_schema() (or 'prismq-queue init')."
        )
    if isinstance(exc, psycopg.OperationalError):
        return BackendUnavailableError(f"PostgreSQL at {location} is unavailable: {text}")
    return StorageError(f"PostgreSQL error on {location}: {text}")


class _ThreadState(threading.local):
    connection: psycopg.Connection[Any] | None = None
    depth: int = 0


class ConnectionManager:
    """A pool of connections to one database and schema, with safe transactions.

    Connections run in autocommit mode; writes run inside explicit transactions. A
    thread's transaction pins one pooled connection, and queue calls made inside it on
    that thread reuse it (a thread-local depth counter, as on SQLite).

    Args:
        url: A ``postgresql://`` URL or libpq connection string (``schema=`` removed).
        schema: The schema to keep the tables in (``search_path``), or ``None`` for the
            server's default (normally ``public``).
        queries: The backend's named queries (schema checks and migrations use them).
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
        busy_retries: Retries of a transaction that hit a deadlock, serialization failure
            or lock timeout, before ``QueueBusyError``.
        lock_timeout: Seconds a statement waits for a row lock before it counts as busy.
        connect_timeout: Seconds to wait for the server when connecting.

    Raises:
        BackendUnavailableError: The server cannot be reached or refuses the login.
        SchemaVersionError: The schema was written by a newer release (left untouched).
        NotAQueueDatabaseError: The schema holds a ``tasks`` table that is not the queue's.
    """

    def __init__(
        self,
        url: str,
        schema: str | None,
        queries: dict[str, str],
        *,
        min_size: int = 1,
        max_size: int = 10,
        busy_retries: int = 8,
        busy_backoff: float = 0.005,
        lock_timeout: float = 5.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if min_size < 0 or max_size < max(min_size, 1):
            raise ConfigError(
                f"pool sizes need 0 <= min_size <= max_size, max_size >= 1; got {min_size}, {max_size}"
            )
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(
                f"malformed PostgreSQL URL {redact_text(url)}: {redact_text(str(exc))}"
            ) from None
        self.schema = None if schema is None else check_schema_name(schema)
        self._password = str(params.get("password") or "") or None
        options = [str(params.get("options") or ""), f"-c lock_timeout={int(lock_timeout * 1000)}"]
        if self.schema is not None:
            options.append(f"-c search_path={self.schema}")
        params["options"] = " ".join(o for o in options if o)
        params.setdefault("connect_timeout", str(max(int(connect_timeout), 1)))
        params.setdefault("application_name", "prismq-queue")
        self.conninfo = make_conninfo("", **params)
        self.location = redact(url)
        self.server = _server_name(url)
        self.busy_retries = busy_retries
        self.busy_backoff = busy_backoff
        self.queries = queries
        self._state = _ThreadState()
        self._closed = False
        self._probe()
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            open=True,
            timeout=max(connect_timeout, 1.0) * 3,
            name=f"prismq-queue {self.location}",
        )

    # -- opening ---------------------------------------------------------------
    def connect(self) -> psycopg.Connection[Any]:
        """A new connection outside the pool (autocommit), e.g. for ``LISTEN``.

        Raises:
            BackendUnavailableError: The server cannot be reached or refuses the login.
        """
        try:
            return psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: psycopg.Error) -> QueueError:
        if not isinstance(exc, psycopg.OperationalError):
            return translate_error(exc, self.location, self._password)
        reason = str(exc).strip()
        if self._password:
            reason = reason.replace(self._password, "***")
        return BackendUnavailableError(
            f"cannot connect to PostgreSQL at {self.server} ({self.location}): {reason}. Check that "
            "the server is running and reachable, and the user, password and database name."
        )

    def _probe(self) -> None:
        """Connect once: fail fast with a clear message, refuse newer or foreign schemas.

        The check reads the catalog in several statements, so a migration committed by
        another process between them can look like foreign objects (the version table
        still missing, the tables already there). A refusal is therefore confirmed under
        the migration lock, where no migration is half-way, before it is raised.
        """
        with contextlib.closing(self.connect()) as conn:
            try:
                try:
                    self._check_schema(conn)
                except NotAQueueDatabaseError:
                    with conn.transaction():
                        conn.execute(self.queries["lock_migrations"], {"schema": self.schema})
                        self._check_schema(conn)
            except psycopg.Error as exc:
                raise translate_error(exc, self.location, self._password) from None

    def _check_schema(self, conn: psycopg.Connection[Any]) -> int:
        """Refuse a newer schema, or objects in the way of a pending migration; return the version.

        Reads only, so a refused schema is left exactly as it was.
        """
        q = self.queries
        has_version, _has_tasks = conn.execute(q["catalog_state"]).fetchone()  # type: ignore[misc]
        version = int(conn.execute(q["read_schema_version"]).fetchone()[0]) if has_version else 0  # type: ignore[index]
        pending = created_names(version)
        clashes = conn.execute(q["clashing_names"], {"names": pending}).fetchall() if pending else []
        self._check_version(version, [(str(kind), str(name)) for kind, name in clashes])
        return version

    def _check_version(self, version: int, clashes: list[tuple[str, str]]) -> None:
        where = self.location + (f" (schema {self.schema})" if self.schema else "")
        if clashes:
            found = ", ".join(f"{kind} {name!r}" for kind, name in clashes[:5])
            raise NotAQueueDatabaseError(
                f"{where} already has objects PrismQ Queue did not create, named as the queue's "
                f"own ({found}); it was left untouched. Use another schema "
                "(postgresql://...?schema=prismq)."
            )
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{where} has schema version {version}, written by a newer PrismQ Queue; this "
                f"release understands up to version {SCHEMA_VERSION}. Upgrade prismq-queue; the "
                "database was left untouched."
            )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def translate(self, exc: BaseException) -> QueueError:
        """:func:`translate_error` for this server, the password scrubbed from the message."""
        return translate_error(exc, self.location, self._password)

    def close(self) -> None:
        """Close the pool; later use raises ``StorageError``."""
        self._closed = True
        with contextlib.suppress(Exception):
            self.pool.close()

    @contextlib.contextmanager
    def _checkout(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StorageError(f"the queue database {self.location} was closed; open a new one")
        try:
            conn = self.pool.getconn()
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise translate_error(exc, self.location, self._password) from None
        try:
            yield conn
        finally:
            self.pool.putconn(conn)

    # -- transactions ----------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`transaction` on this thread."""
        return self._state.depth > 0

    def _sleep_backoff(self, attempt: int) -> None:
        delay = min(self.busy_backoff * (2**attempt), 0.5)
        time.sleep(delay * random.uniform(0.5, 1.5))

    @contextlib.contextmanager
    def transaction(self, snapshot: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A transaction on a pooled connection; nested calls on this thread join it.

        Any exception rolls back. Errors raised by the block pass through unchanged;
        a failing ``COMMIT`` is translated into the queue's errors.

        Args:
            snapshot: Run as a read-only ``REPEATABLE READ`` transaction (consistent reads).
        """
        state = self._state
        if state.depth:
            state.depth += 1
            try:
                yield state.connection  # type: ignore[misc]
            finally:
                state.depth -= 1
            return
        with self._checkout() as conn:
            if snapshot:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
            inner: BaseException | None = None
            state.connection, state.depth = conn, 1
            try:
                with conn.transaction():
                    try:
                        yield conn
                    except BaseException as exc:
                        inner = exc
                        raise
            except psycopg.Error as exc:
                if exc is inner or is_busy(exc):
                    raise
                raise translate_error(exc, self.location, self._password) from None
            finally:
                state.connection, state.depth = None, 0
                if snapshot and not conn.closed:
                    conn.isolation_level = None
                    conn.read_only = None

    def write(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``work`` in a transaction, retrying it whole after a busy conflict.

        Inside an outer :meth:`transaction` it joins that one instead (no retry: the
        outer caller owns the transaction).
        """
        if self._state.depth:
            try:
                return work(self._state.connection)  # type: ignore[arg-type]
            except psycopg.Error as exc:
                raise translate_error(exc, self.location, self._password) from None
        for attempt in range(self.busy_retries + 1):
            try:
                with self.transaction() as conn:
                    return work(conn)
            except psycopg.Error as exc:
                if is_busy(exc) and attempt < self.busy_retries:
                    self._sleep_backoff(attempt)
                    continue
                if is_busy(exc):
                    raise QueueBusyError(
                        f"{self.location} kept reporting conflicting writers through "
                        f"{self.busy_retries + 1} tries ({exc}); a long transaction elsewhere is "
                        "holding locks on the queue's rows"
                    ) from None
                raise translate_error(exc, self.location, self._password) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, work: Callable[[psycopg.Connection[Any]], T], snapshot: bool = False) -> T:
        """Run read-only ``work``; with ``snapshot`` inside one consistent transaction."""
        try:
            if self._state.depth:
                return work(self._state.connection)  # type: ignore[arg-type]
            if snapshot:
                with self.transaction(snapshot=True) as conn:
                    return work(conn)
            with self._checkout() as conn:
                return work(conn)
        except psycopg.Error as exc:
            raise translate_error(exc, self.location, self._password) from None

    # -- schema ----------------------------------------------------------------
    def migrate(self) -> int:
        """Create the schema or apply pending migrations in one transaction.

        Concurrent callers serialise on an advisory lock, so exactly one creates the
        tables. Returns the schema version.
        """
        queries = self.queries
        create = None
        if self.schema is not None:
            create = sql.SQL(queries["create_schema"]).format(schema=sql.Identifier(self.schema))

        def work(conn: psycopg.Connection[Any]) -> int:
            conn.execute(queries["lock_migrations"], {"schema": self.schema})
            if create is not None:
                conn.execute(create)
            version = self._check_schema(conn)  # again, under the lock
            for number, _name, text in MIGRATIONS:
                if number > version:
                    conn.execute(text)  # a whole migration file
            if version < SCHEMA_VERSION:
                conn.execute(queries["clear_schema_version"])
                conn.execute(queries["write_schema_version"], {"version": SCHEMA_VERSION})
            return SCHEMA_VERSION

        return self.write(work)
