"""The narrow driver interface between the queue's logic and a database.

:class:`~prismq.queue.client.QueueClient` and :class:`~prismq.queue.worker.QueueWorker`
hold the logic (validation, retry decisions, strategies); a backend owns every SQL
statement and the connection handling for one database. Adding a database means writing
one class that satisfies :class:`Backend`.

All times cross this interface as UTC epoch seconds (``float``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from ..errors import ConfigError
from ..models import Task, TaskStatus, WorkerInfo
from ..strategies import SchedulingStrategy

__all__ = [
    "BACKEND_MEMBERS",
    "CHECKPOINT_MODES",
    "COPY_TABLES",
    "AsyncStore",
    "Backend",
    "Connections",
    "FlowTask",
    "KeysetPage",
    "NewTask",
    "PageQuery",
    "QueueStats",
    "Settlement",
    "TaskQuery",
    "TaskUpdate",
    "checkpoint_mode",
    "missing_members",
]


class NewTask(NamedTuple):
    """A validated task ready to insert (payload and policy already JSON-encoded).

    A named tuple rather than a dataclass: one is built per enqueued task, and a tuple is
    built several times faster and can be bound to the insert statement as it is. The
    fields are in the order of the ``tasks`` columns that ``insert_task`` binds first.
    """

    task_type: str
    payload_json: str
    priority: int
    run_after: float
    max_attempts: int
    retry_policy_json: str
    idempotency_key: str | None = None
    trace_context: str | None = None

    def insert_params(self, now: float) -> dict[str, Any]:
        """The named parameters of the insert statements, created and updated at ``now``."""
        return {
            "task_type": self.task_type,
            "payload": self.payload_json,
            "priority": self.priority,
            "run_after": self.run_after,
            "max_attempts": self.max_attempts,
            "retry_policy": self.retry_policy_json,
            "idempotency_key": self.idempotency_key,
            "trace_context": self.trace_context,
            "now": now,
        }


class FlowTask(NamedTuple):
    """A task to insert with flow-control keys (see :mod:`prismq.queue.flow`).

    Attributes:
        task: The validated task.
        concurrency_key: The key its limits count it under, or ``None``.
        unique_key: Its unique key, or ``None`` (not unique).
        unique_since: Equal tasks created before this epoch time do not count.
        unique_statuses: The statuses an equal task must be in to count.
        raise_on_duplicate: Raise instead of returning the equal task's id.
    """

    task: NewTask
    concurrency_key: str | None = None
    unique_key: str | None = None
    unique_since: float = 0.0
    unique_statuses: tuple[str, ...] = ()
    raise_on_duplicate: bool = False


@dataclass(frozen=True)
class TaskQuery:
    """Filters for listing tasks. ``None`` means "any".

    Attributes:
        statuses: Keep tasks in these statuses.
        task_types: Keep tasks of these types.
        created_after: Keep tasks created at or after this epoch time.
        created_before: Keep tasks created before this epoch time.
        limit: Most rows returned.
        offset: Rows skipped first.
        newest_first: Order by id descending (default) or ascending.
    """

    statuses: tuple[TaskStatus, ...] | None = None
    task_types: tuple[str, ...] | None = None
    created_after: float | None = None
    created_before: float | None = None
    limit: int = 100
    offset: int = 0
    newest_first: bool = True


@dataclass(frozen=True)
class PageQuery:
    """One page of tasks, read by keyset (never by offset), each status off its own index.

    The order depends on ``status``: ``None`` (every status) newest id first; queued by
    task type, then ``run_after``; leased by lease end; completed, dead and cancelled
    newest finished first. ``since``/``until`` bound that same time (creation for
    ``None``, so that filter reads rows in id order).

    Attributes:
        status: The one status listed, or ``None`` for all.
        task_type: Keep this task type only.
        since: Keep tasks whose ordering time is at or after this epoch time.
        until: Keep tasks whose ordering time is before this epoch time.
        search: Keep tasks whose payload or last error contains this text.
        cursor: Where the previous page ended (its ``next_cursor``); ``None``: the start.
        limit: Most tasks returned.
    """

    status: TaskStatus | None = None
    task_type: str | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None
    cursor: tuple[Any, ...] | None = None
    limit: int = 50


class KeysetPage(NamedTuple):
    """Tasks of one page, and the cursor of the next page (``None`` after the last)."""

    tasks: list[Task]
    next_cursor: tuple[Any, ...] | None


class TaskUpdate(NamedTuple):
    """A fenced change to a leased task: the worker and token must still hold the lease.

    A named tuple, like :class:`NewTask`: one is built for every completion.
    """

    task_id: int
    worker_id: str
    lease_token: str


class Settlement(NamedTuple):
    """The fenced end of a held attempt, as written by :meth:`Backend.settle_and_claim`.

    ``status`` ``completed`` stores ``result_json``; ``queued`` (retry or release), ``dead``
    and ``cancelled`` store ``run_after`` (``None``: unchanged), ``error`` and
    ``traceback``. ``count_attempt`` False gives the attempt back (a release).
    """

    update: TaskUpdate
    status: TaskStatus
    result_json: str | None = None
    run_after: float | None = None
    error: str | None = None
    traceback: str | None = None
    count_attempt: bool = True


@dataclass(frozen=True)
class QueueStats:
    """A snapshot of the queue for dashboards and the ``stats`` command.

    Attributes:
        by_status: Task count per status (every status present, zeros included).
        by_type: Per task type, the count per status (only non-zero counts).
        ready: Queued tasks whose ``run_after`` has passed.
        delayed: Queued tasks waiting for their ``run_after``.
        oldest_ready_age: Seconds the oldest ready task has waited, or ``None``.
        expired_leases: Leased tasks whose lease has run out (reclaimed at the next claim).
        finished_last_minute: Tasks that reached a terminal status in the last 60 s.
        finished_last_5_minutes: The same over the last 300 s.
        workers: The worker registry.
    """

    by_status: dict[str, int]
    by_type: dict[str, dict[str, int]]
    ready: int
    delayed: int
    oldest_ready_age: float | None
    expired_leases: int
    finished_last_minute: int
    finished_last_5_minutes: int
    workers: list[WorkerInfo] = field(default_factory=list)

    @property
    def total(self) -> int:
        """All tasks in the database."""
        return sum(self.by_status.values())


CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")
"""The modes :meth:`Backend.checkpoint` accepts (SQLite's ``wal_checkpoint`` modes)."""


def checkpoint_mode(mode: str) -> str:
    """``mode`` as one of :data:`CHECKPOINT_MODES` (case and spaces ignored).

    Raises:
        ConfigError: Any other word.
    """
    word = mode.strip().upper() if isinstance(mode, str) else ""
    if word not in CHECKPOINT_MODES:
        raise ConfigError(f"checkpoint mode must be one of {', '.join(CHECKPOINT_MODES)}, got {mode!r}")
    return word


COPY_TABLES = ("tasks", "runs")
"""The tables :mod:`prismq.queue.migrate` copies between databases, in copy order."""


T = TypeVar("T")


class Connections(Protocol):
    """What the shared operations need of a backend's connection manager."""

    def read(self, work: Callable[[Any], T], snapshot: bool = False) -> T:
        """Run read-only ``work``; with ``snapshot`` inside one consistent transaction."""
        ...

    def write(self, work: Callable[[Any], T]) -> T:
        """Run ``work`` in a write transaction (retried whole after a busy conflict)."""
        ...

    def transaction(self) -> AbstractContextManager[Any]:
        """A write transaction; queue calls made inside it on this thread join it."""
        ...

    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`transaction` on this thread (a write then joins it)."""
        ...


class AsyncStore(Protocol):
    """The storage calls :class:`AsyncQueueClient` awaits (one implementation per backend)."""

    async def now(self) -> float:
        """The database clock's time (UTC epoch seconds)."""
        ...

    async def insert_tasks(self, tasks: Sequence[NewTask], now: float) -> list[tuple[int, bool]]:
        """As :meth:`Backend.insert_tasks`."""
        ...

    async def get_task(self, task_id: int) -> Task | None:
        """As :meth:`Backend.get_task`."""
        ...

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        """As :meth:`Backend.list_tasks`."""
        ...

    async def count_by_status(self) -> dict[str, int]:
        """As :meth:`Backend.count_by_status`."""
        ...

    async def count_by_type(self) -> dict[str, dict[str, int]]:
        """As :meth:`Backend.count_by_type`."""
        ...

    async def stats(self, now: float) -> QueueStats:
        """As :meth:`Backend.stats`."""
        ...

    async def list_workers(self) -> list[WorkerInfo]:
        """As :meth:`Backend.list_workers`."""
        ...

    async def cancel_task(self, task_id: int, now: float) -> Task:
        """As :meth:`Backend.cancel_task`."""
        ...

    async def retry_task(self, task_id: int, now: float, reset_attempts: bool) -> Task:
        """As :meth:`Backend.retry_task`."""
        ...

    async def prune(self, finished_before: float, statuses: Sequence[TaskStatus]) -> int:
        """As :meth:`Backend.prune`."""
        ...

    async def data_version(self) -> int:
        """As :meth:`Backend.data_version`."""
        ...

    async def aclose(self) -> None:
        """Release what the store opened (threads, connections)."""
        ...


@runtime_checkable
class Backend(Protocol):
    """What a database must provide. Every method is atomic on its own.

    This is the whole interface the higher layers use: the client, worker, runtime, CLI,
    migration and run registry reach a database only through these attributes and
    methods, never by its name. A backend that cannot offer a capability still declares
    it, with the neutral answer its docstring names (``path`` is ``None`` for a server,
    ``notifies_changes`` is False where nothing is pushed).

    Attributes:
        name: Short name of the database kind (``"sqlite"``, ``"postgresql"``), for
            messages and reports only.
        location: The file path, or the server URL without its password.
        identity: Equal for two backends that open the same database (what
            :func:`~prismq.queue.migrate.migrate` refuses to copy onto itself).
        path: The database file, or ``None`` for a server database.
        pragmas: The PRAGMAs applied to every connection (empty where there are none).
        journal_mode: The write-ahead mode a file database reports (``"wal"``); empty for
            a server database.
        latest_schema_version: The schema version this release writes; a database below it
            is migrated by :meth:`initialize_schema`.
        clock: The clock task times are taken by unless ``QueueDatabase(clock=...)`` names
            another (UTC epoch seconds): the host's, or the server's.
        notifies_changes: True when :meth:`wait_for_change` blocks on a notification the
            database pushes; False when callers must watch for changes themselves.
    """

    name: str
    location: str

    @property
    def identity(self) -> tuple[str, ...]:
        """Equal for two backends that open the same database."""
        ...

    @property
    def path(self) -> Path | None:
        """The database file, or ``None`` for a server database."""
        ...

    @property
    def pragmas(self) -> dict[str, str | int]:
        """The PRAGMAs applied to every connection (empty where there are none)."""
        ...

    @property
    def latest_schema_version(self) -> int:
        """The schema version this release writes."""
        ...

    @property
    def clock(self) -> Callable[[], float]:
        """The clock task times are taken by by default (UTC epoch seconds)."""
        ...

    @property
    def notifies_changes(self) -> bool:
        """True when :meth:`wait_for_change` blocks on a pushed notification."""
        ...

    @property
    def journal_mode(self) -> str:
        """The write-ahead mode of a file database (``"wal"``); ``""`` for a server."""
        ...

    # -- life cycle and schema -------------------------------------------------
    def initialize_schema(self) -> int:
        """Create or migrate the schema (idempotent); return the schema version."""
        ...

    def schema_version(self) -> int:
        """The schema version stored in the database (0 before initialisation)."""
        ...

    def close(self) -> None:
        """Close every connection this backend opened."""
        ...

    def transaction(self) -> AbstractContextManager[Any]:
        """A write transaction; queue calls made inside it on this thread join it."""
        ...

    # -- client side -----------------------------------------------------------
    def insert_tasks(self, tasks: Sequence[NewTask], now: float) -> list[tuple[int, bool]]:
        """Insert tasks in one transaction; return ``(id, created)`` per task.

        ``created`` is False when an idempotency key matched an existing task, whose id is
        returned instead.
        """
        ...

    def get_task(self, task_id: int) -> Task | None:
        """One task, or ``None``."""
        ...

    def list_tasks(self, query: TaskQuery) -> list[Task]:
        """Tasks matching ``query``."""
        ...

    def count_by_status(self) -> dict[str, int]:
        """Task count per status."""
        ...

    def count_by_type(self) -> dict[str, dict[str, int]]:
        """Task count per type and status."""
        ...

    def stats(self, now: float) -> QueueStats:
        """A snapshot of the queue."""
        ...

    def cancel_task(self, task_id: int, now: float) -> Task:
        """Cancel a queued task, or flag a leased one; raise if already terminal."""
        ...

    def retry_task(self, task_id: int, now: float, reset_attempts: bool) -> Task:
        """Put a dead or cancelled task back in the queue."""
        ...

    def prune(self, finished_before: float, statuses: Sequence[TaskStatus]) -> int:
        """Delete terminal tasks finished before a time; return how many."""
        ...

    def data_version(self) -> int:
        """A number that changes when another connection commits (cheap to read)."""
        ...

    def wait_for_change(self, timeout: float) -> bool:
        """Block until the database notifies that work may be ready, or ``timeout`` passes.

        Returns True when a change may have happened. A backend whose
        ``notifies_changes`` is False returns True at once: it has no notification to wait
        for, so the caller should look (and pace its looks itself).
        """
        ...

    def stop_listening(self) -> None:
        """Release what :meth:`wait_for_change` opened (a no-op where it opened nothing)."""

    def page_tasks(self, query: PageQuery) -> KeysetPage:
        """One page of tasks by keyset (see :class:`PageQuery`)."""
        ...

    def finished_histogram(self, since: float, step: float) -> list[tuple[int, str, int]]:
        """``(bucket, status, count)`` of tasks finished since ``since``, per ``step`` seconds."""
        ...

    def change_tasks(self, action: str, task_ids: Sequence[int], now: float) -> int:
        """Apply ``"retry"``, ``"cancel"`` or ``"delete"`` to these tasks in one transaction.

        Tasks not in a state the action applies to are left alone; returns how many changed.
        """
        ...

    # -- paused task types -------------------------------------------------------
    def pause_task_type(self, task_type: str, now: float) -> bool:
        """Stop claims of a task type; False when it was already paused."""
        ...

    def resume_task_type(self, task_type: str) -> bool:
        """Allow claims of a task type again; False when it was not paused."""
        ...

    def paused_task_types(self) -> dict[str, float]:
        """The paused task types, each with the epoch time it was paused."""
        ...

    # -- worker side -----------------------------------------------------------
    def claim(
        self,
        worker_id: str,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        count: int,
        lease_duration: float,
        now: float,
        reclaim_first: bool = False,
    ) -> list[Task]:
        """Lease up to ``count`` ready tasks in one transaction, in strategy order.

        With ``reclaim_first``, expired leases are returned to the queue in the same
        transaction before the claim reads.
        """
        ...

    def complete_and_claim(
        self,
        updates: Sequence[TaskUpdate],
        results_json: Sequence[str | None],
        worker_id: str,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        count: int,
        lease_duration: float,
        now: float,
        reclaim_first: bool = False,
    ) -> tuple[list[bool], list[Task]]:
        """Complete held tasks, then lease up to ``count`` more, in one transaction.

        The claim only happens when every completion held its lease; otherwise nothing
        is claimed and the flags say which completions were refused.

        Returns:
            One flag per update (False where the lease was lost) and the leased tasks,
            in strategy order.
        """
        ...

    def settle_and_claim(
        self,
        settlements: Sequence[Settlement],
        worker_id: str,
        task_types: Sequence[str] | None,
        strategy: SchedulingStrategy,
        count: int,
        lease_duration: float,
        now: float,
        reclaim_first: bool = False,
    ) -> tuple[list[bool], list[Task]]:
        """End held attempts, then lease up to ``count`` more, in one transaction.

        Each settlement is fenced by its own lease token; one whose lease was lost changes
        nothing and does not stop the others or the claim. ``count`` may be 0 (settle only).

        Returns:
            One flag per settlement (False where the lease was lost or the task is gone)
            and the leased tasks, in strategy order.
        """
        ...

    def next_run_after(self, task_types: Sequence[str] | None) -> float | None:
        """The earliest ``run_after`` among queued tasks of these types (``None``: none)."""
        ...

    def async_store(self, clock: Callable[[], float]) -> AsyncStore | None:
        """A store that awaits this database on the event loop, or ``None``.

        ``AsyncQueueClient`` uses it when given one (PostgreSQL: psycopg's asynchronous
        pool); with ``None`` it runs the synchronous calls on threads of its own (SQLite).

        Args:
            clock: The queue database's clock, read for every time the store writes.
        """
        ...

    def reclaim_expired(self, now: float) -> int:
        """Return expired leases to the queue (or to dead on the last attempt)."""
        ...

    def insert_leased(self, task: NewTask, worker_id: str, lease_until: float, now: float) -> Task:
        """Insert a task already leased by ``worker_id`` under a fresh lease token.

        The task is on its first and only attempt (``max_attempts`` 1, whatever ``task``
        says), so a lease that runs out makes it dead, never queued for another worker.
        Its ``idempotency_key`` is not stored. Every later change goes through the fenced
        operations with the returned task's ``lease_token``.
        """
        ...

    def lease_again(
        self, task_id: int, worker_id: str, lease_until: float, now: float, handover: str | None = None
    ) -> Task | None:
        """Lease one task by id to ``worker_id`` under a fresh lease token.

        A queued, dead or cancelled task starts one more attempt (allowed: its
        ``max_attempts`` grows to match), with its cancel request cleared; a leased task
        whose lease ran out, that ``worker_id`` already holds, or whose lease token is
        ``handover`` (its holder hands it over), only changes holder and token, which
        fences off the previous holder.

        Returns:
            The leased task, or ``None`` when it does not exist, is completed, or is
            leased by another worker whose lease still runs.
        """
        ...

    def renew_lease(self, update: TaskUpdate, lease_until: float, now: float) -> Task:
        """Extend a lease; raise ``LeaseLostError`` if it is no longer held."""
        ...

    def update_progress(
        self, update: TaskUpdate, percent: float, message: str | None, lease_until: float, now: float
    ) -> Task:
        """Record progress on a held task and extend its lease to at least ``lease_until``."""
        ...

    def complete_tasks(
        self, updates: Sequence[TaskUpdate], results_json: Sequence[str | None], now: float
    ) -> list[bool]:
        """Complete held tasks in one transaction; False where the lease was lost."""
        ...

    def finish_attempt(
        self,
        update: TaskUpdate,
        status: TaskStatus,
        run_after: float | None,
        error: str | None,
        traceback: str | None,
        count_attempt: bool,
        now: float,
    ) -> Task:
        """End a held attempt: back to queued (retry/release), dead, or cancelled."""
        ...

    def diagnose_lost_lease(self, update: TaskUpdate) -> str:
        """Explain why a fenced change matched no row (for the error message)."""
        ...

    # -- worker registry -------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        """Record (or refresh) a worker in the registry."""
        ...

    def heartbeat_worker(self, worker_id: str, now: float) -> None:
        """Refresh a worker's last heartbeat."""
        ...

    def deregister_worker(self, worker_id: str) -> None:
        """Remove a worker from the registry."""
        ...

    def list_workers(self) -> list[WorkerInfo]:
        """Every registered worker."""
        ...

    # -- maintenance -----------------------------------------------------------
    def checkpoint(self, mode: str) -> tuple[int, int, int]:
        """Checkpoint the write-ahead log; return ``(busy, log_frames, checkpointed)``."""
        ...

    def vacuum(self) -> None:
        """Rebuild the database to reclaim free space."""
        ...

    def analyze(self) -> None:
        """Refresh the query planner's statistics."""
        ...

    def integrity_check(self) -> list[str]:
        """Run the database's integrity check; ``["ok"]`` when healthy."""
        ...

    def backup(self, destination: Path) -> Path:
        """Write a consistent online copy to ``destination``."""
        ...

    def restore(self, source: Path) -> None:
        """Replace the database's content with a verified backup."""
        ...

    def explain_claims(self) -> dict[str, list[str]]:
        """Query plans of every claim statement, keyed by statement name."""
        ...

    # -- flow control (prismq.queue.flow) ----------------------------------------
    def set_limit(self, kind: str, task_type: str, key: str, limit: int, period: float | None) -> None:
        """Set the ``"concurrency"`` or ``"rate"`` limit of a scope (``""``: every)."""
        ...

    def remove_limit(self, kind: str, task_type: str, key: str) -> bool:
        """Remove a scope's concurrency or rate limit; False when it had none."""
        ...

    def list_limits(self) -> list[Any]:
        """Every limit, as :class:`~prismq.queue.flow.FlowLimit`, by scope."""
        ...

    def limit_usage(self, now: float) -> dict[tuple[str, str], tuple[int, int]]:
        """Per limited scope: ``(tasks leased now, claims within its rate period)``."""
        ...

    def insert_flow_tasks(self, tasks: Sequence[FlowTask], now: float) -> list[tuple[int, bool]]:
        """Insert tasks with concurrency and/or unique keys in one transaction; ``(id, inserted)``.

        Raises:
            DuplicateTaskError: An equal pending task exists and the task says to raise
                (nothing of the call is written).
        """
        ...

    # -- runs ------------------------------------------------------------------
    def run_store(self, clock: Callable[[], float]) -> Any:
        """The durable store of :mod:`prismq.queue.integrations` runs in this database.

        Args:
            clock: The queue database's clock (UTC epoch seconds).
        """
        ...

    # -- periodic schedules ------------------------------------------------------
    def schedule_store(self) -> Any:
        """The store of :mod:`prismq.queue.schedules` periodic schedules in this database.

        A :class:`~prismq.queue.backends.schedulestore.ScheduleStore`: the ``schedules``
        table, firing due ticks and moving schedules between databases.
        """
        ...

    # -- copy between databases (prismq.queue.migrate) ---------------------------
    def copy_count(self, table: str) -> int:
        """Rows of ``table`` (one of :data:`COPY_TABLES`); 0 for a table the schema lacks."""
        ...

    def copy_read(self, table: str, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of ``table`` past key ``after``, in key order.

        The key is ``id`` for tasks and ``task_id`` for runs. Rows are dicts of every column
        with backend-neutral values (booleans as ``bool``).
        """
        ...

    def copy_read_between(self, table: str, first: int, last: int) -> list[dict[str, Any]]:
        """The rows of ``table`` whose key is from ``first`` to ``last``, in key order."""
        ...

    def copy_write(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert rows as :meth:`copy_read` returns them, in one transaction, keeping keys."""
        ...


BACKEND_MEMBERS = tuple(
    sorted(
        {name for name in Backend.__annotations__}
        | {name for name, value in vars(Backend).items() if not name.startswith("_") and callable(value)}
        | {name for name, value in vars(Backend).items() if isinstance(value, property)}
    )
)
"""Every attribute and method of :class:`Backend`: what a database class must define."""


def missing_members(backend: object) -> list[str]:
    """The :data:`BACKEND_MEMBERS` ``backend`` lacks (empty for a whole backend)."""
    return [name for name in BACKEND_MEMBERS if not hasattr(backend, name)]


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Yield ``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
