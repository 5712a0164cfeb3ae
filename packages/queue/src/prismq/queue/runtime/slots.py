"""Threads that run sync handlers, each taking the next task itself.

The event loop queues tasks (the running ones and a bounded prefetch) in an inbox; each of
``size`` threads takes the next one as soon as it is free, so a busy thread starts its
next task without waiting for the loop. Finished outcomes are handed back in groups: a
thread wakes the loop only when no earlier hand-back is still waiting to be read, so the
loop is woken once per group, not once per task.

A thread stuck in a hung handler is not replaced: the runner keeps that attempt's lease
and slot until the handler returns, so a retry never runs beside it.

Thread-safety: :meth:`SyncSlots.submit`, :meth:`withdraw` and :meth:`started_at` are called
from the event loop; the threads only run handlers and append outcomes. The few shared
fields are changed under one lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .threads import DaemonThreads

__all__ = ["Outcome", "SyncSlots"]

Outcome = tuple[Any, Any, BaseException | None, float]
"""``(record, returned value, raised exception, seconds it ran)`` of one handler call."""


class SyncSlots(DaemonThreads):
    """``size`` daemon threads running handler calls queued by the event loop.

    Args:
        size: Threads (the concurrency of sync handlers).
        name: Thread name prefix.
        loop: The event loop that receives outcomes.
        deliver: Called on the loop with the outcomes finished since the last call.
    """

    def __init__(
        self,
        size: int,
        name: str,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[list[Outcome]], None],
    ) -> None:
        self._loop = loop
        self._deliver = deliver
        self._done: list[Outcome] = []
        self._signalled = False
        self._started: dict[int, float] = {}  # id(record) -> monotonic start time
        self._queued: set[int] = set()  # id(record) of calls not started yet
        super().__init__(size, name)

    def submit(self, record: Any, func: Callable[[Any], Any], arg: Any) -> None:
        """Queue ``func(arg)``; its outcome reaches ``deliver`` with ``record``."""
        with self._lock:
            self._queued.add(id(record))
        self._inbox.put((record, func, arg))

    def withdraw(self, record: Any) -> bool:
        """Take back a queued call that no thread has started; False once started."""
        with self._lock:
            if id(record) in self._queued:
                self._queued.discard(id(record))
                return True
            return False

    def started_at(self, record: Any) -> float | None:
        """Monotonic time the call started, or ``None`` (queued, or already finished)."""
        return self._started.get(id(record))

    def _handle(self, item: Any) -> bool:
        record, func, arg = item
        key = id(record)
        with self._lock:
            if key not in self._queued:
                return True  # withdrawn before it started
            self._queued.discard(key)
            self._started[key] = started = time.monotonic()
        try:
            returned, raised = func(arg), None
        except BaseException as exc:  # handed to the loop, which decides
            returned, raised = None, exc
        outcome: Outcome = (record, returned, raised, time.monotonic() - started)
        with self._lock:
            del self._started[key]
            self._done.append(outcome)
            wake = not self._signalled
            self._signalled = True
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._hand_back)
            except RuntimeError:  # the loop is closed: the run is over
                return False
        return True

    def _hand_back(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._signalled = False
        if done:
            self._deliver(done)
