"""Periodic schedules: a cron expression that enqueues one task per tick.

A schedule names a cron expression, a time zone and the task to enqueue at each tick.
Schedules live in the queue database (the ``schedules`` table), so every worker process
on every machine sees the same ones; each worker runs a small scheduler loop
(:mod:`prismq.queue.runtime.scheduler`) that enqueues the due ticks. A tick's task is
inserted under the unique idempotency key ``prismq.schedule:<name>@<tick>`` in the same
transaction that advances the schedule to its next tick, so it is enqueued exactly once
however many schedulers run, with no leader election.

Define schedules in code (``@registry.periodic(...)``), in the worker config file
(``[schedules.NAME]`` tables), or at run time through :class:`Schedules`
(``client.schedules``) and ``prismq-queue schedules``.

Cron expressions have five fields (minute, hour, day of month, month, day of week) or
six with seconds first; they are parsed by `cronsim`_ (imported on first use). Ticks are
computed in the schedule's IANA time zone with :mod:`zoneinfo`, and follow cron's rules
across daylight-saving changes: a time skipped when the clocks go forward runs at the
jump, a time repeated when they go back runs once, and ``*``-hour expressions follow
real elapsed time.

.. _cronsim: https://pypi.org/project/cronsim/
"""

from __future__ import annotations

import builtins
import json
import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .backends.schedulestore import SCHEDULE_KEY_PREFIX, ScheduleStore, tick_key
from .errors import (
    ConfigError,
    CronExpressionError,
    MisfirePolicyError,
    PeriodicScheduleError,
    ScheduleNotFoundError,
    TimeZoneError,
    ValidationError,
)
from .models import DEFAULT_PRIORITY, epoch_to_datetime
from .retry import RetryPolicy
from .validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    encode_json,
    is_int,
    is_number,
    validate_priority,
    validate_task_type,
)

if TYPE_CHECKING:
    from .database import QueueDatabase

__all__ = [
    "MISFIRE_POLICIES",
    "SCHEDULE_KEY_PREFIX",
    "SCHEDULE_SOURCES",
    "Schedule",
    "ScheduleDefinition",
    "Schedules",
    "Tick",
    "tick_key",
]

MISFIRE_POLICIES = ("skip", "run_once", "backfill")
"""What a schedule does with ticks that passed while no scheduler ran:

- ``skip``: drop them; the latest due tick still runs when it is at most ``grace``
  seconds late.
- ``run_once`` (default): enqueue one task, for the latest due tick.
- ``backfill``: enqueue every missed tick, at most the ``max_backfill`` most recent.
"""

SCHEDULE_SOURCES = ("code", "config", "api")
"""Where a schedule was defined: ``@registry.periodic``, a config file, or the API/CLI."""

MAX_SCHEDULE_NAME_LENGTH = 200
MAX_BACKFILL = 1000
_MAX_STEPS = 10_000
"""Ticks walked forward from a stale ``next_run`` before the rest are counted backwards."""
_RETRY_JSON = json.dumps(RetryPolicy().to_dict(), separators=(",", ":"))


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    """The ``ZoneInfo`` of an IANA name (``UTC`` is the fixed UTC zone)."""
    if name in ("UTC", "Etc/UTC"):
        return timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimeZoneError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Prague' or 'UTC' "
            "(the time zone database comes from the system, or from the tzdata package)"
        ) from None


def _iterate(cron: str, start: datetime, reverse: bool = False) -> Any:
    try:
        from cronsim import CronSim, CronSimError
    except ImportError:
        raise ConfigError(
            "periodic schedules need the cronsim package, a dependency of prismq-queue; "
            "reinstall prismq-queue or pip install cronsim"
        ) from None

    try:
        return CronSim(cron, start, reverse=reverse)
    except CronSimError as exc:
        raise CronExpressionError(
            f"{cron!r} is not a cron expression ({exc}); use five fields, minute hour "
            "day-of-month month day-of-week, e.g. '*/5 * * * *', or six with seconds first"
        ) from None


