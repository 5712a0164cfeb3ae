"""``QueueClient``: enqueue tasks, query them, cancel, retry, prune and wait."""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from .backends.base import FlowTask, NewTask, PageQuery, QueueStats, TaskQuery
from .database import QueueDatabase
from .errors import (
    QueueTimeoutError,
    ScheduleError,
    TaskNotFoundError,
    TaskStateError,
    ValidationError,
)
from .flow import (
    FlowLimit,
    Unique,
    unique_key_for,
    validate_concurrency_key,
    validate_limit,
    validate_period,
    validate_scope,
)
from .models import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    TERMINAL_STATUSES,
    Task,
    TaskStatus,
    WorkerInfo,
)
from .retry import RetryPolicy
from .schedules import Schedules
from .validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_EPOCH_SECONDS,
    MAX_TASK_ID,
    encode_json,
    is_int,
    is_number,
    validate_delay,
    validate_idempotency_key,
    validate_number,
    validate_priority,
    validate_task_id,
    validate_task_type,
)

if TYPE_CHECKING:
    from .runtime.observer import EnqueueObserver

__all__ = ["Enqueued", "QueueClient", "TaskPage", "TaskSpec"]


@dataclass(frozen=True)
class TaskSpec:
    """One task for :meth:`QueueClient.enqueue_many`; the fields mirror ``enqueue``."""

    task_type: str
    payload: Any = None
    priority: int = DEFAULT_PRIORITY
    delay: float | None = None
    run_after: datetime | float | None = None
    max_attempts: int | None = None
    retry_policy: RetryPolicy | None = None
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    unique: Unique | None = None


class Enqueued(NamedTuple):
    """What :meth:`QueueClient.enqueue_outcome` did.

    Attributes:
        task_id: The task's id: the new task's, or the existing one's.
        created: True when a task was added; False when an equal pending task (under
            ``unique``) or the task of a seen idempotency key was returned instead.
    """

    task_id: int
    created: bool


@dataclass(frozen=True)
class TaskPage:
    """One page of :meth:`QueueClient.page`.

    Attributes:
        tasks: The tasks of the page, in the page's order.
        next_cursor: Pass it as ``cursor`` for the next page; ``None`` after the last page.
    """

    tasks: list[Task]
    next_cursor: str | None


_BULK_BATCH = 500
"""Tasks changed per transaction by the bulk operations (short write locks)."""
_MAX_SEARCH = 200


def _decode_cursor(cursor: str | None) -> tuple[Any, ...] | None:
    """A cursor from :attr:`TaskPage.next_cursor` back into its key values."""
    if cursor is None:
        return None
    try:
        values = json.loads(cursor) if isinstance(cursor, str) else None
    except ValueError:
        values = None
    if (
        not isinstance(values, list)
        or not 1 <= len(values) <= 3
        or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values)
    ):
        raise ValidationError(f"cursor must be a next_cursor value from a previous page, got {cursor!r}")
    return tuple(values)


_SPEC_DEFAULTS = tuple((f.name, f.default) for f in fields(TaskSpec))
"""``TaskSpec``'s fields in order, with their defaults (``task_type`` has none)."""
_SPEC_NAMES = frozenset(name for name, _ in _SPEC_DEFAULTS)


def _mapping_fields(
    spec: object,
) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any, Any, Any]:
    """The field values of an ``enqueue_many`` item given as a mapping, in ``TaskSpec`` order.

    Args:
        spec: A mapping with ``enqueue``'s parameter names (anything else is refused).

    Raises:
        ValidationError: Not a mapping, an unknown field, or no ``task_type``; the caller
            adds the item's position to the message.
    """
    if not isinstance(spec, Mapping):
        raise ValidationError(f"expected a TaskSpec or a dict, got {type(spec).__name__}")
    unknown = set(spec) - _SPEC_NAMES
    if unknown:
        raise ValidationError(f"unknown field(s) {sorted(unknown)}")
    if "task_type" not in spec:
        raise ValidationError("task_type is required")
    get = spec.get
    return tuple([get(name, default) for name, default in _SPEC_DEFAULTS])


def _coerce_statuses(
    status: TaskStatus | str | Iterable[TaskStatus | str] | None,
) -> tuple[TaskStatus, ...] | None:
    if status is None:
        return None
    items = [status] if isinstance(status, (str, TaskStatus)) else list(status)
    out = []
    for item in items:
        try:
            out.append(TaskStatus(item))
        except ValueError:
            raise ValidationError(
                f"unknown status {item!r}; use one of {', '.join(s.value for s in TaskStatus)}"
            ) from None
    return tuple(out)


