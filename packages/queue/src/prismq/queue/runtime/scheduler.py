"""The scheduler loop every worker runs: enqueue the due ticks of periodic schedules.

Each worker process runs one :class:`SchedulerLoop` beside its claim loop (unless
``scheduler=False``). At start it stores the schedules its registry and config file
define (:meth:`Schedules.sync <prismq.queue.schedules.Schedules.sync>`); then, until the
worker stops, it enqueues every due tick (:meth:`Schedules.fire_due
<prismq.queue.schedules.Schedules.fire_due>`) and sleeps until the next tick is due, or
at most ``poll_interval`` seconds, so that schedules added at run time by another
process are seen.

Every worker may run it at once, on one machine or many: a tick's task is inserted under
a unique key in the same transaction that advances the schedule, so each tick is
enqueued once, with no leader. The loop's database calls go through the worker's one
database thread (``call``), so they never run beside the worker's own calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..errors import QueueError
from ..schedules import Schedule, ScheduleDefinition, Schedules, Tick

__all__ = ["SchedulerLoop"]

Call = Callable[..., Awaitable[Any]]

_BATCH = 100
"""Schedules fired per transaction; when more are due, the next look follows at once."""


class SchedulerLoop:
    """Enqueue the due ticks of every schedule in the database until stopped.

    Args:
        schedules: The database's schedules (``Schedules(db)``).
        definitions: Schedules from code or a config file, stored by :meth:`sync`.
        poll_interval: Longest sleep between two looks at the schedules (seconds).
        logger: Where fired ticks and errors are logged.
    """

    def __init__(
        self,
        schedules: Schedules,
        definitions: Sequence[ScheduleDefinition] = (),
        *,
        poll_interval: float = 1.0,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.schedules = schedules
        self.definitions = tuple(definitions)
        self.poll_interval = max(float(poll_interval), 0.01)
        self.log = logger or logging.getLogger("prismq.queue.scheduler")
        self.fired = 0

    def sync(self) -> list[Schedule]:
        """Store the code and config schedules (blocking; the worker calls it at start)."""
        stored = self.schedules.sync(self.definitions)
        if stored:
            self.log.info("schedules stored: %s", ", ".join(s.name for s in stored))
        return stored

    def fire(self) -> tuple[list[Tick], float]:
        """Enqueue the due ticks once; return them and the seconds until the next look.

        A read comes first: when nothing is due, no write transaction is opened, so an
        idle scheduler never competes with claims for the write lock.
        """
        wait = self._wait()
        if wait > 0:
            return [], wait
        ticks = self.schedules.fire_due(_BATCH)
        for tick in ticks:
            self.log.info(
                "schedule %s: enqueued task %d for %s", tick.name, tick.task_id, tick.at.isoformat()
            )
        self.fired += len(ticks)
        wait = self._wait()
        if wait <= 0 and not ticks:
            # Due but nothing enqueued: another scheduler holds it, or this process cannot
            # read it. Look again at the usual pace rather than at once.
            return ticks, self.poll_interval
        return ticks, wait

    def _wait(self) -> float:
        """Seconds until the next due tick, at most ``poll_interval`` (0: due now)."""
        due = self.schedules.next_due()
        if due is None:
            return self.poll_interval
        return min(max(due.timestamp() - self.schedules.db.now(), 0.0), self.poll_interval)

    async def run(self, call: Call, stop: asyncio.Event) -> None:
        """Fire due ticks until ``stop`` is set.

        Args:
            call: Runs a blocking function on the worker's database thread and awaits it.
            stop: Set when the worker stops.
        """
        while not stop.is_set():
            try:
                _ticks, wait = await call(self.fire)
            except QueueError as exc:
                self.log.error("scheduler: %s; trying again", exc)
                wait = self.poll_interval
            except Exception:  # a bug must not silently end the loop while claims go on
                self.log.exception("scheduler: unexpected error; trying again")
                wait = self.poll_interval
            if wait > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
