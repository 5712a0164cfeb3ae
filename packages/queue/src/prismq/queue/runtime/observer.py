"""Hooks the worker loop calls as tasks run: the way metrics and tracing plug in.

:class:`~prismq.queue.runtime.WorkerRunner` tells each observer when an attempt starts
and how it ended, and knows nothing else about them: the Prometheus metrics
(:mod:`prismq.queue.observability.metrics`) and the OpenTelemetry spans
(:mod:`prismq.queue.observability.tracing`) are observers, and so is anything you write.

The *Metrics and traces* page of the documentation shows an observer of your own.

:class:`EnqueueObserver` is the client's side: :class:`~prismq.queue.QueueClient` tells it
about each enqueue (and each retry by hand), and stores the trace context it gives with
the tasks.

The runner calls an observer on its event-loop thread. It calls
:meth:`TaskObserver.task_started` inside a ``contextvars`` context made for that task,
which the handler then runs in (sync or async): a context variable set there, such as
the current trace span, is seen by the handler and by nothing else. An observer that
raises is logged and ignored: it never changes what happens to a task.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models import Task

__all__ = [
    "EnqueueObservation",
    "EnqueueObserver",
    "MultiObserver",
    "TaskObservation",
    "TaskObserver",
    "TaskOutcome",
]

logger = logging.getLogger("prismq.queue.observer")


class TaskOutcome(str, enum.Enum):
    """How one attempt ended, as the worker saw it.

    Attributes:
        COMPLETED: The handler returned and the task was completed.
        RETRIED: The attempt failed and the task went back to the queue for a retry.
        DEAD: The attempt failed for good (no attempt left, or a final failure).
        CANCELLED: The task was cancelled on request while it ran.
        RELEASED: The worker gave the task back unfinished at shutdown.
        LEASE_LOST: The worker lost its lease; the outcome was discarded.
        ABANDONED: The worker stopped at once (second signal) with the task running, or
            could not save the outcome; the lease expires and the task runs again.
    """

    COMPLETED = "completed"
    RETRIED = "retried"
    DEAD = "dead"
    CANCELLED = "cancelled"
    RELEASED = "released"
    LEASE_LOST = "lease_lost"
    ABANDONED = "abandoned"


class TaskObservation:
    """What an observer keeps about one running attempt.

    The runner calls :meth:`finished` exactly once per attempt.
    """

    def finished(self, outcome: TaskOutcome, error: BaseException | None = None) -> None:
        """The attempt ended.

        Args:
            outcome: How it ended.
            error: The exception of a failed attempt (``RETRIED`` or ``DEAD``), else ``None``.
        """


class TaskObserver:
    """Told when each attempt starts; the base class observes nothing."""

    def task_started(self, task: Task, worker_id: str) -> TaskObservation | None:
        """An attempt of ``task`` starts on worker ``worker_id``, just before its handler.

        Args:
            task: The task as claimed (``attempts`` counts this attempt).
            worker_id: The worker running it.

        Returns:
            An observation to be told how the attempt ended, or ``None`` to not be told.
        """
        return None


class _Observations(TaskObservation):
    def __init__(self, parts: list[TaskObservation]) -> None:
        self.parts = parts

    def finished(self, outcome: TaskOutcome, error: BaseException | None = None) -> None:
        for part in self.parts:
            try:
                part.finished(outcome, error)
            except Exception:
                logger.exception("task observer %r failed; ignored", part)


class MultiObserver(TaskObserver):
    """Several observers as one, each shielded from the others' errors.

    Args:
        observers: The observers, called in this order.
    """

    def __init__(self, observers: Sequence[TaskObserver]) -> None:
        self.observers = list(observers)

    def task_started(self, task: Task, worker_id: str) -> TaskObservation | None:
        """Start every observer's observation; ``None`` when none wants to be told."""
        parts = []
        for observer in self.observers:
            try:
                observation = observer.task_started(task, worker_id)
            except Exception:
                logger.exception("task observer %r failed; ignored", observer)
                continue
            if observation is not None:
                parts.append(observation)
        return _Observations(parts) if parts else None


class EnqueueObservation:
    """What an enqueue observer keeps about one ``enqueue`` or ``enqueue_many`` call.

    Attributes:
        trace_context: Stored with every task of the call (JSON text of a W3C trace
            context), or ``None`` to store nothing.
    """

    trace_context: str | None = None

    def finished(self, task_ids: Sequence[int], error: BaseException | None = None) -> None:
        """The insert ended.

        Args:
            task_ids: The tasks' ids, in the order given (empty when the insert failed).
            error: The exception that failed the insert, else ``None``.
        """


class EnqueueObserver:
    """Told about each enqueue of a :class:`~prismq.queue.QueueClient`; observes nothing."""

    def enqueue_started(self, task_types: Sequence[str]) -> EnqueueObservation | None:
        """Tasks of these types (one per task, in order) are about to be inserted.

        Called after the tasks were validated, before the insert.

        Returns:
            An observation, whose ``trace_context`` the tasks store, or ``None``.
        """
        return None

    def task_retried(self, task: Task) -> None:
        """``QueueClient.retry`` queued a dead or cancelled task again (``task`` as it is now)."""