def _coerce_types(task_type: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if task_type is None:
        return None
    items = [task_type] if isinstance(task_type, str) else list(task_type)
    return tuple(validate_task_type(t) for t in items)


def _epoch(value: datetime | float | int, name: str) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ScheduleError(
                f"{name} is a naive datetime; pass an aware one, e.g. datetime.now(timezone.utc)"
            )
        return value.timestamp()
    if not is_number(value):
        raise ScheduleError(f"{name} must be an aware datetime or epoch seconds, got {value!r}")
    return validate_number(value, name)


class QueueClient:
    """Enqueue and manage tasks.

    Args:
        db: The queue database.
        default_retry_policy: The policy for task types without their own.
        retry_policies: A policy per task type; stored with each task at enqueue time.
        max_payload_bytes: Largest encoded payload accepted (1 MiB by default).
        observer: Told about each enqueue and retry, and may give a trace context for
            the tasks to carry (:class:`~prismq.queue.observability.tracing.TracingObserver`
            does); see :mod:`prismq.queue.runtime.observer`.

    Example:
        >>> import tempfile, pathlib
        >>> db = QueueDatabase(pathlib.Path(tempfile.mkdtemp()) / "queue.db")
        >>> _ = db.initialize_schema()
        >>> client = QueueClient(db)
        >>> task_id = client.enqueue("send_email", {"to": "a@example.com"})
        >>> client.get(task_id).status
        <TaskStatus.QUEUED: 'queued'>
        >>> db.close()
    """

    def __init__(
        self,
        db: QueueDatabase,
        *,
        default_retry_policy: RetryPolicy | None = None,
        retry_policies: Mapping[str, RetryPolicy] | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        observer: EnqueueObserver | None = None,
    ) -> None:
        if not is_int(max_payload_bytes) or max_payload_bytes < 2:
            raise ValidationError(f"max_payload_bytes must be an integer >= 2, got {max_payload_bytes!r}")
        self.db = db
        self.backend = db.backend
        self.default_retry_policy = default_retry_policy or RetryPolicy()
        self.retry_policies = dict(retry_policies or {})
        self.max_payload_bytes = max_payload_bytes
        self.observer = observer
        self._policy_json: dict[int, tuple[RetryPolicy, str]] = {}

    # -- enqueue ---------------------------------------------------------------
    def _policy_for(self, task_type: str, override: RetryPolicy | None) -> RetryPolicy:
        if override is not None:
            if not isinstance(override, RetryPolicy):
                raise ValidationError(f"retry_policy must be a RetryPolicy, got {type(override).__name__}")
            return override
        return self.retry_policies.get(task_type, self.default_retry_policy)

    def _encode_policy(self, policy: RetryPolicy) -> str:
        cached = self._policy_json.get(id(policy))
        if cached is not None:
            return cached[1]
        text = json.dumps(policy.to_dict(), separators=(",", ":"))
        if len(self._policy_json) < 256:
            # The entry keeps the policy alive: while it exists, no other object can be
            # given the same id and pick up this policy's text.
            self._policy_json[id(policy)] = (policy, text)
        return text

    def _prepare(
        self,
        task_type: str,
        payload: Any,
        priority: int,
        delay: float | None,
        run_after: datetime | float | None,
        max_attempts: int | None,
        retry_policy: RetryPolicy | None,
        idempotency_key: str | None,
        now: float,
        type_defaults: dict[str, tuple[int, str]],
    ) -> NewTask:
        """Validate one task's arguments and build its row.

        The checks run in a fixed order (task type, priority, schedule, retry policy,
        ``max_attempts``, payload, idempotency key), so a task with several faults always
        reports the same one.

        Args:
            task_type: As for :meth:`enqueue`.
            payload: As for :meth:`enqueue`.
            priority: As for :meth:`enqueue`.
            delay: As for :meth:`enqueue`.
            run_after: As for :meth:`enqueue`.
            max_attempts: As for :meth:`enqueue`.
            retry_policy: As for :meth:`enqueue`.
            idempotency_key: As for :meth:`enqueue`.
            now: The enqueue time (epoch seconds).
            type_defaults: A cache for one call: the task types validated so far, each
                with ``(max_attempts, policy JSON)`` of its policy. Filled in here, so a
                batch validates each task type and looks up its policy once.

        Raises:
            ValidationError: The subclass for the first faulty argument.
        """
        # Only an exact str is looked up: a subclass could compare equal to a validated
        # name while differing from it.
        known = type_defaults.get(task_type) if type(task_type) is str else None
        if known is None:
            task_type = validate_task_type(task_type)
        if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            priority = validate_priority(priority)  # raises, or accepts an int subclass
        if delay is not None and run_after is not None:
            raise ScheduleError("give either delay or run_after, not both")
        if delay is not None:
            when = now + validate_delay(delay)
        elif run_after is not None:
            when = _epoch(run_after, "run_after")
        else:
            when = now
        if not 0 <= when <= MAX_EPOCH_SECONDS:
            raise ScheduleError(
                f"run_after must be between 1970 and the year 3000, got {when!r} epoch seconds"
            )
        if retry_policy is None:
            if known is None:
                policy = self._policy_for(task_type, None)
                known = (policy.max_attempts, self._encode_policy(policy))
                if type(task_type) is str:
                    type_defaults[task_type] = known
            attempts, policy_json = known
        else:
            policy = self._policy_for(task_type, retry_policy)
            attempts, policy_json = policy.max_attempts, self._encode_policy(policy)
        if max_attempts is not None:
            if not is_int(max_attempts) or not 1 <= max_attempts <= 1000:
                raise ScheduleError(f"max_attempts must be an integer from 1 to 1000, got {max_attempts!r}")
            attempts = max_attempts
        # Positional, in NewTask's field order: a keyword call costs twice as much.
        return NewTask(
            task_type,
            encode_json(payload, "payload", self.max_payload_bytes),
            priority,
            when,
            attempts,
            policy_json,
            None if idempotency_key is None else validate_idempotency_key(idempotency_key),
        )

    def enqueue(
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
        """Add one task and return its id.

        Args:
            task_type: The kind of work; selects the handler (1-200 characters).
            payload: JSON-serialisable arguments for the handler (dicts, lists, strings,
                numbers, booleans, ``None``).
            priority: 0 (most urgent) to 1000; lower runs first under the Priority
                strategy. Default 100.
            delay: Seconds to wait before the task may run.
            run_after: An aware ``datetime`` or epoch seconds before which it may not run.
            max_attempts: Claims allowed (default: the retry policy's ``max_attempts``).
            retry_policy: Backoff for this task (default: the type's or the client's).
            idempotency_key: Enqueueing the same key again returns the existing task's id
                instead of adding a task; atomic, even across processes.
            concurrency_key: The key this task's concurrency and rate limits count it
                under (a tenant, an API host; 1-200 characters). See :mod:`prismq.queue.flow`.
            unique: Make the enqueue unique while an equal task is pending
                (:class:`~prismq.queue.flow.Unique`); not with ``idempotency_key``.

        Returns:
            The task id (the existing task's id when the idempotency key was seen, or an
            equal pending task was found under ``unique``).

        Raises:
            PayloadError: The payload is not JSON or is larger than ``max_payload_bytes``.
            TaskTypeError: The task type is empty, too long or not text.
            PriorityError: The priority is outside 0..1000.
            ScheduleError: A negative delay, both ``delay`` and ``run_after``, or bad
                ``max_attempts``.
            DuplicateTaskError: ``unique`` found an equal task and says to raise.
            QueueBusyError: The database stayed locked past the retry bound.
        """
        return self._enqueue(
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
        )[0]

    def enqueue_outcome(
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
        """Enqueue as :meth:`enqueue` does, and tell whether a task was added.

        ``enqueue`` gives the same id for a new task and for an existing one it returns
        (an idempotency key seen before, an equal pending task under ``unique``); this
        says which it was, from the same insert, so no second query can race it.

        Args:
            task_type: The kind of work, as for :meth:`enqueue`.
            payload: The handler's JSON-serialisable arguments.
            priority: 0 (most urgent) to 1000; default 100.
            delay: Seconds to wait before the task may run.
            run_after: An aware ``datetime`` or epoch seconds before which it may not run.
            max_attempts: Claims allowed (default: the retry policy's ``max_attempts``).
            retry_policy: Backoff for this task.
            idempotency_key: A key seen before returns its task (``created`` False).
            concurrency_key: The key its concurrency and rate limits count it under.
            unique: Return (or raise on) an equal pending task (``created`` False).

        Returns:
            ``Enqueued(task_id, created)``; ``created`` is False when the id is an
            existing task's.

        Raises:
            DuplicateTaskError: ``unique`` found an equal task and says to raise.
            ValidationError: Any argument :meth:`enqueue` refuses (its subclasses).
        """
        return Enqueued(
            *self._enqueue(
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
        )

    def _enqueue(
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
        """Add one task; ``(task id, created)``. Positional: the hot path of both enqueues."""
        now = self.db.now()
        new = self._prepare(
            task_type,
            payload,
            priority,
            delay,
            run_after,
            max_attempts,
            retry_policy,
            idempotency_key,
            now,
            {},  # one task: nothing to remember between tasks
        )
        flows: dict[int, FlowTask] = {}
        if concurrency_key is not None or unique is not None:
            flows[0] = self._flow_task(new, concurrency_key, unique, idempotency_key, now)
        if self.observer is not None:
            return self._insert_observed([new], now, flows)[0]
        return self._insert([new], now, flows)[0]

    def _flow_task(
        self, new: NewTask, concurrency_key: object, unique: object, idempotency_key: object, now: float
    ) -> FlowTask:
        """Validate a task's flow-control options and bind them to its row.

        Raises:
            ValidationError: A bad concurrency key, ``unique`` not a :class:`Unique`, or
                both ``unique`` and ``idempotency_key``.
        """
        key = validate_concurrency_key(concurrency_key)
        if unique is None:
            return FlowTask(new, key)
        if not isinstance(unique, Unique):
            raise ValidationError(f"unique must be a Unique, got {type(unique).__name__}")
        if idempotency_key is not None:
            raise ValidationError("give either idempotency_key or unique, not both")
        since = 0.0 if unique.period is None else now - unique.period
        return FlowTask(
            new,
            key,
            unique_key_for(unique, new.task_type, new.payload_json),
            since,
            unique.statuses,
            unique.on_duplicate == "raise",
        )

    def enqueue_many(self, tasks: Iterable[TaskSpec | Mapping[str, Any]]) -> list[int]:
        """Add many tasks in one transaction: all of them, or none.

        Every task is validated before anything is written, so one bad task rejects the
        whole batch with the error for that task (its index in the message).

        A task with ``unique`` equal to a pending task, or to one earlier in the same
        batch, gives that task's id (or, with ``on_duplicate="raise"``, the whole batch
        is refused with :class:`~prismq.queue.errors.DuplicateTaskError`).

        Args:
            tasks: :class:`TaskSpec` objects or dicts with ``enqueue``'s parameter names.

        Returns:
            The ids, in the order given.
        """
        now = self.db.now()
        prepared, flows = self._prepare_batch(tasks, now)
        if self.observer is not None:
            return [task_id for task_id, _ in self._insert_observed(prepared, now, flows)]
        return [task_id for task_id, _ in self._insert(prepared, now, flows)]

    def _prepare_batch(
        self, tasks: Iterable[TaskSpec | Mapping[str, Any]], now: float
    ) -> tuple[list[NewTask], dict[int, FlowTask]]:
        """Validate a batch for :meth:`enqueue_many`; the error names the faulty item's index.

        Returns:
            The rows, and the flow-control options of the tasks that have any, by index.
        """
        prepare = self._prepare
        type_defaults: dict[str, tuple[int, str]] = {}
        prepared: list[NewTask] = []
        flows: dict[int, FlowTask] = {}  # tasks with a concurrency key or a unique option
        for index, spec in enumerate(tasks):
            try:
                if isinstance(spec, TaskSpec):  # the common case: its fields as they are
                    options = (spec.concurrency_key, spec.unique, spec.idempotency_key)
                    new = prepare(
                        spec.task_type,
                        spec.payload,
                        spec.priority,
                        spec.delay,
                        spec.run_after,
                        spec.max_attempts,
                        spec.retry_policy,
                        spec.idempotency_key,
                        now,
                        type_defaults,
                    )
                else:
                    fields_ = _mapping_fields(spec)
                    task_type, payload, priority, delay, run_after = fields_[:5]
                    max_attempts, policy, key, concurrency_key, unique = fields_[5:]
                    new = prepare(
                        task_type,
                        payload,
                        priority,
                        delay,
                        run_after,
                        max_attempts,
                        policy,
                        key,
                        now,
                        type_defaults,
                    )
                    options = (concurrency_key, unique, key)
                if options[0] is not None or options[1] is not None:
                    flows[index] = self._flow_task(new, *options, now)
            except ValidationError as exc:
                raise type(exc)(f"task #{index}: {exc}") from None
            prepared.append(new)
        return prepared, flows

    # -- flow control ------------------------------------------------------------
    def set_concurrency_limit(
        self, limit: int, *, task_type: str | None = None, key: str | None = None
    ) -> None:
        """Allow at most ``limit`` tasks of a scope leased at once, across every worker.

        Args:
            limit: Most tasks leased at once (1 to 1,000,000).
            task_type: The task type covered (default: every type).
            key: The concurrency key covered (default: every key). Give one or both.

        Raises:
            ValidationError: No scope, or a bad limit, type or key.
        """
        task_type, key = validate_scope(task_type, key)
        self.backend.set_limit("concurrency", task_type, key, validate_limit(limit), None)

    def set_rate_limit(
        self, limit: int, period: float, *, task_type: str | None = None, key: str | None = None
    ) -> None:
        """Allow at most ``limit`` claims of a scope's tasks in any ``period`` seconds.

        Args:
            limit: Most claims per period (1 to 1,000,000).
            period: The window, in seconds.
            task_type: The task type covered (default: every type).
            key: The concurrency key covered (default: every key). Give one or both.

        Raises:
            ValidationError: No scope, or a bad limit, period, type or key.
        """
        task_type, key = validate_scope(task_type, key)
        self.backend.set_limit("rate", task_type, key, validate_limit(limit), validate_period(period))

    def remove_concurrency_limit(self, *, task_type: str | None = None, key: str | None = None) -> bool:
        """Remove a scope's concurrency limit; return False when it had none."""
        task_type, key = validate_scope(task_type, key)
        return self.backend.remove_limit("concurrency", task_type, key)

    def remove_rate_limit(self, *, task_type: str | None = None, key: str | None = None) -> bool:
        """Remove a scope's rate limit (and its recorded claims); return False when it had none."""
        task_type, key = validate_scope(task_type, key)
        return self.backend.remove_limit("rate", task_type, key)

    def list_limits(self) -> list[FlowLimit]:
        """Every limit, ordered by task type then key (``""`` stands for "every")."""
        return list(self.backend.list_limits())

    def limit_usage(self) -> dict[tuple[str, str], tuple[int, int]]:
        """What each limit counts now, by scope ``(task type, key)``.

        Returns:
            Per limit: ``(tasks of its scope leased now, claims within its rate period)``;
            each is 0 for the kind of limit the scope does not have.
        """
        return self.backend.limit_usage(self.db.now())

    def _insert(
        self, tasks: list[NewTask], now: float, flows: Mapping[int, FlowTask]
    ) -> builtins.list[tuple[int, bool]]:
        """Insert ``tasks`` in one transaction; ``(id, created)`` per task.

        ``flows`` holds the flow options, by index.
        """
        if not flows:
            return self.backend.insert_tasks(tasks, now)
        batch = [flows[i]._replace(task=new) if i in flows else FlowTask(new) for i, new in enumerate(tasks)]
        return self.backend.insert_flow_tasks(batch, now)

    def _insert_observed(
        self, tasks: list[NewTask], now: float, flows: Mapping[int, FlowTask]
    ) -> builtins.list[tuple[int, bool]]:
        """Insert ``tasks`` with the observer told, carrying the trace context it gives."""
        assert self.observer is not None
        observation = self.observer.enqueue_started([t.task_type for t in tasks])
        if observation is None:
            return self._insert(tasks, now, flows)
        if observation.trace_context is not None:
            tasks = [t._replace(trace_context=observation.trace_context) for t in tasks]
        try:
            inserted = self._insert(tasks, now, flows)
        except BaseException as exc:
            observation.finished([], exc)
            raise
        observation.finished([task_id for task_id, _ in inserted])
        return inserted

    # -- queries ---------------------------------------------------------------
    def get(self, task_id: int) -> Task:
        """The task with this id.

        Raises:
            TaskNotFoundError: No such task (never existed, or pruned).
        """
        task = self.backend.get_task(validate_task_id(task_id))
        if task is None:
            raise TaskNotFoundError(f"no task with id {task_id}")
        return task

    def list(
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
        """Tasks matching every given filter.

        Args:
            status: One status or several.
            task_type: One task type or several.
            created_after: Keep tasks created at or after this time.
            created_before: Keep tasks created before this time.
            limit: Most tasks returned (1..10,000).
            offset: Tasks skipped first, for paging.
            newest_first: Newest (highest id) first, or oldest first.
        """
        query = self._task_query(
            status, task_type, created_after, created_before, limit, offset, newest_first
        )
        return self.backend.list_tasks(query)

    @staticmethod
    def _task_query(
        status: TaskStatus | str | Iterable[TaskStatus | str] | None,
        task_type: str | Iterable[str] | None,
        created_after: datetime | float | None,
        created_before: datetime | float | None,
        limit: int,
        offset: int,
        newest_first: bool,
    ) -> TaskQuery:
        """Check :meth:`list`'s filters and build the backend's query."""
        if not is_int(limit) or not 1 <= limit <= 10_000:
            raise ValidationError(f"limit must be an integer from 1 to 10000, got {limit!r}")
        if not is_int(offset) or not 0 <= offset <= MAX_TASK_ID:
            raise ValidationError(f"offset must be an integer from 0 to {MAX_TASK_ID}, got {offset!r}")
        query = TaskQuery(
            statuses=_coerce_statuses(status),
            task_types=_coerce_types(task_type),
            created_after=None if created_after is None else _epoch(created_after, "created_after"),
            created_before=None if created_before is None else _epoch(created_before, "created_before"),
            limit=limit,
            offset=offset,
            newest_first=bool(newest_first),
        )
        return query

    def count_by_status(self) -> dict[str, int]:
        """Task count per status, every status included."""
        return self.backend.count_by_status()

    def count_by_type(self) -> dict[str, dict[str, int]]:
        """Per task type, the count per status."""
        return self.backend.count_by_type()

    def stats(self) -> QueueStats:
        """A consistent snapshot: counts, ready/delayed, oldest wait, throughput, workers."""
        return self.backend.stats(self.db.now())

    def list_workers(self, stale_after: float | None = None) -> builtins.list[WorkerInfo]:
        """Registered workers; with ``stale_after``, only those silent for that many seconds."""
        if stale_after is not None:
            stale_after = validate_delay(stale_after, "stale_after")
        workers = self.backend.list_workers()
        if stale_after is None:
            return workers
        now = datetime.fromtimestamp(self.db.now(), tz=timezone.utc)
        return [w for w in workers if w.is_stale(now, stale_after)]

    def page(
        self,
        *,
        status: TaskStatus | str | None = None,
        task_type: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        search: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> TaskPage:
        """One page of tasks, read by keyset off an index (fast at any depth of paging).

        Each status has its own order: every status (``None``) newest first; queued by
        task type then due time; leased by lease end; completed, dead and cancelled
        newest finished first. ``since`` and ``until`` bound the time of that order
        (creation time when no status is given).

        Args:
            status: The status listed (``None``: all).
            task_type: Only this task type.
            since: Only tasks whose ordering time is at or after this.
            until: Only tasks whose ordering time is before this.
            search: Only tasks whose payload (as JSON text) or last error contains this
                text (1-200 characters; matched case-sensitively).
            cursor: ``next_cursor`` of the previous page.
            limit: Most tasks in the page (1..1000).

        Raises:
            ValidationError: A bad status, type, time, search text, cursor or limit.
        """
        if not is_int(limit) or not 1 <= limit <= 1000:
            raise ValidationError(f"limit must be an integer from 1 to 1000, got {limit!r}")
        statuses = _coerce_statuses(status)
        page = self.backend.page_tasks(
            self._page_query(
                statuses[0] if statuses else None,
                task_type,
                since,
                until,
                search,
                _decode_cursor(cursor),
                limit,
            )
        )
        return TaskPage(page.tasks, None if page.next_cursor is None else json.dumps(list(page.next_cursor)))

    def _page_query(
        self,
        status: TaskStatus | None,
        task_type: str | None,
        since: datetime | float | None,
        until: datetime | float | None,
        search: str | None,
        cursor: tuple[Any, ...] | None,
        limit: int,
    ) -> PageQuery:
        if search is not None and (not isinstance(search, str) or not 1 <= len(search) <= _MAX_SEARCH):
            raise ValidationError(f"search must be text of 1 to {_MAX_SEARCH} characters, got {search!r}")
        return PageQuery(
            status=status,
            task_type=None if task_type is None else validate_task_type(task_type),
            since=None if since is None else _epoch(since, "since"),
            until=None if until is None else _epoch(until, "until"),
            search=search,
            cursor=cursor,
            limit=limit,
        )

    def finished_histogram(self, window: float, step: float) -> builtins.list[tuple[int, str, int]]:
        """Tasks finished over the last ``window`` seconds, per ``step``-second bucket.

        Returns:
            ``(bucket, status, count)`` rows; bucket 0 starts ``window`` seconds ago.
        """
        window = validate_delay(window, "window")
        step = validate_delay(step, "step")
        if step <= 0:
            raise ValidationError("step must be more than 0 seconds")
        return self.backend.finished_histogram(self.db.now() - window, step)

    # -- flow control ----------------------------------------------------------
    def pause(self, task_type: str) -> bool:
        """Stop every worker, in every process, from claiming tasks of this type.

        Tasks of the type keep being enqueued and wait; tasks already running finish.
        The pause is stored in the database, so it holds across restarts until
        :meth:`resume`. Every claim that starts after this returns honours it.

        Returns:
            True when the type was paused now, False when it was paused already.

        Raises:
            TaskTypeError: Not a valid task type.
        """
        return self.backend.pause_task_type(validate_task_type(task_type), self.db.now())

    def resume(self, task_type: str) -> bool:
        """Let workers claim tasks of this type again (and wake idle ones).

        Returns:
            True when the type was paused, False when it was not.

        Raises:
            TaskTypeError: Not a valid task type.
        """
        return self.backend.resume_task_type(validate_task_type(task_type))

    def paused(self) -> dict[str, datetime]:
        """The paused task types, each with the time it was paused."""
        return {
            task_type: datetime.fromtimestamp(at, tz=timezone.utc)
            for task_type, at in self.backend.paused_task_types().items()
        }

    # -- management ------------------------------------------------------------
    def cancel(self, task_id: int) -> Task:
        """Cancel a task.

        A queued task is cancelled at once. A running (leased) task is flagged
        (``cancel_requested``): its worker sees the flag at its next heartbeat and stops;
        the task becomes cancelled when the worker acknowledges, or when its lease expires.

        Raises:
            TaskNotFoundError: No such task.
            TaskStateError: The task already finished.
        """
        return self.backend.cancel_task(validate_task_id(task_id), self.db.now())

    def retry(self, task_id: int, *, reset_attempts: bool = True) -> Task:
        """Queue a dead or cancelled task again, to run now.

        Args:
            task_id: The task.
            reset_attempts: Start counting attempts from zero (default); otherwise allow
                exactly one more attempt.

        Raises:
            TaskNotFoundError: No such task.
            TaskStateError: The task is not dead or cancelled.
        """
        task = self.backend.retry_task(validate_task_id(task_id), self.db.now(), bool(reset_attempts))
        if self.observer is not None:
            self.observer.task_retried(task)
        return task

    def delete(self, task_id: int) -> None:
        """Delete one task that is not running.

        Raises:
            TaskNotFoundError: No such task.
            TaskStateError: The task is running (cancel it first), or it is the newest
                task in the database, which is kept so its id is never handed out again.
        """
        task = self.get(task_id)
        if task.status is TaskStatus.LEASED:
            raise TaskStateError(f"task {task_id} is running; cancel it first, then delete it")
        if not self.backend.change_tasks("delete", (task.id,), self.db.now()):
            if self.backend.get_task(task.id) is None:
                raise TaskNotFoundError(f"no task with id {task_id}")
            raise TaskStateError(
                f"task {task_id} is the newest task, kept so that its id is never handed out "
                "again; it can be deleted once a newer task exists"
            )

    def _bulk(
        self,
        action: str,
        allowed: tuple[TaskStatus, ...],
        status: TaskStatus | str | Iterable[TaskStatus | str] | None,
        task_type: str | None,
        since: datetime | float | None,
        until: datetime | float | None,
        search: str | None,
    ) -> int:
        chosen = _coerce_statuses(status) or allowed
        wrong = [s.value for s in chosen if s not in allowed]
        if wrong:
            raise ValidationError(
                f"{action} applies to {', '.join(s.value for s in allowed)} tasks, not {', '.join(wrong)}"
            )
        changed = 0
        for one in dict.fromkeys(chosen):
            cursor = None
            while True:
                query = self._page_query(one, task_type, since, until, search, cursor, _BULK_BATCH)
                page = self.backend.page_tasks(query)
                if page.tasks:
                    changed += self.backend.change_tasks(action, [t.id for t in page.tasks], self.db.now())
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        return changed

    def delete_many(
        self,
        *,
        status: TaskStatus | str | Iterable[TaskStatus | str] | None = None,
        task_type: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        search: str | None = None,
    ) -> int:
        """Delete every task matching the filter (as for :meth:`page`) that is not running.

        Runs in batches of 500 tasks, one transaction each. The newest task in the
        database is kept (see :meth:`delete`).

        Args:
            status: Queued, completed, dead or cancelled, or several (default: those four).
            task_type: Only this task type.
            since: Only tasks whose ordering time (see :meth:`page`) is at or after this.
            until: Only tasks whose ordering time is before this.
            search: Only tasks whose payload or last error contains this text.

        Returns:
            How many tasks were deleted.

        Raises:
            ValidationError: A bad filter, or ``leased`` among the statuses.
        """
        allowed = (TaskStatus.QUEUED, TaskStatus.COMPLETED, TaskStatus.DEAD, TaskStatus.CANCELLED)
        return self._bulk("delete", allowed, status, task_type, since, until, search)

    def retry_many(
        self,
        *,
        status: TaskStatus | str | Iterable[TaskStatus | str] | None = None,
        task_type: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        search: str | None = None,
    ) -> int:
        """Queue again every dead or cancelled task matching the filter, attempts reset.

        Arguments as for :meth:`delete_many`; ``status`` is dead, cancelled or both
        (the default).

        Returns:
            How many tasks were queued again.
        """
        return self._bulk(
            "retry", (TaskStatus.DEAD, TaskStatus.CANCELLED), status, task_type, since, until, search
        )

    def cancel_many(
        self,
        *,
        status: TaskStatus | str | Iterable[TaskStatus | str] | None = None,
        task_type: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        search: str | None = None,
    ) -> int:
        """Cancel every queued task matching the filter, and flag every running one.

        A running task is cancelled when its worker next heartbeats (as for
        :meth:`cancel`). Arguments as for :meth:`delete_many`; ``status`` is queued,
        leased or both (the default).

        Returns:
            How many tasks were cancelled or flagged.
        """
        return self._bulk(
            "cancel", (TaskStatus.QUEUED, TaskStatus.LEASED), status, task_type, since, until, search
        )

    def prune(
        self,
        older_than: float | timedelta,
        statuses: Iterable[TaskStatus | str] = (TaskStatus.COMPLETED, TaskStatus.CANCELLED),
    ) -> int:
        """Delete finished tasks that finished more than ``older_than`` ago.

        The newest task in the database is never deleted, so a task id is never handed
        out twice (a client may hold an old id; it keeps meaning the same task, or none).

        Args:
            older_than: Age in seconds (or a ``timedelta``).
            statuses: Terminal statuses to delete (completed and cancelled by default;
                add ``"dead"`` to drop failures too).

        Returns:
            How many tasks were deleted.

        Raises:
            ValidationError: A negative age, or a status that is not terminal.
        """
        seconds, chosen = self._prune_args(older_than, statuses)
        return self.backend.prune(self.db.now() - seconds, chosen)

    @staticmethod
    def _prune_args(
        older_than: float | timedelta, statuses: Iterable[TaskStatus | str]
    ) -> tuple[float, tuple[TaskStatus, ...]]:
        """Check :meth:`prune`'s arguments: the age in seconds and the chosen statuses."""
        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        seconds = validate_delay(seconds, "older_than")
        chosen = _coerce_statuses(list(statuses)) or ()
        live = [s.value for s in chosen if s not in TERMINAL_STATUSES]
        if live:
            raise ValidationError(
                f"prune deletes finished tasks only; {', '.join(live)} is not a finished status"
            )
        return seconds, chosen

    # -- results ---------------------------------------------------------------
    def get_result(self, task_id: int) -> Any:
        """The result of a completed task.

        Raises:
            TaskNotFoundError: No such task.
            TaskStateError: The task has not completed (the message carries its status and
                last error).
        """
        task = self.get(task_id)
        if task.status is not TaskStatus.COMPLETED:
            detail = f": {task.last_error}" if task.last_error else ""
            raise TaskStateError(f"task {task_id} is {task.status.value}, not completed{detail}")
        return task.result

    def wait(self, task_id: int, timeout: float | None = None, poll_interval: float = 0.05) -> Task:
        """Block until the task is completed, dead or cancelled, and return it.

        Reads are cheap: between checks the client only reads SQLite's ``data_version``,
        which changes when another connection commits.

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
        last_version = None
        while True:
            version = self.backend.data_version()
            if version != last_version:
                task = self.get(task_id)
                if task.is_terminal:
                    return task
                last_version = version
                pause = 0.001
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueTimeoutError(f"task {task_id} is still {task.status.value} after {timeout} s")
            sleep_for = pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0))
            time.sleep(sleep_for)
            pause = min(pause * 2, poll_interval)

    # -- periodic schedules ----------------------------------------------------
    @property
    def schedules(self) -> Schedules:
        """The database's periodic schedules (add, list, pause, resume, remove, run now).

        See :class:`~prismq.queue.schedules.Schedules`.
        """
        return Schedules(self.db)
