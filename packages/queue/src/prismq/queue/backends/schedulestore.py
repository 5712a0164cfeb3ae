"""Storage of periodic schedules on the SQL backends (see :mod:`prismq.queue.schedules`).

A schedule is one row of the ``schedules`` table (SQLite migration 0006, PostgreSQL
migration 0005). Its ``next_run`` is the next tick not yet enqueued. Firing a schedule is
one transaction that

1. reads the due schedules (on PostgreSQL locking them, ``FOR UPDATE SKIP LOCKED``),
2. advances each one's ``next_run`` only while it still holds the value read, and
3. inserts each tick's task under the idempotency key ``prismq.schedule:<name>@<tick>``,
   unique in the ``tasks`` table, so a tick already enqueued is not enqueued again.

Any number of worker processes, on any number of machines, may fire schedules at once:
the unique key and the compare-and-set on ``next_run`` (the approach of Solid Queue's
unique index) make each tick's task exist once, with no leader to elect. Which ticks are
due, and which a misfire policy keeps, is decided by a ``plan`` function the caller
passes in, so this module knows no cron. Records cross this interface as plain dicts
with UTC epoch-second times.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, cast

from ..errors import ConfigError
from .sqlfile import load_queries

__all__ = ["SCHEDULE_COLUMNS", "SCHEDULE_KEY_PREFIX", "ScheduleStore", "tick_key"]

SCHEDULE_COLUMNS = (
    "name",
    "cron",
    "timezone",
    "task_type",
    "payload",
    "priority",
    "max_attempts",
    "misfire",
    "max_backfill",
    "grace",
    "source",
    "paused",
    "next_run",
    "last_run",
    "last_task_id",
    "created_at",
    "updated_at",
)

SCHEDULE_KEY_PREFIX = "prismq.schedule:"
"""Idempotency key prefix of the tasks schedules enqueue; ``<name>@<tick>`` follows it."""

_PACKAGES = {"sqlite": "prismq.queue.backends.sqlite", "postgresql": "prismq.queue.backends.postgres"}
_QUERIES: dict[str, dict[str, str]] = {}

Plan = Callable[[dict[str, Any], float], "tuple[list[float], float] | None"]
"""Given a due schedule's record and ``now``: the ticks to enqueue and the new ``next_run``,
or ``None`` to leave that schedule as it is (its definition cannot be read here)."""


def tick_key(name: str, tick: float) -> str:
    """The idempotency key of the task of schedule ``name``'s tick at epoch ``tick``."""
    stamp = datetime.fromtimestamp(tick, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{SCHEDULE_KEY_PREFIX}{name}@{stamp}"


def _queries(backend_name: str) -> dict[str, str]:
    if backend_name not in _QUERIES:
        _QUERIES[backend_name] = load_queries(
            _PACKAGES[backend_name], "schedules.sql", schedule_columns=", ".join(SCHEDULE_COLUMNS)
        )
    return _QUERIES[backend_name]


def row_to_record(row: Sequence[Any]) -> dict[str, Any]:
    """A ``schedules`` row as a record dict (the pause flag as a bool)."""
    record = dict(zip(SCHEDULE_COLUMNS, row, strict=True))
    record["paused"] = bool(record["paused"])
    return record


class ScheduleStore:
    """The ``schedules`` table of one queue database, on SQLite or PostgreSQL.

    Every method is one transaction (retried whole after a busy conflict), or joins the
    one open on this thread (``QueueDatabase.transaction()``).

    Args:
        backend: The queue database's backend (``db.backend``).

    Raises:
        ConfigError: The backend is not one of the SQL backends.
    """

    def __init__(self, backend: Any) -> None:
        name = getattr(backend, "name", None)
        if name not in _PACKAGES or not hasattr(backend, "db"):
            raise ConfigError(f"periodic schedules need the SQLite or PostgreSQL backend, not {name!r}")
        self.backend = backend
        self.db = backend.db
        self.q = _queries(name)

    def _params(self, definition: dict[str, Any], next_run: float, now: float) -> dict[str, Any]:
        return {
            **{k: definition[k] for k in SCHEDULE_COLUMNS[:11]},
            "paused": self.backend._flag(False),
            "next_run": next_run,
            "now": now,
        }

    def insert(self, definition: dict[str, Any], next_run: float, now: float) -> dict[str, Any] | None:
        """Add a schedule; ``None`` when one of that name exists (nothing changed)."""
        params = self._params(definition, next_run, now)
        row = self.db.write(lambda c: c.execute(self.q["insert_schedule"], params).fetchone())
        return None if row is None else row_to_record(row)

    def upsert(self, definition: dict[str, Any], next_run: float, now: float) -> dict[str, Any]:
        """Add or update a code or config schedule.

        Its pause state stays, and so does its ``next_run`` while the cron expression and
        time zone are unchanged.
        """
        params = self._params(definition, next_run, now)
        return row_to_record(self.db.write(lambda c: c.execute(self.q["upsert_schedule"], params).fetchone()))

    def replace(self, definition: dict[str, Any], next_run: float, now: float) -> dict[str, Any] | None:
        """Overwrite an existing schedule's definition; ``None`` when there is none."""
        params = self._params(definition, next_run, now)
        row = self.db.write(lambda c: c.execute(self.q["replace_schedule"], params).fetchone())
        return None if row is None else row_to_record(row)

    def put(self, record: dict[str, Any]) -> None:
        """Write a schedule record as it is, state included (replacing one of that name)."""
        params = {**record, "paused": self.backend._flag(bool(record["paused"]))}
        self.db.write(lambda c: c.execute(self.q["put_schedule"], params))

    def get(self, name: str) -> dict[str, Any] | None:
        """One schedule's record, or ``None``."""
        row = self.db.read(lambda c: c.execute(self.q["get_schedule"], {"name": name}).fetchone())
        return None if row is None else row_to_record(row)

    def list(self) -> list[dict[str, Any]]:
        """Every schedule, by name."""
        rows = self.db.read(lambda c: c.execute(self.q["list_schedules"]).fetchall())
        return [row_to_record(r) for r in rows]

    def set_paused(
        self, name: str, paused: bool, next_run: Callable[[dict[str, Any]], float | None], now: float
    ) -> dict[str, Any] | None:
        """Pause or resume a schedule.

        ``next_run(record)`` gives its new next tick (``None`` keeps it). Returns the
        updated record, ``None`` when there is no such schedule.
        """

        def work(conn: Any) -> dict[str, Any] | None:
            found = conn.execute(self.q["get_schedule"], {"name": name}).fetchone()
            if found is None:
                return None
            params = {
                "name": name,
                "paused": self.backend._flag(paused),
                "next_run": next_run(row_to_record(found)),
                "now": now,
            }
            return row_to_record(conn.execute(self.q["set_paused"], params).fetchone())

        return cast("dict[str, Any] | None", self.db.write(work))

    def delete(self, name: str) -> bool:
        """Remove a schedule (its tasks stay); False when there was none."""
        return bool(self.db.write(lambda c: c.execute(self.q["delete_schedule"], {"name": name}).rowcount))

    def next_due(self) -> float | None:
        """The earliest ``next_run`` of the running schedules, or ``None``."""
        row = self.db.read(lambda c: c.execute(self.q["next_due"]).fetchone())
        return None if row is None or row[0] is None else float(row[0])

    def _insert_task(
        self, conn: Any, record: dict[str, Any], run_after: float, key: str | None, retry: str, now: float
    ) -> int | None:
        params = {
            "task_type": record["task_type"],
            "payload": record["payload"],
            "priority": record["priority"],
            "run_after": run_after,
            "max_attempts": record["max_attempts"],
            "retry_policy": retry,
            "idempotency_key": key,
            "now": now,
        }
        row = conn.execute(self.q["insert_tick_task"], params).fetchone()
        return None if row is None else int(row[0])

    def fire_due(
        self, now: float, plan: Plan, retry_policy_json: str, limit: int = 100
    ) -> builtins.list[tuple[str, float, int]]:
        """Enqueue the due ticks of up to ``limit`` schedules, in one transaction.

        Args:
            now: The database clock's time.
            plan: Decides, per due schedule, the ticks to enqueue and the new ``next_run``.
            retry_policy_json: The retry policy stored with each task (JSON text).
            limit: Most schedules handled in this call.

        Returns:
            ``(schedule name, tick, task id)`` per task inserted.
        """

        def work(conn: Any) -> builtins.list[tuple[str, float, int]]:
            fired: builtins.list[tuple[str, float, int]] = []
            for row in conn.execute(self.q["due_schedules"], {"now": now, "limit": limit}).fetchall():
                record = row_to_record(row)
                planned = plan(record, now)
                if planned is None:
                    continue
                ticks, next_run = planned
                advance = {
                    "name": record["name"],
                    "next_run": next_run,
                    "old_next_run": record["next_run"],
                    "last_run": ticks[-1] if ticks else None,
                    "now": now,
                }
                if not conn.execute(self.q["advance_schedule"], advance).rowcount:
                    continue  # another scheduler advanced it first
                last_id = None
                for tick in ticks:
                    key = tick_key(record["name"], tick)
                    task_id = self._insert_task(conn, record, tick, key, retry_policy_json, now)
                    if task_id is not None:
                        fired.append((record["name"], tick, task_id))
                        last_id = task_id
                if last_id is not None:
                    conn.execute(self.q["record_task"], {"name": record["name"], "task_id": last_id})
            return fired

        return cast("list[tuple[str, float, int]]", self.db.write(work))

    def run_now(self, name: str, retry_policy_json: str, now: float) -> int | None:
        """Enqueue one task of a schedule now, outside its ticks; ``next_run`` stays.

        Returns the task's id, ``None`` when there is no such schedule.
        """

        def work(conn: Any) -> int | None:
            found = conn.execute(self.q["get_schedule"], {"name": name}).fetchone()
            if found is None:
                return None
            task_id = self._insert_task(conn, row_to_record(found), now, None, retry_policy_json, now)
            conn.execute(self.q["record_task"], {"name": name, "task_id": task_id})
            return task_id

        return cast("int | None", self.db.write(work))
