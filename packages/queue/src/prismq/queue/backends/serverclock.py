"""The database server's clock, as one process sees it.

A queue shared by several machines does its lease arithmetic (claim, renew, reclaim
expired leases) on one clock: the server's. Each process reads the server's time once, then
advances it with its own monotonic clock, so a host whose wall clock is minutes off (or is
stepped while running) still agrees with every other worker on when a lease ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["ServerClock", "read_clock"]

logger = logging.getLogger("prismq.queue.clock")


class ServerClock:
    """The server's current time in UTC epoch seconds; call it like ``time.time``.

    The server is read on the first call, then again every ``resync_every`` seconds, and at
    once when this host's wall clock moves against its monotonic clock by more than
    ``jump_tolerance`` seconds (the wall clock was stepped, or the machine was suspended).
    Between reads the time is the server's last reading plus the monotonic time elapsed
    since; it is off from the server by at most half a round trip plus the monotonic
    clock's drift (parts per million).

    A failed re-read keeps the previous reading (and is tried again a second later); only
    the very first read raises.

    Args:
        read_server: Returns the server's current time (UTC epoch seconds).
        resync_every: Seconds between two reads of the server.
        jump_tolerance: Wall-clock movement against the monotonic clock, in seconds, that
            triggers a read at once.
        wall: This host's wall clock (a stand-in in tests).
        monotonic: This process's monotonic clock (a stand-in in tests).
    """

    def __init__(
        self,
        read_server: Callable[[], float],
        *,
        resync_every: float = 30.0,
        jump_tolerance: float = 1.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_server = read_server
        self._wall = wall
        self._monotonic = monotonic
        self.resync_every = resync_every
        self.jump_tolerance = jump_tolerance
        self._lock = threading.Lock()
        # (server time, monotonic time, wall time) at the last reading; next reading due at.
        self._anchor: tuple[float, float, float] | None = None
        self._due = float("-inf")

    def __call__(self) -> float:
        """The server's time now (UTC epoch seconds), reading the server when due."""
        anchor = self._anchor
        mono = self._monotonic()
        if anchor is None or mono >= self._due or self._jumped(anchor, mono, self._wall()):
            anchor = self.sync()
        return anchor[0] + (self._monotonic() - anchor[1])

    def peek(self) -> float | None:
        """The server's time now when no read of the server is due, else ``None``.

        Never touches the server, so an event loop can call it; on ``None`` the caller
        reads the clock (``self()``) somewhere blocking is allowed.
        """
        anchor = self._anchor
        mono = self._monotonic()
        if anchor is None or mono >= self._due or self._jumped(anchor, mono, self._wall()):
            return None
        return anchor[0] + (mono - anchor[1])

    def _jumped(self, anchor: tuple[float, float, float], mono: float, wall: float) -> bool:
        return abs((wall - anchor[2]) - (mono - anchor[1])) > self.jump_tolerance

    @property
    def offset(self) -> float | None:
        """Seconds the server's clock is ahead of this host's wall clock (``None`` before the first read)."""
        anchor = self._anchor
        return None if anchor is None else anchor[0] - anchor[2]

    def sync(self) -> tuple[float, float, float]:
        """Read the server's time now; return the new ``(server, monotonic, wall)`` anchor.

        Raises:
            QueueError: The first read failed (later failures keep the previous reading).
        """
        with self._lock:
            anchor = self._anchor
            mono = self._monotonic()
            if anchor is not None and mono < self._due and not self._jumped(anchor, mono, self._wall()):
                return anchor  # another thread read it meanwhile
            started, wall_started = self._monotonic(), self._wall()
            try:
                server = float(self._read_server())
            except Exception as exc:
                if anchor is None:
                    raise
                logger.warning(
                    "could not read the database server's clock (%s); keeping the last reading", exc
                )
                self._due = self._monotonic() + 1.0
                return anchor
            ended, wall_ended = self._monotonic(), self._wall()
            anchor = (server, (started + ended) / 2, (wall_started + wall_ended) / 2)
            self._anchor = anchor
            self._due = ended + self.resync_every
            return anchor


async def read_clock(clock: Callable[[], float]) -> float:
    """A clock's time from a coroutine, without blocking the event loop.

    A :class:`ServerClock` answers from its last reading when it can; when a read of the
    server is due (every ``resync_every`` seconds), that read runs on a thread. Any other
    clock (this machine's, or a test's) is called directly.
    """
    if isinstance(clock, ServerClock):
        known = clock.peek()
        if known is not None:
            return known
        return await asyncio.to_thread(clock)
    return clock()
