"""Test doubles shared by every test folder (importable as ``fakes``)."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A controllable clock (``QueueDatabase(clock=...)``, a waiter's monotonic clock).

    Time moves only when told: :meth:`advance`, or by setting :attr:`now`.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
