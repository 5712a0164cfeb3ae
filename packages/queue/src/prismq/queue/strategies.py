"""Scheduling strategies: which ready task a worker claims next.

A strategy only *describes* the order; the storage backend turns the description into an
index-backed query, so every strategy costs about the same with a thousand or a million
ready tasks.

| Strategy | Claims first | Served by index |
| --- | --- | --- |
| :class:`FIFOStrategy` | the task that became ready earliest | ``(task_type, run_after)`` |
| :class:`LIFOStrategy` | the task that became ready latest | ``(task_type, run_after)``, backwards |
| :class:`PriorityStrategy` | lowest priority number, then earliest | ``(task_type, priority, run_after)`` |
| :class:`WeightedRandomStrategy` | a type drawn by weight, then earliest | ``(task_type, run_after)`` |

The ready indexes are per task type: a claim over several types (or every type) reads
the head of each and merges them in the strategy's order.

"Ready" means status ``queued`` and ``run_after`` reached.
"""

from __future__ import annotations

import enum
import random
from abc import ABC
from collections.abc import Mapping, Sequence
from typing import ClassVar

from .errors import ConfigError
from .validation import finite_float, is_number

__all__ = [
    "STRATEGY_ALIASES",
    "FIFOStrategy",
    "LIFOStrategy",
    "Ordering",
    "PriorityStrategy",
    "SchedulingStrategy",
    "WeightedRandomStrategy",
    "resolve_strategy",
]


class Ordering(str, enum.Enum):
    """The index order a claim reads ready tasks in."""

    OLDEST_FIRST = "oldest_first"
    NEWEST_FIRST = "newest_first"
    PRIORITY = "priority"


class SchedulingStrategy(ABC):
    """Base class of the four strategies.

    Attributes:
        name: The name the strategy is selected by (``"fifo"``, ``"lifo"``,
            ``"priority"``, ``"weighted_random"``).
        ordering: The index order claims read in.
    """

    name: ClassVar[str]
    ordering: ClassVar[Ordering]
    splits_by_type: ClassVar[bool] = False

    def allocate(self, available_types: Sequence[str], count: int) -> dict[str, int] | None:
        """Split a claim of ``count`` tasks among task types, or ``None`` for no split.

        Only :class:`WeightedRandomStrategy` splits; the others claim in one ordered read.

        Args:
            available_types: Task types that have queued tasks and that the worker handles.
            count: How many tasks the worker asks for.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FIFOStrategy(SchedulingStrategy):
    """First in, first out: the task that became ready earliest runs first.

    A task becomes ready at its ``run_after`` (its enqueue time unless delayed), so a
    retried task rejoins the line when its backoff ends. Ties break by id. The fair default
    for background jobs.
    """

    name = "fifo"
    ordering = Ordering.OLDEST_FIRST


class LIFOStrategy(SchedulingStrategy):
    """Last in, first out: the task that became ready most recently runs first.

    For interactive work where the freshest request matters most (a user who clicked again
    wants the new answer). Old tasks can wait indefinitely while new ones keep arriving.
    """

    name = "lifo"
    ordering = Ordering.NEWEST_FIRST


class PriorityStrategy(SchedulingStrategy):
    """Lowest priority number first (0 is most urgent), then earliest ready, then id.

    Priorities range from 0 to 1000 and default to 100.
    """

    name = "priority"
    ordering = Ordering.PRIORITY


class WeightedRandomStrategy(SchedulingStrategy):
    """Share the worker between task types by weight, at random.

    Each claimed task's type is drawn from the types that have queued tasks, with
    probability ``weight(type) / sum(weights of those types)``; within the drawn type the
    earliest-ready task runs first. A type missing from ``weights`` gets ``default_weight``.
    Types with weight 0 are claimed only when no positively weighted type has work. A draw
    that lands on a type whose tasks are all delayed is drawn again among the rest.

    Args:
        weights: Weight per task type (non-negative, finite).
        default_weight: Weight of types not in ``weights``.
        seed: Seed for a private random generator (for reproducible tests).

    Raises:
        ConfigError: A weight is negative, not finite, or not a number.

    Example:
        >>> strategy = WeightedRandomStrategy({"email": 3, "report": 1}, seed=7)
        >>> sorted(strategy.allocate(["email", "report"], 1000).items())[0][0]
        'email'
    """

    name = "weighted_random"
    ordering = Ordering.OLDEST_FIRST
    splits_by_type = True

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        default_weight: float = 1.0,
        seed: int | None = None,
    ) -> None:
        self.weights = dict(weights or {})
        for key, value in [*self.weights.items(), ("default_weight", default_weight)]:
            if not is_number(value):
                raise ConfigError(f"weight for {key!r} must be a number, got {value!r}")
            if finite_float(value) is None or value < 0:
                raise ConfigError(f"weight for {key!r} must be finite and >= 0, got {value!r}")
        self.default_weight = float(default_weight)
        self._rng = random.Random(seed)

    def weight_of(self, task_type: str) -> float:
        """The weight a task type is drawn with."""
        return float(self.weights.get(task_type, self.default_weight))

    def allocate(self, available_types: Sequence[str], count: int) -> dict[str, int] | None:
        """Draw ``count`` task types by weight; return how many tasks to claim of each."""
        types = list(dict.fromkeys(available_types))
        if not types or count <= 0:
            return {}
        weights = [self.weight_of(t) for t in types]
        if sum(weights) <= 0:
            weights = [1.0] * len(types)
        drawn = self._rng.choices(types, weights=weights, k=count)
        allocation: dict[str, int] = {}
        for task_type in drawn:
            allocation[task_type] = allocation.get(task_type, 0) + 1
        return allocation

    def __repr__(self) -> str:
        return f"WeightedRandomStrategy(weights={self.weights!r}, default_weight={self.default_weight!r})"


_BY_NAME: dict[str, type[SchedulingStrategy]] = {
    cls.name: cls for cls in (FIFOStrategy, LIFOStrategy, PriorityStrategy, WeightedRandomStrategy)
}

STRATEGY_ALIASES: dict[str, str] = {"weighted": "weighted_random", "weighted-random": "weighted_random"}
"""Other names :func:`resolve_strategy` (and ``worker --strategy``) accepts, to the name they mean."""


def resolve_strategy(strategy: SchedulingStrategy | str | None) -> SchedulingStrategy:
    """Turn a strategy object, a name, or ``None`` (FIFO) into a strategy object.

    Names are case-insensitive; ``"weighted-random"`` and ``"weighted"`` are accepted too.

    Raises:
        ConfigError: The name is not one of the four strategies.
    """
    if strategy is None:
        return FIFOStrategy()
    if isinstance(strategy, SchedulingStrategy):
        return strategy
    if isinstance(strategy, str):
        key = strategy.strip().lower()
        key = STRATEGY_ALIASES.get(key, key).replace("-", "_")
        if key in _BY_NAME:
            return _BY_NAME[key]()
        raise ConfigError(
            f"unknown scheduling strategy {strategy!r}; choose one of: {', '.join(sorted(_BY_NAME))}"
        )
    raise ConfigError(
        f"strategy must be a SchedulingStrategy or one of {sorted(_BY_NAME)}, got {type(strategy).__name__}"
    )
