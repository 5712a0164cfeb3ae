"""The PostgreSQL backend: every task operation, as SQL from ``queries.sql``.

Same tables, columns and meaning as the SQLite backend, so :class:`QueueClient` and
:class:`QueueWorker` run on it unchanged. Choices worth knowing:

- **Times** are ``double precision`` UTC epoch seconds, as everywhere in the queue. Unless
  ``QueueDatabase(clock=...)`` names another clock, ``now`` is the server's clock
  (:attr:`PostgresBackend.server_clock`), so workers on hosts whose clocks disagree still
  agree on when a lease ends.
- **JSON** (payloads, results, retry policies, a worker's task types) is stored as
  ``text`` with a ``::json`` cast in a CHECK constraint. The client already encodes it, so
  text keeps exactly the bytes it wrote (key order, number spelling), round-trips through
  backups and the SQLite backend unchanged, and costs no re-encoding; ``jsonb`` would buy
  server-side querying the queue never does.
- **Claims** are one statement each: a ``MATERIALIZED`` CTE reads the partial ready index
  in strategy order with ``FOR UPDATE SKIP LOCKED`` (so concurrent workers pass each
  other's rows rather than waiting, and the ``LIMIT`` holds) and an ``UPDATE ...
  RETURNING`` leases those rows. Several task types are merged in one statement (a
  ``LATERAL`` index read per type); Weighted Random allocates with
  ``strategy.allocate(...)`` and claims per type, as on SQLite.
- **Fencing**: every change to a leased task matches worker id *and* lease token.
- **Idempotency keys**: ``INSERT ... ON CONFLICT DO NOTHING`` on a unique partial index,
  atomic across processes.
- **Schema version** is the row in ``prismq_schema_version``; a newer version is refused
  (:class:`SchemaVersionError`) before anything is written. Migrations run in one
  transaction under an advisory lock.
- **data_version()** reads the ``prismq_data_version`` sequence, bumped by a statement
  trigger on ``tasks`` for every statement that changed rows. A writer holds a shared
  advisory lock from that bump to its commit; the reader takes the lock exclusively
  without waiting, and while a writer is mid-commit reports a fresh "changing" value
  (a new negative number), so a reader never caches a version whose change it cannot yet
  see. Sequences cost no row lock, so writers do not queue behind one counter row.
- **wait_for_change(timeout)** blocks on ``LISTEN prismq_queue`` until a task becomes
  queued (insert, retry, release, reclaim); see :meth:`PostgresBackend.wait_for_change`.
- **Maintenance**: ``checkpoint`` is a no-op returning ``(0, 0, 0)`` (PostgreSQL
  checkpoints on its own and ``CHECKPOINT`` needs superuser); ``vacuum`` runs
  ``VACUUM (ANALYZE)``; ``integrity_check`` checks the schema version and that every
  expected table, index and trigger exists and is valid; ``backup``/``restore`` write and
  read a checksummed JSON-lines dump of tasks, runs, schedules, workers and flow-control
  limit definitions (owner-only file). For a full server backup use ``pg_dump``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import psycopg

from ...errors import BackupError
from ...flow import ClaimGate, FlowLimit, write_limits
from ...models import WorkerInfo
from ...strategies import SchedulingStrategy
from ..base import AsyncStore, NewTask, TaskUpdate, checkpoint_mode, chunked
from ..common import TASK_COLUMNS, TASK_COPY_COLUMNS, ClaimWentOver, SQLQueueBackend, write_backup
from ..runstore import RUN_COLUMNS
from ..schedulestore import SCHEDULE_COLUMNS, ScheduleStore
from ..serverclock import ServerClock
from ..sqlfile import build_claims, load_queries
from .connection import SCHEMA_VERSION, ConnectionManager, parse_url, translate_error
from .runs import PostgresRunStore

__all__ = ["DUMP_FORMAT", "NOTIFY_CHANNEL", "PostgresBackend"]

QUEUE_TABLES = (
    "tasks",
    "workers",
    "runs",
    "paused_task_types",
    "schedules",
    "flow_limits",
    "flow_released",
    "flow_starts",
    "prismq_schema_version",
)
"""Every table of the queue's schema (maintenance and the integrity check cover them all)."""

