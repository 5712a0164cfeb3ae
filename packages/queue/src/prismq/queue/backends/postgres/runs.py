"""Run storage for :mod:`prismq.queue.integrations` on PostgreSQL: SQL from ``runs.sql``.

The same design as :mod:`prismq.queue.backends.sqlite.runs` (read it first): each run is
a task of type ``prismq.run:<module_id>`` plus a row of the ``runs`` table (migration
0002), the row is the run's record and the task mirrors it. What differs is PostgreSQL's:

- Methods run through the backend's :class:`~.connection.ConnectionManager`, so a call
  is one transaction (retried whole after a deadlock or serialization failure), or joins
  the transaction :meth:`PostgresRunStore.batch` opened on the same thread.
- Writers are not serialised as on SQLite, so inserting or claiming a run id first takes
  a transaction-scoped advisory lock on that id: two managers starting the same run
  cannot both insert it.
- ``rerunnable`` is a ``boolean``, lists travel as ``text[]`` parameters.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg

from ...errors import ValidationError
from ..sqlfile import load_queries
from ..sqlite.runs import RUN_COLUMNS, RUN_TASK_PREFIX, _run_params, _task_mirror
from .backend import PostgresBackend

__all__ = ["PostgresRunStore"]

Q = load_queries(__package__, "runs.sql", run_columns=", ".join(RUN_COLUMNS))

ACTIVE = ("queued", "running")

Connection = psycopg.Connection[Any]


def _row_to_record(row: Sequence[Any]) -> dict[str, Any]:
    record = dict(zip(RUN_COLUMNS, row, strict=True))
    record["parameters"] = json.loads(record["parameters"])
    record["rerunnable"] = bool(record["rerunnable"])
    return record


def _params(record: dict[str, Any], now: float, fence: str | None) -> dict[str, Any]:
    return {**_run_params(record, now, fence), "rerunnable": bool(record["rerunnable"])}


class PostgresRunStore:
    """The run registry's storage in a PostgreSQL queue database.

    Same interface and semantics as
    :class:`~prismq.queue.backends.sqlite.runs.SQLiteRunStore`.

    Args:
        backend: The PostgreSQL backend of the queue database (schema version 2 or later).
        clock: Returns the current UTC epoch time (the queue database's clock).
    """

    durable = True

    def __init__(self, backend: PostgresBackend, clock: Callable[[], float] = time.time) -> None:
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
        conn: Connection,
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
        task_id = conn.execute(Q["insert_task"], task_params).fetchone()[0]  # type: ignore[index]
        run_params = {
            **_params(record, now, None),
            "task_id": task_id,
            "module_id": record["module_id"],
            "owner": owner if active else None,
            "created_at": record["created_at"],
        }
        if conn.execute(Q["insert_run"], run_params).fetchone() is None:
            # Raising rolls the transaction back, the task inserted above with it.
            raise ValidationError(f"a run with id {record['run_id']!r} already exists")
        return {**record, "task_id": task_id, "owner": owner if active else None, "updated_at": now}

    def _lease(self, conn: Connection, task_id: int, owner: str, lease_until: float, now: float) -> None:
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

        def work(conn: Connection) -> dict[str, Any]:
            conn.execute(Q["lock_run"], {"run_id": record["run_id"]})
            return self._insert(conn, record, None, locker, lease_until, now)

        return self.db.write(work)

    def update(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Overwrite a run's fields (not its owner); a finished run releases its task."""
        now = self.now()

        def work(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(Q["save_run"], _params(record, now, None)).fetchone()
            if row is None:
                return None
            params = {**_task_mirror(record), "task_id": row[0], "fence": None, "now": now}
            if record["status"] in ACTIVE:
                conn.execute(Q["touch_task"], {**params, "started_at": record["started_at"]})
            else:
                conn.execute(Q["finish_task"], params)
            found = conn.execute(Q["get_run"], {"run_id": record["run_id"]}).fetchone()
            return _row_to_record(found)  # type: ignore[arg-type]

        return self.db.write(work)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One run's record, or ``None``."""
        row = self.db.read(lambda c: c.execute(Q["get_run"], {"run_id": run_id}).fetchone())
        return None if row is None else _row_to_record(row)

    def query(
        self,
        statuses: Sequence[str] | None = None,
        module_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs matching the filters, newest first."""
        params = {
            "statuses": None if statuses is None else list(statuses),
            "module_id": module_id,
            "limit": limit,
        }
        rows = self.db.read(lambda c: c.execute(Q["list_runs"], params).fetchall())
        return [_row_to_record(r) for r in rows]

    def delete_finished_before(self, before: float) -> int:
        """Delete finished runs (and their tasks) that ended before ``before``."""
        return int(
            self.db.write(lambda c: c.execute(Q["delete_finished_runs"], {"before": before}).fetchone()[0])  # type: ignore[index]
        )

    # -- owning manager --------------------------------------------------------
    def claim(self, record: dict[str, Any], owner: str, lease_until: float) -> dict[str, Any] | None:
        """Record a run as owned by ``owner``: insert it, or take over a queued one.

        Returns:
            The stored record, or ``None`` when the run exists and is not a queued run
            free to take (finished, or held by a live manager).
        """
        now = self.now()

        def work(conn: Connection) -> dict[str, Any] | None:
            params = {"run_id": record["run_id"], "owner": owner, "now": now}
            conn.execute(Q["lock_run"], params)
            row = conn.execute(Q["claim_run"], params).fetchone()
            if row is None:
                if conn.execute(Q["get_run"], params).fetchone() is not None:
                    return None
                return self._insert(conn, record, owner, owner, lease_until, now)
            stored = _row_to_record(row)
            self._lease(conn, stored["task_id"], owner, lease_until, now)
            return stored

        return self.db.write(work)

    def save(self, records: Sequence[dict[str, Any]], owner: str) -> list[bool]:
        """Write runs ``owner`` holds; False for a run it no longer holds."""
        now = self.now()

        def work(conn: Connection) -> list[bool]:
            done = []
            for record in records:
                row = conn.execute(Q["save_run"], _params(record, now, owner)).fetchone()
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

        Runs the owner no longer holds are skipped silently.
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

        def work(conn: Connection) -> None:
            with conn.cursor() as cur:
                cur.executemany(Q["save_active_run"], runs)
                cur.executemany(Q["touch_task"], tasks)

        self.db.write(work)

    def renew(self, owner: str, lease_until: float) -> dict[str, bool]:
        """Extend the leases of ``owner``'s active runs.

        Returns:
            Per run still held, whether its cancellation was requested (by
            :meth:`request_cancel` or ``QueueClient.cancel`` on its task).
        """
        now = self.now()

        def work(conn: Connection) -> dict[str, bool]:
            conn.execute(Q["renew_leases"], {"owner": owner, "lease_until": lease_until, "now": now})
            rows = conn.execute(Q["held_runs"], {"owner": owner}).fetchall()
            return {run_id: bool(flag) for run_id, flag in rows}

        return self.db.write(work)

    def interrupt_orphans(self) -> list[str]:
        """Mark interrupted every active run whose owner's lease ran out; return their ids."""
        now = self.now()

        def work(conn: Connection) -> list[str]:
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

        def work(conn: Connection) -> list[dict[str, Any]]:
            params = {"modules": list(module_ids), "owner": owner, "now": now}
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
