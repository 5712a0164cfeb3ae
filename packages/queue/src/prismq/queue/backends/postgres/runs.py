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

from collections.abc import Sequence
from typing import Any

import psycopg

from ...errors import ValidationError
from ..runstore import RUN_COLUMNS, SQLRunStore, row_to_record
from ..sqlfile import load_queries

__all__ = ["PostgresRunStore"]

Q = load_queries(__package__, "runs.sql", run_columns=", ".join(RUN_COLUMNS))


Connection = psycopg.Connection[Any]


class PostgresRunStore(SQLRunStore):
    """The run registry's storage in a PostgreSQL queue database.

    Same interface and semantics as
    :class:`~prismq.queue.backends.sqlite.runs.SQLiteRunStore`.

    Args:
        backend: The PostgreSQL backend of the queue database (schema version 2 or later).
        clock: Returns the current UTC epoch time (the queue database's clock).
    """

    durable = True
    queries = Q

    def _array(self, values: list[Any]) -> list[Any]:
        return values

    def _flag(self, value: bool) -> bool:
        return bool(value)

    def _insert_run(self, conn: Connection, params: dict[str, Any], run_id: str) -> None:
        if conn.execute(Q["insert_run"], params).fetchone() is None:
            # Raising rolls the transaction back, the task inserted before it with it.
            raise ValidationError(f"a run with id {run_id!r} already exists")

    # -- registry --------------------------------------------------------------

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
        return [row_to_record(r) for r in rows]

    def delete_finished_before(self, before: float) -> int:
        """Delete finished runs (and their tasks) that ended before ``before``."""
        return int(
            self.db.write(lambda c: c.execute(Q["delete_finished_runs"], {"before": before}).fetchone()[0])
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
            stored = row_to_record(row)
            self._lease(conn, stored["task_id"], owner, lease_until, now)
            return stored

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
