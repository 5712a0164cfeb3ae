"""Run storage for :mod:`prismq.queue.integrations` on SQLite: SQL from ``runs.sql``.

The design (a task plus a ``runs`` row per run) is in :mod:`..runstore`.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ...errors import ValidationError
from ..runstore import RUN_COLUMNS, RUN_TASK_PREFIX, SQLRunStore
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

    def _limit(self, limit: int | None) -> int:
        return -1 if limit is None else limit

    def _delete_finished(self, conn: sqlite3.Connection, before: float) -> int:
        ids = conn.execute(Q["finished_task_ids"], {"before": before}).fetchone()[0]
        count = conn.execute(Q["delete_runs_of_tasks"], {"ids": ids}).rowcount
        self.backend.change_tasks("delete", json.loads(ids), self.now())
        return int(count)
