"""Run storage for :mod:`prismq.queue.integrations` on SQLite: SQL from ``runs.sql``.

The design (a task plus a ``runs`` row per run) is in :mod:`..runstore`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ...errors import ValidationError
from ..runstore import RUN_COLUMNS, RUN_TASK_PREFIX, SQLRunStore, row_to_record
from ..sqlfile import load_queries

__all__ = ["RUN_COLUMNS", "RUN_TASK_PREFIX", "SQLiteRunStore"]


Q = load_queries(__package__, "runs.sql", run_columns=", ".join(RUN_COLUMNS))


class SQLiteRunStore(SQLRunStore):
    """The run registry's storage in a queue database file.

    Every method is one transaction, or joins the one opened by :meth:`batch` on the
    same thread (the manager groups many small writes into one commit that way).

    Args:
        db: The connection manager of the queue database's backend (schema version 2 or
            later); the backend builds its store (:meth:`SQLiteBackend.run_store`).
        clock: Returns the current UTC epoch time (the queue database's clock).
    """

    durable = True
    queries = Q

    def _array(self, values: list[Any]) -> str:
        return json.dumps(values)

    def _flag(self, value: bool) -> int:
        return int(value)

    def _insert_run(self, conn: sqlite3.Connection, params: dict[str, Any], run_id: str) -> None:
        try:
            conn.execute(Q["insert_run"], params)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) and "run_id" in str(exc):
                raise ValidationError(f"a run with id {run_id!r} already exists") from None
            raise

    # -- registry --------------------------------------------------------------

    def insert(self, record: dict[str, Any], locker: str, lease_until: float) -> dict[str, Any]:
        """Add a run (and its task); an active run's task is leased by ``locker``.

        Raises:
            ValidationError: A run with this id exists.
        """
        now = self.now()
        return self.db.write(lambda c: self._insert(c, record, None, locker, lease_until, now))

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
        return [row_to_record(r) for r in rows]

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
                if conn.execute(Q["get_run"], {"run_id": record["run_id"]}).fetchone() is not None:
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
