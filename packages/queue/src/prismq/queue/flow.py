"""Flow control: concurrency and rate limits enforced in the claim, unique enqueues.

A limit covers a *scope*: a task type, a concurrency key (given at enqueue, such as a
tenant or an API host), or both. ``""`` in a scope means "every": ``("email", "")`` is
every ``email`` task, ``("", "api.example.com")`` every task with that key, whatever its
type. A task is under every limit whose scope matches it.

- A concurrency limit allows at most N tasks of the scope leased at once, across every
  worker and process.
- A rate limit allows at most N claims of tasks of the scope in any window of ``period``
  seconds. Claims are counted in buckets of ``period / RATE_BUCKETS`` seconds, and a
  bucket counts while any part of it lies within the window: a claim counts for up to
  ``period * (1 + 1 / RATE_BUCKETS)`` seconds, so the limit is never exceeded, and a
  saturated limit admits between ``N * RATE_BUCKETS / (RATE_BUCKETS + 1)`` and N claims
  per period.

Each limit keeps its own count of the leased tasks it covers (``flow_limits.leased``),
kept by the database in the transaction of every change of a task's state (a trigger),
so a claim reads its room without counting tasks: the claim's cost does not grow with
the tasks in flight. The claim reads the limits that apply to it and leases in one
transaction (on PostgreSQL optimistically: it checks the limits again once its counter
updates hold their rows, and claims again under their locks when it went over). A claim
near a limit takes fewer tasks: never more than the smallest room left under any limit
that applies to it.

:class:`Unique` makes an enqueue unique by state: while an equal task (same unique key)
is queued, or queued or running, and was created within the period, the enqueue returns
the existing task's id or raises :class:`~prismq.queue.errors.DuplicateTaskError`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .errors import ValidationError
from .validation import is_int, is_number, validate_task_type

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = [
    "MAX_CONCURRENCY_KEY_LENGTH",
    "RATE_BUCKETS",
    "START_KEPT_EXTRA",
    "ClaimGate",
    "FlowLimit",
    "Unique",
    "plan_claim",
    "rate_bucket_end",
    "unique_key_for",
    "validate_concurrency_key",
    "validate_scope",
    "write_limits",
]

MAX_CONCURRENCY_KEY_LENGTH = 200
RATE_BUCKETS = 20
"""Buckets a rate limit's period is counted in (see the module's description)."""
START_KEPT_EXTRA = 60.0
"""Seconds a bucket of recorded claims is kept beyond its rate period.

