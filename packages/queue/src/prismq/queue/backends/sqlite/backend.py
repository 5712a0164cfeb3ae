"""The SQLite backend: every task operation, as SQL from ``queries.sql``."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...errors import BackupError, QueueBusyError
from ...flow import ClaimGate, FlowLimit
from ...models import WorkerInfo
from ...strategies import Ordering, SchedulingStrategy
from ..base import NewTask, TaskUpdate, checkpoint_mode
from ..common import TASK_COLUMNS, SQLQueueBackend, write_backup
from ..schedulestore import ScheduleStore
from ..sqlfile import build_claims, load_queries
from .connection import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SQLITE_HEADER,
    ConnectionManager,
    normalize_pragmas,
    translate_error,
)
from .runs import SQLiteRunStore

__all__ = ["SQLiteBackend"]

Q = build_claims(load_queries(__package__, task_columns=TASK_COLUMNS))
TRANSFER_Q = load_queries(__package__, "transfer.sql")
_FLOW_TRIGGER_SQL = load_queries(__package__, "flow_triggers.sql")
FLOW_TRIGGERS = {name: sql for name, sql in _FLOW_TRIGGER_SQL.items() if not name.startswith("drop_")}
"""The statements creating the triggers ``flow_count_<name>`` that keep limit counters."""
_FLOW_TRIGGER_DROPS = [sql for name, sql in _FLOW_TRIGGER_SQL.items() if name.startswith("drop_")]

_CANDIDATE_KEYS = {
    Ordering.OLDEST_FIRST: lambda row: (row[2], row[0]),
    Ordering.NEWEST_FIRST: lambda row: (-row[2], -row[0]),
    Ordering.PRIORITY: lambda row: (row[1], row[2], row[0]),
}
# Result codes the backup's progress callback sees while the destination is locked.
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


class _LockWaitOver(Exception):
    """Raised from a backup's progress callback to stop waiting for the write lock."""