def _next_after(cron: str, zone: tzinfo, after: float) -> float:
    """The first tick strictly after epoch ``after``."""
    start = datetime.fromtimestamp(math.floor(after), zone)
    try:
        return float(next(_iterate(cron, start)).timestamp())
    except StopIteration:  # pragma: no cover - cronsim's iterators do not end
        raise CronExpressionError(f"{cron!r} never matches a date") from None


@dataclass(frozen=True)
class ScheduleDefinition:
    """What a schedule enqueues, and when. Validated when built.

    Attributes:
        name: Unique name of the schedule (1 to 200 characters).
        cron: Cron expression: ``minute hour day-of-month month day-of-week`` (five
            fields), or six with seconds first.
        task_type: Type of the task enqueued at each tick.
        payload: JSON payload of that task (the same for every tick).
        timezone: IANA time zone the expression is read in (default ``UTC``).
        misfire: ``skip``, ``run_once`` or ``backfill`` (see :data:`MISFIRE_POLICIES`).
        max_backfill: With ``backfill``, the most missed ticks enqueued after a gap.
        grace: With ``skip``, seconds a tick may be late and still run.
        priority: Priority of the enqueued tasks.
        max_attempts: Claims allowed per task before it goes dead.
        source: ``code``, ``config`` or ``api`` (where it was defined).

    Raises:
        CronExpressionError: The cron expression does not parse.
        TimeZoneError: The time zone is unknown.
        MisfirePolicyError: Unknown policy, or ``max_backfill``/``grace`` out of range.
        PeriodicScheduleError: A bad name or source.
        ValidationError: A bad task type, priority, attempt count or payload.

    Example:
        >>> d = ScheduleDefinition("report", "0 6 * * MON", "weekly_report", timezone="Europe/Prague")
        >>> datetime.fromtimestamp(d.next_tick(1_767_225_600), timezone.utc).isoformat()
        '2026-01-05T05:00:00+00:00'
    """

    name: str
    cron: str
    task_type: str
    payload: Any = None
    timezone: str = "UTC"
    misfire: str = "run_once"
    max_backfill: int = 10
    grace: float = 60.0
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = 3
    source: str = "api"
    payload_json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_SCHEDULE_NAME_LENGTH:
            raise PeriodicScheduleError(
                f"a schedule name must be a non-empty string of at most {MAX_SCHEDULE_NAME_LENGTH} "
                f"characters, got {name!r}"
            )
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise PeriodicScheduleError(f"schedule name {name!r} contains a control character")
        if not isinstance(self.cron, str) or not self.cron.strip():
            raise CronExpressionError(f"schedule {name!r}: the cron expression must be a non-empty string")
        object.__setattr__(self, "cron", " ".join(self.cron.split()))
        if not isinstance(self.timezone, str):
            raise TimeZoneError(f"schedule {name!r}: the time zone must be a string, got {self.timezone!r}")
        zone = _zone(self.timezone)
        next(_iterate(self.cron, datetime.now(zone)))  # parse, and prove it matches some date
        if self.misfire not in MISFIRE_POLICIES:
            raise MisfirePolicyError(
                f"schedule {name!r}: misfire must be one of {', '.join(MISFIRE_POLICIES)}, "
                f"got {self.misfire!r}"
            )
        backfill = self.max_backfill
        if not is_int(backfill) or not 1 <= backfill <= MAX_BACKFILL:
            raise MisfirePolicyError(
                f"schedule {name!r}: max_backfill must be an integer from 1 to {MAX_BACKFILL}, "
                f"got {backfill!r}"
            )
        grace = self.grace
        if not is_number(grace) or not 0 < grace < math.inf:
            raise MisfirePolicyError(
                f"schedule {name!r}: grace must be a positive number of seconds, got {grace!r}"
            )
        object.__setattr__(self, "grace", float(grace))
        if self.source not in SCHEDULE_SOURCES:
            raise PeriodicScheduleError(
                f"schedule {name!r}: source must be one of {', '.join(SCHEDULE_SOURCES)}, got {self.source!r}"
            )
        object.__setattr__(self, "task_type", validate_task_type(self.task_type))
        object.__setattr__(self, "priority", validate_priority(self.priority))
        RetryPolicy(max_attempts=self.max_attempts)  # the same range check as enqueue's
        object.__setattr__(
            self, "payload_json", encode_json(self.payload, "payload", DEFAULT_MAX_PAYLOAD_BYTES)
        )

    @property
    def zone(self) -> tzinfo:
        """The time zone object."""
        return _zone(self.timezone)

    def next_tick(self, after: float) -> float:
        """The first tick strictly after epoch ``after`` (UTC epoch seconds)."""
        return _next_after(self.cron, self.zone, after)

    def plan(self, next_run: float, now: float) -> tuple[list[float], float]:
        """The ticks to enqueue at ``now`` for a schedule whose next tick was ``next_run``.

        Applies the misfire policy to the ticks from ``next_run`` up to ``now``.

        Returns:
            The ticks to enqueue (oldest first) and the first tick after ``now``.
        """
        if next_run > now:
            return [], next_run
        keep = self.max_backfill if self.misfire == "backfill" else 1
        upcoming = self.next_tick(now)
        due: deque[float] = deque([next_run], maxlen=keep)
        ticks = _iterate(self.cron, datetime.fromtimestamp(next_run, self.zone))
        for _ in range(_MAX_STEPS):
            tick = float(next(ticks).timestamp())
            if tick >= upcoming:
                break
            due.append(tick)
        else:  # a long gap: count the kept ticks back from now instead
            back = _iterate(self.cron, datetime.fromtimestamp(math.floor(now) + 1, self.zone), reverse=True)
            due = deque(reversed([float(next(back).timestamp()) for _ in range(keep)]))
        latest = due[-1]
        if self.misfire == "skip":
            return ([latest] if now - latest <= self.grace else []), upcoming
        return list(due), upcoming

    def to_record(self) -> dict[str, Any]:
        """The definition's columns, for the schedule store."""
        return {
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "task_type": self.task_type,
            "payload": self.payload_json,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "misfire": self.misfire,
            "max_backfill": self.max_backfill,
            "grace": self.grace,
            "source": self.source,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ScheduleDefinition:
        """The definition stored in a schedule record, as stored.

        It was checked when it was written, so it is not checked again: a schedule
        written by a machine that knows a time zone or cron feature this one lacks can
        still be listed here; using its ticks raises the specific error.
        """
        definition = object.__new__(cls)
        values = {
            "name": record["name"],
            "cron": record["cron"],
            "task_type": record["task_type"],
            "payload": json.loads(record["payload"]),
            "timezone": record["timezone"],
            "misfire": record["misfire"],
            "max_backfill": record["max_backfill"],
            "grace": float(record["grace"]),
            "priority": record["priority"],
            "max_attempts": record["max_attempts"],
            "source": record["source"],
            "payload_json": record["payload"],
        }
        for name, value in values.items():
            object.__setattr__(definition, name, value)
        return definition


@dataclass(frozen=True)
class Schedule:
    """A stored schedule: its definition and its state.

    Attributes:
        definition: What it enqueues and when.
        paused: True while paused (no ticks are enqueued; they are skipped, not made up).
        next_run: The next tick not yet enqueued.
        last_run: The latest tick enqueued, or ``None``.
        last_task_id: Id of the latest task it enqueued (a tick or ``run_now``), or ``None``.
        created_at: When the schedule was first stored.
        updated_at: When it last changed.
    """

    definition: ScheduleDefinition
    paused: bool
    next_run: datetime
    last_run: datetime | None
    last_task_id: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        """The schedule's name."""
        return self.definition.name

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Schedule:
        """Build from a store record."""
        return cls(
            definition=ScheduleDefinition.from_record(record),
            paused=bool(record["paused"]),
            next_run=epoch_to_datetime(record["next_run"]),  # type: ignore[arg-type]
            last_run=epoch_to_datetime(record["last_run"]),
            last_task_id=record["last_task_id"],
            created_at=epoch_to_datetime(record["created_at"]),  # type: ignore[arg-type]
            updated_at=epoch_to_datetime(record["updated_at"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Tick:
    """One task a schedule enqueued.

    Attributes:
        name: The schedule's name.
        at: The tick's time (also the task's ``run_after``).
        task_id: The enqueued task's id.
    """

    name: str
    at: datetime
    task_id: int


_log = logging.getLogger("prismq.queue.schedules")


class Schedules:
    """Periodic schedules of a queue database: add, list, pause, resume, remove, run now.

    Reach it as ``QueueClient(db).schedules`` or build it with ``Schedules(db)``.

    Args:
        db: The queue database (SQLite or PostgreSQL).

    Raises:
        ConfigError: The database's backend is not an SQL backend.

    Example:
        >>> import tempfile, pathlib
        >>> from prismq.queue import QueueDatabase
        >>> db = QueueDatabase(pathlib.Path(tempfile.mkdtemp()) / "queue.db")
        >>> _ = db.initialize_schema()
        >>> schedules = Schedules(db)
        >>> schedules.add("cleanup", "*/5 * * * *", "cleanup").definition.cron
        '*/5 * * * *'
        >>> [s.name for s in schedules.list()]
        ['cleanup']
        >>> db.close()
    """

    def __init__(self, db: QueueDatabase) -> None:
        self.db = db
        self._store: ScheduleStore = db.backend.schedule_store()

    def add(
        self,
        name: str,
        cron: str,
        task_type: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        misfire: str = "run_once",
        max_backfill: int = 10,
        grace: float = 60.0,
        priority: int = DEFAULT_PRIORITY,
        max_attempts: int = 3,
        replace: bool = False,
    ) -> Schedule:
        """Store a new schedule (source ``api``); its first tick is the first after now.

        Args:
            name: Unique name.
            cron: Cron expression (five fields, or six with seconds first).
            task_type: Type of the task each tick enqueues.
            payload: That task's JSON payload.
            timezone: IANA time zone of the expression.
            misfire: ``skip``, ``run_once`` or ``backfill``.
            max_backfill: With ``backfill``, the most missed ticks enqueued after a gap.
            grace: With ``skip``, seconds a tick may be late and still run.
            priority: Priority of the enqueued tasks.
            max_attempts: Claims allowed per task.
            replace: Overwrite a schedule of the same name (its pause state stays)
                instead of raising.

        Returns:
            The stored schedule.

        Raises:
            PeriodicScheduleError: A bad definition (see :class:`ScheduleDefinition`), or
                a schedule of that name exists and ``replace`` is False.
        """
        definition = ScheduleDefinition(
            name,
            cron,
            task_type,
            payload,
            timezone=timezone,
            misfire=misfire,
            max_backfill=max_backfill,
            grace=grace,
            priority=priority,
            max_attempts=max_attempts,
        )
        return self.define(definition, replace=replace)

    def define(self, definition: ScheduleDefinition, *, replace: bool = False) -> Schedule:
        """Store a built :class:`ScheduleDefinition` (see :meth:`add`)."""
        now = self.db.now()
        next_run = definition.next_tick(now)
        record = self._store.insert(definition.to_record(), next_run, now)
        if record is None and replace:
            record = self._store.replace(definition.to_record(), next_run, now)
        if record is None:
            raise PeriodicScheduleError(
                f"a schedule named {definition.name!r} exists; remove it first or pass replace=True"
            )
        return Schedule.from_record(record)

    def sync(self, definitions: Iterable[ScheduleDefinition]) -> list[Schedule]:
        """Store schedules defined in code or a config file; workers call it at start.

        A new schedule starts at its first tick after now. An existing one takes the new
        definition but keeps its pause state, and keeps its next tick unless the cron
        expression or time zone changed. Schedules not listed are left alone.
        """
        out = []
        for definition in definitions:
            now = self.db.now()
            record = self._store.upsert(definition.to_record(), definition.next_tick(now), now)
            out.append(Schedule.from_record(record))
        return out

    def get(self, name: str) -> Schedule:
        """One schedule.

        Raises:
            ScheduleNotFoundError: No schedule has that name.
        """
        record = self._store.get(name)
        if record is None:
            raise self._missing(name)
        return Schedule.from_record(record)

    def list(self) -> list[Schedule]:
        """Every schedule, by name."""
        return [Schedule.from_record(r) for r in self._store.list()]

    def pause(self, name: str) -> Schedule:
        """Stop enqueuing a schedule's ticks (on every worker) until :meth:`resume`.

        Raises:
            ScheduleNotFoundError: No schedule has that name.
        """
        record = self._store.set_paused(name, True, lambda _r: None, self.db.now())
        if record is None:
            raise self._missing(name)
        return Schedule.from_record(record)

    def resume(self, name: str) -> Schedule:
        """Enqueue a paused schedule's ticks again, from the first tick after now.

        Ticks that passed while it was paused are not made up. Resuming a running
        schedule changes nothing.

        Raises:
            ScheduleNotFoundError: No schedule has that name.
        """
        now = self.db.now()

        def next_run(record: dict[str, Any]) -> float | None:
            if not record["paused"]:
                return None
            return ScheduleDefinition.from_record(record).next_tick(now)

        record = self._store.set_paused(name, False, next_run, now)
        if record is None:
            raise self._missing(name)
        return Schedule.from_record(record)

    def remove(self, name: str) -> None:
        """Delete a schedule; tasks it already enqueued stay.

        A schedule defined in code or a config file comes back at the next worker start
        unless its definition is removed there too.

        Raises:
            ScheduleNotFoundError: No schedule has that name.
        """
        if not self._store.delete(name):
            raise self._missing(name)

    def run_now(self, name: str) -> int:
        """Enqueue one task of the schedule now, outside its ticks (paused or not).

        Returns:
            The new task's id.

        Raises:
            ScheduleNotFoundError: No schedule has that name.
        """
        task_id = self._store.run_now(name, _RETRY_JSON, self.db.now())
        if task_id is None:
            raise self._missing(name)
        return task_id

    def fire_due(self, limit: int = 100) -> builtins.list[Tick]:
        """Enqueue the tasks of every due tick now (what the worker's scheduler loop does).

        Safe to call from any number of processes at once: each tick's task is enqueued
        once. A stored schedule this process cannot read (a time zone or cron expression
        it does not know) is left as it is and logged as a warning.

        Args:
            limit: Most schedules handled in one transaction.

        Returns:
            The ticks enqueued by this call.
        """
        if not is_int(limit) or limit < 1:
            raise ValidationError(f"limit must be a positive integer, got {limit!r}")
        refused: builtins.list[str] = []

        def plan(record: dict[str, Any], now: float) -> tuple[builtins.list[float], float] | None:
            try:
                return ScheduleDefinition.from_record(record).plan(record["next_run"], now)
            except PeriodicScheduleError as exc:  # e.g. a time zone this machine lacks
                refused.append(f"{record['name']}: {exc}")
                return None

        fired = self._store.fire_due(self.db.now(), plan, _RETRY_JSON, limit)
        for problem in refused:
            _log.warning("schedule %s; left for a worker that can read it", problem)
        return [Tick(name, epoch_to_datetime(tick), task_id) for name, tick, task_id in fired]  # type: ignore[arg-type]

    def next_due(self) -> datetime | None:
        """When the next tick of a running schedule is due, or ``None`` without any."""
        return epoch_to_datetime(self._store.next_due())

    @staticmethod
    def _missing(name: str) -> ScheduleNotFoundError:
        return ScheduleNotFoundError(f"no schedule named {name!r}; 'prismq-queue schedules list' shows them")
