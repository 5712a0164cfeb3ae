"""``TaskContext``: what a handler receives while its task runs."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..errors import QueueError

if TYPE_CHECKING:
    from ..models import Task
    from ..worker import QueueWorker

__all__ = ["TaskCancelled", "TaskContext", "TaskFailed"]


class TaskCancelled(QueueError):
    """Raise from a handler to stop because cancellation was requested."""


class TaskFailed(QueueError):
    """Raise from a handler to fail the task with a message.

    Args:
        message: Why it failed.
        retry: False makes the failure final (the task goes dead) whatever attempts are left.
    """

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class TaskContext:
    """The running task, as a handler sees it.

    Attributes:
        task: The task as claimed.
        worker_id: The id of the worker running it.
        logger: A logger whose records carry task id, type, attempt and worker id.
    """

    def __init__(
        self, task: Task, worker: QueueWorker, logger: logging.LoggerAdapter[logging.Logger]
    ) -> None:
        self.task = task
        self.worker_id = worker.worker_id
        self.logger = logger
        self._worker = worker
        # Plain flags, set by the runner's loop and read by the handler's thread: a bool
        # attribute is written and read whole, and one is built per task (no locks needed).
        self._cancel = False
        self._lease_lost = False

    @property
    def payload(self) -> Any:
        """The task's JSON payload."""
        return self.task.payload

    @property
    def task_id(self) -> int:
        """The task's id."""
        return self.task.id

    @property
    def attempt(self) -> int:
        """Which attempt this is (1 for the first)."""
        return self.task.attempts

    @property
    def cancel_requested(self) -> bool:
        """True once ``QueueClient.cancel`` was called for this task, or on timeout/shutdown."""
        return self._cancel

    @property
    def lease_lost(self) -> bool:
        """True when the worker lost the lease; the outcome of this attempt will be discarded."""
        return self._lease_lost

    def raise_if_cancelled(self) -> None:
        """Raise :class:`TaskCancelled` when cancellation was requested."""
        if self._cancel:
            raise TaskCancelled(f"task {self.task.id} was cancelled")

    def report_progress(self, percent: float, message: str | None = None) -> None:
        """Record progress (0..100) in the queue; visible to ``QueueClient.get`` at once.

        Safe to call from the handler's thread. From ``async def`` handlers prefer
        :meth:`areport_progress`, which does not block the event loop.

        Raises:
            LeaseLostError: The lease is gone; stop working, the result will be discarded.
        """
        self._worker.update_progress(self.task.id, percent, message)

    async def areport_progress(self, percent: float, message: str | None = None) -> None:
        """:meth:`report_progress` run off the event loop."""
        await asyncio.to_thread(self.report_progress, percent, message)

    def _request_cancel(self) -> None:
        self._cancel = True

    def _mark_lease_lost(self) -> None:
        self._lease_lost = True
        self._cancel = True
