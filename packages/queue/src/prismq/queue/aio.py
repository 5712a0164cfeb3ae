"""``AsyncQueueClient``: the client's calls as coroutines that never block the event loop.

For applications written with ``asyncio`` (FastAPI, aiohttp, Starlette, ...)::

    client = AsyncQueueClient(db)
    task_id = await client.enqueue("send_email", {"to": "a@example.com"})
    task = await client.wait(task_id, timeout=30)

Every method of :class:`~prismq.queue.client.QueueClient` is here, with the same
arguments, checks and errors. How the database is reached depends on the backend:

- **PostgreSQL:** a real asynchronous driver, psycopg's ``AsyncConnectionPool``, running
  the backend's own named statements (see :mod:`prismq.queue.backends.postgres.aio`).
- **SQLite** (which has no asynchronous driver): each call runs on a small pool of
  threads owned by the client (``max_threads``, 4 by default), so at most that many
  calls touch the file at once and the loop only awaits their results.

Validation (task type, priority, payload, ...) runs on the loop before anything is sent:
it is pure computation, and a bad argument raises at once.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .backends.base import AsyncStore, NewTask, QueueStats, TaskQuery
from .backends.serverclock import read_clock
from .client import Enqueued, QueueClient, TaskSpec
from .database import QueueDatabase
from .errors import QueueTimeoutError, StorageError, TaskNotFoundError, TaskStateError, ValidationError
from .flow import FlowLimit, Unique
from .models import DEFAULT_PRIORITY, Task, TaskStatus, WorkerInfo
from .retry import RetryPolicy
from .validation import DEFAULT_MAX_PAYLOAD_BYTES, is_int, validate_delay, validate_task_id

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["AsyncQueueClient"]

T = TypeVar("T")


class ThreadedStore:
    """Runs the synchronous backend's calls on a bounded pool of threads.

    Args:
        db: The queue database whose backend is called.
        max_threads: Most calls running at once (the pool's size).
    """

    def __init__(self, db: QueueDatabase, max_threads: int) -> None:
        self._db = db
        self._backend = db.backend
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="prismq-aio")

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except RuntimeError as exc:
            if "shutdown" in str(exc):  # the executor refuses work after aclose()
                raise StorageError("the AsyncQueueClient was closed; create a new one") from None
            raise

    async def now(self) -> float:
        return await read_clock(self._db.clock)

    async def insert_tasks(self, tasks: Sequence[NewTask], now: float) -> list[tuple[int, bool]]:
        return await self._call(self._backend.insert_tasks, tasks, now)

    async def get_task(self, task_id: int) -> Task | None:
        return await self._call(self._backend.get_task, task_id)

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        return await self._call(self._backend.list_tasks, query)

    async def count_by_status(self) -> dict[str, int]:
        return await self._call(self._backend.count_by_status)

    async def count_by_type(self) -> dict[str, dict[str, int]]:
        return await self._call(self._backend.count_by_type)

    async def stats(self, now: float) -> QueueStats:
        return await self._call(self._backend.stats, now)

    async def list_workers(self) -> list[WorkerInfo]:
        return await self._call(self._backend.list_workers)

    async def cancel_task(self, task_id: int, now: float) -> Task:
        return await self._call(self._backend.cancel_task, task_id, now)

    async def retry_task(self, task_id: int, now: float, reset_attempts: bool) -> Task:
        return await self._call(self._backend.retry_task, task_id, now, reset_attempts)

    async def prune(self, finished_before: float, statuses: Sequence[TaskStatus]) -> int:
        return await self._call(self._backend.prune, finished_before, statuses)

    async def data_version(self) -> int:
        return await self._call(self._backend.data_version)

    async def aclose(self) -> None:
        # Threads still running a call finish it; the loop does not wait for them here.
        self._executor.shutdown(wait=False)


def _open_store(db: QueueDatabase, max_threads: int) -> AsyncStore:
    native = db.backend.async_store(db.clock)
    return native if native is not None else ThreadedStore(db, max_threads)


class AsyncQueueClient:
    """Enqueue and manage tasks from ``asyncio`` code without blocking the event loop.

    The producer and query methods of :class:`~prismq.queue.client.QueueClient`, each a
    coroutine, with the same arguments, validation and errors: everything but the
    dashboard's operations (``page``, ``delete``, ``delete_many``, ``retry_many``,
    ``cancel_many``, ``pause``, ``resume``, ``paused``, ``finished_histogram``) and the
    ``schedules`` management object, which :attr:`sync_client` offers. Close it with
    :meth:`aclose` (or use ``async with``); the :class:`~prismq.queue.database.QueueDatabase`
    stays open and is closed by its owner.

    Args:
        db: The queue database (SQLite or PostgreSQL).
        default_retry_policy: The policy for task types without their own.
        retry_policies: A policy per task type.
        max_payload_bytes: Largest encoded payload accepted (1 MiB by default).
        max_threads: SQLite only: threads that run database calls (most calls at once).

    Raises:
        ValidationError: ``max_threads`` is not an integer from 1 to 64, or
            ``max_payload_bytes`` is invalid.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> db = QueueDatabase(pathlib.Path(tempfile.mkdtemp()) / "queue.db")
        >>> _ = db.initialize_schema()
        >>> async def main() -> str:
        ...     async with AsyncQueueClient(db) as client:
        ...         task_id = await client.enqueue("send_email", {"to": "a@example.com"})
        ...         return (await client.get(task_id)).status.value
        >>> asyncio.run(main())
        'queued'
        >>> db.close()
    """

    def __init__(
        self,
        db: QueueDatabase,
        *,
        default_retry_policy: RetryPolicy | None = None,
        retry_policies: Mapping[str, RetryPolicy] | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_threads: int = 4,
    ) -> None:
        if not is_int(max_threads) or not 1 <= max_threads <= 64:
            raise ValidationError(f"max_threads must be an integer from 1 to 64, got {max_threads!r}")
        # The synchronous client holds the validation; this class never calls its I/O.
        self._sync = QueueClient(
            db,
            default_retry_policy=default_retry_policy,
            retry_policies=retry_policies,
            max_payload_bytes=max_payload_bytes,
        )
        self.db = db
        self._store = _open_store(db, max_threads)

    @property
    def sync_client(self) -> QueueClient:
        """A :class:`QueueClient` with the same settings, for code outside the event loop."""
        return self._sync

    # -- enqueue ---------------------------------------------------------------
    async def enqueue(
        self,
        task_type: str,
        payload: Any = None,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: float | None = None,
        run_after: datetime | float | None = None,
        max_attempts: int | None = None,
        retry_policy: RetryPolicy | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        unique: Unique | None = None,
    ) -> int:
        """Add one task and return its id; see :meth:`QueueClient.enqueue`.

        With ``concurrency_key`` or ``unique`` the synchronous enqueue runs in a thread
        (a unique enqueue looks up and inserts under a lock, in one transaction).
        """
        inserted = await self._enqueue(
            task_type,
            payload,
            priority,
            delay,
            run_after,
            max_attempts,
            retry_policy,
            idempotency_key,
            concurrency_key,
            unique,
        )
        return inserted[0]

    async def enqueue_outcome(
        self,
        task_type: str,
        payload: Any = None,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: float | None = None,
        run_after: datetime | float | None = None,
        max_attempts: int | None = None,
        retry_policy: RetryPolicy | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        unique: Unique | None = None,
    ) -> Enqueued:
        """Add one task and tell whether it was new; see :meth:`QueueClient.enqueue_outcome`."""
        inserted = await self._enqueue(
            task_type,
            payload,
            priority,
            delay,
            run_after,
            max_attempts,
            retry_policy,
            idempotency_key,
            concurrency_key,
            unique,
        )
        return Enqueued(*inserted)

    async def _enqueue(
        self,
        task_type: str,
        payload: Any,
        priority: int,
        delay: float | None,
        run_after: datetime | float | None,
        max_attempts: int | None,
        retry_policy: RetryPolicy | None,
        idempotency_key: str | None,
        concurrency_key: str | None,
        unique: Unique | None,
    ) -> tuple[int, bool]:
        """Add one task; ``(task id, created)``."""
        if concurrency_key is not None or unique is not None:
            return await asyncio.to_thread(
                self._sync._enqueue,
                task_type,
                payload,
                priority,
                delay,
                run_after,
                max_attempts,
                retry_policy,
                idempotency_key,
                concurrency_key,
                unique,
            )
        now = await self._store.now()
        new = self._sync._prepare(
            task_type,
            payload,
            priority,
            delay,
            run_after,
            max_attempts,
            retry_policy,
            idempotency_key,
            now,
            {},
        )
        return (await self._store.insert_tasks((new,), now))[0]

    async def enqueue_many(self, tasks: Iterable[TaskSpec | Mapping[str, Any]]) -> builtins.list[int]:
        """Add many tasks in one transaction, all or none; see :meth:`QueueClient.enqueue_many`."""
        items = builtins.list(tasks)
        now = await self._store.now()
        prepared, flows = self._sync._prepare_batch(items, now)
        if flows:  # concurrency keys or unique options: the synchronous batch, in a thread
            return await asyncio.to_thread(self._sync.enqueue_many, items)
        if not prepared:
            return []
        return [task_id for task_id, _ in await self._store.insert_tasks(prepared, now)]

    # -- flow control ------------------------------------------------------------
    # Rare administrative calls: the synchronous ones, run in a thread.
    async def set_concurrency_limit(
        self, limit: int, *, task_type: str | None = None, key: str | None = None
    ) -> None:
        """See :meth:`QueueClient.set_concurrency_limit`."""
        await asyncio.to_thread(self._sync.set_concurrency_limit, limit, task_type=task_type, key=key)

    async def set_rate_limit(
        self, limit: int, period: float, *, task_type: str | None = None, key: str | None = None
    ) -> None:
        """See :meth:`QueueClient.set_rate_limit`."""
        await asyncio.to_thread(self._sync.set_rate_limit, limit, period, task_type=task_type, key=key)

    async def remove_concurrency_limit(self, *, task_type: str | None = None, key: str | None = None) -> bool:
        """See :meth:`QueueClient.remove_concurrency_limit`."""
        return await asyncio.to_thread(self._sync.remove_concurrency_limit, task_type=task_type, key=key)

    async def remove_rate_limit(self, *, task_type: str | None = None, key: str | None = None) -> bool:
        """See :meth:`QueueClient.remove_rate_limit`."""
        return await asyncio.to_thread(self._sync.remove_rate_limit, task_type=task_type, key=key)

    async def list_limits(self) -> builtins.list[FlowLimit]:
        """See :meth:`QueueClient.list_limits`."""
        return await asyncio.to_thread(self._sync.list_limits)

    async def limit_usage(self) -> dict[tuple[str, str], tuple[int, int]]:
        """See :meth:`QueueClient.limit_usage`."""
        return await asyncio.to_thread(self._sync.limit_usage)

    # -- queries ---------------------------------------------------------------
    async def get(self, task_id: int) -> Task:
        """The task with this id.

        Raises:
            TaskNotFoundError: No such task.
        """
        task = await self._store.get_task(validate_task_id(task_id))
        if task is None:
            raise TaskNotFoundError(f"no task with id {task_id}")
        return task

    async def list(
        self,
        *,
        status: TaskStatus | str | Iterable[TaskStatus | str] | None = None,
        task_type: str | Iterable[str] | None = None,
        created_after: datetime | float | None = None,
        created_before: datetime | float | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[Task]:
        """Tasks matching every given filter; see :meth:`QueueClient.list`."""
        query = self._sync._task_query(
            status, task_type, created_after, created_before, limit, offset, newest_first
        )
        return await self._store.list_tasks(query)

    async def count_by_status(self) -> dict[str, int]:
        """Task count per status, every status included."""
        return await self._store.count_by_status()

    async def count_by_type(self) -> dict[str, dict[str, int]]:
        """Per task type, the count per status."""
        return await self._store.count_by_type()

    async def stats(self) -> QueueStats:
        """A consistent snapshot: counts, ready/delayed, oldest wait, throughput, workers."""
        return await self._store.stats(await self._store.now())

    async def list_workers(self, stale_after: float | None = None) -> builtins.list[WorkerInfo]:
        """Registered workers; with ``stale_after``, only those silent for that many seconds."""
        if stale_after is not None:
            stale_after = validate_delay(stale_after, "stale_after")
        workers = await self._store.list_workers()
        if stale_after is None:
            return workers
        now = datetime.fromtimestamp(await self._store.now(), tz=timezone.utc)
        return [w for w in workers if w.is_stale(now, stale_after)]

    # -- management ------------------------------------------------------------
    async def cancel(self, task_id: int) -> Task:
        """Cancel a task; see :meth:`QueueClient.cancel`.

        Raises:
            TaskNotFoundError: No such task.
            TaskStateError: The task already finished.
        """
        task_id = validate_task_id(task_id)
        return await self._store.cancel_task(task_id, await self._store.now())

    async def retry(self, task_id: int, *, reset_attempts: bool = True) -> Task:
        """Queue a dead or cancelled task again; see :meth:`QueueClient.retry`.

        Raises:
            TaskNotFoundError: No such task.
            TaskStateError: The task is not dead or cancelled.
        """
        task_id = validate_task_id(task_id)
        return await self._store.retry_task(task_id, await self._store.now(), bool(reset_attempts))

    async def prune(
        self,
        older_than: float | timedelta,
        statuses: Iterable[TaskStatus | str] = (TaskStatus.COMPLETED, TaskStatus.CANCELLED),
    ) -> int:
        """Delete finished tasks older than ``older_than``; see :meth:`QueueClient.prune`."""
        seconds, chosen = self._sync._prune_args(older_than, statuses)
        return await self._store.prune(await self._store.now() - seconds, chosen)

    # -- results ---------------------------------------------------------------
    async def get_result(self, task_id: int) -> Any:
        """The result of a completed task.

        Raises:
            TaskNotFoundError: No such task.
            TaskStateError: The task has not completed.
        """
        task = await self.get(task_id)
        if task.status is not TaskStatus.COMPLETED:
            detail = f": {task.last_error}" if task.last_error else ""
            raise TaskStateError(f"task {task_id} is {task.status.value}, not completed{detail}")
        return task.result

    async def wait(self, task_id: int, timeout: float | None = None, poll_interval: float = 0.05) -> Task:
        """Wait, without blocking the loop, until the task is completed, dead or cancelled.

        Between checks the client reads only the database's change counter
        (``data_version``), backing off from 1 ms to ``poll_interval``.

        Args:
            task_id: The task.
            timeout: Seconds to wait at most (``None``: no limit).
            poll_interval: Longest pause between checks, in seconds.

        Raises:
            QueueTimeoutError: The task was still running when ``timeout`` passed.
            TaskNotFoundError: No such task.
        """
        deadline = None if timeout is None else time.monotonic() + validate_delay(timeout, "timeout")
        poll_interval = validate_delay(poll_interval, "poll_interval")
        pause = 0.001
        last_version: int | None = None
        task: Task | None = None
        while True:
            version = await self._store.data_version()
            if version != last_version or task is None:
                task = await self.get(task_id)
                if task.is_terminal:
                    return task
                last_version = version
                pause = 0.001
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueTimeoutError(f"task {task_id} is still {task.status.value} after {timeout} s")
            sleep_for = pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0))
            await asyncio.sleep(sleep_for)
            pause = min(pause * 2, poll_interval)

    # -- life cycle ------------------------------------------------------------
    async def aclose(self) -> None:
        """Release this client's threads or connections (the database stays open)."""
        await self._store.aclose()

    async def __aenter__(self) -> AsyncQueueClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
