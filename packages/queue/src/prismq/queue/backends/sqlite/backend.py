"""The SQLite backend: every task operation, as SQL from ``queries.sql``."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...errors import BackupError, ConfigError, LeaseLostError, TaskNotFoundError, TaskStateError
from ...models import Task, TaskStatus, WorkerInfo, epoch_to_datetime
from ...strategies import Ordering, SchedulingStrategy
from ..base import NewTask, QueueStats, TaskQuery, TaskUpdate
from ..sqlfile import load_queries
from .connection import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SQLITE_HEADER,
    ConnectionManager,
    normalize_pragmas,
    translate_error,
)

__all__ = ["SQLiteBackend"]

TASK_COLUMNS = (
    "id, task_type, payload, status, priority, attempts, max_attempts, retry_policy, "
    "run_after, lease_until, locked_by, lease_token, cancel_requested, progress, "
    "progress_message, result, last_error, last_traceback, idempotency_key, created_at, "
    "started_at, finished_at"
)

Q = load_queries(__package__, task_columns=TASK_COLUMNS)

_STATUS = {status.value: status for status in TaskStatus}
_ORDER_KEYS = {
    Ordering.OLDEST_FIRST: lambda t: (t.run_after, t.id),
    Ordering.NEWEST_FIRST: lambda t: (-t.run_after.timestamp(), -t.id),
    Ordering.PRIORITY: lambda t: (t.priority, t.run_after, t.id),
}
_CANDIDATE_KEYS = {
    Ordering.OLDEST_FIRST: lambda row: (row[2], row[0]),
    Ordering.NEWEST_FIRST: lambda row: (-row[2], -row[0]),
    Ordering.PRIORITY: lambda row: (row[1], row[2], row[0]),
}
CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")


_decode_json = json.JSONDecoder().decode
_UTC = timezone.utc
_from_epoch = datetime.fromtimestamp
# Decoded retry policies by their stored text: nearly every task of a queue carries one of a
# handful of policies, so decoding each once saves a JSON parse per claimed task.
_POLICY_CACHE: dict[str, dict[str, Any]] = {}
_POLICY_CACHE_SIZE = 256


def _decode_policy(text: Any) -> dict[str, Any]:
    """Decode a stored retry policy; a fresh dict per call (the caller may change it)."""
    cached = _POLICY_CACHE.get(text) if type(text) is str else None
    if cached is None:
        cached = json.loads(text)
        flat = isinstance(cached, dict) and all(
            v is None or isinstance(v, (str, int, float)) for v in cached.values()
        )
        if not flat or type(text) is not str:
            return cached  # type: ignore[no-any-return]
        if len(_POLICY_CACHE) < _POLICY_CACHE_SIZE:
            _POLICY_CACHE[text] = cached
    return dict(cached)


def row_to_task(row: Sequence[Any]) -> Task:
    """Build a :class:`Task` from a row in ``TASK_COLUMNS`` order.

    This runs once per claimed or returned task, so it avoids per-call lookups: the JSON
    decoder and ``datetime.fromtimestamp`` are bound once, and retry policies are decoded
    through a small cache (see :func:`_decode_policy`).
    """
    utc, from_epoch = _UTC, _from_epoch
    lease_until, started_at, finished_at, result = row[9], row[20], row[21], row[15]
    return Task(
        id=row[0],
        task_type=row[1],
        payload=_decode_json(row[2]),
        status=_STATUS[row[3]],
        priority=row[4],
        attempts=row[5],
        max_attempts=row[6],
        retry_policy=_decode_policy(row[7]),
        run_after=from_epoch(row[8], utc),
        lease_until=None if lease_until is None else from_epoch(lease_until, utc),
        locked_by=row[10],
        lease_token=row[11],
        cancel_requested=bool(row[12]),
        progress=row[13],
        progress_message=row[14],
        result=None if result is None else _decode_json(result),
        last_error=row[16],
        last_traceback=row[17],
        idempotency_key=row[18],
        created_at=from_epoch(row[19], utc),
        started_at=None if started_at is None else from_epoch(started_at, utc),
        finished_at=None if finished_at is None else from_epoch(finished_at, utc),
    )


def _row_to_worker(row: Sequence[Any]) -> WorkerInfo:
    types = json.loads(row[3]) if row[3] is not None else None
    return WorkerInfo(
        worker_id=row[0],
        hostname=row[1],
        pid=row[2],
        task_types=tuple(types) if types is not None else None,
        strategy=row[4],
        started_at=epoch_to_datetime(row[5]),  # type: ignore[arg-type]
        last_heartbeat=epoch_to_datetime(row[6]),  # type: ignore[arg-type]
    )


class SQLiteBackend:
    """Queue storage in one SQLite file, safe for many processes.

    Args:
        path: The database file (created owner-only if missing).
        pragmas: PRAGMA overrides merged over the defaults.
        busy_retries: Retries of a busy write before ``QueueBusyError``.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        pragmas: dict[str, str | int] | None = None,
        busy_retries: int = 8,
    ) -> None:
        self.path = Path(path).expanduser()
        self.location = str(self.path)
        self.pragmas = normalize_pragmas(pragmas)
        self.db = ConnectionManager(self.path, self.pragmas, busy_retries=busy_retries)

    # -- life cycle and schema -------------------------------------------------
    def initialize_schema(self) -> int:
        return self.db.migrate()

    def schema_version(self) -> int:
        return int(self.db.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0]))

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.db.transaction() as conn:
            yield conn

    @property
    def journal_mode(self) -> str:
        """The journal mode SQLite reported (``"wal"`` normally)."""
        self.db.connection()
        return self.db.journal_mode

    def connection(self) -> sqlite3.Connection:
        """This thread's raw connection (for PRAGMA reads and your own queries)."""
        return self.db.connection()

    # -- client side -----------------------------------------------------------
    def insert_tasks(self, tasks: Sequence[NewTask], now: float) -> list[tuple[int, bool]]:
        plain = all(t.idempotency_key is None for t in tasks)

        def work(conn: sqlite3.Connection) -> list[tuple[int, bool]]:
            if plain:
                rows = [
                    (
                        t.task_type,
                        t.payload_json,
                        t.priority,
                        t.run_after,
                        t.max_attempts,
                        t.retry_policy_json,
                        None,
                        now,
                        now,
                    )
                    for t in tasks
                ]
                if len(rows) == 1:  # a single enqueue: the cursor knows the id, no extra query
                    return [(int(conn.execute(Q["insert_task"], rows[0]).lastrowid or 0), True)]
                conn.executemany(Q["insert_task"], rows)
                last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                first = last - len(rows) + 1
                return [(first + i, True) for i in range(len(rows))]
            out: list[tuple[int, bool]] = []
            for t in tasks:
                row = (
                    t.task_type,
                    t.payload_json,
                    t.priority,
                    t.run_after,
                    t.max_attempts,
                    t.retry_policy_json,
                    t.idempotency_key,
                    now,
                    now,
                )
                if t.idempotency_key is None:
                    cur = conn.execute(Q["insert_task"], row)
                    out.append((int(cur.lastrowid or 0), True))
                    continue
                inserted = conn.execute(Q["insert_task_idempotent"], row).fetchone()
                if inserted is not None:
                    out.append((inserted[0], True))
                else:
                    existing = conn.execute(Q["task_id_by_idempotency_key"], (t.idempotency_key,)).fetchone()
                    out.append((existing[0], False))
            return out

        if not tasks:
            return []
        return self.db.write(work)

    def get_task(self, task_id: int) -> Task | None:
        row = self.db.read(lambda c: c.execute(Q["get_task"], (task_id,)).fetchone())
        return None if row is None else row_to_task(row)

    def list_tasks(self, query: TaskQuery) -> list[Task]:
        params = {
            "statuses": None if query.statuses is None else json.dumps([s.value for s in query.statuses]),
            "task_types": None if query.task_types is None else json.dumps(list(query.task_types)),
            "created_after": query.created_after,
            "created_before": query.created_before,
            "limit": query.limit,
            "offset": query.offset,
        }
        name = "list_tasks_newest_first" if query.newest_first else "list_tasks_oldest_first"
        rows = self.db.read(lambda c: c.execute(Q[name], params).fetchall())
        return [row_to_task(r) for r in rows]

    def count_by_status(self) -> dict[str, int]:
        rows = self.db.read(lambda c: c.execute(Q["count_by_status"]).fetchall())
        counts = {s.value: 0 for s in TaskStatus}
        counts.update({status: n for status, n in rows})
        return counts

    def count_by_type(self) -> dict[str, dict[str, int]]:
        rows = self.db.read(lambda c: c.execute(Q["count_by_type"]).fetchall())
        out: dict[str, dict[str, int]] = {}
        for task_type, status, n in rows:
            out.setdefault(task_type, {})[status] = n
        return out

    def stats(self, now: float) -> QueueStats:
        def work(conn: sqlite3.Connection) -> QueueStats:
            by_status = {s.value: 0 for s in TaskStatus}
            by_status.update(dict(conn.execute(Q["count_by_status"]).fetchall()))
            by_type: dict[str, dict[str, int]] = {}
            for task_type, status, n in conn.execute(Q["count_by_type"]):
                by_type.setdefault(task_type, {})[status] = n
            ready, oldest = conn.execute(Q["count_ready"], {"now": now}).fetchone()
            delayed = conn.execute(Q["count_delayed"], {"now": now}).fetchone()[0]
            expired = conn.execute(Q["count_expired_leases"], {"now": now}).fetchone()[0]
            last1 = conn.execute(Q["count_finished_since"], {"since": now - 60}).fetchone()[0]
            last5 = conn.execute(Q["count_finished_since"], {"since": now - 300}).fetchone()[0]
            workers = [_row_to_worker(r) for r in conn.execute(Q["list_workers"])]
            return QueueStats(
                by_status=by_status,
                by_type=by_type,
                ready=ready,
                delayed=delayed,
                oldest_ready_age=None if oldest is None else max(now - oldest, 0.0),
                expired_leases=expired,
                finished_last_minute=last1,
                finished_last_5_minutes=last5,
                workers=workers,
            )

        return self.db.read(work, snapshot=True)

    def _require(self, conn: sqlite3.Connection, task_id: int) -> Task:
        row = conn.execute(Q["get_task"], (task_id,)).fetchone()
        if row is None:
            raise TaskNotFoundError(f"no task with id {task_id}")
        return row_to_task(row)

    def cancel_task(self, task_id: int, now: float) -> Task:
        def work(conn: sqlite3.Connection) -> Task:
            params = {"id": task_id, "now": now}
            row = conn.execute(Q["cancel_queued"], params).fetchone()
            if row is None:
                row = conn.execute(Q["request_cancel_leased"], params).fetchone()
            if row is not None:
                return row_to_task(row)
            task = self._require(conn, task_id)
            raise TaskStateError(
                f"task {task_id} is already {task.status.value}; only queued or running tasks "
                "can be cancelled"
            )

        return self.db.write(work)

    def retry_task(self, task_id: int, now: float, reset_attempts: bool) -> Task:
        def work(conn: sqlite3.Connection) -> Task:
            params = {"id": task_id, "now": now, "reset": int(reset_attempts)}
            row = conn.execute(Q["retry_finished"], params).fetchone()
            if row is not None:
                return row_to_task(row)
            task = self._require(conn, task_id)
            raise TaskStateError(
                f"task {task_id} is {task.status.value}; only dead or cancelled tasks can be retried"
            )

        return self.db.write(work)

    def prune(self, finished_before: float, statuses: Sequence[TaskStatus]) -> int:
        params = {"before": finished_before, "statuses": json.dumps([s.value for s in statuses])}
        return self.db.write(lambda c: c.execute(Q["prune"], params).rowcount)

    def data_version(self) -> int:
        return int(self.db.read(lambda c: c.execute("PRAGMA data_version").fetchone()[0]))

    # -- worker side -----------------------------------------------------------
    def claim(
        self,
        worker_id: str,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        count: int,
        lease_duration: float,
        now: float,
        reclaim_first: bool = False,
    ) -> list[Task]:
        params: dict[str, Any] = {
            "worker": worker_id,
            "token": secrets.token_hex(8),
            "lease_until": now + lease_duration,
            "now": now,
            "count": count,
        }
        ordering = strategy.ordering

        def work(conn: sqlite3.Connection) -> list[Task]:
            if reclaim_first:
                conn.execute(Q["reclaim_expired"], {"now": now})
            if strategy.splits_by_type:
                rows = self._claim_split(conn, task_types, strategy, params)
            else:
                # Every ready index is per task type: with no filter, claim over the types
                # that have queued tasks (a few index seeks) and merge their heads.
                types = _queued_types(conn) if task_types is None else task_types
                if not types:
                    rows = []
                elif len(types) == 1:
                    rows = conn.execute(
                        Q[f"claim_{ordering.value}_type"], {**params, "task_type": types[0]}
                    ).fetchall()
                else:
                    rows = self._claim_merged(conn, types, ordering, params)
            return [row_to_task(r) for r in rows]

        tasks = self.db.write(work)
        if len(tasks) > 1:
            tasks.sort(key=_ORDER_KEYS[ordering])
        return tasks

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
                conn.execute(sql, {"task_type": task_type, "now": params["now"], "count": params["count"]})
            )
        if not candidates:
            return []
        candidates.sort(key=_CANDIDATE_KEYS[ordering])
        ids = [row[0] for row in candidates[: params["count"]]]
        return conn.execute(Q["lease_by_ids"], {**params, "ids": json.dumps(ids)}).fetchall()

    def _claim_split(
        self,
        conn: sqlite3.Connection,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        params: dict[str, Any],
    ) -> list[Any]:
        """Weighted draws: pick types by weight, then the oldest ready task of each."""
        now = params["now"]
        candidates = _queued_types(conn) if task_types is None else list(dict.fromkeys(task_types))
        available = [
            t
            for t in candidates
            if conn.execute(Q["has_ready_of_type"], {"task_type": t, "now": now}).fetchone()
        ]
        rows: list[Any] = []
        remaining = params["count"]
        while remaining > 0 and available:
            allocation = strategy.allocate(available, remaining) or {}
            for task_type, wanted in allocation.items():
                got = conn.execute(
                    Q["claim_oldest_first_type"],
                    {**params, "task_type": task_type, "count": wanted},
                ).fetchall()
                rows.extend(got)
                remaining -= len(got)
                if len(got) < wanted:
                    available.remove(task_type)
        return rows

    def next_run_after(self, task_types: Sequence[str] | None) -> float | None:
        def work(conn: sqlite3.Connection) -> float | None:
            types = _queued_types(conn) if task_types is None else task_types
            times = [conn.execute(Q["next_run_after_type"], {"task_type": t}).fetchone()[0] for t in types]
            known = [t for t in times if t is not None]
            return min(known) if known else None

        return self.db.read(work)

    def reclaim_expired(self, now: float) -> int:
        return self.db.write(lambda c: c.execute(Q["reclaim_expired"], {"now": now}).rowcount)

    def _fenced(self, update: TaskUpdate) -> dict[str, Any]:
        return {"id": update.task_id, "worker": update.worker_id, "token": update.lease_token}

    def _lost(self, conn: sqlite3.Connection, update: TaskUpdate, action: str) -> LeaseLostError:
        row = conn.execute(Q["lease_holder"], (update.task_id,)).fetchone()
        if row is None:
            raise TaskNotFoundError(f"no task with id {update.task_id}")
        return LeaseLostError(
            f"cannot {action} task {update.task_id}: worker {update.worker_id!r} no longer holds "
            f"its lease ({_describe_holder(row)}); the task was reclaimed after the lease expired, "
            "so this attempt's outcome is discarded"
        )

    def diagnose_lost_lease(self, update: TaskUpdate) -> str:
        row = self.db.read(lambda c: c.execute(Q["lease_holder"], (update.task_id,)).fetchone())
        return "the task no longer exists" if row is None else _describe_holder(row)

    def renew_lease(self, update: TaskUpdate, lease_until: float, now: float) -> Task:
        def work(conn: sqlite3.Connection) -> Task:
            params = {**self._fenced(update), "lease_until": lease_until, "now": now}
            row = conn.execute(Q["renew_lease"], params).fetchone()
            if row is None:
                raise self._lost(conn, update, "renew the lease of")
            return row_to_task(row)

        return self.db.write(work)

    def update_progress(self, update: TaskUpdate, percent: float, message: str | None, now: float) -> Task:
        def work(conn: sqlite3.Connection) -> Task:
            params = {**self._fenced(update), "percent": percent, "message": message, "now": now}
            row = conn.execute(Q["update_progress"], params).fetchone()
            if row is None:
                raise self._lost(conn, update, "report progress on")
            return row_to_task(row)

        return self.db.write(work)

    def complete_tasks(
        self, updates: Sequence[TaskUpdate], results_json: Sequence[str | None], now: float
    ) -> list[bool]:
        sql = Q["complete_task"]

        def work(conn: sqlite3.Connection) -> list[bool]:
            done = []
            for update, result in zip(updates, results_json, strict=True):
                params = {**self._fenced(update), "result": result, "now": now}
                done.append(conn.execute(sql, params).rowcount == 1)
            return done

        return self.db.write(work)

    def finish_attempt(
        self,
        update: TaskUpdate,
        status: TaskStatus,
        run_after: float | None,
        error: str | None,
        traceback: str | None,
        count_attempt: bool,
        now: float,
    ) -> Task:
        def work(conn: sqlite3.Connection) -> Task:
            params = {
                **self._fenced(update),
                "status": status.value,
                "run_after": run_after,
                "error": error,
                "traceback": traceback,
                "count_attempt": int(count_attempt),
                "now": now,
            }
            row = conn.execute(Q["finish_attempt"], params).fetchone()
            if row is None:
                raise self._lost(conn, update, f"move to {status.value}")
            return row_to_task(row)

        return self.db.write(work)

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

    def heartbeat_worker(self, worker_id: str, now: float) -> None:
        self.db.write(lambda c: c.execute(Q["heartbeat_worker"], (now, worker_id)))

    def deregister_worker(self, worker_id: str) -> None:
        self.db.write(lambda c: c.execute(Q["delete_worker"], (worker_id,)))

    def list_workers(self) -> list[WorkerInfo]:
        rows = self.db.read(lambda c: c.execute(Q["list_workers"]).fetchall())
        return [_row_to_worker(r) for r in rows]

    # -- maintenance -----------------------------------------------------------
    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        word = mode.strip().upper()
        if word not in CHECKPOINT_MODES:
            raise ConfigError(f"checkpoint mode must be one of {', '.join(CHECKPOINT_MODES)}, got {mode!r}")
        row = self.db.read(lambda c: c.execute(f"PRAGMA wal_checkpoint({word})").fetchone())
        return int(row[0]), int(row[1]), int(row[2])

    def vacuum(self) -> None:
        self.db.read(lambda c: c.execute("VACUUM"))

    def analyze(self) -> None:
        self.db.read(lambda c: c.execute("ANALYZE"))

    def integrity_check(self) -> list[str]:
        return [r[0] for r in self.db.read(lambda c: c.execute("PRAGMA integrity_check").fetchall())]

    def backup(self, destination: Path) -> Path:
        destination = Path(destination).expanduser()
        parent = destination.parent
        try:
            if destination.exists() and destination.resolve() == self.path.resolve():
                raise BackupError("the backup destination is the live database itself; choose another path")
            if destination.is_dir():
                raise BackupError(f"{destination} is a directory; give the backup file's path")
            if not parent.is_dir():
                raise BackupError(f"the backup folder {parent} does not exist; create it first")
        except (OSError, ValueError) as exc:  # a name too long, a NUL, an unencodable character
            reason = getattr(exc, "strerror", None) or exc
            raise BackupError(
                f"cannot use {destination} as a backup destination: {reason}; choose another path"
            ) from None
        temp = parent / f".{destination.name}.{secrets.token_hex(4)}.partial"
        try:
            fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        except (OSError, ValueError) as exc:
            raise BackupError(
                f"cannot write a backup in {parent}: {getattr(exc, 'strerror', None) or exc}; "
                "choose a writable folder"
            ) from None
        try:
            target = sqlite3.connect(str(temp), isolation_level=None)
            try:
                self.db.connection().backup(target)
                target.execute("PRAGMA journal_mode = DELETE")
                check = target.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                target.close()
            if check != "ok":
                raise BackupError(f"the backup copy failed its integrity check: {check}")
            os.replace(temp, destination)
        except sqlite3.Error as exc:
            raise BackupError(
                f"backup to {destination} failed: {translate_error(exc, str(destination))}"
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return destination

    def restore(self, source: Path) -> None:
        source = Path(source).expanduser()
        verify_backup(source)
        try:
            reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
            try:
                reader.backup(self.db.connection())
            finally:
                reader.close()
        except sqlite3.Error as exc:
            raise BackupError(
                f"restore from {source} failed and the database was left as it was: {exc}"
            ) from None
        self.db.migrate()

    def explain_claims(self) -> dict[str, list[str]]:
        now = 0.0
        base = {"worker": "w", "token": "t", "lease_until": 1.0, "now": now, "count": 1, "task_type": "x"}
        plans: dict[str, list[str]] = {}
        conn = self.db.connection()
        names = [n for n in Q if n.startswith(("claim_", "candidates_"))]
        names += [
            "has_ready_of_type",
            "queued_task_types",
            "next_run_after_type",
            "reclaim_expired",
            "lease_by_ids",
        ]
        for name in names:
            params = {**base, "ids": "[1]"}
            rows = conn.execute(f"EXPLAIN QUERY PLAN {Q[name]}", params).fetchall()
            plans[name] = [r[3] for r in rows]
        return plans


def _queued_types(conn: sqlite3.Connection) -> list[str]:
    """Task types that have queued tasks: one index seek per type (a loose index scan)."""
    return [row[0] for row in conn.execute(Q["queued_task_types"])]


def _describe_holder(row: Sequence[Any]) -> str:
    status, locked_by, _token = row
    if status == "leased":
        return f"it is now leased by {locked_by!r}"
    return f"it is now {status}"


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
