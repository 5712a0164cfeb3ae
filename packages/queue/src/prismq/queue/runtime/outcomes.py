"""Saving an attempt's outcome through transient errors, and handlers that raise BaseException.

Two rules keep a finished attempt from being lost or run twice:

* A busy database (:class:`~prismq.queue.errors.QueueBusyError`) or a dropped server
  connection (:class:`~prismq.queue.errors.BackendUnavailableError`) while the outcome is
  saved is retried with growing pauses for as long as the lease lasts (at most one lease
  duration). Only then is the attempt given up: the lease is no longer renewed, and the task
  runs again once it expires.
* A handler that raises a ``BaseException`` that is not an ``Exception`` never leaves its
  task leased: :func:`base_exception_outcome` says what the runtime does with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import BackendUnavailableError, QueueBusyError
from ..worker import QueueWorker

__all__ = [
    "OUTCOME_RETRY_FIRST_PAUSE",
    "OUTCOME_RETRY_MAX_PAUSE",
    "TRANSIENT_ERRORS",
    "HandlerEscaped",
    "base_exception_outcome",
    "guard_coroutine",
    "save_with_retry",
]

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (QueueBusyError, BackendUnavailableError)
"""Errors after which saving an outcome is tried again."""

OUTCOME_RETRY_FIRST_PAUSE = 0.05
"""Seconds before the first new try; each pause doubles up to the maximum."""

OUTCOME_RETRY_MAX_PAUSE = 1.0
"""Longest pause between two tries."""


async def save_with_retry(
    save: Callable[[], Awaitable[T]], worker: QueueWorker, task_id: int, log: logging.LoggerAdapter[Any]
) -> T:
    """Run ``save`` (a fenced finishing call), retrying transient errors while the lease lasts.

    Args:
        save: Makes one try (a new call each time).
        worker: The worker holding the task; its lease expiry bounds the retries.
        task_id: The task whose outcome is saved.
        log: The task's logger.

    Returns:
        What ``save`` returned.

    Raises:
        QueueBusyError: Or :class:`~prismq.queue.errors.BackendUnavailableError`, the last
            transient error, once the lease would expire before the next try or a lease
            duration has passed since the first failure.
    """
    loop = asyncio.get_running_loop()
    pause = OUTCOME_RETRY_FIRST_PAUSE
    give_up_at: float | None = None
    tries = 0
    while True:
        tries += 1
        try:
            return await save()
        except TRANSIENT_ERRORS as exc:
            now = loop.time()
            if give_up_at is None:
                give_up_at = now + worker.lease_duration
            held = worker.held_tasks.get(task_id)
            lease_left = (
                held.lease_until.timestamp() - worker.db.now()
                if held is not None and held.lease_until is not None
                else 0.0
            )
            if now + pause > give_up_at or pause >= lease_left:
                log.error("could not save the outcome after %d tries: %s", tries, exc)
                raise
            log.warning("saving the outcome failed (%s); trying again in %.2f s", exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, OUTCOME_RETRY_MAX_PAUSE)


class HandlerEscaped(Exception):
    """Carries a ``KeyboardInterrupt`` or ``SystemExit`` out of an async handler's task.

    asyncio re-raises those two from the event loop itself when a task's coroutine raises
    them, which would stop every other task of the worker; wrapped, they reach the runtime
    like any other outcome.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original


async def guard_coroutine(awaitable: Awaitable[T]) -> T:
    """Await an async handler, wrapping ``KeyboardInterrupt``/``SystemExit`` in :class:`HandlerEscaped`."""
    try:
        return await awaitable
    except (KeyboardInterrupt, SystemExit) as exc:
        raise HandlerEscaped(exc) from exc


def base_exception_outcome(exc: BaseException) -> str:
    """What the runtime does with an attempt whose handler raised ``exc`` (not an ``Exception``).

    Returns:
        ``"release"`` for ``KeyboardInterrupt``: the task goes back to the queue without
        using an attempt and the worker stops. ``"fail_and_exit"`` for ``SystemExit``: the
        attempt fails (retried per the task's policy), the worker stops and ``run()``
        re-raises it. ``"fail"`` for anything else (a custom ``BaseException``, a
        ``CancelledError`` from a future the handler awaited): the attempt fails and is
        retried per the policy; the worker goes on.
    """
    if isinstance(exc, KeyboardInterrupt):
        return "release"
    if isinstance(exc, SystemExit):
        return "fail_and_exit"
    return "fail"
