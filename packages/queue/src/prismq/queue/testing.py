"""Helpers for testing handlers: a temporary queue, a clock you move, ``drain()`` and eager mode.

```python
from prismq.queue.testing import drain, temporary_queue

with temporary_queue() as db:
    ...  # enqueue, then:
    report = drain(db, registry)  # runs every ready task, retries included
```

- :func:`temporary_queue` opens a fresh queue on SQLite (a file in a temporary folder) or
  on PostgreSQL (a schema of its own, dropped afterwards), timed by a :class:`TestClock`.
- :func:`drain` runs every ready task through its handler here, in this thread, until
  nothing is left; when only delayed tasks remain (retries waiting for their backoff,
  ``delay=...``) it moves the :class:`TestClock` forward to the next one, so a test sees
  a task's whole life, three failed attempts and all, in milliseconds. It returns a
  :class:`DrainReport` of what happened.
- :func:`eager` makes a :class:`~prismq.queue.tasks.TaskRegistry`'s ``.enqueue(...)``
  run the task at once (through :func:`drain`), and by default re-raise a handler's
  exception at the call.

The pytest plugin (:mod:`prismq.queue.pytest_plugin`, registered on install) turns these
into fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import QueueClient
from .database import QueueDatabase
from .errors import ConfigError, QueueError
from .models import Task, TaskStatus
from .runtime.context import TaskCancelled, TaskContext, TaskFailed
from .runtime.logs import task_logger
from .runtime.registry import Handler, HandlerRegistry
from .worker import QueueWorker

if TYPE_CHECKING:
    from .tasks import TaskRegistry

__all__ = [
    "POSTGRES_URL_ENV",
    "SERVER_BACKENDS",
    "DrainReport",
    "HandlerError",
    "Outcome",
    "TestClock",
    "drain",
    "eager",
    "temporary_queue",
]

POSTGRES_URL_ENV = "PRISMQ_TEST_POSTGRES_URL"
"""The environment variable naming the PostgreSQL server for temporary queues."""


class TestClock:
    """A clock that moves only when told: pass it as ``QueueDatabase(clock=...)``.

    Args:
        start: Its first reading, UTC epoch seconds (default: the real time now).

    Example:
        >>> clock = TestClock(start=1_000.0)
        >>> clock.advance(30)
        >>> clock()
        1030.0
    """

    __test__ = False  # not a test class, whatever its name

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current reading (UTC epoch seconds)."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``.

        Raises:
            ConfigError: ``seconds`` is negative (time does not go back).
        """
        if seconds < 0:
            raise ConfigError(f"a TestClock only moves forward; got {seconds} seconds")
        with self._lock:
            self._now += seconds

    def advance_to(self, when: float) -> None:
        """Move forward to ``when`` (no change when it is already later)."""
        with self._lock:
            self._now = max(self._now, float(when))


@dataclass(frozen=True)
class Outcome:
    """One attempt :func:`drain` ran.

    Attributes:
        task_id: The task.
        task_type: Its type.
        attempt: Which attempt this was (1 for the first).
        status: The task's status afterwards: ``completed``, ``queued`` (it will be
            retried), ``dead`` or ``cancelled``.
        result: What the handler returned (``None`` when it raised).
        error: The recorded error message, or ``None``.
        exception: The exception the handler raised, or ``None``.
    """

    task_id: int
    task_type: str
    attempt: int
    status: TaskStatus
    result: Any = None
    error: str | None = None
    exception: BaseException | None = None


@dataclass
class DrainReport:
    """What :func:`drain` did, attempt by attempt.

    Attributes:
        outcomes: Every attempt run, in order.
        pending: Tasks of the registry's types still queued at the end (delayed tasks the
            clock could not be moved to, or left by ``max_tasks``).
        advanced: Seconds the :class:`TestClock` was moved forward.
    """

    outcomes: list[Outcome] = field(default_factory=list)
    pending: list[Task] = field(default_factory=list)
    advanced: float = 0.0

    @property
    def completed(self) -> list[Outcome]:
        """The attempts that completed their task."""
        return [o for o in self.outcomes if o.status is TaskStatus.COMPLETED]

    @property
    def retried(self) -> list[Outcome]:
        """The failed attempts that left their task queued for another attempt."""
        return [o for o in self.outcomes if o.status is TaskStatus.QUEUED]

    @property
    def dead(self) -> list[Outcome]:
        """The failed attempts that were their task's last."""
        return [o for o in self.outcomes if o.status is TaskStatus.DEAD]

    @property
    def results(self) -> dict[int, Any]:
        """Each completed task's result, by task id."""
        return {o.task_id: o.result for o in self.completed}

    def for_task(self, task_id: int) -> list[Outcome]:
        """The attempts of one task, in order."""
        return [o for o in self.outcomes if o.task_id == task_id]


class HandlerError(QueueError):
    """A handler raised under :func:`eager` mode; the handler's exception is its ``__cause__``.

    Attributes:
        outcome: The failed attempt.
    """

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


