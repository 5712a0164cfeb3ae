"""Run storage for :mod:`prismq.queue.integrations` on SQLite: SQL from ``runs.sql``.

A run is stored twice over, on purpose:

- as a **task** of type ``prismq.run:<module_id>`` in the ``tasks`` table, so
  :meth:`QueueClient.list <prismq.queue.client.QueueClient.list>`, ``stats`` and the CLI
  see every run: leased while it is queued or running (the lease belongs to the manager
  that runs it), then completed, dead (failed or interrupted) or cancelled;
- as a row of the ``runs`` table (migration 0002) holding what a run has beyond the task
  columns: its six-valued status, module name, parameters, item counts, exit code,
  owner and re-run flag. This row is the run's record; the task mirrors it.

A run's task is inserted already leased by its owner, with ``max_attempts`` equal to its
attempts, so a queue worker never claims it, and a worker that reclaims its expired lease
makes it dead instead of queued. Records cross this interface as plain dicts with UTC
epoch-second times; :mod:`prismq.queue.integrations.runs` turns them into ``Run`` objects.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ...errors import ValidationError
from ..sqlfile import load_queries
from .backend import SQLiteBackend

__all__ = ["RUN_COLUMNS", "RUN_TASK_PREFIX", "SQLiteRunStore"]

RUN_COLUMNS = (
    "run_id",
    "task_id",
    "module_id",
    "module_name",
    "status",
    "parameters",
    "rerunnable",
    "progress_percent",
    "progress_message",
    "items_processed",
    "items_total",
    "exit_code",
    "error_message",
    "owner",
    "attempts",
    "created_at",
    "started_at",
    "completed_at",
    "updated_at",
)

RUN_TASK_PREFIX = "prismq.run:"
"""Task type prefix of run tasks; the module id follows it."""

Q = load_queries(__package__, "runs.sql", run_columns=", ".join(RUN_COLUMNS))

ACTIVE = ("queued", "running")
# The task status that mirrors each run status.
_TASK_STATUS = {
    "queued": "leased",
    "running": "leased",
    "completed": "completed",
    "failed": "dead",
    "cancelled": "cancelled",
    "interrupted": "dead",
}


def _row_to_record(row: Sequence[Any]) -> dict[str, Any]:
    record = dict(zip(RUN_COLUMNS, row, strict=True))
    record["parameters"] = json.loads(record["parameters"])
    record["rerunnable"] = bool(record["rerunnable"])
    return record


def _run_params(record: dict[str, Any], now: float, fence: str | None) -> dict[str, Any]:
    return {
        "run_id": record["run_id"],
        "module_name": record["module_name"],
        "status": record["status"],
        "parameters": json.dumps(record["parameters"], separators=(",", ":")),
        "rerunnable": int(bool(record["rerunnable"])),
        "progress_percent": record["progress_percent"],
        "progress_message": record["progress_message"],
        "items_processed": record["items_processed"],
        "items_total": record["items_total"],
        "exit_code": record["exit_code"],
        "error_message": record["error_message"],
        "attempts": record["attempts"],
        "started_at": record["started_at"],
        "completed_at": record["completed_at"],
        "now": now,
        "fence": fence,
    }


def _task_mirror(record: dict[str, Any]) -> dict[str, Any]:
    """Task columns that reflect a run: status, result, error, progress."""
    status = record["status"]
    result = None
    if status == "completed":
        result = json.dumps({"run_id": record["run_id"], "exit_code": record["exit_code"]})
    error = record["error_message"] if status in ("failed", "interrupted") else None
    if status == "cancelled":
        error = record["error_message"] or "cancelled"
    return {
        "task_status": _TASK_STATUS[status],
        "result": result,
        "last_error": error,
        "progress": record["progress_percent"],
        "progress_message": record["progress_message"],
    }


class SQLiteRunStore:
    """The run registry's storage in a queue database file.

    Every method is one transaction, or joins the one opened by :meth:`batch` on the
    same thread (the manager groups many small writes into one commit that way).

    Args:
        backend: The SQLite backend of the queue database (schema version 2 or later).
        clock: Returns the current UTC epoch time (the queue database's clock).
    """

    durable = True

    def __init__(self, backend: SQLiteBackend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.db = backend.db
        self._clock = clock

    # -- helpers ---------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One write transaction; store calls made inside it on this thread join it."""
        with self.backend.transaction():
            yield

    def _insert(
        self,
        conn: sqlite3.Connection,
        record: dict[str, Any],
        owner: str | None,
        locker: str | None,
        lease_until: float | None,
        now: float,
    ) -> dict[str, Any]:
        status = record["status"]
        active = status in ACTIVE
        payload = {
            "run_id": record["run_id"],
            "module_id": record["module_id"],
            "module_name": record["module_name"],
            "parameters": record["parameters"],
        }
        task_params = {
            **_task_mirror(record),
            "task_type": RUN_TASK_PREFIX + record["module_id"],
            "payload": json.dumps(payload, separators=(",", ":")),
            "lease_until": lease_until if active else None,
            "locker": locker if active else None,
            "token": secrets.token_hex(8) if active else None,
            "created_at": record["created_at"],
            "started_at": record["started_at"],
            "finished_at": None if active else (record["completed_at"] or now),
            "now": now,
        }
        task_id = conn.execute(Q["insert_task"], task_params).fetchone()[0]
        run_params = {
            **_run_params(record, now, None),
            "task_id": task_id,
            "module_id": record["module_id"],
            "owner": owner if active else None,
            "created_at": record["created_at"],
        }
        try:
            conn.execute(Q["insert_run"], run_params)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) and "run_id" in str(exc):
                raise ValidationError(f"a run with id {record['run_id']!r} already exists") from None
            raise
        return {**record, "task_id": task_id, "owner": owner if active else None, "updated_at": now}

    def _lease(
        self, conn: sqlite3.Connection, task_id: int, owner: str, lease_until: float, now: float
    ) -> None:
        """Make ``owner`` the lease holder of a run's task, reviving it when it had ended."""
        params = {
            "task_id": task_id,
            "owner": owner,
            "token": secrets.token_hex(8),
            "lease_until": lease_until,
            "now": now,
        }
        if conn.execute(Q["relock_task"], params).rowcount:
            return
        conn.execute(Q["requeue_task"], params)
        conn.execute(Q["lease_task"], params)

    # -- registry --------------------------------------------------------------
    def now(self) -> float:
        """The queue database's clock (UTC epoch seconds)."""
        return self._clock()

    def insert(self, record: dict[str, Any], locker: str, lease_until: float) -> dict[str, Any]:
        """Add a run (and its task); an active run's task is leased by ``locker``.

        Raises:
            ValidationError: A run with this id exists.
        """
        now = self.now()
        return self.db.write(lambda c: self._insert(c, record, None, locker, lease_until, now))

    def update(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Overwrite a run's fields (not its owner); a finished run releases its task."""
        now = self.now()

        def work(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(Q["save_run"], _run_params(record, now, None)).fetchone()
            if row is None:
                return None
            params = {**_task_mirror(record), "task_id": row[0], "fence": None, "now": now}
            if record["status"] in ACTIVE:
                conn.execute(Q["touch_task"], {**params, "started_at": record["started_at"]})
            else:
                conn.execute(Q["finish_task"], params)
            found = conn.execute(Q["get_run"], (record["run_id"],)).fetchone()
            return _row_to_record(found)

        return self.db.write(work)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One run's record, or ``None``."""
        row = self.db.read(lambda c: c.execute(Q["get_run"], (run_id,)).fetchone())
        return None if row is None else _row_to_record(row)

    def query(
        self,
        statuses: Sequence[str] | None = None,
        module_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs matching the filters, newest first."""
        params = {
            "statuses": None if statuses is None else json.dumps(list(statuses)),
            "module_id": module_id,
            "limit": -1 if limit is None else limit,
        }
        rows = self.db.read(lambda c: c.execute(Q["list_runs"], params).fetchall())
        return [_row_to_record(r) for r in rows]

    def delete_finished_before(self, before: float) -> int:
        """Delete finished runs (and their tasks) that ended before ``before``."""

        def work(conn: sqlite3.Connection) -> int:
            ids = conn.execute(Q["finished_task_ids"], {"before": before}).fetchone()[0]
            count = conn.execute(Q["delete_runs_of_tasks"], {"ids": ids}).rowcount
            conn.execute(Q["delete_tasks"], {"ids": ids})
            return count

        return self.db.write(work)

    # -- owning manager --------------------------------------------------------
    def claim(self, record: dict[str, Any], owner: str, lease_until: float) -> dict[str, Any] | None:
        """Record a run as owned by ``owner``: insert it, or take over a queued one.

        Returns:
            The stored record, or ``None`` when the run exists and is not a queued run
            free to take (finished, or held by a live manager).
        """
        now = self.now()

        def work(conn: sqlite3.Connection) -> dict[str, Any] | None:
            params = {"run_id": record["run_id"], "owner": owner, "now": now}
            row = conn.execute(Q["claim_run"], params).fetchone()
            if row is None:
                if conn.execute(Q["get_run"], (record["run_id"],)).fetchone() is not None:
                    return None
                return self._insert(conn, record, owner, owner, lease_until, now)
            stored = _row_to_record(row)
            self._lease(conn, stored["task_id"], owner, lease_until, now)
            return stored

        return self.db.write(work)

    def save(self, records: Sequence[dict[str, Any]], owner: str) -> list[bool]:
        """Write runs ``owner`` holds; False for a run it no longer holds."""
        now = self.now()

        def work(conn: sqlite3.Connection) -> list[bool]:
            done = []
            for record in records:
                row = conn.execute(Q["save_run"], _run_params(record, now, owner)).fetchone()
                if row is None:
                    done.append(False)
                    continue
                params = {**_task_mirror(record), "task_id": row[0], "fence": owner, "now": now}
                if record["status"] in ACTIVE:
                    conn.execute(Q["touch_task"], {**params, "started_at": record["started_at"]})
                else:
                    conn.execute(Q["finish_task"], params)
                done.append(True)
            return done

        return self.db.write(work)

    def save_active(self, records: Sequence[dict[str, Any]], owner: str) -> None:
        """Write the progress and start of active runs ``owner`` holds, in bulk.

        Cheaper than :meth:`save` (two statements executed over all records); runs the
        owner no longer holds are skipped silently.
        """
        now = self.now()
        runs = []
        tasks = []
        for record in records:
            runs.append(
                {
                    "run_id": record["run_id"],
                    "status": record["status"],
                    "progress_percent": record["progress_percent"],
                    "progress_message": record["progress_message"],
                    "items_processed": record["items_processed"],
                    "items_total": record["items_total"],
                    "attempts": record["attempts"],
                    "started_at": record["started_at"],
                    "fence": owner,
                    "now": now,
                }
            )
            tasks.append(
                {
                    "task_id": record["task_id"],
                    "progress": record["progress_percent"],
                    "progress_message": record["progress_message"],
                    "started_at": record["started_at"],
                    "fence": owner,
                    "now": now,
                }
            )

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(Q["save_active_run"], runs)
            conn.executemany(Q["touch_task"], tasks)

        if records:
            self.db.write(work)

    def renew(self, owner: str, lease_until: float) -> dict[str, bool]:
        """Extend the leases of ``owner``'s active runs.

        Returns:
            Per run still held, whether its cancellation was requested (by
            :meth:`request_cancel` or ``QueueClient.cancel`` on its task).
        """
        now = self.now()

        def work(conn: sqlite3.Connection) -> dict[str, bool]:
            conn.execute(Q["renew_leases"], {"owner": owner, "lease_until": lease_until, "now": now})
            rows = conn.execute(Q["held_runs"], {"owner": owner}).fetchall()
            return {run_id: bool(flag) for run_id, flag in rows}

        return self.db.write(work)

    def interrupt_orphans(self) -> list[str]:
        """Mark interrupted every active run whose owner's lease ran out; return their ids."""
        now = self.now()

        def work(conn: sqlite3.Connection) -> list[str]:
            found = conn.execute(Q["orphaned_runs"], {"now": now}).fetchall()
            out = []
            for run_id, task_id, owner, lease_until in found:
                holder = f"manager {owner!r}" if owner else "no manager"
                reason = (
                    f"interrupted: {holder} stopped renewing the run's lease"
                    + ("" if lease_until is None else f" (it expired at epoch {lease_until:.3f})")
                    + "; its process ended before the run finished"
                )
                params = {"run_id": run_id, "task_id": task_id, "reason": reason, "now": now}
                if conn.execute(Q["interrupt_run"], params).rowcount:
                    conn.execute(Q["expire_task"], params)
                    out.append(run_id)
            return out

        return self.db.write(work)

    def take_rerunnable(
        self, module_ids: Sequence[str], owner: str, lease_until: float
    ) -> list[dict[str, Any]]:
        """Queue again, owned by ``owner``, every interrupted re-runnable run of these modules."""
        now = self.now()

        def work(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            params = {"modules": json.dumps(list(module_ids)), "owner": owner, "now": now}
            records = [_row_to_record(r) for r in conn.execute(Q["take_rerunnable"], params).fetchall()]
            for record in records:
                self._lease(conn, record["task_id"], owner, lease_until, now)
            return records

        return self.db.write(work)

    def request_cancel(self, run_id: str) -> bool:
        """Flag an active run for cancellation; its owner stops it at its next renewal."""
        now = self.now()
        return bool(
            self.db.write(lambda c: c.execute(Q["request_cancel"], {"run_id": run_id, "now": now}).rowcount)
        )
