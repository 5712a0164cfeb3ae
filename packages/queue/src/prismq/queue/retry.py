"""Retry policies: how long a failed task waits before its next attempt."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ScheduleError
from .validation import MAX_DELAY_SECONDS, finite_float, is_int, is_number, show_number

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter and a cap.

    The delay before attempt ``n + 1`` (after ``n`` failed attempts) is
    ``min(base_delay * multiplier ** (n - 1), max_delay)``, then spread by up to
    ``jitter`` (a fraction) either way so that many tasks failing together do not retry
    together. With the defaults a task waits about 1 s, 2 s, 4 s, ... and never more than
    5 minutes.

    A policy is given per task type (``QueueClient(retry_policies=...)``) or per task
    (``enqueue(retry_policy=...)``) and is stored with the task, so every worker applies the
    same one.

    Args:
        max_attempts: Claims allowed in all (1 means no retry).
        base_delay: Seconds before the first retry.
        multiplier: Growth factor of the delay per attempt (1.0 for a constant delay).
        max_delay: Upper bound of a delay, in seconds.
        jitter: Random spread as a fraction of the delay (0 disables it, at most 1).

    Raises:
        ScheduleError: A value is out of range.

    Example:
        >>> policy = RetryPolicy(max_attempts=4, base_delay=2.0, jitter=0.0)
        >>> [policy.delay_for(n) for n in (1, 2, 3)]
        [2.0, 4.0, 8.0]
    """

    max_attempts: int = 3
    base_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not is_int(self.max_attempts):
            raise ScheduleError(f"max_attempts must be an integer of at least 1, got {self.max_attempts!r}")
        if not 1 <= self.max_attempts <= 1000:
            raise ScheduleError(f"max_attempts must be between 1 and 1000, got {self.max_attempts}")
        for name in ("base_delay", "multiplier", "max_delay", "jitter"):
            value = getattr(self, name)
            if not is_number(value):
                raise ScheduleError(f"{name} must be a number, got {value!r}")
            if finite_float(value) is None or value < 0:
                raise ScheduleError(f"{name} must be a finite number >= 0, got {show_number(value)}")
        if self.max_delay > MAX_DELAY_SECONDS:
            raise ScheduleError(
                f"max_delay must be at most {MAX_DELAY_SECONDS:.0f} s (100 years), "
                f"got {show_number(self.max_delay)}"
            )
        if self.multiplier < 1:
            raise ScheduleError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if self.jitter > 1:
            raise ScheduleError(f"jitter is a fraction between 0 and 1, got {self.jitter!r}")

    def delay_for(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failed_attempts`` failures before the next attempt.

        Args:
            failed_attempts: Attempts made so far (1 after the first failure).
            rng: Random source for the jitter (the module's by default).

        Returns:
            The delay in seconds, never negative and never above ``max_delay``.
        """
        exponent = max(failed_attempts - 1, 0)
        try:
            delay = self.base_delay * self.multiplier**exponent
        except OverflowError:
            delay = self.max_delay
        delay = min(delay, self.max_delay)
        if self.jitter and delay:
            spread = delay * self.jitter
            delay += (rng or random).uniform(-spread, spread)
        return min(max(delay, 0.0), self.max_delay)

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-ready dict (how it is stored with a task)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryPolicy:
        """Rebuild a policy stored with :meth:`to_dict`; unknown keys are ignored."""
        known = {
            k: data[k]
            for k in ("max_attempts", "base_delay", "multiplier", "max_delay", "jitter")
            if k in data
        }
        return cls(**known)
