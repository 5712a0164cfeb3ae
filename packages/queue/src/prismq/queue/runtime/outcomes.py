"""Saving an attempt's outcome through transient errors, and handlers that raise BaseException.

Two rules keep a finished attempt from being lost or run twice:

* A busy database (:class:`~prismq.queue.errors.QueueBusyError`) or a dropped server
  connection (:class:`~prismq.queue.errors.BackendUnavailableError`) while outcomes are
  saved is retried with growing pauses (:data:`OUTCOME_RETRY_FIRST_PAUSE` doubling up to
  :data:`OUTCOME_RETRY_MAX_PAUSE`) for as long as the leases last (at most one lease
  duration); the runner's group commit does this for each batch of outcomes. Only then are
  the attempts given up: the leases are no longer renewed, and the tasks run again once they
  expire.
* A handler that raises a ``BaseException`` that is not an ``Exception`` never leaves its
  task leased: :func:`base_exception_outcome` says what the runtime does with it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from ..errors import BackendUnavailableError, QueueBusyError

__all__ = [
    "OUTCOME_RETRY_FIRST_PAUSE",
    "OUTCOME_RETRY_MAX_PAUSE",
    "TRANSIENT_ERRORS",
    "HandlerEscaped",
    "base_exception_outcome",
    "guard_coroutine",
]

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (QueueBusyError, BackendUnavailableError)
"""Errors after which saving an outcome is tried again."""

OUTCOME_RETRY_FIRST_PAUSE = 0.05
"""Seconds before the first new try; each pause doubles up to the maximum."""

OUTCOME_RETRY_MAX_PAUSE = 1.0
"""Longest pause between two tries."""


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
