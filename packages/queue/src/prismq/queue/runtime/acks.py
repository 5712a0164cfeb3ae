"""Group commit of task outcomes: the per-process acknowledgement collector.

Handlers finish one at a time, but writing each outcome in its own transaction makes the
database commit the bottleneck. The runner instead hands every outcome (completion,
failure, cancellation, release) to an :class:`AckCollector`; the collector says when the
waiting outcomes are due (``batch_size`` of them, or the oldest has waited ``linger``
seconds), and the runner then writes them all with
:meth:`~prismq.queue.worker.QueueWorker.acknowledge`, in one transaction that also leases
the next tasks for the free slots.

A crash loses at most the outcomes still waiting here: their tasks are still leased in
the database, so they run again once their lease expires (at-least-once, as for any crash
while a handler runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ..errors import ConfigError
from ..validation import is_int, is_number
from ..worker import Ack

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_LINGER", "AckCollector"]

DEFAULT_BATCH_SIZE = 100
"""Outcomes written in one transaction at most (a flush starts once this many wait)."""

DEFAULT_LINGER = 0.005
"""Seconds the oldest waiting outcome may wait before a flush is due."""

R = TypeVar("R")


class AckCollector(Generic[R]):
    """Outcomes waiting to be written, each with the caller's record of its task.

    Not thread-safe: the runner uses it from its event loop only.

    Args:
        batch_size: A flush is due once this many outcomes wait (1 to 1000).
        linger: A flush is due once the oldest outcome has waited this long (seconds, 0 to 1).
        clock: The monotonic clock that times the linger.

    Raises:
        ConfigError: ``batch_size`` or ``linger`` out of range.
    """

    def __init__(self, batch_size: int, linger: float, clock: Callable[[], float]) -> None:
        if not is_int(batch_size) or not 1 <= batch_size <= 1000:
            raise ConfigError(f"batch_size must be an integer from 1 to 1000, got {batch_size!r}")
        if not is_number(linger) or not 0 <= linger <= 1:
            raise ConfigError(f"linger must be a number of seconds from 0 to 1, got {linger!r}")
        self.batch_size = batch_size
        self.linger = float(linger)
        self._clock = clock
        self._waiting: list[tuple[R, Ack]] = []
        self._first_at = 0.0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, record: R, ack: Ack) -> None:
        """Queue one outcome."""
        if not self._waiting:
            self._first_at = self._clock()
        self._waiting.append((record, ack))

    @property
    def full(self) -> bool:
        """True once ``batch_size`` outcomes wait."""
        return len(self._waiting) >= self.batch_size

    def due_in(self) -> float:
        """Seconds until a flush is due (0: due now; ``inf``: nothing waits)."""
        if not self._waiting:
            return float("inf")
        if len(self._waiting) >= self.batch_size:
            return 0.0
        return max(self._first_at + self.linger - self._clock(), 0.0)

    def take(self) -> list[tuple[R, Ack]]:
        """Remove and return up to ``batch_size`` waiting outcomes, oldest first."""
        batch, self._waiting = self._waiting[: self.batch_size], self._waiting[self.batch_size :]
        if self._waiting:
            self._first_at = self._clock()
        return batch

    def put_back(self, batch: list[tuple[R, Ack]]) -> None:
        """Return a batch whose write failed, ahead of the rest, to be written again."""
        if batch:
            self._waiting[:0] = batch
            self._first_at = self._clock()