def _handlers(registry: HandlerRegistry | TaskRegistry) -> HandlerRegistry:
    if isinstance(registry, HandlerRegistry):
        return registry
    handlers = getattr(registry, "handlers", None)
    if not isinstance(handlers, HandlerRegistry):
        raise ConfigError(f"expected a HandlerRegistry or a TaskRegistry, got {type(registry).__name__}")
    return handlers


def _call(handler: Handler, ctx: TaskContext) -> Any:
    if not handler.is_async:
        return handler.func(ctx)
    coroutine = handler.func(ctx)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    # Called from a running loop (an async test): run the coroutine on a loop of its own.
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(coroutine)  # type: ignore[arg-type]
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="prismq-drain")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def drain(
    target: QueueDatabase | QueueClient,
    registry: HandlerRegistry | TaskRegistry,
    *,
    advance_time: bool = True,
    max_tasks: int = 10_000,
) -> DrainReport:
    """Run every ready task of the registry's types here, until none is left.

    Each task runs through its handler as a worker would run it (a
    :class:`~prismq.queue.runtime.TaskContext`, the same handling of ``TaskFailed``,
    ``TaskCancelled`` and other exceptions, the task's retry policy), one at a time, in
    this thread; an ``async def`` handler runs on an event loop of its own. Handler
    timeouts are not enforced. When only delayed tasks remain and the database's clock
    is a :class:`TestClock`, the clock is moved to the next one's ``run_after`` (with
    ``advance_time``), so retries run too.

    Args:
        target: The queue database (or a client of it).
        registry: The handlers (a :class:`HandlerRegistry` or a
            :class:`~prismq.queue.tasks.TaskRegistry`).
        advance_time: Move a :class:`TestClock` forward to delayed tasks.
        max_tasks: Most attempts to run (a guard against handlers that enqueue forever).

    Returns:
        Every attempt's outcome, and the tasks still queued.
    """
    db = target.db if isinstance(target, QueueClient) else target
    handlers = _handlers(registry)
    types = handlers.task_types
    report = DrainReport()
    if not types:
        return report
    clock = db.clock if isinstance(db.clock, TestClock) else None
    worker = QueueWorker(db, worker_id=f"drain-{secrets.token_hex(3)}", task_types=types, register=False)
    try:
        while len(report.outcomes) < max_tasks:
            task = worker.claim_next_task()
            if task is None:
                upcoming = db.backend.next_run_after(types) if advance_time and clock else None
                if upcoming is None:
                    break
                before = clock()  # type: ignore[misc]
                clock.advance_to(upcoming)  # type: ignore[union-attr]
                report.advanced += clock() - before  # type: ignore[misc]
                continue
            report.outcomes.append(_run_one(worker, handlers, task))
    finally:
        worker.close(release=True)
    report.pending = QueueClient(db).list(status="queued", task_type=types, newest_first=False, limit=10_000)
    return report


def _run_one(worker: QueueWorker, handlers: HandlerRegistry, task: Task) -> Outcome:
    handler = handlers.get(task.task_type)
    assert handler is not None  # claims are filtered by the registry's types
    ctx = TaskContext(task, worker, task_logger(worker.worker_id, task))
    try:
        result = _call(handler, ctx)
    except TaskCancelled as exc:
        after = worker.acknowledge_cancel(task.id)
        return Outcome(task.id, task.task_type, task.attempts, after.status, None, after.last_error, exc)
    except Exception as exc:
        retry = exc.retry if isinstance(exc, TaskFailed) else True
        after = worker.fail_task(task.id, exc, retry=retry)
        return Outcome(task.id, task.task_type, task.attempts, after.status, None, after.last_error, exc)
    worker.complete_task(task.id, result)
    return Outcome(task.id, task.task_type, task.attempts, TaskStatus.COMPLETED, result)


