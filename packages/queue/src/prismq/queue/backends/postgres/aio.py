"""The PostgreSQL backend's asynchronous side, for :class:`~prismq.queue.aio.AsyncQueueClient`.

It runs the backend's own named statements (``queries.sql``, loaded once by
:mod:`.backend`) on psycopg's ``AsyncConnectionPool``, so an event loop waits on the
network, never on a thread. Connections are set up as the synchronous pool's are (the
same ``search_path``, ``lock_timeout`` and autocommit), conflicts are retried the same
way, and errors map to the same :class:`~prismq.queue.errors.QueueError` subclasses.

The pool opens on the first call, inside the running loop, and closes with
:meth:`AsyncPostgresStore.aclose`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ...errors import QueueBusyError, StorageError, TaskNotFoundError, TaskStateError
from ...models import Task, TaskStatus, WorkerInfo
from ..base import NewTask, QueueStats, TaskQuery
from ..common import TASK_COLUMNS, row_to_task, row_to_worker
from ..serverclock import read_clock
from ..sqlfile import build_claims, load_queries
from .connection import is_busy

if TYPE_CHECKING:
    from .backend import PostgresBackend

__all__ = ["AsyncPostgresStore"]

Q = build_claims(load_queries(__package__, task_columns=TASK_COLUMNS))
"""The backend's named statements (``queries.sql``), as :mod:`.backend` loads them."""

T = TypeVar("T")
AsyncConn = psycopg.AsyncConnection[Any]