Q = build_claims(load_queries(__package__, task_columns=TASK_COLUMNS, queue_tables=", ".join(QUEUE_TABLES)))
TRANSFER_Q = load_queries(__package__, "transfer.sql")

NOTIFY_CHANNEL = "prismq_queue"
"""The channel :meth:`PostgresBackend.wait_for_change` listens on; the payload is the schema."""

DUMP_FORMAT = "prismq-queue-dump"
"""The ``format`` field of the first line of a :meth:`PostgresBackend.backup` file."""

DUMP_TASK_FIELDS = TASK_COPY_COLUMNS
DUMP_WORKER_FIELDS = (
    "worker_id",
    "hostname",
    "pid",
    "task_types",
    "strategy",
    "started_at",
    "last_heartbeat",
)
DUMP_RUN_FIELDS = RUN_COLUMNS
DUMP_PAUSED_FIELDS = ("task_type", "paused_at")
DUMP_SCHEDULE_FIELDS = SCHEDULE_COLUMNS
DUMP_LIMIT_FIELDS = ("task_type", "concurrency_key", "max_leased", "max_starts", "period")
"""The definition of a flow-control limit: what a dump holds of a ``flow_limits`` row."""
_DUMP_KINDS = {
    "task": ("dump_tasks", "restore_task", DUMP_TASK_FIELDS),
    "worker": ("dump_workers", "restore_worker", DUMP_WORKER_FIELDS),
    "run": ("dump_runs", "restore_run", DUMP_RUN_FIELDS),
    "paused": ("dump_paused", "restore_paused", DUMP_PAUSED_FIELDS),
    "schedule": ("dump_schedules", "restore_schedule", DUMP_SCHEDULE_FIELDS),
    "limit": ("list_flow_limits", "", DUMP_LIMIT_FIELDS),  # restored by write_limits
}
"""Row kinds of a dump, in file order (runs after their tasks): queries and fields."""
_ALL_TASK_FIELDS = frozenset(DUMP_TASK_FIELDS)
_OPTIONAL_TASK_FIELDS = frozenset({"trace_context", "concurrency_key", "unique_key"})
"""Task fields a dump of an older schema or release lacks (restored as NULL)."""
_MISSING_TASK_FIELDS = dict.fromkeys(_OPTIONAL_TASK_FIELDS)

EXPECTED_TABLES = (*QUEUE_TABLES, "prismq_data_version")
"""What ``integrity_check`` looks for: every table, and the data-version sequence."""
EXPECTED_INDEXES = (
    "idx_tasks_ready_fifo",
    "idx_tasks_ready_priority",
    "idx_tasks_ready_type",
    "idx_tasks_ready_type_priority",
    "idx_tasks_leased",
    "idx_tasks_finished",
    "uq_tasks_idempotency",
)
EXPECTED_TRIGGERS = ("tasks_changed_insert", "tasks_changed_update", "tasks_changed_delete")
_RESTORE_BATCH = 1000