class SQLiteBackend(SQLQueueBackend):
    """Queue storage in one SQLite file, safe for many processes.

    Args:
        path: The database file (created owner-only if missing).
        pragmas: PRAGMA overrides merged over the defaults.
        busy_retries: Retries of a busy write before ``QueueBusyError``.
    """

    name = "sqlite"
    queries = Q
    transfer_queries = TRANSFER_Q
    latest_schema_version = SCHEMA_VERSION
    notifies_changes = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        pragmas: dict[str, str | int] | None = None,
        busy_retries: int = 8,
    ) -> None:
        self.path = Path(path).expanduser()
        self.location = str(self.path)
        self.identity = (self.name, self.location)
        self._forgotten = {}
        self.clock = time.time
        self.pragmas = normalize_pragmas(pragmas)
        self.db: ConnectionManager = ConnectionManager(self.path, self.pragmas, busy_retries=busy_retries)

    # -- life cycle and schema -------------------------------------------------
    def initialize_schema(self) -> int:
        version = self.db.migrate()
        if self.db.read(self._flow_triggers_wanted) is not None:
            self.db.write(self._sync_flow_counting)
        return version

    def _flow_triggers_wanted(self, conn: sqlite3.Connection) -> bool | None:
        """What the counting triggers need to match the limits.

        Returns:
            True: create them (a limit exists); False: drop them (none does); None: they
            already match.
        """
        limits = conn.execute(Q["count_flow_limits"]).fetchone()[0]
        triggers = conn.execute(Q["count_flow_triggers"]).fetchone()[0]
        if int(triggers) == (len(FLOW_TRIGGERS) if limits else 0):
            return None
        return bool(limits)

    def _sync_flow_counting(self, conn: sqlite3.Connection) -> None:
        """Create the counting triggers while a limit exists; drop them when none does.

        Triggers created here start from counters recounted in the same transaction, so
        the counters are exact from their first commit (SQLite has one writer at a time).
        """
        wanted = self._flow_triggers_wanted(conn)
        if wanted:
            for create in FLOW_TRIGGERS.values():
                conn.execute(create)
            conn.execute(Q["recount_flow_limits"])
        elif wanted is False:
            for drop in _FLOW_TRIGGER_DROPS:
                conn.execute(drop)

    def schema_version(self) -> int:
        return int(self.db.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0]))

    def _array(self, values: list[Any]) -> str:
        return json.dumps(values)

    def _flag(self, value: bool) -> int:
        return int(value)

    def close(self) -> None:
        self.db.close()

    @property
    def journal_mode(self) -> str:
        """The journal mode SQLite reported (``"wal"`` normally)."""
        self.db.connection()
        return self.db.journal_mode

    def run_store(self, clock: Callable[[], float]) -> SQLiteRunStore:
        return SQLiteRunStore(self, clock)

    def schedule_store(self) -> ScheduleStore:
        return ScheduleStore(self)

    def connection(self) -> sqlite3.Connection:
        """This thread's raw connection (for PRAGMA reads and your own queries)."""
        return self.db.connection()

    # -- client side -----------------------------------------------------------
    def insert_tasks(self, tasks: Sequence[NewTask], now: float) -> list[tuple[int, bool]]:
        if not tasks:
            return []
        insert = Q["insert_task"]
        # A NewTask is a tuple of the insert's first eight parameters, in order; appending
        # the two times (created_at, updated_at) makes the row, with no per-field copying.
        times = (now, now)

        def plain(conn: sqlite3.Connection) -> list[tuple[int, bool]]:
            if len(tasks) == 1:  # a single enqueue: the cursor knows the id, no extra query
                return [(int(conn.execute(insert, tasks[0] + times).lastrowid or 0), True)]
            conn.executemany(insert, [t + times for t in tasks])
            last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            return [(task_id, True) for task_id in range(last - len(tasks) + 1, last + 1)]

        if any(t.idempotency_key is not None for t in tasks):
            keys = [t.idempotency_key for t in tasks]
            return self.db.write(lambda c: self._insert_keyed(c, [t + times for t in tasks], keys))
        return self.db.write(plain)

    def _insert_one(self, conn: sqlite3.Connection, row: Any) -> int:
        return int(conn.execute(Q["insert_task"], row).lastrowid or 0)

    def _key_params(self, key: str) -> tuple[str]:
        return (key,)

    def data_version(self) -> int:
        return int(self.db.read(lambda c: c.execute("PRAGMA data_version").fetchone()[0]))

    def _complete_in(
        self,
        conn: sqlite3.Connection,
        updates: Sequence[TaskUpdate],
        results_json: Sequence[str | None],
        now: float,
    ) -> list[bool]:
        if len(updates) < 2:
            return super()._complete_in(conn, updates, results_json, now)
        # One statement for the whole batch instead of one per task.
        batch = json.dumps(
            [[u.task_id, u.worker_id, u.lease_token, r] for u, r in zip(updates, results_json, strict=True)]
        )
        completed = {row[0] for row in conn.execute(Q["complete_many"], {"updates": batch, "now": now})}
        flags = []
        for update in updates:  # a task listed twice is completed once
            flags.append(update.task_id in completed)
            completed.discard(update.task_id)
        return flags

    # -- worker side -----------------------------------------------------------
    def _count_starts(
        self, conn: sqlite3.Connection, gate: ClaimGate, rows: Sequence[Any], ends: dict[FlowLimit, float]
    ) -> None:
        """Add the claimed tasks to the bucket ``ends[limit]`` of each rate limit covering them.

        Rate limits of whole task types are counted from the claimed rows' types, one
        upsert per limit; one with a key is counted in SQL, which reads the tasks' keys.
        """
        if all(limit.key == "" for limit in gate.rated):
            by_type = Counter(row[1] for row in rows)
            counted = [
                {
                    "task_type": limit.task_type,
                    "key": "",
                    "bucket_end": ends[limit],
                    "starts": by_type[limit.task_type] if limit.task_type else len(rows),
                }
                for limit in gate.rated
            ]
            conn.executemany(Q["add_flow_start"], [scope for scope in counted if scope["starts"]])
            return
        rated = json.dumps([(limit.task_type, limit.key, ends[limit]) for limit in gate.rated])
        ids = json.dumps([row[0] for row in rows])
        conn.execute(Q["add_flow_starts"], {"rated": rated, "ids": ids})

    def _claim_rows(
        self,
        conn: sqlite3.Connection,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        params: dict[str, Any],
    ) -> list[Any]:
        ordering = strategy.ordering
        if strategy.splits_by_type:
            rows = self._claim_split(conn, task_types, strategy, params)
        else:
            # Every ready index is per task type: with no filter, claim over the types
            # that have queued tasks (a few index seeks) and merge their heads.
            types = self._queued_types(conn) if task_types is None else task_types
            if not types:
                rows = []
            elif len(types) == 1:
                rows = conn.execute(
                    Q[f"claim_{ordering.value}_type"], {**params, "task_type": types[0]}
                ).fetchall()
            else:
                rows = self._claim_merged(conn, types, ordering, params)
        return rows

    def _claim_merged(
        self,
        conn: sqlite3.Connection,
        task_types: Sequence[str],
        ordering: Ordering,
        params: dict[str, Any],
    ) -> list[Any]:
        """Several types: read each type's best candidates by index, merge, lease the top."""
        sql = Q[f"candidates_{ordering.value}_type"]
        candidates: list[Any] = []
        for task_type in dict.fromkeys(task_types):
            candidates.extend(
                conn.execute(
                    sql,
                    {
                        "task_type": task_type,
                        "now": params["now"],
                        "count": params["count"],
                        "blocked": params["blocked"],
                        "explicit": params["explicit"],
                    },
                )
            )
        if not candidates:
            return []
        candidates.sort(key=_CANDIDATE_KEYS[ordering])
        ids = [row[0] for row in candidates[: params["count"]]]
        return conn.execute(Q["claim_by_ids"], {**params, "ids": json.dumps(ids)}).fetchall()

    def _ready_types(self, conn: sqlite3.Connection, candidates: list[str], now: float) -> list[str]:
        ready = Q["has_ready_of_type"]
        return [t for t in candidates if conn.execute(ready, {"task_type": t, "now": now}).fetchone()]

    def next_run_after(self, task_types: Sequence[str] | None) -> float | None:
        def work(conn: sqlite3.Connection) -> float | None:
            types = self._unpaused(conn, task_types)
            if types is None:
                types = self._queued_types(conn)
            times = [conn.execute(Q["next_run_after_type"], {"task_type": t}).fetchone()[0] for t in types]
            known = [t for t in times if t is not None]
            return min(known) if known else None

        return self.db.read(work)

    # -- worker registry -------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        row = (
            info.worker_id,
            info.hostname,
            info.pid,
            None if info.task_types is None else json.dumps(list(info.task_types)),
            info.strategy,
            info.started_at.timestamp(),
            info.last_heartbeat.timestamp(),
        )
        self.db.write(lambda c: c.execute(Q["upsert_worker"], row))

    # -- maintenance -----------------------------------------------------------
    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        word = checkpoint_mode(mode)
        row = self.db.read(lambda c: c.execute(f"PRAGMA wal_checkpoint({word})").fetchone())
        return int(row[0]), int(row[1]), int(row[2])

    def vacuum(self) -> None:
        self.db.read(lambda c: c.execute("VACUUM"))

    def integrity_check(self) -> list[str]:
        return [r[0] for r in self.db.read(lambda c: c.execute("PRAGMA integrity_check").fetchall())]

    def backup(self, destination: Path) -> Path:
        destination = Path(destination).expanduser()

        def write(temp: Path) -> None:
            try:
                target = sqlite3.connect(str(temp), isolation_level=None)
                try:
                    self.db.connection().backup(target)
                    target.execute("PRAGMA journal_mode = DELETE")
                    check = target.execute("PRAGMA quick_check").fetchone()[0]
                finally:
                    target.close()
            except sqlite3.Error as exc:
                raise BackupError(
                    f"backup to {destination} failed: {translate_error(exc, str(destination))}"
                ) from None
            if check != "ok":
                raise BackupError(f"the backup copy failed its integrity check: {check}")

        return write_backup(destination, write, live=self.path)

    def restore(self, source: Path) -> None:
        source = Path(source).expanduser()
        verify_backup(source)
        budget = self.db.busy_budget
        deadline = time.monotonic() + budget

        def give_up_when_busy_too_long(status: int, remaining: int, total: int) -> None:
            # Python's backup() retries a locked destination without end; stop at the
            # same budget every other write gets. Nothing is copied before the lock.
            if status in (_SQLITE_BUSY, _SQLITE_LOCKED) and time.monotonic() >= deadline:
                raise _LockWaitOver

        try:
            reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
            try:
                reader.backup(self.db.connection(), progress=give_up_when_busy_too_long, sleep=0.05)
            finally:
                reader.close()
        except _LockWaitOver:
            raise QueueBusyError(
                f"restore into {self.location} waited {budget:g} s for the write lock, which "
                "another process kept holding; nothing was restored. Stop the workers and "
                "clients using the database, then run the restore again."
            ) from None
        except sqlite3.Error as exc:
            raise BackupError(
                f"restore from {source} failed and the database was left as it was: {exc}"
            ) from None
        self.db.migrate()

    def _explain(self, conn: sqlite3.Connection, name: str, params: dict[str, Any]) -> list[str]:
        return [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {Q[name]}", params).fetchall()]

    def explain_claims(self) -> dict[str, list[str]]:
        now = 0.0
        base = {
            "worker": "w",
            "token": "t",
            "lease_until": 1.0,
            "now": now,
            "count": 1,
            "task_type": "x",
            **self._unblocked,
            "explicit": 0,
            "id": 1,
        }
        plans: dict[str, list[str]] = {}
        conn = self.db.connection()
        names = [n for n in Q if n.startswith(("claim_", "candidates_"))]
        names += [
            "has_ready_of_type",
            "queued_task_types",
            "next_run_after_type",
            "reclaim_expired",
            "count_expired_leases",
            "count_finished_since",
            "prune",
        ]
        for name in names:
            params = {**base, "since": 0.0, "before": 0.0, "statuses": "[]", "ids": "[1]"}
            rows = conn.execute(f"EXPLAIN QUERY PLAN {Q[name]}", params).fetchall()
            plans[name] = [r[3] for r in rows]
        return plans


def verify_backup(source: Path) -> None:
    """Check that ``source`` is a complete, healthy queue database before a restore.

    Raises:
        BackupError: Missing, not SQLite, truncated or corrupt, not a queue database, or
            from a newer schema.
    """
    try:
        found = source.is_file()
    except OSError as exc:  # e.g. a name too long for the filesystem
        raise BackupError(f"cannot read backup file {source}: {exc.strerror or exc}") from None
    if not found:
        raise BackupError(f"backup file {source} does not exist")
    with open(source, "rb") as handle:
        if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise BackupError(f"{source} is not an SQLite backup; nothing was restored")
    try:
        reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            check = [r[0] for r in reader.execute("PRAGMA integrity_check").fetchall()]
            app_id = reader.execute("PRAGMA application_id").fetchone()[0]
            version = reader.execute("PRAGMA user_version").fetchone()[0]
        finally:
            reader.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{source} cannot be read as a backup ({exc}); nothing was restored") from None
    if check != ["ok"]:
        raise BackupError(
            f"{source} is damaged (integrity check: {'; '.join(check[:3])}); nothing was restored"
        )
    if app_id != APPLICATION_ID:
        raise BackupError(f"{source} is not a PrismQ Queue backup; nothing was restored")
    if version > SCHEMA_VERSION:
        raise BackupError(
            f"{source} has schema version {version}, newer than this release ({SCHEMA_VERSION}); "
            "upgrade prismq-queue to restore it"
        )
