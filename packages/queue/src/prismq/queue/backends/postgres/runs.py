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
from ..runstore import RUN_COLUMNS, SQLRunStore
from ..sqlfile import load_queries

__all__ = ["PostgresRunStore"]

Q = load_queries(__package__, "runs.sql", run_columns=", ".join(RUN_COLUMNS))


Connection = psycopg.Connection[Any]


class PostgresRunStore(SQLRunStore):
    """The run registry's storage in a PostgreSQL queue database.

    Same interface and semantics as
    :class:`~prismq.queue.backends.sqlite.runs.SQLiteRunStore`.

    Args:
        db: The connection manager of the queue database's backend (schema version 2 or
            later); the backend builds its store (:meth:`PostgresBackend.run_store`).
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

    def _lock_run(self, conn: Connection, run_id: str) -> None:
        conn.execute(Q["lock_run"], {"run_id": run_id})

    def _limit(self, limit: int | None) -> int | None:
        return limit

    def _executemany(self, conn: Connection, sql: str, values: Sequence[dict[str, Any]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(sql, values)

    def _delete_finished(self, conn: Connection, before: float) -> int:
        ids = conn.execute(Q["finished_task_ids"], {"before": before}).fetchone()[0]  # type: ignore[index]
        # Deleting a run's task deletes the run (ON DELETE CASCADE); one task per run.
        return int(self.backend.change_tasks("delete", list(ids), self.now()))