class PostgresBackend(SQLQueueBackend):
    """Queue storage in a PostgreSQL database, for workers on many machines.

    Args:
        url: A ``postgresql://`` (or ``postgres://``) URL or libpq connection string. A
            ``schema=`` query parameter selects the schema, like ``schema``.
        schema: Keep the queue's tables in this schema (created by
            :meth:`initialize_schema`); ``None`` uses the server's ``search_path``.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens (one per thread in a transaction).
        busy_retries: Retries of a transaction that hit a deadlock, serialization failure
            or lock timeout, before :class:`~prismq.queue.errors.QueueBusyError`.
        lock_timeout: Seconds a statement waits for a row lock before it counts as busy.
        connect_timeout: Seconds to wait for the server when connecting.

    Raises:
        BackendUnavailableError: The server cannot be reached or refuses the login (the
            message names the host, never the password).
        SchemaVersionError: The schema was written by a newer release (left untouched).
        NotAQueueDatabaseError: The schema has a ``tasks`` table the queue did not create.
        ConfigError: The URL, schema name or pool sizes are malformed.
    """

    name = "postgresql"
    queries = Q
    transfer_queries = TRANSFER_Q
    latest_schema_version = SCHEMA_VERSION
    notifies_changes = True
    path = None
    journal_mode = ""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        busy_retries: int = 8,
        lock_timeout: float = 5.0,
        connect_timeout: float = 10.0,
    ) -> None:
        url, url_schema = parse_url(url)
        self.db: ConnectionManager = ConnectionManager(
            url,
            schema if schema is not None else url_schema,
            Q,
            min_size=min_size,
            max_size=max_size,
            busy_retries=busy_retries,
            lock_timeout=lock_timeout,
            connect_timeout=connect_timeout,
        )
        self.schema = self.db.schema
        self.location = self.db.location
        self.identity = (self.name, self.location, self.schema or "")
        self.pragmas: dict[str, str | int] = {}
        self._changing = itertools.count(-1, -1)
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_schema: str | None = None
        self._listen_lock = threading.Lock()
        self.server_clock = ServerClock(self.server_time)
        """The server's clock as this process sees it: ``QueueDatabase``'s default clock."""
        self._forgotten = {}
        self.clock = self.server_clock

    # -- life cycle and schema -------------------------------------------------
    def server_time(self) -> float:
        """Read the server's wall clock (UTC epoch seconds), one round trip."""
        return float(self.db.read(lambda c: c.execute(Q["server_time"]).fetchone()[0]))  # type: ignore[index]

    def initialize_schema(self) -> int:
        return self.db.migrate()

    def schema_version(self) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            has_version, _has_tasks = conn.execute(Q["catalog_state"]).fetchone()  # type: ignore[misc]
            return int(conn.execute(Q["read_schema_version"]).fetchone()[0]) if has_version else 0  # type: ignore[index]

        return self.db.read(work)

    _unblocked: ClassVar[dict[str, Any]] = {"blocked_types": None, "blocked_keys": None}

    def _blocked_params(self, blocked: Sequence[tuple[str, str]]) -> dict[str, Any]:
        if not blocked:
            return dict(self._unblocked)
        return {"blocked_types": [t for t, _ in blocked], "blocked_keys": [k for _, k in blocked]}

    def _prepare_limit_change(self, conn: Any) -> None:
        conn.execute(Q["lock_tasks_for_limit"])

    def _claim_reads(
        self, conn: Any, task_types: Sequence[str] | None, count: int, now: float, locked: bool
    ) -> tuple[set[str], ClaimGate | None]:
        # The reads (after the lock of the limits, when ``locked``) in one pipeline, read
        # after its sync: one round trip (a fetch inside the pipeline would flush and wait,
        # and the sync at its end wait again).
        limit_params = self._limit_params(task_types, now)
        with conn.pipeline():
            if locked:
                conn.execute(Q["lock_flow_limits"], limit_params)
            paused_rows = conn.execute(Q["paused_names"])
            limit_rows = conn.execute(Q["flow_limits_for_claim"], limit_params)
        paused = {row[0] for row in paused_rows.fetchall()}
        return paused, self._gate(limit_rows.fetchall(), count)

    def _claim_under_limits(
        self,
        conn: Any,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        params: dict[str, Any],
        now: float,
        gate: ClaimGate | None,
        locked: bool,
    ) -> list[Any]:
        """Claim optimistically under the limits; with their locks only when that went over.

        Unless ``locked``, the limits were read without a lock and the claim is made within
        the room they showed. Its trigger (``prismq_tasks_changed``) counts what it leased
        into the counters and rate buckets of the limits covering it, locking their rows,
        so the check read after it is exact: under every limit, nothing went over, and the
        claim stands; claims under one limit wait for each other only from their counter
        update to their commit. When one went over (a concurrent claim took the room
        meanwhile), :class:`ClaimWentOver` rolls the transaction back, and it is made again
        with the limit rows locked first, in one order, before they are read.
        """
        if gate is None:
            return self._claim_rows(conn, task_types, strategy, params)
        if locked:
            return super()._claim_under_limits(conn, task_types, strategy, params, now, gate, locked)
        if gate.count == 0:
            return []
        limited = self._limited_params(params, gate)
        # The rate buckets due to be forgotten, the claim and the check in one pipeline,
        # read after its sync: one round trip. The claim's trigger counts its starts.
        with conn.pipeline():
            self._forget_starts(conn, gate, self._bucket_ends(gate, now), now)
            if strategy.splits_by_type:
                claimed = None
                rows = self._claim_split(conn, task_types, strategy, limited)
            else:
                claimed = conn.execute(*self._claim_statement(task_types, strategy, limited))
            check = conn.execute(Q["flow_over_limit"], self._limit_params(task_types, now))
        if claimed is not None:
            rows = claimed.fetchall()
        if rows and check.fetchone()[0]:
            raise ClaimWentOver
        return rows

    def _count_starts(
        self, conn: Any, gate: ClaimGate, rows: Sequence[Any], ends: dict[FlowLimit, float]
    ) -> None:
        """Nothing to do: the claim's trigger counted its starts (migration 0007)."""

    def _array(self, values: list[Any]) -> list[Any]:
        return values

    def _flag(self, value: bool) -> bool:
        return bool(value)

    def _executemany(self, conn: psycopg.Connection[Any], sql: str, values: Sequence[Any]) -> None:
        with conn.cursor() as cur:
            cur.executemany(sql, values)

    def run_store(self, clock: Callable[[], float]) -> PostgresRunStore:
        return PostgresRunStore(self, clock)

    def schedule_store(self) -> ScheduleStore:
        return ScheduleStore(self)

    def close(self) -> None:
        self.stop_listening()
        self.db.close()

    # -- client side -----------------------------------------------------------
    def insert_tasks(self, tasks: Sequence[NewTask], now: float) -> list[tuple[int, bool]]:
        rows = [t.insert_params(now) for t in tasks]

        def plain(conn: psycopg.Connection[Any]) -> list[tuple[int, bool]]:
            out: list[tuple[int, bool]] = []
            with conn.cursor() as cur:
                cur.executemany(Q["insert_task"], rows, returning=True)
                while True:
                    out.append((cur.fetchone()[0], True))  # type: ignore[index]
                    if not cur.nextset():
                        break
            return out

        if not tasks:
            return []
        if all(t.idempotency_key is None for t in tasks):
            return self.db.write(plain)
        keys = [t.idempotency_key for t in tasks]
        return self.db.write(lambda c: self._insert_keyed(c, rows, keys))

    def _insert_one(self, conn: psycopg.Connection[Any], row: Any) -> int:
        return int(conn.execute(Q["insert_task"], row).fetchone()[0])  # type: ignore[index]

    def _key_params(self, key: str) -> dict[str, str]:
        return {"idempotency_key": key}

    def data_version(self) -> int:
        """A number that changes when a committed statement changed tasks.

        Reads the ``prismq_data_version`` sequence under the schema's advisory lock (see
        the module docstring). While another transaction is committing a change the value
        cannot be trusted yet, so a new negative number is returned: it differs from every
        earlier answer, and the caller simply looks again.
        """
        if self.db.in_transaction:
            return int(self.db.read(lambda c: c.execute(Q["data_version_in_transaction"]).fetchone()[0]))  # type: ignore[index]
        value = self.db.read(lambda c: c.execute(Q["data_version"]).fetchone()[0])  # type: ignore[index]
        return next(self._changing) if value is None else int(value)

    def wait_for_change(self, timeout: float) -> bool:
        """Block until a task becomes claimable here, or ``timeout`` seconds pass.

        Listens on the ``prismq_queue`` channel, which a trigger notifies (payload: the
        schema name) when a transaction commits a task becoming ``queued``: an enqueue, a
        retry, a released or failed-with-retry attempt, or a reclaimed lease. Delayed tasks
        notify when enqueued, not when their ``run_after`` arrives, so callers still wake
        up on a timer. Idle workers call it instead of sleeping between empty claims::

            if backend.notifies_changes:
                backend.wait_for_change(poll_interval)
            else:
                time.sleep(poll_interval)

        The first call opens a dedicated connection, starts listening and returns True at
        once: work enqueued before the listening began sends no notification the caller
        could wait for, so it should look (claim) again. From then on notifications that
        arrive between calls are kept, so a commit between an empty claim and the next
        call is never missed: that call returns at once. A ``True`` is a hint to claim
        again, not a promise that a claim will succeed (another worker may be faster).
        After a connection failure the next call reconnects (and returns True again).

        Args:
            timeout: Most seconds to wait (0 just checks for pending notifications).

        Returns:
            True when a notification for this schema arrived, False on timeout.

        Raises:
            BackendUnavailableError: The listening connection failed (the next call
                reconnects).
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        if not self._listen_lock.acquire(timeout=max(timeout, 0.0)):
            return False
        try:
            if self._listener is None or self._listener.closed:
                self._listener = self._listen()
                return True
            conn = self._listener
            try:
                while True:
                    remaining = max(deadline - time.monotonic(), 0.0)
                    got_any = False
                    for note in conn.notifies(timeout=remaining, stop_after=1):
                        got_any = True
                        if note.payload == self._listen_schema:
                            return True
                    if not got_any and time.monotonic() >= deadline:
                        return False
            except psycopg.Error as exc:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
                self._listener = None
                raise translate_error(exc, self.location) from None
        finally:
            self._listen_lock.release()

    def stop_listening(self) -> None:
        """Close the connection :meth:`wait_for_change` listens on (reopened on next use)."""
        with self._listen_lock:
            if self._listener is not None:
                with contextlib.suppress(psycopg.Error):
                    self._listener.close()
                self._listener = None

    def _listen(self) -> psycopg.Connection[Any]:
        conn = self.db.connect()
        try:
            self._listen_schema = conn.execute(Q["current_schema"]).fetchone()[0]  # type: ignore[index]
            conn.execute(Q["listen"])
        except psycopg.Error as exc:
            conn.close()
            raise translate_error(exc, self.location) from None
        return conn

    # -- worker side -----------------------------------------------------------
    def _complete_in(
        self,
        conn: psycopg.Connection[Any],
        updates: Sequence[TaskUpdate],
        results_json: Sequence[str | None],
        now: float,
    ) -> list[bool]:
        if len(updates) < 2:
            return super()._complete_in(conn, updates, results_json, now)
        # One statement for the whole batch instead of one round trip per task.
        params = {
            "ids": [u.task_id for u in updates],
            "workers": [u.worker_id for u in updates],
            "tokens": [u.lease_token for u in updates],
            "results": list(results_json),
            "now": now,
        }
        completed = {row[0] for row in conn.execute(Q["complete_many"], params)}
        flags = []
        for update in updates:  # a task listed twice is completed once
            flags.append(update.task_id in completed)
            completed.discard(update.task_id)
        return flags

    def _claim_rows(
        self,
        conn: psycopg.Connection[Any],
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        params: dict[str, Any],
    ) -> list[Any]:
        if strategy.splits_by_type:
            return self._claim_split(conn, task_types, strategy, params)
        return conn.execute(*self._claim_statement(task_types, strategy, params)).fetchall()

    def _claim_statement(
        self, task_types: Sequence[str] | None, strategy: SchedulingStrategy, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The one statement (and its parameters) of a claim whose strategy does not split by type."""
        ordering = strategy.ordering.value
        if task_types is None:
            return Q[f"claim_{ordering}_any"], params
        if len(set(task_types)) == 1:
            return Q[f"claim_{ordering}_type"], {**params, "task_type": task_types[0]}
        return Q[f"claim_{ordering}_types"], {**params, "task_types": list(dict.fromkeys(task_types))}

    def _ready_types(self, conn: psycopg.Connection[Any], candidates: list[str], now: float) -> list[str]:
        return [r[0] for r in conn.execute(Q["ready_task_types"], {"task_types": candidates, "now": now})]

    def async_store(self, clock: Callable[[], float]) -> AsyncStore | None:
        """An asyncio store on psycopg's asynchronous pool, with this backend's settings."""
        from .aio import AsyncPostgresStore

        return AsyncPostgresStore(self, clock)

    def next_run_after(self, task_types: Sequence[str] | None) -> float | None:
        def work(conn: psycopg.Connection[Any]) -> float | None:
            types = self._unpaused(conn, task_types)  # paused types have no next run
            if types is None:
                return conn.execute(Q["next_run_after_any"]).fetchone()[0]  # type: ignore[index, no-any-return]
            params = {"task_types": list(dict.fromkeys(types))}
            return conn.execute(Q["next_run_after_types"], params).fetchone()[0]  # type: ignore[index, no-any-return]

        return self.db.read(work)

    # -- worker registry -------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        row = {
            "worker_id": info.worker_id,
            "hostname": info.hostname,
            "pid": info.pid,
            "task_types": None if info.task_types is None else json.dumps(list(info.task_types)),
            "strategy": info.strategy,
            "started_at": info.started_at.timestamp(),
            "last_heartbeat": info.last_heartbeat.timestamp(),
        }
        self.db.write(lambda c: c.execute(Q["upsert_worker"], row))

    # -- maintenance -----------------------------------------------------------
    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Accept the SQLite modes and do nothing; always ``(0, 0, 0)``.

        PostgreSQL checkpoints its write-ahead log by itself (``checkpoint_timeout``,
        ``max_wal_size``), and a manual ``CHECKPOINT`` needs superuser rights.

        Raises:
            ConfigError: ``mode`` is not one of the SQLite checkpoint modes.
        """
        checkpoint_mode(mode)
        return (0, 0, 0)

    def vacuum(self) -> None:
        self.db.read(lambda conn: conn.execute(Q["vacuum"]))

    def integrity_check(self) -> list[str]:
        def work(conn: psycopg.Connection[Any]) -> list[str]:
            problems: list[str] = []
            has_version, _ = conn.execute(Q["catalog_state"]).fetchone()  # type: ignore[misc]
            version = int(conn.execute(Q["read_schema_version"]).fetchone()[0]) if has_version else 0  # type: ignore[index]
            if version != SCHEMA_VERSION:
                problems.append(
                    f"schema version is {version}, expected {SCHEMA_VERSION} (run initialize_schema)"
                )
            tables = {r[0] for r in conn.execute(Q["schema_tables"])}
            problems += [
                f"missing table or sequence {name}" for name in EXPECTED_TABLES if name not in tables
            ]
            if "tasks" not in tables:
                return problems
            indexes = {r[0] for r in conn.execute(Q["schema_indexes"])}
            problems += [f"missing index {name}" for name in EXPECTED_INDEXES if name not in indexes]
            problems += [f"index {r[0]} is invalid (REINDEX it)" for r in conn.execute(Q["invalid_indexes"])]
            triggers = {r[0] for r in conn.execute(Q["schema_triggers"])}
            problems += [f"missing trigger {name}" for name in EXPECTED_TRIGGERS if name not in triggers]
            bad = conn.execute(Q["inconsistent_leases"]).fetchone()[0]  # type: ignore[index]
            if bad:
                problems.append(f"{bad} tasks have a lease token that does not match their status")
            return problems

        return self.db.read(work, snapshot=True) or ["ok"]

    def backup(self, destination: Path) -> Path:
        """Write a checksummed JSON-lines dump of every task, worker, run, schedule and limit.

        Line 1 is a header (format, schema version, time); then one ``{"task": {...}}``,
        ``{"worker": {...}}``, ``{"run": {...}}``, ``{"paused": {...}}``, ``{"schedule": {...}}``
        or ``{"limit": {...}}`` line per row (runs of :mod:`prismq.queue.integrations`, after
        the tasks they belong to; then paused task types; periodic schedules of
        :mod:`prismq.queue.schedules`; the definitions of the flow-control limits of
        :mod:`prismq.queue.flow` last, not the rate limits' record of recent claims), read in
        one consistent snapshot; the last line
        holds the row counts and the SHA-256 of every line before it. The file is written
        owner-only under a temporary name and renamed into place. This covers the queue's
        own tables; ``pg_dump`` is the tool for a full server backup.

        Raises:
            BackupError: The destination is a folder or not writable.
        """

        def write(temp: Path) -> None:
            with open(temp, "wb") as handle:
                self.db.read(lambda c: self._write_dump(c, handle), snapshot=True)
                handle.flush()
                os.fsync(handle.fileno())

        return write_backup(destination, write)

    def _write_dump(self, conn: psycopg.Connection[Any], handle: Any) -> None:
        digest = hashlib.sha256()
        counts = dict.fromkeys(_DUMP_KINDS, 0)
        has_runs = conn.execute(Q["has_runs_table"]).fetchone()[0]  # type: ignore[index]
        has_schedules = conn.execute(Q["has_schedules_table"]).fetchone()[0]  # type: ignore[index]
        has_paused = conn.execute(Q["has_paused_table"]).fetchone()[0]  # type: ignore[index]
        has_limits = conn.execute(Q["has_flow_limits_table"]).fetchone()[0]  # type: ignore[index]

        def emit(record: dict[str, Any]) -> None:
            line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
            digest.update(line)
            handle.write(line)

        emit({"format": DUMP_FORMAT, "schema_version": self.schema_version(), "created_at": time.time()})
        for kind, (query, _restore, fields) in _DUMP_KINDS.items():
            if kind == "run" and not has_runs:
                continue  # a schema from before the run registry (version 1)
            if kind == "paused" and not has_paused:
                continue  # a schema from before paused task types (version 2)
            if kind == "schedule" and not has_schedules:
                continue  # a schema from before periodic schedules (version 3)
            if kind == "limit" and not has_limits:
                continue  # a schema from before flow control (version 5)
            with conn.cursor(name=f"prismq_dump_{kind}") as cur:
                cur.itersize = _RESTORE_BATCH
                cur.execute(Q[query])
                for row in cur:
                    emit({kind: dict(zip(fields, row, strict=True))})
                    counts[kind] += 1
        end = {
            "end": True,
            "tasks": counts["task"],
            "workers": counts["worker"],
            "runs": counts["run"],
            "paused_types": counts["paused"],
            "schedules": counts["schedule"],
            "limits": counts["limit"],
            "sha256": digest.hexdigest(),
        }
        handle.write((json.dumps(end, separators=(",", ":")) + "\n").encode("utf-8"))

    def restore(self, source: Path) -> None:
        """Replace every task, worker, run, paused type, schedule and limit with a :meth:`backup` dump.

        The whole file is checked first (header, schema version, row shape, counts and
        checksum); a damaged or foreign file is refused and nothing changes. The swap is
        one transaction. Task ids never go backwards, so an id is never handed out twice.
        The limits are written after the tasks, through :meth:`set_limit` and
        :meth:`remove_limit` (:func:`~prismq.queue.flow.write_limits`); a limit the dump
        does not hold is removed. The database's own record of recent claims under a rate
        limit it keeps is left as it is (a dump does not hold one).

        Raises:
            BackupError: The dump is missing, damaged, foreign or too new.
        """
        source = Path(source).expanduser()
        verify_dump(source)
        self.db.migrate()

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(Q["delete_all_tasks"])
            conn.execute(Q["delete_all_workers"])
            conn.execute(Q["delete_all_paused"])
            conn.execute(Q["delete_all_schedules"])
            limits: list[FlowLimit] = []
            with conn.cursor() as cur:
                for kind, rows in _dump_batches(source):
                    if kind == "limit":
                        limits += [FlowLimit(*(row[f] for f in DUMP_LIMIT_FIELDS)) for row in rows]
                    else:
                        cur.executemany(Q[_DUMP_KINDS[kind][1]], rows)
            conn.execute(Q["advance_task_ids"])
            write_limits(self, limits, replace=True)

        self.db.write(work)

    def _explain(self, conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> list[str]:
        return [r[0] for r in conn.execute(f"EXPLAIN {Q[name]}", params).fetchall()]

    def explain_claims(self) -> dict[str, list[str]]:
        # Plans for a claim when every queued task is ready (the common, costly case).
        base = {
            "worker": "w",
            "token": "t",
            "lease_until": 1.0,
            "now": time.time() + 365 * 86400.0,
            "count": 10,
            "task_type": "x",
            "task_types": ["x", "y"],
            **self._unblocked,
            "explicit": False,
            "id": 1,
        }
        # claim_id leases one known task by its key (lease_again), not a scan of ready tasks.
        names = [n for n in Q if n.startswith("claim_") and n != "claim_id"]
        names += ["queued_task_types", "ready_task_types", "reclaim_expired"]

        def work(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
            return {
                name: [r[0] for r in conn.execute(f"EXPLAIN {Q[name]}", base).fetchall()] for name in names
            }

        return self.db.read(work)


def verify_dump(source: Path) -> None:
    """Check that ``source`` is a complete, untampered queue dump before a restore.

    Raises:
        BackupError: Missing, not a dump, truncated, altered, or from a newer schema.
    """
    if not source.is_file():
        raise BackupError(f"backup file {source} does not exist")
    digest = hashlib.sha256()
    counts = dict.fromkeys(_DUMP_KINDS, 0)
    end: dict[str, Any] | None = None
    try:
        with open(source, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if end is not None:
                    raise BackupError(f"{source} has data after its end line; nothing was restored")
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("a line is not a JSON object")
                if number == 1:
                    _check_header(source, record)
                elif record.get("end") is True:
                    end = record
                    continue
                elif "task" in record and set(record["task"]) | _OPTIONAL_TASK_FIELDS == _ALL_TASK_FIELDS:
                    counts["task"] += 1
                elif "worker" in record and set(record["worker"]) == set(DUMP_WORKER_FIELDS):
                    counts["worker"] += 1
                elif "run" in record and set(record["run"]) == set(DUMP_RUN_FIELDS):
                    counts["run"] += 1
                elif "paused" in record and set(record["paused"]) == set(DUMP_PAUSED_FIELDS):
                    counts["paused"] += 1
                elif "schedule" in record and set(record["schedule"]) == set(DUMP_SCHEDULE_FIELDS):
                    counts["schedule"] += 1
                elif "limit" in record and set(record["limit"]) == set(DUMP_LIMIT_FIELDS):
                    counts["limit"] += 1
                elif number > 1:
                    raise ValueError(
                        f"line {number} is not a task, run, worker, paused task type, schedule or limit"
                    )
                digest.update(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{source} is not a readable queue dump ({exc}); nothing was restored") from None
    if end is None:
        raise BackupError(f"{source} is truncated (no end line); nothing was restored")
    if (
        end.get("sha256") != digest.hexdigest()
        or end.get("tasks") != counts["task"]
        or end.get("workers") != counts["worker"]
        or end.get("runs", 0) != counts["run"]  # dumps from before runs have no count
        or end.get("paused_types", 0) != counts["paused"]  # nor dumps from before pausing
        or end.get("schedules", 0) != counts["schedule"]  # nor from before schedules
        or end.get("limits", 0) != counts["limit"]  # nor from before flow control
    ):
        raise BackupError(f"{source} is damaged (checksum or row counts differ); nothing was restored")


def _check_header(source: Path, record: dict[str, Any]) -> None:
    if record.get("format") != DUMP_FORMAT:
        raise BackupError(f"{source} is not a PrismQ Queue dump; nothing was restored")
    version = record.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise BackupError(
            f"{source} has schema version {version}, newer than this release ({SCHEMA_VERSION}); "
            "upgrade prismq-queue to restore it"
        )


def _dump_batches(source: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Rows of a verified dump, as ``(kind, rows)`` batches in file order."""
    with open(source, "rb") as handle:
        lines = (json.loads(line) for line in itertools.islice(handle, 1, None))
        records = (
            (kind, {**_MISSING_TASK_FIELDS, **rec[kind]} if kind == "task" else rec[kind])
            for rec in lines
            for kind in _DUMP_KINDS
            if kind in rec
        )
        for kind, group in itertools.groupby(records, key=lambda item: item[0]):
            for batch in chunked(list(r for _, r in group), _RESTORE_BATCH):
                yield kind, list(batch)
