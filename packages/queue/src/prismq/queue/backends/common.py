"""What the SQL backends share: the task row layout, row mapping and common operations.

The operations here have the same logic on every database; only the SQL text, loaded per
backend, differs.

A backend subclasses :class:`SQLQueueBackend`, sets ``queries`` (its named statements, all
using named parameters) and ``db`` (its connection manager with ``read``, ``write`` and
``transaction``), and says how it binds a list and a flag (:meth:`SQLQueueBackend._array`,
:meth:`SQLQueueBackend._flag`). Claims, inserts, schema and maintenance stay in each
backend, where the databases really differ.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from ..errors import (
    BackupError,
    DuplicateTaskError,
    LeaseLostError,
    QueueError,
    TaskNotFoundError,
    TaskStateError,
    ValidationError,
)
from ..flow import START_KEPT_EXTRA, ClaimGate, FlowLimit, plan_claim, rate_bucket_end
from ..models import Task, TaskStatus, UndecodableValue, WorkerInfo, epoch_to_datetime
from ..strategies import Ordering, SchedulingStrategy
from .base import (
    COPY_TABLES,
    AsyncStore,
    Connections,
    FlowTask,
    KeysetPage,
    NewTask,
    PageQuery,
    QueueStats,
    Settlement,
    TaskQuery,
    TaskUpdate,
)
from .runstore import RUN_COLUMNS

__all__ = [
    "ORDER_KEYS",
    "TASK_COLUMNS",
    "TASK_COPY_COLUMNS",
    "TASK_ROW_COLUMNS",
    "ClaimWentOver",
    "Connections",
    "SQLQueueBackend",
    "describe_holder",
    "row_to_task",
    "row_to_worker",
    "write_backup",
]

TASK_COLUMNS = (
    "id, task_type, payload, status, priority, attempts, max_attempts, retry_policy, "
    "run_after, lease_until, locked_by, lease_token, cancel_requested, progress, "
    "progress_message, result, last_error, last_traceback, idempotency_key, created_at, "
    "started_at, finished_at, trace_context"
)

TASK_ROW_COLUMNS = (*(c.strip() for c in TASK_COLUMNS.split(",")), "updated_at")
"""The columns of ``tasks`` a task row maps (:func:`row_to_task`), then ``updated_at``."""

TASK_COPY_COLUMNS = (*TASK_ROW_COLUMNS, "concurrency_key", "unique_key")
"""Every column of ``tasks``, in the order copies between databases and dumps read and write them."""

# Per copied table: its columns in copy order, its boolean columns, and its transfer.sql
# statements (count, read after a key, read a key range, upsert).
_COPY = {
    "tasks": (
        TASK_COPY_COLUMNS,
        ("cancel_requested",),
        "count_tasks",
        "tasks_after",
        "tasks_between",
        "upsert_task",
    ),
    "runs": (RUN_COLUMNS, ("rerunnable",), "count_runs", "runs_after", "runs_between", "upsert_run"),
}
assert tuple(_COPY) == COPY_TABLES

_STATUS = {status.value: status for status in TaskStatus}
ORDER_KEYS: dict[Ordering, Callable[[Task], Any]] = {
    # Strategy order of claimed tasks (a claim's RETURNING rows come in no particular order).
    Ordering.OLDEST_FIRST: lambda t: (t.run_after, t.id),
    Ordering.NEWEST_FIRST: lambda t: (-t.run_after.timestamp(), -t.id),
    Ordering.PRIORITY: lambda t: (t.priority, t.run_after, t.id),
}


_logger = logging.getLogger("prismq.queue.backend")
_decode_json = json.JSONDecoder().decode
_UTC = timezone.utc
_from_epoch = datetime.fromtimestamp
_new_instance = object.__new__
# Decoded retry policies by their stored text: nearly every task of a queue carries one of a
# handful of policies, so decoding each once saves a JSON parse per claimed task.
_POLICY_CACHE: dict[str, dict[str, Any]] = {}
_POLICY_CACHE_SIZE = 256


def _decode_policy(text: Any) -> dict[str, Any]:
    """Decode a stored retry policy; a fresh dict per call (the caller may change it)."""
    cached = _POLICY_CACHE.get(text) if type(text) is str else None
    if cached is None:
        cached = json.loads(text)
        if not isinstance(cached, dict):
            return {}  # not a policy: the default applies
        flat = all(v is None or isinstance(v, (str, int, float)) for v in cached.values())
        if not flat or type(text) is not str:
            return cached
        if len(_POLICY_CACHE) < _POLICY_CACHE_SIZE:
            _POLICY_CACHE[text] = cached
    return dict(cached)


def decode_stored(text: Any) -> Any:
    """Decode a stored payload or result; an :class:`UndecodableValue` when it cannot be.

    Rows written by other software (or by hand) may hold text that is not JSON, or JSON
    nested too deep for the decoder; one such row must not stop every read that meets it.
    """
    try:
        return _decode_json(text)
    except (ValueError, TypeError, RecursionError) as exc:
        return _undecodable(text, exc)


def _undecodable(text: Any, exc: BaseException) -> UndecodableValue:
    if isinstance(exc, RecursionError):
        reason = "it is nested too deeply to decode"
    else:
        reason = f"it is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})"
    return UndecodableValue(reason=reason, text=str(text)[:200])


def row_to_task(row: Sequence[Any]) -> Task:
    """Build a :class:`Task` from a row in ``TASK_COLUMNS`` order.

    This runs once per claimed or returned task, so it takes the short way: the row comes
    from the queue's own table (its values already checked by the schema), so the frozen
    dataclass's ``__init__``, which sets 22 fields one ``object.__setattr__`` at a time,
    is skipped and the instance's attribute dict is filled in one step. The JSON decoder
    and ``datetime.fromtimestamp`` are bound once, and retry policies are decoded through
    a small cache (see :func:`_decode_policy`). A test checks that the result equals
    ``Task(...)`` built the ordinary way, field for field.

    A payload or result that cannot be decoded becomes an :class:`UndecodableValue`, and a
    retry policy that cannot be decoded gives the default policy: a row written by other
    software never makes a read raise.
    """
    utc, from_epoch = _UTC, _from_epoch
    lease_until, started_at, finished_at, result = row[9], row[20], row[21], row[15]
    try:
        payload = _decode_json(row[2])
    except (ValueError, TypeError, RecursionError) as exc:
        payload = _undecodable(row[2], exc)
    if result is not None:
        result = decode_stored(result)
    try:
        policy = _decode_policy(row[7])
    except (ValueError, TypeError, RecursionError):
        policy = {}  # the default policy applies
    task = _new_instance(Task)
    task.__dict__.update(
        {
            "id": row[0],
            "task_type": row[1],
            "payload": payload,
            "status": _STATUS[row[3]],
            "priority": row[4],
            "attempts": row[5],
            "max_attempts": row[6],
            "run_after": from_epoch(row[8], utc),
            "created_at": from_epoch(row[19], utc),
            "lease_until": None if lease_until is None else from_epoch(lease_until, utc),
            "locked_by": row[10],
            "lease_token": row[11],
            "progress": row[13],
            "progress_message": row[14],
            "result": result,
            "last_error": row[16],
            "last_traceback": row[17],
            "idempotency_key": row[18],
            "cancel_requested": bool(row[12]),
            "started_at": None if started_at is None else from_epoch(started_at, utc),
            "finished_at": None if finished_at is None else from_epoch(finished_at, utc),
            "retry_policy": policy,
            "trace_context": row[22],
        }
    )
    return task


def row_to_worker(row: Sequence[Any]) -> WorkerInfo:
    """Build a :class:`WorkerInfo` from a ``workers`` row."""
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


def describe_holder(row: Sequence[Any]) -> str:
    """Say who holds a task now, from a ``lease_holder`` row (for lease-lost messages)."""
    status, locked_by, _token = row
    if status == "leased":
        return f"it is now leased by {locked_by!r}"
    return f"it is now {status}"


def write_backup(destination: Path, write: Callable[[Path], None], live: Path | None = None) -> Path:
    """Write a backup through a temporary file beside ``destination``, then rename it into place.

    The temporary file is created owner-only (``0600``) and exclusively, handed to
    ``write`` (which fills and checks it, raising :class:`BackupError` on a failed
    check), and renamed over ``destination`` only when ``write`` returns, so a
    half-written backup never appears. It is removed whatever happens.

    Args:
        destination: The backup file's path.
        write: Fills the temporary file whose path it is given.
        live: The live database file, which ``destination`` must not be.

    Raises:
        BackupError: ``destination`` is the live file, a folder, in a missing or
            unwritable folder, or an unusable name; or writing failed.
    """
    destination = Path(destination).expanduser()
    parent = destination.parent
    try:
        if live is not None and destination.exists() and destination.resolve() == live.resolve():
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
        os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise BackupError(f"cannot write a backup in {parent}: {reason}; choose a writable folder") from None
    try:
        write(temp)
        os.replace(temp, destination)
    except OSError as exc:
        raise BackupError(f"backup to {destination} failed: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return destination


def _bind_cursor(
    params: dict[str, Any], names: tuple[str, ...], cursor: tuple[Any, ...] | None, start: tuple[Any, ...]
) -> None:
    """Bind a page cursor's values (or the start of the order) to its parameters.

    Raises:
        ValidationError: The cursor belongs to another kind of page.
    """
    values = start if cursor is None else cursor
    if len(values) != len(names) or any(
        type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float)))
        for a, b in zip(values, start, strict=True)
    ):
        raise ValidationError(f"the cursor {list(values)!r} belongs to another page's filter")
    params.update(zip(names, values, strict=True))


class ClaimWentOver(Exception):
    """An optimistic claim went over a flow limit (a concurrent claim took the room).

    Raised inside the claim's transaction, which is then rolled back and made again with
    the limits locked first; it never leaves the backend.
    """


class SQLQueueBackend:
    """Operations shared by the SQL backends (see the module docstring)."""

    queries: ClassVar[dict[str, str]]
    transfer_queries: ClassVar[dict[str, str]]
    notifies_changes: ClassVar[bool] = False
    db: Connections

    def async_store(self, clock: Callable[[], float]) -> AsyncStore | None:
        """No asyncio store of its own: the async client runs the synchronous calls on threads."""
        return None

    def wait_for_change(self, timeout: float) -> bool:
        """Nothing is pushed here: return True at once (the caller looks for itself)."""
        return True

    def stop_listening(self) -> None:
        """Nothing listens here."""

    def _executemany(self, conn: Any, sql: str, values: Sequence[Any]) -> None:
        """Run ``sql`` once per parameter set on ``conn``."""
        conn.executemany(sql, values)

    def _insert_one(self, conn: Any, row: Any) -> int:
        """Insert one task row (bound as ``insert_task`` takes it); return its id."""
        raise NotImplementedError

    def _key_params(self, key: str) -> Any:
        """Bind ``task_id_by_idempotency_key``'s one parameter."""
        raise NotImplementedError

    def _insert_keyed(
        self, conn: Any, rows: Sequence[Any], keys: Sequence[str | None]
    ) -> list[tuple[int, bool]]:
        """Insert rows one by one; a row whose idempotency key is taken returns that task's id."""
        out: list[tuple[int, bool]] = []
        for row, key in zip(rows, keys, strict=True):
            if key is None:
                out.append((self._insert_one(conn, row), True))
                continue
            inserted = conn.execute(self.queries["insert_task_idempotent"], row).fetchone()
            if inserted is not None:
                out.append((inserted[0], True))
            else:
                existing = conn.execute(
                    self.queries["task_id_by_idempotency_key"], self._key_params(key)
                ).fetchone()
                out.append((existing[0], False))
        return out

    # -- copy between databases --------------------------------------------------
    def _copy_spec(self, table: str) -> tuple[Any, ...]:
        try:
            return _COPY[table]
        except KeyError:
            raise ValueError(f"no copy of table {table!r}; copied tables: {', '.join(COPY_TABLES)}") from None

    def _has_table(self, table: str) -> bool:
        if table == "tasks":
            return True
        return bool(self.db.read(lambda c: c.execute(self.transfer_queries["has_runs"]).fetchone()[0]))

    def _copy_rows(self, table: str, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        columns, booleans = self._copy_spec(table)[:2]
        if not self._has_table(table):
            return []
        rows = self.db.read(lambda c: c.execute(self.transfer_queries[query], params).fetchall())
        out = []
        for row in rows:
            record = dict(zip(columns, row, strict=True))
            for name in booleans:
                record[name] = bool(record[name])
            out.append(record)
        return out

    def copy_count(self, table: str) -> int:
        count_query = self._copy_spec(table)[2]
        if not self._has_table(table):
            return 0
        return int(self.db.read(lambda c: c.execute(self.transfer_queries[count_query]).fetchone()[0]))

    def copy_read(self, table: str, after: int, limit: int) -> list[dict[str, Any]]:
        return self._copy_rows(table, self._copy_spec(table)[3], {"after": after, "limit": limit})

    def copy_read_between(self, table: str, first: int, last: int) -> list[dict[str, Any]]:
        return self._copy_rows(table, self._copy_spec(table)[4], {"first": first, "last": last})

    def copy_write(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        _columns, booleans, _count, _after, _between, upsert = self._copy_spec(table)
        values = [{**row, **{name: self._flag(bool(row[name])) for name in booleans}} for row in rows]

        def work(conn: Any) -> None:
            self._executemany(conn, self.transfer_queries[upsert], values)
            if table == "tasks" and "advance_task_ids" in self.transfer_queries:
                conn.execute(self.transfer_queries["advance_task_ids"])

        self.db.write(work)

    def _array(self, values: list[Any]) -> Any:
        """Bind a list parameter (SQLite: JSON text for ``json_each``; PostgreSQL: an array)."""
        raise NotImplementedError

    def _flag(self, value: bool) -> Any:
        """Bind a boolean parameter (SQLite: 0/1; PostgreSQL: a boolean)."""
        raise NotImplementedError

    def _claim_rows(
        self,
        conn: Any,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        params: dict[str, Any],
    ) -> list[Any]:
        """Lease up to ``params["count"]`` ready tasks inside the open transaction; return rows."""
        raise NotImplementedError

    def _queued_types(self, conn: Any) -> list[str]:
        """Task types that have queued tasks, read off the ready index (one seek per type)."""
        return [row[0] for row in conn.execute(self.queries["queued_task_types"])]

    def _ready_types(self, conn: Any, candidates: list[str], now: float) -> list[str]:
        """Those of ``candidates`` with a task ready at ``now``, in ``candidates`` order."""
        raise NotImplementedError

    def _claim_split(
        self,
        conn: Any,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        params: dict[str, Any],
    ) -> list[Any]:
        """Weighted draws: pick types by weight, then the oldest ready task of each."""
        candidates = self._queued_types(conn) if task_types is None else list(dict.fromkeys(task_types))
        available = self._ready_types(conn, candidates, params["now"])
        return self._claim_by_weight(conn, strategy, available, params)

    def _claim_by_weight(
        self, conn: Any, strategy: SchedulingStrategy, available: list[str], params: dict[str, Any]
    ) -> list[Any]:
        """Weighted Random: draw task types by weight, lease the oldest ready tasks of each.

        A type that yields fewer tasks than drawn (all its tasks delayed, or fewer left) is
        dropped and the rest of the claim is drawn again among the remaining types.
        """
        rows: list[Any] = []
        remaining = params["count"]
        while remaining > 0 and available:
            allocation = strategy.allocate(available, remaining) or {}
            for task_type, wanted in allocation.items():
                got = conn.execute(
                    self.queries["claim_oldest_first_type"],
                    {**params, "task_type": task_type, "count": wanted},
                ).fetchall()
                rows.extend(got)
                remaining -= len(got)
                if len(got) < wanted:
                    available.remove(task_type)
        return rows

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
        return self.complete_and_claim(
            (), (), worker_id, task_types, strategy, count, lease_duration, now, reclaim_first
        )[1]

    def complete_and_claim(
        self,
        updates: Sequence[TaskUpdate],
        results_json: Sequence[str | None],
        worker_id: str,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        count: int,
        lease_duration: float,
        now: float,
        reclaim_first: bool = False,
    ) -> tuple[list[bool], list[Task]]:
        def settle(conn: Any) -> tuple[list[bool], bool]:
            done = self._complete_in(conn, updates, results_json, now) if updates else []
            return done, all(done)

        return self._settle_then_claim(
            settle, worker_id, task_types, strategy, count, lease_duration, now, reclaim_first
        )

    def settle_and_claim(
        self,
        settlements: Sequence[Settlement],
        worker_id: str,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        count: int,
        lease_duration: float,
        now: float,
        reclaim_first: bool = False,
    ) -> tuple[list[bool], list[Task]]:
        def settle(conn: Any) -> tuple[list[bool], bool]:
            return self._settle_in(conn, settlements, now), count > 0

        return self._settle_then_claim(
            settle, worker_id, task_types, strategy, count, lease_duration, now, reclaim_first
        )

    def _settle_in(self, conn: Any, settlements: Sequence[Settlement], now: float) -> list[bool]:
        """Write every settlement inside the open transaction; False where the lease was lost.

        Completions go through :meth:`_complete_in` together (one statement on SQLite);
        the other endings are one fenced ``finish_attempt`` each.
        """
        done = [False] * len(settlements)
        completions = [i for i, s in enumerate(settlements) if s.status is TaskStatus.COMPLETED]
        if completions:
            flags = self._complete_in(
                conn,
                [settlements[i].update for i in completions],
                [settlements[i].result_json for i in completions],
                now,
            )
            for index, flag in zip(completions, flags, strict=True):
                done[index] = flag
        sql = self.queries["finish_attempt"]
        for index, item in enumerate(settlements):
            if item.status is TaskStatus.COMPLETED:
                continue
            params = {
                **self._fenced(item.update),
                "status": item.status.value,
                "run_after": item.run_after,
                "error": item.error,
                "traceback": item.traceback,
                "count_attempt": self._flag(item.count_attempt),
                "now": now,
            }
            done[index] = conn.execute(sql, params).fetchone() is not None
        return done

    def _settle_then_claim(
        self,
        settle: Callable[[Any], tuple[list[bool], bool]],
        worker_id: str,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        count: int,
        lease_duration: float,
        now: float,
        reclaim_first: bool,
    ) -> tuple[list[bool], list[Task]]:
        """Run ``settle`` then, when it says so, the claim, in one write transaction."""
        queries = self.queries
        params: dict[str, Any] = {
            "worker": worker_id,
            "token": secrets.token_hex(8),
            "lease_until": now + lease_duration,
            "now": now,
            "count": count,
            **self._unblocked,
            # Run tasks only for a worker that names its types (see ready_filter).
            "explicit": self._flag(task_types is not None),
        }

        # Limits locked before the claim reads them: inside a caller's transaction (which
        # cannot be made again), or when an optimistic claim went over a limit.
        locked = self.db.in_transaction

        def work(conn: Any) -> tuple[list[bool], list[Any]]:
            done, go_on = settle(conn)
            if not go_on:
                return done, []
            if reclaim_first:
                conn.execute(queries["reclaim_expired"], {"now": now})
            paused, gate = self._claim_reads(conn, task_types, count, now, locked)
            types = self._without_paused(conn, task_types, paused)
            if types is not None and not types:
                return done, []
            return done, self._claim_under_limits(conn, types, strategy, params, now, gate, locked)

        # Rows become Task objects after the commit: the write lock is held for SQL only.
        try:
            done, rows = self.db.write(work)
        except ClaimWentOver:
            # Rolled back whole (the settling with it): made again, the limits locked first.
            locked = True
            done, rows = self.db.write(work)
        tasks = [row_to_task(r) for r in rows]
        if len(tasks) > 1:
            tasks.sort(key=ORDER_KEYS[strategy.ordering])
        for task in tasks:
            if type(task.payload) is UndecodableValue:
                return done, self._bury_undecodable(tasks, worker_id, now)
        return done, tasks

    # -- flow control --------------------------------------------------------------
    _forgotten: dict[tuple[str, str], float]
    """Per rate-limited scope, the bucket during which this backend last forgot old buckets."""
    _unblocked: ClassVar[dict[str, Any]] = {"blocked": None}
    """Claim parameters meaning "no scope is blocked" (the ready filter's parameters)."""

    def _blocked_params(self, blocked: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """Bind the scopes a claim must skip for the ready filter."""
        return {"blocked": json.dumps([list(scope) for scope in blocked]) if blocked else None}

    def _claim_reads(
        self, conn: Any, task_types: Sequence[str] | None, count: int, now: float, locked: bool
    ) -> tuple[set[str], ClaimGate | None]:
        """What a claim reads before it leases: the paused types and the limits' plan.

        The plan covers the limits of the types the claim asks for, with their counters
        (None when no limit applies); a limit of a paused type only makes the room smaller,
        never larger. With ``locked``, a dialect whose claims run side by side locks those
        limits first, so the plan is exact (SQLite's claims run alone: always exact).
        """
        paused = {row[0] for row in conn.execute(self.queries["paused_names"])}
        return paused, self._claim_gate(conn, task_types, count, now)

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
        """Claim within the limits that apply (the plain claim when ``gate`` is None).

        The limits were read with their counters in the claim's write transaction, which
        on SQLite runs alone: the room read is the room there is. A dialect whose claims
        run side by side may claim optimistically when not ``locked`` and raise
        :class:`ClaimWentOver` when that went over a limit.
        """
        if gate is None:
            return self._claim_rows(conn, task_types, strategy, params)
        return self._claim_within(conn, gate, task_types, strategy, params, now)

    def _claim_within(
        self,
        conn: Any,
        gate: ClaimGate,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        params: dict[str, Any],
        now: float,
    ) -> list[Any]:
        """Lease at most ``gate.count`` tasks outside the blocked scopes; record their starts."""
        if gate.count == 0:
            return []
        rows = self._claim_rows(conn, task_types, strategy, self._limited_params(params, gate))
        self._record_starts(conn, gate, rows, now)
        return rows

    def _limited_params(self, params: dict[str, Any], gate: ClaimGate) -> dict[str, Any]:
        """The claim's parameters within ``gate``: its room, its blocked scopes skipped."""
        return {**params, "count": gate.count, **self._blocked_params(gate.blocked)}

    def _claim_gate(
        self, conn: Any, task_types: Sequence[str] | None, count: int, now: float
    ) -> ClaimGate | None:
        """Read the limits a claim is under, with their counters; None when none apply."""
        rows = conn.execute(
            self.queries["flow_limits_for_claim"], self._limit_params(task_types, now)
        ).fetchall()
        return self._gate(rows, count)

    def _limit_params(self, task_types: Sequence[str] | None, now: float) -> dict[str, Any]:
        """Parameters of ``flow_limits_for_claim`` for a claim of ``task_types``."""
        wanted = None if task_types is None else self._array(list(dict.fromkeys(task_types)))
        return {"task_types": wanted, "now": now}

    def _gate(self, rows: Sequence[Any], count: int) -> ClaimGate | None:
        """The claim plan from ``flow_limits_for_claim`` rows; None when there are none."""
        if not rows:
            return None
        return plan_claim([FlowLimit(*r[:5]) for r in rows], [(r[0], r[1], r[5], r[6]) for r in rows], count)

    def _record_starts(self, conn: Any, gate: ClaimGate, rows: Sequence[Any], now: float) -> None:
        """Count the claimed tasks (``rows``) under the rate limits covering them.

        They go into the current bucket of each such limit, and the buckets no claim
        counts any more are forgotten.
        """
        claimed_types = {row[1] for row in rows}
        if not any(limit.task_type in ("", *claimed_types) for limit in gate.rated):
            return
        ends = self._bucket_ends(gate, now)
        self._count_starts(conn, gate, rows, ends)
        self._forget_starts(conn, gate, ends, now)

    @staticmethod
    def _bucket_ends(gate: ClaimGate, now: float) -> dict[FlowLimit, float]:
        """The bucket a claim at ``now`` counts into, per rate limit of ``gate``."""
        return {limit: rate_bucket_end(now, limit.period or 1.0) for limit in gate.rated}

    def _count_starts(
        self, conn: Any, gate: ClaimGate, rows: Sequence[Any], ends: dict[FlowLimit, float]
    ) -> None:
        """Add the claimed tasks to the bucket ``ends[limit]`` of each rate limit covering them.

        Runs inside the claim's transaction; ``rows`` are the claimed tasks' rows.
        """
        raise NotImplementedError

    def _forget_starts(self, conn: Any, gate: ClaimGate, ends: dict[FlowLimit, float], now: float) -> None:
        """Delete the buckets of ``gate``'s rate limits that no claim counts any more."""
        for limit in gate.rated:
            # Buckets older than a period (and the margin) no longer count: forgotten once
            # per bucket of this limit by this process, not at every claim.
            if self._forgotten.get((limit.task_type, limit.key)) == ends[limit]:
                continue
            before = now - (limit.period or 0.0) - START_KEPT_EXTRA
            scope = {"task_type": limit.task_type, "key": limit.key, "before": before}
            conn.execute(self.queries["forget_flow_starts"], scope)
            self._forgotten[(limit.task_type, limit.key)] = ends[limit]

    def _prepare_limit_change(self, conn: Any) -> None:
        """Make the counters of limits set in this transaction exact (a dialect's step)."""

    def _sync_flow_counting(self, conn: Any) -> None:
        """Keep the counting of leased tasks in step with the limits (a dialect's step)."""

    def set_limit(self, kind: str, task_type: str, key: str, limit: int, period: float | None) -> None:
        """Set the concurrency (``kind="concurrency"``) or rate limit of a scope."""
        params = {"task_type": task_type, "key": key, "limit": limit, "period": period}

        def work(conn: Any) -> None:
            self._prepare_limit_change(conn)
            conn.execute(self.queries[f"set_{kind}_limit"], params)
            self._sync_flow_counting(conn)
            conn.execute(self.queries["recount_flow_limit"], {"task_type": task_type, "key": key})

        self.db.write(work)

    def remove_limit(self, kind: str, task_type: str, key: str) -> bool:
        """Remove a scope's concurrency or rate limit; False when it had none."""
        scope = {"task_type": task_type, "key": key}

        def work(conn: Any) -> bool:
            removed = conn.execute(self.queries[f"drop_{kind}_limit"], scope).rowcount
            if not removed:
                removed = conn.execute(self.queries[f"clear_{kind}_limit"], scope).rowcount
            if removed and kind == "rate":
                conn.execute(self.queries["forget_all_flow_starts"], scope)
            if removed:
                self._sync_flow_counting(conn)
            return bool(removed)

        return bool(self.db.write(work))

    def list_limits(self) -> list[FlowLimit]:
        """Every limit, by scope."""
        rows = self.db.read(lambda c: c.execute(self.queries["list_flow_limits"]).fetchall())
        return [FlowLimit(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def limit_usage(self, now: float) -> dict[tuple[str, str], tuple[int, int]]:
        """Per limited scope: ``(tasks leased now, claims within its rate period)``."""
        params = {"task_types": None, "now": now}
        rows = self.db.read(lambda c: c.execute(self.queries["flow_limits_for_claim"], params).fetchall())
        return {(r[0], r[1]): (r[5], r[6]) for r in rows}

    def insert_flow_tasks(self, tasks: Sequence[FlowTask], now: float) -> list[tuple[int, bool]]:
        """Insert tasks with concurrency keys and/or unique keys, all in one transaction.

        A task with a unique key whose equal task (same key, in one of its statuses,
        created at or after its ``unique_since``) exists, or was inserted earlier in the
        same call, gives ``(that id, False)``, or raises :class:`DuplicateTaskError` (and
        nothing is written) when it says to raise.
        """
        queries = self.queries

        def one(conn: Any, flow: FlowTask) -> tuple[int, bool]:
            task = flow.task
            if flow.unique_key is not None:
                if "lock_unique_key" in queries:
                    conn.execute(queries["lock_unique_key"], {"unique_key": flow.unique_key})
                found = conn.execute(
                    queries["find_unique"],
                    {
                        "unique_key": flow.unique_key,
                        "since": flow.unique_since,
                        "statuses": self._array(list(flow.unique_statuses)),
                    },
                ).fetchone()
                if found is not None:
                    if flow.raise_on_duplicate:
                        raise DuplicateTaskError(
                            f"an equal {task.task_type!r} task is already pending (task {found[0]}); "
                            "it was not enqueued again",
                            found[0],
                        )
                    return found[0], False
            row = {
                **task.insert_params(now),
                "concurrency_key": flow.concurrency_key,
                "unique_key": flow.unique_key,
            }
            inserted = conn.execute(queries["insert_task_flow"], row).fetchone()
            if inserted is not None:
                return inserted[0], True
            existing = conn.execute(
                queries["task_id_by_idempotency_key"], self._key_params(task.idempotency_key or "")
            ).fetchone()
            return existing[0], False

        return list(self.db.write(lambda conn: [one(conn, flow) for flow in tasks]))

    def _bury_undecodable(self, tasks: list[Task], worker_id: str, now: float) -> list[Task]:
        """Make claimed tasks whose payload cannot be decoded dead; return the others.

        No handler could run such a task, and retrying cannot help. The change is fenced by
        the claim's token; if it fails (a busy database), the task is left leased and is
        reclaimed, and buried again, once the lease expires: the rest of the batch runs
        either way.
        """
        good = [t for t in tasks if type(t.payload) is not UndecodableValue]
        bad = [t for t in tasks if type(t.payload) is UndecodableValue]
        sql = self.queries["finish_attempt"]

        def work(conn: Any) -> None:
            for task in bad:
                params = {
                    **self._fenced(TaskUpdate(task.id, worker_id, task.lease_token or "")),
                    "status": TaskStatus.DEAD.value,
                    "run_after": None,
                    "error": f"the stored payload cannot be decoded: {task.payload.reason}",
                    "traceback": None,
                    "count_attempt": self._flag(True),
                    "now": now,
                }
                conn.execute(sql, params).fetchone()

        try:
            self.db.write(work)
        except QueueError as exc:
            _logger.error("could not mark %d undecodable task(s) dead: %s", len(bad), exc)
        else:
            for task in bad:
                _logger.error(
                    "task %s has a payload that cannot be decoded (%s); marked dead",
                    task.id,
                    task.payload.reason,
                    extra={
                        "worker_id": worker_id,
                        "task_id": task.id,
                        "task_type": task.task_type,
                        "attempt": task.attempts,
                    },
                )
        return good

    def _unpaused(self, conn: Any, task_types: Sequence[str] | None) -> Sequence[str] | None:
        """The task types a claim may lease, inside its transaction: paused ones left out.

        With nothing paused (one read of a tiny table) the claim runs as it would without
        pausing; otherwise the claim names the types it may take, so it reads their
        indexes only and never walks past a paused type's tasks.
        """
        return self._without_paused(
            conn, task_types, {row[0] for row in conn.execute(self.queries["paused_names"])}
        )

    def _without_paused(
        self, conn: Any, task_types: Sequence[str] | None, paused: set[str]
    ) -> Sequence[str] | None:
        """``task_types`` without the ``paused`` ones (every queued type when None)."""
        if not paused:
            return task_types
        if task_types is None:
            task_types = [row[0] for row in conn.execute(self.queries["queued_task_types"])]
        return [t for t in task_types if t not in paused]

    # -- paused task types -----------------------------------------------------
    def pause_task_type(self, task_type: str, now: float) -> bool:
        params = {"task_type": task_type, "now": now}
        return bool(self.db.write(lambda c: c.execute(self.queries["pause_type"], params).rowcount) == 1)

    def resume_task_type(self, task_type: str) -> bool:
        def work(conn: Any) -> bool:
            resumed = conn.execute(self.queries["resume_type"], {"task_type": task_type}).rowcount == 1
            if resumed and "notify_queued" in self.queries:  # wake workers that push-wait
                conn.execute(self.queries["notify_queued"])
            return bool(resumed)

        return self.db.write(work)

    def paused_task_types(self) -> dict[str, float]:
        rows = self.db.read(lambda c: c.execute(self.queries["paused_types"]).fetchall())
        return {task_type: float(at) for task_type, at in rows}

    # -- dashboard pages and bulk changes ----------------------------------------
    def _page_statement(
        self, query: PageQuery
    ) -> tuple[str, dict[str, Any], Callable[[Any], tuple[Any, ...]]]:
        """The named query, parameters and cursor key of one page (see :class:`PageQuery`)."""
        status = query.status
        params: dict[str, Any] = {
            "task_type": query.task_type,
            "since": query.since,
            "until": query.until,
            "search": query.search,
            "limit": query.limit,
            "status": None if status is None else status.value,
        }
        cursor = query.cursor
        key: Callable[[Any], tuple[Any, ...]]
        if status is None:
            name, key = "page_all", lambda r: (r[0],)
            _bind_cursor(params, ("cursor_id",), cursor, (2**63 - 1,))
        elif status is TaskStatus.QUEUED and query.task_type is None:
            name, key = "page_queued", lambda r: (r[1], r[8], r[0])
            _bind_cursor(params, ("cursor_type", "cursor_time", "cursor_id"), cursor, ("", -1.0, 0))
        elif status is TaskStatus.QUEUED:
            name, key = "page_queued_type", lambda r: (r[8], r[0])
            _bind_cursor(params, ("cursor_time", "cursor_id"), cursor, (-1.0, 0))
        elif status is TaskStatus.LEASED:
            name, key = "page_leased", lambda r: (r[9], r[0])
            _bind_cursor(params, ("cursor_time", "cursor_id"), cursor, (-1.0, 0))
        else:
            name = f"page_{status.value}" if f"page_{status.value}" in self.queries else "page_finished"
            key = lambda r: (r[21], r[0])  # noqa: E731
            _bind_cursor(params, ("cursor_time", "cursor_id"), cursor, (1e300, 0))
        return name, params, key

    def page_tasks(self, query: PageQuery) -> KeysetPage:
        name, params, key = self._page_statement(query)
        rows = self.db.read(lambda c: c.execute(self.queries[name], params).fetchall())
        more = len(rows) == query.limit
        return KeysetPage([row_to_task(r) for r in rows], key(rows[-1]) if rows and more else None)

    def _explain(self, conn: Any, name: str, params: dict[str, Any]) -> list[str]:
        """The query plan of one of the backend's named statements, one line per step."""
        raise NotImplementedError

    def explain_page(self, query: PageQuery) -> list[str]:
        """The query plan of the statement :meth:`page_tasks` runs for ``query``."""
        name, params, _ = self._page_statement(query)
        return self.db.read(lambda c: self._explain(c, name, params))

    def finished_histogram(self, since: float, step: float) -> list[tuple[int, str, int]]:
        params = {"since": since, "step": step}
        rows = self.db.read(lambda c: c.execute(self.queries["finished_histogram"], params).fetchall())
        return [(int(bucket), status, int(n)) for bucket, status, n in rows]

    def change_tasks(self, action: str, task_ids: Sequence[int], now: float) -> int:
        names = {
            "retry": ("retry_ids",),
            "cancel": ("cancel_queued_ids", "request_cancel_leased_ids"),
            "delete": ("delete_ids",),
        }[action]
        params = {"ids": self._array(list(task_ids)), "now": now}

        def work(conn: Any) -> int:
            return sum(conn.execute(self.queries[name], params).rowcount for name in names)

        return self.db.write(work) if task_ids else 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.db.transaction() as conn:
            yield conn

    def get_task(self, task_id: int) -> Task | None:
        row = self.db.read(lambda c: c.execute(self.queries["get_task"], {"id": task_id}).fetchone())
        return None if row is None else row_to_task(row)

    def list_tasks(self, query: TaskQuery) -> list[Task]:
        params = {
            "statuses": None if query.statuses is None else self._array([s.value for s in query.statuses]),
            "task_types": None if query.task_types is None else self._array(list(query.task_types)),
            "created_after": query.created_after,
            "created_before": query.created_before,
            "limit": query.limit,
            "offset": query.offset,
        }
        name = "list_tasks_newest_first" if query.newest_first else "list_tasks_oldest_first"
        rows = self.db.read(lambda c: c.execute(self.queries[name], params).fetchall())
        return [row_to_task(r) for r in rows]

    def count_by_status(self) -> dict[str, int]:
        rows = self.db.read(lambda c: c.execute(self.queries["count_by_status"]).fetchall())
        counts = {s.value: 0 for s in TaskStatus}
        counts.update({status: n for status, n in rows})
        return counts

    def count_by_type(self) -> dict[str, dict[str, int]]:
        rows = self.db.read(lambda c: c.execute(self.queries["count_by_type"]).fetchall())
        out: dict[str, dict[str, int]] = {}
        for task_type, status, n in rows:
            out.setdefault(task_type, {})[status] = n
        return out

    def stats(self, now: float) -> QueueStats:
        def work(conn: Any) -> QueueStats:
            by_status = {s.value: 0 for s in TaskStatus}
            by_status.update(dict(conn.execute(self.queries["count_by_status"]).fetchall()))
            by_type: dict[str, dict[str, int]] = {}
            for task_type, status, n in conn.execute(self.queries["count_by_type"]):
                by_type.setdefault(task_type, {})[status] = n
            ready, oldest = conn.execute(self.queries["count_ready"], {"now": now}).fetchone()
            delayed = conn.execute(self.queries["count_delayed"], {"now": now}).fetchone()[0]
            expired = conn.execute(self.queries["count_expired_leases"], {"now": now}).fetchone()[0]
            last1 = conn.execute(self.queries["count_finished_since"], {"since": now - 60}).fetchone()[0]
            last5 = conn.execute(self.queries["count_finished_since"], {"since": now - 300}).fetchone()[0]
            workers = [row_to_worker(r) for r in conn.execute(self.queries["list_workers"])]
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

    def _require(self, conn: Any, task_id: int) -> Task:
        row = conn.execute(self.queries["get_task"], {"id": task_id}).fetchone()
        if row is None:
            raise TaskNotFoundError(f"no task with id {task_id}")
        return row_to_task(row)

    def cancel_task(self, task_id: int, now: float) -> Task:
        def work(conn: Any) -> Task:
            params = {"id": task_id, "now": now}
            row = conn.execute(self.queries["cancel_queued"], params).fetchone()
            if row is None:
                row = conn.execute(self.queries["request_cancel_leased"], params).fetchone()
            if row is not None:
                return row_to_task(row)
            task = self._require(conn, task_id)
            raise TaskStateError(
                f"task {task_id} is already {task.status.value}; only queued or running tasks "
                "can be cancelled"
            )

        return self.db.write(work)

    def retry_task(self, task_id: int, now: float, reset_attempts: bool) -> Task:
        def work(conn: Any) -> Task:
            params = {"id": task_id, "now": now, "reset": self._flag(reset_attempts)}
            row = conn.execute(self.queries["retry_finished"], params).fetchone()
            if row is not None:
                return row_to_task(row)
            task = self._require(conn, task_id)
            raise TaskStateError(
                f"task {task_id} is {task.status.value}; only dead or cancelled tasks can be retried"
            )

        return self.db.write(work)

    def prune(self, finished_before: float, statuses: Sequence[TaskStatus]) -> int:
        params = {"before": finished_before, "statuses": self._array([s.value for s in statuses])}
        return int(self.db.write(lambda c: c.execute(self.queries["prune"], params).rowcount))

    def reclaim_expired(self, now: float) -> int:
        return int(self.db.write(lambda c: c.execute(self.queries["reclaim_expired"], {"now": now}).rowcount))

    def _fenced(self, update: TaskUpdate) -> dict[str, Any]:
        return {"id": update.task_id, "worker": update.worker_id, "token": update.lease_token}

    def _lost(self, conn: Any, update: TaskUpdate, action: str) -> LeaseLostError:
        row = conn.execute(self.queries["lease_holder"], {"id": update.task_id}).fetchone()
        if row is None:
            raise TaskNotFoundError(f"no task with id {update.task_id}")
        return LeaseLostError(
            f"cannot {action} task {update.task_id}: worker {update.worker_id!r} no longer holds "
            f"its lease ({describe_holder(row)}); the task was reclaimed after the lease expired, "
            "so this attempt's outcome is discarded"
        )

    def diagnose_lost_lease(self, update: TaskUpdate) -> str:
        row = self.db.read(
            lambda c: c.execute(self.queries["lease_holder"], {"id": update.task_id}).fetchone()
        )
        return "the task no longer exists" if row is None else describe_holder(row)

    def insert_leased(self, task: NewTask, worker_id: str, lease_until: float, now: float) -> Task:
        def work(conn: Any) -> Task:
            params = {
                "task_type": task.task_type,
                "payload": task.payload_json,
                "priority": task.priority,
                "run_after": task.run_after,
                "retry_policy": task.retry_policy_json,
                "worker": worker_id,
                "token": secrets.token_hex(8),
                "lease_until": lease_until,
                "now": now,
            }
            return row_to_task(conn.execute(self.queries["insert_leased"], params).fetchone())

        return self.db.write(work)

    def lease_again(
        self, task_id: int, worker_id: str, lease_until: float, now: float, handover: str | None = None
    ) -> Task | None:
        def work(conn: Any) -> Task | None:
            params = {
                "id": task_id,
                "handover": handover,
                "worker": worker_id,
                "token": secrets.token_hex(8),
                "lease_until": lease_until,
                "now": now,
            }
            row = conn.execute(self.queries["hand_over"], params).fetchone()
            if row is None:
                revive = {"id": task_id, "now": now, "reset": self._flag(False)}
                conn.execute(self.queries["retry_finished"], revive)
                row = conn.execute(self.queries["claim_id"], params).fetchone()
            return None if row is None else row_to_task(row)

        return self.db.write(work)

    def renew_lease(self, update: TaskUpdate, lease_until: float, now: float) -> Task:
        def work(conn: Any) -> Task:
            params = {**self._fenced(update), "lease_until": lease_until, "now": now}
            row = conn.execute(self.queries["renew_lease"], params).fetchone()
            if row is None:
                raise self._lost(conn, update, "renew the lease of")
            return row_to_task(row)

        return self.db.write(work)

    def update_progress(
        self, update: TaskUpdate, percent: float, message: str | None, lease_until: float, now: float
    ) -> Task:
        def work(conn: Any) -> Task:
            params = {
                **self._fenced(update),
                "percent": percent,
                "message": message,
                "lease_until": lease_until,
                "now": now,
            }
            row = conn.execute(self.queries["update_progress"], params).fetchone()
            if row is None:
                raise self._lost(conn, update, "report progress on")
            return row_to_task(row)

        return self.db.write(work)

    def _complete_in(
        self, conn: Any, updates: Sequence[TaskUpdate], results_json: Sequence[str | None], now: float
    ) -> list[bool]:
        """Complete held tasks inside the open transaction; False where the lease was lost."""
        sql = self.queries["complete_task"]
        return [
            conn.execute(sql, {**self._fenced(update), "result": result, "now": now}).rowcount == 1
            for update, result in zip(updates, results_json, strict=True)
        ]

    def complete_tasks(
        self, updates: Sequence[TaskUpdate], results_json: Sequence[str | None], now: float
    ) -> list[bool]:
        return self.db.write(lambda conn: self._complete_in(conn, updates, results_json, now))

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
        def work(conn: Any) -> Task:
            params = {
                **self._fenced(update),
                "status": status.value,
                "run_after": run_after,
                "error": error,
                "traceback": traceback,
                "count_attempt": self._flag(count_attempt),
                "now": now,
            }
            row = conn.execute(self.queries["finish_attempt"], params).fetchone()
            if row is None:
                raise self._lost(conn, update, f"move to {status.value}")
            return row_to_task(row)

        return self.db.write(work)

    def heartbeat_worker(self, worker_id: str, now: float) -> None:
        self.db.write(
            lambda c: c.execute(self.queries["heartbeat_worker"], {"now": now, "worker_id": worker_id})
        )

    def deregister_worker(self, worker_id: str) -> None:
        self.db.write(lambda c: c.execute(self.queries["delete_worker"], {"worker_id": worker_id}))

    def list_workers(self) -> list[WorkerInfo]:
        rows = self.db.read(lambda c: c.execute(self.queries["list_workers"]).fetchall())
        return [row_to_worker(r) for r in rows]

    def analyze(self) -> None:
        self.db.read(lambda c: c.execute(self.queries["analyze"]))