class AsyncPostgresStore:
    """Task storage calls as coroutines on an asynchronous connection pool.

    Made by :meth:`PostgresBackend.async_store`.

    Args:
        backend: The PostgreSQL backend whose connection settings and retry bound are reused.
        clock: The queue database's clock.
        max_size: Most connections the asynchronous pool opens.
    """

    def __init__(self, backend: PostgresBackend, clock: Callable[[], float], max_size: int = 10) -> None:
        self._clock = clock
        self._manager = backend.db
        self._location = backend.location
        self._max_size = max_size
        self._pool: AsyncConnectionPool[AsyncConn] | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._changing = itertools.count(-1, -1)

    # -- connections -----------------------------------------------------------
    async def _get_pool(self) -> AsyncConnectionPool[AsyncConn]:
        if self._closed or self._manager.closed:
            raise StorageError(f"the queue database {self._location} was closed; open a new one")
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                pool: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
                    self._manager.conninfo,
                    min_size=1,
                    max_size=self._max_size,
                    kwargs={"autocommit": True},
                    open=False,
                    timeout=30.0,
                    name=f"prismq-queue async {self._location}",
                )
                await pool.open(wait=False)
                self._pool = pool
        return self._pool

    def _error(self, exc: BaseException) -> Exception:
        return self._manager.translate(exc)

    async def read(self, work: Callable[[AsyncConn], Awaitable[T]], snapshot: bool = False) -> T:
        """Run read-only ``work`` on a pooled connection; with ``snapshot`` in one transaction."""
        pool = await self._get_pool()
        try:
            async with pool.connection() as conn:
                if not snapshot:
                    return await work(conn)
                await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
                await conn.set_read_only(True)
                try:
                    async with conn.transaction():
                        return await work(conn)
                finally:
                    if not conn.closed:
                        await conn.set_isolation_level(None)
                        await conn.set_read_only(None)
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._error(exc) from None

    async def write(self, work: Callable[[AsyncConn], Awaitable[T]]) -> T:
        """Run ``work`` in a transaction, retried whole after a conflict (as the sync side)."""
        pool = await self._get_pool()
        retries = self._manager.busy_retries
        for attempt in range(retries + 1):
            try:
                async with pool.connection() as conn, conn.transaction():
                    return await work(conn)
            except (psycopg.Error, PoolTimeout) as exc:
                if is_busy(exc) and attempt < retries:
                    delay = min(self._manager.busy_backoff * (2**attempt), 0.5)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                    continue
                if is_busy(exc):
                    raise QueueBusyError(
                        f"{self._location} kept reporting conflicting writers through "
                        f"{retries + 1} tries ({exc}); a long transaction elsewhere is holding "
                        "locks on the queue's rows"
                    ) from None
                raise self._error(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- clock -----------------------------------------------------------------
    async def now(self) -> float:
        return await read_clock(self._clock)

    # -- operations ------------------------------------------------------------
    async def insert_tasks(self, tasks: Sequence[NewTask], now: float) -> list[tuple[int, bool]]:
        rows = [t.insert_params(now) for t in tasks]

        async def plain(conn: AsyncConn) -> list[tuple[int, bool]]:
            out: list[tuple[int, bool]] = []
            async with conn.cursor() as cur:
                await cur.executemany(Q["insert_task"], rows, returning=True)
                while True:
                    out.append((_one(await cur.fetchone()), True))
                    if not cur.nextset():
                        break
            return out

        async def keyed(conn: AsyncConn) -> list[tuple[int, bool]]:
            out: list[tuple[int, bool]] = []
            for row in rows:
                if row["idempotency_key"] is None:
                    cur = await conn.execute(Q["insert_task"], row)
                    out.append((_one(await cur.fetchone()), True))
                    continue
                inserted = await (await conn.execute(Q["insert_task_idempotent"], row)).fetchone()
                if inserted is not None:
                    out.append((int(inserted[0]), True))
                else:
                    cur = await conn.execute(Q["task_id_by_idempotency_key"], row)
                    out.append((_one(await cur.fetchone()), False))
            return out

        if not rows:
            return []
        if all(row["idempotency_key"] is None for row in rows):
            return await self.write(plain)
        return await self.write(keyed)

    async def get_task(self, task_id: int) -> Task | None:
        async def work(conn: AsyncConn) -> Any:
            return await (await conn.execute(Q["get_task"], {"id": task_id})).fetchone()

        row = await self.read(work)
        return None if row is None else row_to_task(row)

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        params = {
            "statuses": None if query.statuses is None else [s.value for s in query.statuses],
            "task_types": None if query.task_types is None else list(query.task_types),
            "created_after": query.created_after,
            "created_before": query.created_before,
            "limit": query.limit,
            "offset": query.offset,
        }
        name = "list_tasks_newest_first" if query.newest_first else "list_tasks_oldest_first"

        async def work(conn: AsyncConn) -> list[Any]:
            return await (await conn.execute(Q[name], params)).fetchall()

        return [row_to_task(r) for r in await self.read(work)]

    async def count_by_status(self) -> dict[str, int]:
        async def work(conn: AsyncConn) -> list[Any]:
            return await (await conn.execute(Q["count_by_status"])).fetchall()

        counts = {s.value: 0 for s in TaskStatus}
        counts.update({str(status): int(n) for status, n in await self.read(work)})
        return counts

    async def count_by_type(self) -> dict[str, dict[str, int]]:
        async def work(conn: AsyncConn) -> list[Any]:
            return await (await conn.execute(Q["count_by_type"])).fetchall()

        out: dict[str, dict[str, int]] = {}
        for task_type, status, n in await self.read(work):
            out.setdefault(task_type, {})[status] = int(n)
        return out

    async def stats(self, now: float) -> QueueStats:
        async def fetch(conn: AsyncConn, name: str, params: dict[str, Any] | None = None) -> list[Any]:
            return await (await conn.execute(Q[name], params)).fetchall()

        async def work(conn: AsyncConn) -> QueueStats:
            by_status = {s.value: 0 for s in TaskStatus}
            by_status.update({str(k): int(v) for k, v in await fetch(conn, "count_by_status")})
            by_type: dict[str, dict[str, int]] = {}
            for task_type, status, n in await fetch(conn, "count_by_type"):
                by_type.setdefault(task_type, {})[status] = int(n)
            ready, oldest = (await fetch(conn, "count_ready", {"now": now}))[0]
            delayed = (await fetch(conn, "count_delayed", {"now": now}))[0][0]
            expired = (await fetch(conn, "count_expired_leases", {"now": now}))[0][0]
            last1 = (await fetch(conn, "count_finished_since", {"since": now - 60}))[0][0]
            last5 = (await fetch(conn, "count_finished_since", {"since": now - 300}))[0][0]
            workers = [row_to_worker(r) for r in await fetch(conn, "list_workers")]
            return QueueStats(
                by_status=by_status,
                by_type=by_type,
                ready=int(ready),
                delayed=int(delayed),
                oldest_ready_age=None if oldest is None else max(now - oldest, 0.0),
                expired_leases=int(expired),
                finished_last_minute=int(last1),
                finished_last_5_minutes=int(last5),
                workers=workers,
            )

        return await self.read(work, snapshot=True)

    async def list_workers(self) -> list[WorkerInfo]:
        async def work(conn: AsyncConn) -> list[Any]:
            return await (await conn.execute(Q["list_workers"])).fetchall()

        return [row_to_worker(r) for r in await self.read(work)]

    async def _require(self, conn: AsyncConn, task_id: int) -> Task:
        row = await (await conn.execute(Q["get_task"], {"id": task_id})).fetchone()
        if row is None:
            raise TaskNotFoundError(f"no task with id {task_id}")
        return row_to_task(row)

    async def cancel_task(self, task_id: int, now: float) -> Task:
        async def work(conn: AsyncConn) -> Task:
            params = {"id": task_id, "now": now}
            row = await (await conn.execute(Q["cancel_queued"], params)).fetchone()
            if row is None:
                row = await (await conn.execute(Q["request_cancel_leased"], params)).fetchone()
            if row is not None:
                return row_to_task(row)
            task = await self._require(conn, task_id)
            raise TaskStateError(
                f"task {task_id} is already {task.status.value}; only queued or running tasks "
                "can be cancelled"
            )

        return await self.write(work)

    async def retry_task(self, task_id: int, now: float, reset_attempts: bool) -> Task:
        async def work(conn: AsyncConn) -> Task:
            params = {"id": task_id, "now": now, "reset": bool(reset_attempts)}
            row = await (await conn.execute(Q["retry_finished"], params)).fetchone()
            if row is not None:
                return row_to_task(row)
            task = await self._require(conn, task_id)
            raise TaskStateError(
                f"task {task_id} is {task.status.value}; only dead or cancelled tasks can be retried"
            )

        return await self.write(work)

    async def prune(self, finished_before: float, statuses: Sequence[TaskStatus]) -> int:
        params = {"before": finished_before, "statuses": [s.value for s in statuses]}

        async def work(conn: AsyncConn) -> int:
            return (await conn.execute(Q["prune"], params)).rowcount

        return await self.write(work)

    async def data_version(self) -> int:
        """The change counter read by :meth:`PostgresBackend.data_version`, awaited."""

        async def work(conn: AsyncConn) -> Any:
            row = await (await conn.execute(Q["data_version"])).fetchone()
            return None if row is None else row[0]

        value = await self.read(work)
        return next(self._changing) if value is None else int(value)


def _one(row: Any) -> int:
    """The first column of a row a statement always returns."""
    if row is None:  # pragma: no cover - INSERT ... RETURNING always returns its row
        raise StorageError("PostgreSQL returned no row for a statement that always returns one")
    return int(row[0])
