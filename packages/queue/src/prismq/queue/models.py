"""The task model: statuses, the transition table, and immutable records.

These types sit at the bottom of the package: they import nothing from the rest of
PrismQ Queue, and every other module speaks in them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "DEFAULT_PRIORITY",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "TASK_TRANSITIONS",
    "Task",
    "TaskStatus",
    "UndecodableValue",
    "WorkerInfo",
    "epoch_to_datetime",
]

MIN_PRIORITY = 0
"""The most urgent priority. A lower number runs first."""

MAX_PRIORITY = 1000
"""The least urgent priority."""

DEFAULT_PRIORITY = 100
"""The priority a task gets when none is given."""


class TaskStatus(str, enum.Enum):
    """Where a task is in its life.

    Attributes:
        QUEUED: Waiting to run; ready once ``run_after`` has passed.
        LEASED: Claimed by a worker that holds a time-limited lease on it (running).
        COMPLETED: Finished successfully; ``result`` holds what the handler returned.
        DEAD: Failed for good: every attempt was used, or the failure was final.
        CANCELLED: Cancelled before it finished.
    """

    QUEUED = "queued"
    LEASED = "leased"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for statuses a task never leaves on its own (completed, dead, cancelled)."""
        return self in TERMINAL_STATUSES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.DEAD, TaskStatus.CANCELLED})

TASK_TRANSITIONS: dict[tuple[TaskStatus, TaskStatus], str] = {
    (TaskStatus.QUEUED, TaskStatus.LEASED): "claim",
    (TaskStatus.QUEUED, TaskStatus.CANCELLED): "cancel",
    (TaskStatus.LEASED, TaskStatus.COMPLETED): "complete",
    (TaskStatus.LEASED, TaskStatus.QUEUED): "fail with retry / release / lease expired",
    (TaskStatus.LEASED, TaskStatus.DEAD): "fail, attempts exhausted / lease expired on last attempt",
    (TaskStatus.LEASED, TaskStatus.CANCELLED): (
        "cancellation acknowledged by the worker / lease expired with cancel requested"
    ),
    (TaskStatus.DEAD, TaskStatus.QUEUED): "retry",
    (TaskStatus.CANCELLED, TaskStatus.QUEUED): "retry",
}
"""Every legal status change, mapped to the event that causes it.

The state-machine diagram in the documentation is generated from this table, and the
backends only ever perform these transitions.
"""


def epoch_to_datetime(value: float | None) -> datetime | None:
    """Convert stored UTC epoch seconds to an aware ``datetime`` (``None`` stays ``None``)."""
    if value is None:
        return None
    return datetime.fromtimestamp(value, tz=timezone.utc)


@dataclass(frozen=True)
class UndecodableValue:
    """Stands in for a stored payload or result that cannot be decoded as JSON.

    The queue never stores such a value itself, but a row written by hand or by other
    software can hold one (invalid JSON, or nesting too deep for the decoder). Reading the
    task gives this marker instead of raising, so one bad row never stops a listing or a
    claim; a worker that claims such a task marks it dead at once, with the reason as its
    error, and runs the rest of the batch.

    Attributes:
        reason: Why decoding failed.
        text: The start of the stored text (at most 200 characters).
    """

    reason: str
    text: str


@dataclass(frozen=True)
class Task:
    """One task, as stored. Immutable: every change goes through the client or a worker.

    Attributes:
        id: The task's id, unique in its database.
        task_type: The name that selects the handler, such as ``"video_processing"``.
        payload: The JSON arguments given at enqueue time (an :class:`UndecodableValue`
            if the stored text cannot be decoded).
        status: Where the task is in its life.
        priority: Lower runs first under the Priority strategy (0..1000, default 100).
        attempts: How many times the task has been claimed.
        max_attempts: Claims allowed before a failure makes the task dead.
        run_after: The earliest time the task may be claimed (UTC).
        lease_until: When the current lease expires, while leased.
        locked_by: The worker id holding the lease, while leased.
        lease_token: The per-claim fencing token, while leased.
        progress: Percent done (0..100) as last reported by the worker.
        progress_message: The message that came with the last progress report.
        result: What the handler returned (JSON), once completed (an
            :class:`UndecodableValue` if the stored text cannot be decoded).
        last_error: The message of the most recent failure.
        last_traceback: The traceback of the most recent failure, if one was given.
        idempotency_key: The caller's deduplication key, if one was given.
        cancel_requested: True once cancellation was asked for while the task ran.
        created_at: When the task was enqueued (UTC).
        started_at: When the most recent attempt was claimed (UTC).
        finished_at: When the task reached a terminal status (UTC).
        retry_policy: The backoff settings used when an attempt fails.
        trace_context: The W3C trace context (JSON text) of the code that enqueued the
            task, when tracing was on (see :mod:`prismq.queue.observability.tracing`).
    """

    id: int
    task_type: str
    payload: Any
    status: TaskStatus
    priority: int
    attempts: int
    max_attempts: int
    run_after: datetime
    created_at: datetime
    lease_until: datetime | None = None
    locked_by: str | None = None
    lease_token: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    result: Any = None
    last_error: str | None = None
    last_traceback: str | None = None
    idempotency_key: str | None = None
    cancel_requested: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    retry_policy: dict[str, float] = field(default_factory=dict, repr=False)
    trace_context: str | None = field(default=None, repr=False)

    @property
    def attempts_left(self) -> int:
        """Claims still allowed before a failure makes the task dead."""
        return max(self.max_attempts - self.attempts, 0)

    @property
    def is_terminal(self) -> bool:
        """True when the task is completed, dead or cancelled."""
        return self.status.is_terminal


@dataclass(frozen=True)
class WorkerInfo:
    """A worker's entry in the worker registry.

    Attributes:
        worker_id: The worker's id.
        hostname: The machine it runs on.
        pid: Its operating-system process id.
        task_types: The task types it claims (``None``: all types).
        strategy: The name of its scheduling strategy.
        started_at: When it registered (UTC).
        last_heartbeat: When it last claimed, renewed or heartbeated (UTC).
    """

    worker_id: str
    hostname: str
    pid: int
    task_types: tuple[str, ...] | None
    strategy: str
    started_at: datetime
    last_heartbeat: datetime

    def is_stale(self, now: datetime, stale_after: float) -> bool:
        """True when the last heartbeat is older than ``stale_after`` seconds."""
        return (now - self.last_heartbeat).total_seconds() > stale_after