A claim takes its time before it waits for the lock, so claims can commit out of time
order; a claim deleting buckets just one period old could delete some that a slower
claim, with an earlier time, must still count.
"""
UNIQUE_STATES: dict[str, tuple[str, ...]] = {
    "queued": ("queued",),
    "active": ("queued", "leased"),
}


def validate_concurrency_key(key: object, name: str = "concurrency_key") -> str | None:
    """Return ``key`` (or ``None``) if it is a usable concurrency key.

    Raises:
        ValidationError: Not a string, empty, or longer than 200 characters.
    """
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise ValidationError(f"{name} must be a non-empty string, got {key!r}")
    if len(key) > MAX_CONCURRENCY_KEY_LENGTH:
        raise ValidationError(f"{name} is {len(key)} characters; the limit is {MAX_CONCURRENCY_KEY_LENGTH}")
    return key


def validate_scope(task_type: object, key: object) -> tuple[str, str]:
    """The stored scope of a limit: ``(task type or "", key or "")``.

    Raises:
        ValidationError: Neither is given, or one is not a usable name.
    """
    stored_type = "" if task_type is None else validate_task_type(task_type)
    stored_key = validate_concurrency_key(key, "key") or ""
    if not stored_type and not stored_key:
        raise ValidationError("a limit needs a task_type, a key, or both")
    return stored_type, stored_key


def validate_limit(limit: object) -> int:
    """Return ``limit`` if it is an integer from 1 to 1,000,000.

    Raises:
        ValidationError: Otherwise.
    """
    if not is_int(limit) or not 1 <= limit <= 1_000_000:
        raise ValidationError(f"limit must be an integer from 1 to 1000000, got {limit!r}")
    return int(limit)


def validate_period(period: object) -> float:
    """Return ``period`` (seconds) if it is a finite number from 0.001 to one year.

    Raises:
        ValidationError: Otherwise.
    """
    if not is_number(period) or not math.isfinite(period) or not 0.001 <= period <= 366 * 86400:
        raise ValidationError(f"period must be seconds from 0.001 to 31622400, got {period!r}")
    return float(period)


def rate_bucket_end(now: float, period: float) -> float:
    """The end of the bucket a claim at ``now`` is counted in, under a rate ``period``.

    A bucket holds the claims of ``[end - width, end)``, ``width = period / RATE_BUCKETS``;
    it counts for a claim at ``t`` while ``end > t - period``.
    """
    width = period / RATE_BUCKETS
    return (math.floor(now / width) + 1) * width


@dataclass(frozen=True)
class FlowLimit:
    """A limit as stored.

    Attributes:
        task_type: The task type it covers (``""``: every type).
        key: The concurrency key it covers (``""``: every key).
        max_leased: Most tasks of the scope leased at once (``None``: no such limit).
        max_starts: Most claims of the scope per ``period`` (``None``: no rate limit).
        period: The rate limit's window in seconds.
    """

    task_type: str
    key: str
    max_leased: int | None = None
    max_starts: int | None = None
    period: float | None = None

    def covers(self, task_type: str, key: str) -> bool:
        """Whether a task of ``task_type`` with concurrency key ``key`` is under this limit."""
        return self.task_type in ("", task_type) and self.key in ("", key)


@dataclass(frozen=True)
class ClaimGate:
    """What the limits allow one claim.

    Attributes:
        count: Most tasks the claim may lease (0: none).
        blocked: Scopes whose limit is reached; their tasks are not picked.
        rated: The limits with a rate, whose starts the claim records.
    """

    count: int
    blocked: tuple[tuple[str, str], ...]
    rated: tuple[FlowLimit, ...]


def plan_claim(
    limits: Sequence[FlowLimit],
    used: Iterable[tuple[str, str, int, int]],
    count: int,
) -> ClaimGate:
    """Work out how many tasks a claim may lease, and which scopes must wait.

    Each task a claim leases takes one place under every limit covering it, so leasing
    at most the smallest room left under any limit (those reached excluded, as blocked)
    never exceeds one.

    Args:
        limits: The limits that apply to the claim.
        used: Per limit, in the same order: ``(task type, key, tasks leased now, claims
            within the rate period)``.
        count: The tasks the worker asked for.
    """
    blocked: list[tuple[str, str]] = []
    room = count
    for limit, (_, _, leased, started) in zip(limits, used, strict=True):
        left: list[int] = []
        if limit.max_leased is not None:
            left.append(limit.max_leased - leased)
        if limit.max_starts is not None:
            left.append(limit.max_starts - started)
        smallest = min(left)
        if smallest <= 0:
            blocked.append((limit.task_type, limit.key))
        else:
            room = min(room, smallest)
    rated = tuple(limit for limit in limits if limit.max_starts is not None)
    return ClaimGate(max(room, 0), tuple(blocked), rated)


@dataclass(frozen=True)
class Unique:
    """Make an enqueue unique while an equal task is pending.

    Args:
        key: The unique key; default: the task type and the payload (its canonical JSON),
            so equal arguments make equal tasks.
        period: Only tasks created within this many seconds count (``None``: any age).
        states: ``"queued"`` (an equal task waits to run) or ``"active"`` (waits or runs).
        on_duplicate: ``"return"`` gives the existing task's id; ``"raise"`` raises
            :class:`~prismq.queue.errors.DuplicateTaskError` naming it.

    Raises:
        ValidationError: An argument is out of range.
    """

    key: str | None = None
    period: float | None = None
    states: Literal["queued", "active"] = "queued"
    on_duplicate: Literal["return", "raise"] = "return"

    def __post_init__(self) -> None:
        if self.key is not None and (not isinstance(self.key, str) or not 1 <= len(self.key) <= 500):
            raise ValidationError(f"Unique key must be a string of 1-500 characters, got {self.key!r}")
        if self.period is not None:
            validate_period(self.period)
        if self.states not in UNIQUE_STATES:
            raise ValidationError(f"Unique states must be 'queued' or 'active', got {self.states!r}")
        if self.on_duplicate not in ("return", "raise"):
            raise ValidationError(
                f"Unique on_duplicate must be 'return' or 'raise', got {self.on_duplicate!r}"
            )

    @property
    def statuses(self) -> tuple[str, ...]:
        """The task statuses an equal task must be in to count."""
        return UNIQUE_STATES[self.states]


def unique_key_for(unique: Unique, task_type: str, payload_json: str) -> str:
    """The stored unique key: the given one, else a digest of the type and the payload.

    The payload is re-encoded with sorted keys, so ``{"a": 1, "b": 2}`` and
    ``{"b": 2, "a": 1}`` are equal tasks.
    """
    if unique.key is not None:
        return "key:" + unique.key
    canonical = json.dumps(json.loads(payload_json), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(f"{task_type}\0{canonical}".encode()).hexdigest()
    return "args:" + digest


def write_limits(backend: Backend, limits: Iterable[FlowLimit], *, replace: bool) -> int:
    """Give a database the limit definitions ``limits`` (a backup's, another database's).

    Only the definitions travel (scope, ``max_leased``, ``max_starts``, ``period``), and
    only through the backend's own operations (``set_limit``, ``remove_limit``), so
    whatever the database keeps beside a limit is set up by them for its own tasks. The
    rate limits' record of recent claims is not carried: a rate limit written here counts
    the claims this database recorded under it, if any.

    Args:
        backend: The database to write to (call it inside its transaction to make the
            change atomic).
        limits: The definitions, one per scope.
        replace: True: remove every limit of a scope not in ``limits`` (a restore).
            False: leave those as they are (an upsert by scope, as ``migrate`` does).

    Returns:
        The number of scopes written. Each gets exactly the given concurrency and rate
        limit: a part it had and ``limits`` lacks is removed.
    """
    wanted = {(limit.task_type, limit.key): limit for limit in limits}
    for old in backend.list_limits():
        new = wanted.get((old.task_type, old.key))
        if new is None and not replace:
            continue
        if old.max_leased is not None and (new is None or new.max_leased is None):
            backend.remove_limit("concurrency", old.task_type, old.key)
        if old.max_starts is not None and (new is None or new.max_starts is None):
            backend.remove_limit("rate", old.task_type, old.key)
    for (task_type, key), new in wanted.items():
        if new.max_leased is not None:
            backend.set_limit("concurrency", task_type, key, new.max_leased, None)
        if new.max_starts is not None:
            backend.set_limit("rate", task_type, key, new.max_starts, new.period)
    return len(wanted)
