"""What the run stores of the SQL backends share (see :mod:`prismq.queue.integrations`).

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

Each backend's store subclasses :class:`SQLRunStore` with its ``runs.sql`` queries and
says how it binds a list and a flag and how it reports a duplicate run id.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from .base import Connections

__all__ = [
    "ACTIVE",
    "RUN_COLUMNS",
    "RUN_TASK_PREFIX",
    "SQLRunStore",
    "row_to_record",
    "run_params",
    "task_mirror",
]

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


def row_to_record(row: Sequence[Any]) -> dict[str, Any]:
    """A ``runs`` row as a record dict (parameters decoded, flag as bool)."""
    record = dict(zip(RUN_COLUMNS, row, strict=True))
    record["parameters"] = json.loads(record["parameters"])
    record["rerunnable"] = bool(record["rerunnable"])
    return record


def run_params(record: dict[str, Any], now: float, fence: str | None, rerunnable: Any) -> dict[str, Any]:
    """Bind a run record's columns (``rerunnable`` already in the database's boolean form)."""
    return {
        "run_id": record["run_id"],
        "module_name": record["module_name"],
        "status": record["status"],
        "parameters": json.dumps(record["parameters"], separators=(",", ":")),
        "rerunnable": rerunnable,
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


def task_mirror(record: dict[str, Any]) -> dict[str, Any]:
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


class SQLRunStore:
    """Run storage logic shared by the SQL backends; SQL comes from ``queries``."""

    queries: ClassVar[dict[str, str]]

    def _array(self, values: list[Any]) -> Any:
        """Bind a list parameter."""
        raise NotImplementedError

    def _flag(self, value: bool) -> Any:
        """Bind a boolean parameter."""
        raise NotImplementedError

    def _insert_run(self, conn: Any, params: dict[str, Any], run_id: str) -> None:
        """Insert the ``runs`` row; raise ValidationError when ``run_id`` already exists."""
        raise NotImplementedError

    def _lock_run(self, conn: Any, run_id: str) -> None:
        """Serialise inserts and claims of one run id until commit (where the write lock does not)."""

    def _limit(self, limit: int | None) -> Any:
        """Bind a ``LIMIT`` (``None``: no limit)."""
        raise NotImplementedError

    def _executemany(self, conn: Any, sql: str, values: Sequence[dict[str, Any]]) -> None:
        """Run ``sql`` once per parameter set."""
        conn.executemany(sql, values)

    def _delete_finished(self, conn: Any, before: float) -> int:
        """Delete finished runs that ended before ``before`` with their tasks; return how many."""
        raise NotImplementedError

    def _run_params(self, record: dict[str, Any], now: float, fence: str | None) -> dict[str, Any]:
        return run_params(record, now, fence, self._flag(bool(record["rerunnable"])))

    def __init__(self, db: Connections, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One write transaction; store calls made inside it on this thread join it."""
        with self.db.transaction():
            yield

    def _insert(
        self,
        conn: Any,
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
            **task_mirror(record),
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
        task_id = conn.execute(self.queries["insert_task"], task_params).fetchone()[0]
        run_params = {
            **self._run_params(record, now, None),
            "task_id": task_id,
            "module_id": record["module_id"],
            "owner": owner if active else None,
            "created_at": record["created_at"],
        }
        self._insert_run(conn, run_params, record["run_id"])
        return {**record, "task_id": task_id, "owner": owner if active else None, "updated_at": now}

    def _lease(self, conn: Any, task_id: int, owner: str, lease_until: float, now: float) -> None:
        """Make ``owner`` the lease holder of a run's task, reviving it when it had ended."""
        params = {
            "task_id": task_id,
            "owner": owner,
            "token": secrets.token_hex(8),
            "lease_until": lease_until,
            "now": now,
        }
        if conn.execute(self.queries["relock_task"], params).rowcount:
            return
        conn.execute(self.queries["requeue_task"], params)
        conn.execute(self.queries["lease_task"], params)

    def now(self) -> float:
        """The queue database's clock (UTC epoch seconds)."""
        return self._clock()

    # -- registry --------------------------------------------------------------
    def insert(self, record: dict[str, Any], locker: str, lease_until: float) -> dict[str, Any]:
        """Add a run (and its task); an active run's task is leased by ``locker``.

        Raises:
            ValidationError: A run with this id exists.
        """
        now = self.now()

        def work(conn: Any) -> dict[str, Any]:
            self._lock_run(conn, record["run_id"])
            return self._insert(conn, record, None, locker, lease_until, now)

        return self.db.write(work)

    def query(
        self,
        statuses: Sequence[str] | None = None,
        module_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs matching the filters, newest first."""
        params = {
            "statuses": None if statuses is None else self._array(list(statuses)),
            "module_id": module_id,
            "limit": self._limit(limit),
        }
        rows = self.db.read(lambda c: c.execute(self.queries["list_runs"], params).fetchall())
        return [row_to_record(r) for r in rows]

    def delete_finished_before(self, before: float) -> int:
        """Delete finished runs (and their tasks) that ended before ``before``."""
        return int(self.db.write(lambda c: self._delete_finished(c, before)))

    # -- owning manager --------------------------------------------------------
    def claim(self, record: dict[str, Any], owner: str, lease_until: float) -> dict[str, Any] | None:
        """Record a run as owned by ``owner``: insert it, or take over a queued one.

        Returns:
            The stored record, or ``None`` when the run exists and is not a queued run
            free to take (finished, or held by a live manager).
        """
        now = self.now()

        def work(conn: Any) -> dict[str, Any] | None:
            params = {"run_id": record["run_id"], "owner": owner, "now": now}
            self._lock_run(conn, record["run_id"])
            row = conn.execute(self.queries["claim_run"], params).fetchone()
            if row is None:
                if conn.execute(self.queries["get_run"], {"run_id": record["run_id"]}).fetchone() is not None:
                    return None
                return self._insert(conn, record, owner, owner, lease_until, now)
            stored = row_to_record(row)
            self._lease(conn, stored["task_id"], owner, lease_until, now)
            return stored

        return self.db.write(work)

    def save_active(self, records: Sequence[dict[str, Any]], owner: str) -> None:
        """Write the progress and start of active runs ``owner`` holds, in bulk.

        Cheaper than :meth:`save` (two statements executed over all records); runs the
        owner no longer holds are skipped silently.
        """
        if not records:
            return
        now = self.now()
        runs = [
            {
                "run_id": r["run_id"],
                "status": r["status"],
                "progress_percent": r["progress_percent"],
                "progress_message": r["progress_message"],
                "items_processed": r["items_processed"],
                "items_total": r["items_total"],
                "attempts": r["attempts"],
                "started_at": r["started_at"],
                "fence": owner,
                "now": now,
            }
            for r in records
        ]
        tasks = [
            {
                "task_id": r["task_id"],
                "progress": r["progress_percent"],
                "progress_message": r["progress_message"],
                "started_at": r["started_at"],
                "fence": owner,
                "now": now,
            }
            for r in records
        ]

        def work(conn: Any) -> None:
            self._executemany(conn, self.queries["save_active_run"], runs)
            self._executemany(conn, self.queries["touch_task"], tasks)

        self.db.write(work)

    def update(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Overwrite a run's fields (not its owner); a finished run releases its task."""
        now = self.now()

        def work(conn: Any) -> dict[str, Any] | None:
            row = conn.execute(self.queries["save_run"], self._run_params(record, now, None)).fetchone()
            if row is None:
                return None
            params = {**task_mirror(record), "task_id": row[0], "fence": None, "now": now}
            if record["status"] in ACTIVE:
                conn.execute(self.queries["touch_task"], {**params, "started_at": record["started_at"]})
            else:
                conn.execute(self.queries["finish_task"], params)
            found = conn.execute(self.queries["get_run"], {"run_id": record["run_id"]}).fetchone()
            return row_to_record(found)

        return self.db.write(work)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One run's record, or ``None``."""
        row = self.db.read(lambda c: c.execute(self.queries["get_run"], {"run_id": run_id}).fetchone())
        return None if row is None else row_to_record(row)

    def save(self, records: Sequence[dict[str, Any]], owner: str) -> list[bool]:
        """Write runs ``owner`` holds; False for a run it no longer holds."""
        now = self.now()

        def work(conn: Any) -> list[bool]:
            done = []
            for record in records:
                row = conn.execute(self.queries["save_run"], self._run_params(record, now, owner)).fetchone()
                if row is None:
                    done.append(False)
                    continue
                params = {**task_mirror(record), "task_id": row[0], "fence": owner, "now": now}
                if record["status"] in ACTIVE:
                    conn.execute(self.queries["touch_task"], {**params, "started_at": record["started_at"]})
                else:
                    conn.execute(self.queries["finish_task"], params)
                done.append(True)
            return done

        return self.db.write(work)

    def renew(self, owner: str, lease_until: float) -> dict[str, bool]:
        """Extend the leases of ``owner``'s active runs.

        Returns:
            Per run still held, whether its cancellation was requested (by
            :meth:`request_cancel` or ``QueueClient.cancel`` on its task).
        """
        now = self.now()

        def work(conn: Any) -> dict[str, bool]:
            conn.execute(
                self.queries["renew_leases"], {"owner": owner, "lease_until": lease_until, "now": now}
            )
            rows = conn.execute(self.queries["held_runs"], {"owner": owner}).fetchall()
            return {run_id: bool(flag) for run_id, flag in rows}

        return self.db.write(work)

    def interrupt_orphans(self) -> list[str]:
        """Mark interrupted every active run whose owner's lease ran out; return their ids."""
        now = self.now()

        def work(conn: Any) -> list[str]:
            found = conn.execute(self.queries["orphaned_runs"], {"now": now}).fetchall()
            out = []
            for run_id, task_id, owner, lease_until in found:
                holder = f"manager {owner!r}" if owner else "no manager"
                reason = (
                    f"interrupted: {holder} stopped renewing the run's lease"
                    + ("" if lease_until is None else f" (it expired at epoch {lease_until:.3f})")
                    + "; its process ended before the run finished"
                )
                params = {"run_id": run_id, "task_id": task_id, "reason": reason, "now": now}
                if conn.execute(self.queries["interrupt_run"], params).rowcount:
                    conn.execute(self.queries["expire_task"], params)
                    out.append(run_id)
            return out

        return self.db.write(work)

    def take_rerunnable(
        self, module_ids: Sequence[str], owner: str, lease_until: float
    ) -> list[dict[str, Any]]:
        """Queue again, owned by ``owner``, every interrupted re-runnable run of these modules."""
        now = self.now()

        def work(conn: Any) -> list[dict[str, Any]]:
            params = {"modules": self._array(list(module_ids)), "owner": owner, "now": now}
            records = [
                row_to_record(r) for r in conn.execute(self.queries["take_rerunnable"], params).fetchall()
            ]
            for record in records:
                self._lease(conn, record["task_id"], owner, lease_until, now)
            return records

        return self.db.write(work)

    def request_cancel(self, run_id: str) -> bool:
        """Flag an active run for cancellation; its owner stops it at its next renewal."""
        now = self.now()
        return bool(
            self.db.write(
                lambda c: c.execute(self.queries["request_cancel"], {"run_id": run_id, "now": now}).rowcount
            )
        )