@contextlib.contextmanager
def eager(
    registry: TaskRegistry | HandlerRegistry,
    *,
    client: QueueClient | None = None,
    propagate: bool = True,
) -> Iterator[list[Outcome]]:
    """Run tasks at once when they are enqueued, for tests.

    Inside the block, every ``.enqueue(...)`` / ``.enqueue_many(...)`` of a
    :class:`~prismq.queue.tasks.TaskRegistry`'s task functions, and every
    ``client.enqueue(...)`` / ``client.enqueue_many(...)`` of ``client`` when one is
    given, writes the task as usual and then :func:`drain` runs everything ready. The
    payload goes through the same checks and the same JSON round trip as in production,
    so what passes here passes there.

    Args:
        registry: The task functions, or the handlers of a
            :class:`~prismq.queue.runtime.HandlerRegistry`.
        client: Also run what this client enqueues (required with a
            :class:`~prismq.queue.runtime.HandlerRegistry`).
        propagate: Raise :class:`HandlerError` (from the handler's exception) at the
            enqueue call when an enqueued task's attempt failed for good (dead).

    Yields:
        A list that collects every outcome of the block.

    Raises:
        ConfigError: A HandlerRegistry without a client.
    """
    handlers = _handlers(registry)
    hooks = getattr(registry, "_enqueue_hooks", None)
    if hooks is None and client is None:
        raise ConfigError("eager() with a HandlerRegistry needs the client whose enqueues run at once")
    outcomes: list[Outcome] = []

    def run_now(target: QueueClient, ids: list[int]) -> None:
        report = drain(target.db, handlers)
        outcomes.extend(report.outcomes)
        if not propagate:
            return
        wanted = set(ids)
        for outcome in report.outcomes:
            if outcome.task_id in wanted and outcome.status is TaskStatus.DEAD:
                raise HandlerError(
                    f"task {outcome.task_id} ({outcome.task_type}) failed: {outcome.error}", outcome
                ) from outcome.exception

    with contextlib.ExitStack() as stack:
        if hooks is not None:
            hooks.append(run_now)
            stack.callback(hooks.remove, run_now)
        if client is not None:
            stack.enter_context(_eager_client(client, run_now))
        yield outcomes


@contextlib.contextmanager
def _eager_client(client: QueueClient, run_now: Callable[[QueueClient, list[int]], None]) -> Iterator[None]:
    """Make ``client``'s own enqueue calls run what they wrote (instance attributes, undone after)."""
    enqueue, enqueue_many = client.enqueue, client.enqueue_many

    def eager_enqueue(*args: Any, **kwargs: Any) -> int:
        task_id = enqueue(*args, **kwargs)
        run_now(client, [task_id])
        return task_id

    def eager_enqueue_many(*args: Any, **kwargs: Any) -> list[int]:
        ids = enqueue_many(*args, **kwargs)
        run_now(client, ids)
        return ids

    client.enqueue = eager_enqueue  # type: ignore[method-assign]
    client.enqueue_many = eager_enqueue_many  # type: ignore[method-assign]
    try:
        yield
    finally:
        del client.enqueue, client.enqueue_many


@contextlib.contextmanager
def temporary_queue(
    backend: str = "sqlite",
    *,
    url: str | None = None,
    clock: Callable[[], float] | None = None,
) -> Iterator[QueueDatabase]:
    """A fresh, initialised queue database, removed afterwards.

    Args:
        backend: ``"sqlite"`` (a file in a new temporary folder) or ``"postgresql"`` (a
            schema of its own, dropped afterwards).
        url: The PostgreSQL server (default: ``PRISMQ_TEST_POSTGRES_URL``).
        clock: The database clock (default: a new :class:`TestClock`; pass ``time.time``
            for the real one).

    Raises:
        ConfigError: An unknown backend, or PostgreSQL without a URL.
    """
    make = _TEMPORARY.get(backend)
    if make is None:
        raise ConfigError(f"backend must be 'sqlite' or 'postgresql', got {backend!r}")
    with make(url, clock if clock is not None else TestClock()) as db:
        yield db


@contextlib.contextmanager
def _temporary_sqlite(url: str | None, clock: Callable[[], float]) -> Iterator[QueueDatabase]:
    """A queue database file in a new temporary folder, removed with the folder."""
    folder = tempfile.mkdtemp(prefix="prismq-test-")
    try:
        with QueueDatabase(Path(folder) / "queue.db", clock=clock) as db:
            db.initialize_schema()
            yield db
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _temporary_postgres(url: str | None, clock: Callable[[], float]) -> Iterator[QueueDatabase]:
    """A queue database in a new schema of the PostgreSQL server, dropped afterwards."""
    url = url or os.environ.get(POSTGRES_URL_ENV, "").strip()
    if not url:
        raise ConfigError(f"a PostgreSQL temporary queue needs a server: pass url= or set {POSTGRES_URL_ENV}")
    from .backends.postgres import PostgresBackend

    schema = f"prismq_test_{secrets.token_hex(6)}"
    backend_object = PostgresBackend(url, schema=schema, max_size=4)
    try:
        with QueueDatabase(backend=backend_object, clock=clock) as db:
            db.initialize_schema()
            yield db
    finally:
        _drop_schema(url, schema)


_TEMPORARY: dict[
    str, Callable[[str | None, Callable[[], float]], contextlib.AbstractContextManager[QueueDatabase]]
] = {
    "sqlite": _temporary_sqlite,
    "postgresql": _temporary_postgres,
}
"""How :func:`temporary_queue` makes a database of each kind it offers."""

SERVER_BACKENDS = frozenset({"postgresql"})
"""The :func:`temporary_queue` kinds that need a server's URL."""


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    from .backends.postgres.backend import Q
    from .backends.postgres.connection import parse_url

    plain, _ = parse_url(url)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(sql.SQL(Q["drop_schema"]).format(schema=sql.Identifier(schema)))
