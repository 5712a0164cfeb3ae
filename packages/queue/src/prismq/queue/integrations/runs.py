"""Runs and the run registry: the records a :class:`BackgroundTaskManager` keeps.

A *run* is one execution of a module (a long job started from a web backend). Its
record says where it is (:class:`RunStatus`), when each status began, how far it got,
and how it ended.

:class:`RunRegistry` keeps runs in memory by default, as the original in-process manager
did. ``RunRegistry(queue=db)`` keeps them in the queue database instead, so they survive
a crash and every process sees them: each run is a queue task of type
``prismq.run:<module_id>`` plus a row in the ``runs`` table for what a run has beyond a
task (see :mod:`prismq.queue.backends.sqlite.runs`; the PostgreSQL backend keeps the
same table). Updates change one row each; no file is rewritten.

Registry methods are synchronous. With ``queue=`` they do database I/O: from an event
loop call them through ``asyncio.to_thread`` or from synchronous endpoints, or let the
manager do the writing (it never blocks the loop).
"""

from __future__ import annotations

import copy
import enum
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError, QueueError, ValidationError
from ..models import epoch_to_datetime
from ..validation import DEFAULT_MAX_PAYLOAD_BYTES, encode_json, finite_float, is_int, is_number

if TYPE_CHECKING:
    from ..database import QueueDatabase

__all__ = [
    "Run",
    "RunNotFoundError",
    "RunRegistry",
    "RunStatus",
    "RunStore",
]

MAX_ID_LENGTH = 180
"""Longest run id or module id (the module id goes into a 200-character task type)."""

DEFAULT_LEASE_DURATION = 30.0
"""Seconds an owner's lease on an active run lasts before the run counts as interrupted."""


class RunNotFoundError(QueueError, LookupError):
    """No run has the given id (or it is not active where the call needs it to be)."""


class RunStatus(str, enum.Enum):
    """Where a run is in its life.

    Attributes:
        QUEUED: Accepted, not started yet.
        RUNNING: Its coroutine is executing.
        COMPLETED: The coroutine returned (with exit code 0, if it returned one).
        FAILED: The coroutine raised, or returned a non-zero exit code.
        CANCELLED: Cancelled on request.
        INTERRUPTED: Its process stopped (crash, kill, shutdown) before it finished. A
            re-runnable run starts again once a handler for its module is registered.
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def is_active(self) -> bool:
        """True while queued or running."""
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def is_terminal(self) -> bool:
        """True once the run ended (completed, failed, cancelled or interrupted)."""
        return not self.is_active

    def __str__(self) -> str:
        return self.value


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC, as the original registry stored them."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _to_epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


@dataclass
class Run:
    """One run of a module, as the manager and the registry track it.

    The manager updates the ``Run`` object it was given as the run progresses; the
    registry returns snapshots (change them through :meth:`RunRegistry.update_run`).

    Attributes:
        run_id: Unique id of the run (1-180 characters), e.g. ``str(uuid.uuid4())``.
        module_id: The module it runs (1-180 characters).
        module_name: The module's display name (defaults to ``module_id``).
        status: Where the run is.
        created_at: When the run was created (UTC).
        started_at: When its current execution started (set on ``running``).
        completed_at: When it ended (set on every terminal status).
        progress_percent: 0 to 100, as last reported.
        progress_message: The note that came with the last progress report.
        items_processed: Items done so far, if the module counts items.
        items_total: Items expected in all, if known.
        exit_code: The exit code, when the coroutine returned one (an ``int``).
        error_message: Why it failed or was interrupted.
        parameters: The module's JSON parameters.
        rerunnable: Start it again automatically after an interruption.
        attempts: How many times it has started (2 after one re-run).
        task_id: Its queue task id when the registry uses a queue database.
        updated_at: When the record last changed.
    """

    run_id: str
    module_id: str
    module_name: str = ""
    status: RunStatus = RunStatus.QUEUED
    created_at: datetime = field(default_factory=_utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    progress_percent: float = 0.0
    progress_message: str | None = None
    items_processed: int | None = None
    items_total: int | None = None
    exit_code: int | None = None
    error_message: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    rerunnable: bool = False
    attempts: int = 0
    task_id: int | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("run_id", "module_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LENGTH:
                raise ValidationError(
                    f"{name} must be a non-empty string of at most {MAX_ID_LENGTH} characters, got {value!r}"
                )
        if not self.module_name:
            self.module_name = self.module_id
        try:
            self.status = RunStatus(self.status)
        except ValueError:
            raise ValidationError(
                f"unknown run status {self.status!r}; use one of {', '.join(s.value for s in RunStatus)}"
            ) from None
        self.created_at = _aware(self.created_at) or _utcnow()
        self.started_at = _aware(self.started_at)
        self.completed_at = _aware(self.completed_at)
        self.updated_at = _aware(self.updated_at)
        if self.parameters is None:
            self.parameters = {}

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or to now while running; ``None`` before the start."""
        if self.started_at is None:
            return None
        end = self.completed_at or _utcnow()
        return max((end - self.started_at).total_seconds(), 0.0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings, ``duration`` included)."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "run_id": self.run_id,
            "module_id": self.module_id,
            "module_name": self.module_name,
            "status": self.status.value,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "duration": self.duration,
            "progress_percent": self.progress_percent,
            "progress_message": self.progress_message,
            "items_processed": self.items_processed,
            "items_total": self.items_total,
            "exit_code": self.exit_code,
            "error_message": self.error_message,
            "parameters": copy.deepcopy(self.parameters),
            "rerunnable": self.rerunnable,
            "attempts": self.attempts,
            "task_id": self.task_id,
            "updated_at": iso(self.updated_at),
        }


def run_to_record(run: Run) -> dict[str, Any]:
    """The storage form of a run: plain values, UTC epoch seconds."""
    return {
        "run_id": run.run_id,
        "task_id": run.task_id,
        "module_id": run.module_id,
        "module_name": run.module_name,
        "status": run.status.value,
        "parameters": copy.deepcopy(run.parameters),
        "rerunnable": bool(run.rerunnable),
        "progress_percent": float(run.progress_percent),
        "progress_message": run.progress_message,
        "items_processed": run.items_processed,
        "items_total": run.items_total,
        "exit_code": run.exit_code,
        "error_message": run.error_message,
        "owner": None,
        "attempts": run.attempts,
        "created_at": _to_epoch(run.created_at),
        "started_at": _to_epoch(run.started_at),
        "completed_at": _to_epoch(run.completed_at),
        "updated_at": _to_epoch(run.updated_at),
    }


def run_to_active_record(run: Run) -> dict[str, Any]:
    """The part of a running run's record that changes while it runs (cheap to build)."""
    started = run.started_at
    return {
        "run_id": run.run_id,
        "task_id": run.task_id,
        "status": run.status.value,
        "progress_percent": float(run.progress_percent),
        "progress_message": run.progress_message,
        "items_processed": run.items_processed,
        "items_total": run.items_total,
        "attempts": run.attempts,
        "started_at": None if started is None else started.timestamp(),
    }


def record_to_run(record: dict[str, Any]) -> Run:
    """Build a :class:`Run` from its storage form."""
    return Run(
        run_id=record["run_id"],
        module_id=record["module_id"],
        module_name=record["module_name"],
        status=RunStatus(record["status"]),
        created_at=epoch_to_datetime(record["created_at"]),  # type: ignore[arg-type]
        started_at=epoch_to_datetime(record["started_at"]),
        completed_at=epoch_to_datetime(record["completed_at"]),
        progress_percent=record["progress_percent"],
        progress_message=record["progress_message"],
        items_processed=record["items_processed"],
        items_total=record["items_total"],
        exit_code=record["exit_code"],
        error_message=record["error_message"],
        parameters=copy.deepcopy(record["parameters"]),
        rerunnable=bool(record["rerunnable"]),
        attempts=record["attempts"],
        task_id=record["task_id"],
        updated_at=epoch_to_datetime(record["updated_at"]),
    )


def validate_run(run: Run) -> None:
    """Check what storage needs of a run, in either mode (same rules, same errors).

    Raises:
        ValidationError: Not a ``Run``, or progress or item counts out of range.
        PayloadError: The parameters are not JSON or larger than 1 MiB.
    """
    if not isinstance(run, Run):
        raise ValidationError(f"expected a Run, got {type(run).__name__}")
    encode_json(run.parameters, "parameters", DEFAULT_MAX_PAYLOAD_BYTES)
    check_progress(run.progress_percent, run.items_processed, run.items_total, run.progress_message)


def check_progress(
    percent: float, items_processed: int | None, items_total: int | None, message: str | None
) -> None:
    """Validate one progress report.

    Raises:
        ValidationError: ``percent`` outside 0..100, a negative or non-integer item count,
            or a message longer than 1000 characters.
    """
    if finite_float(percent) is None or not 0 <= percent <= 100:
        raise ValidationError(f"progress percent must be a number from 0 to 100, got {percent!r}")
    for name, value in (("items_processed", items_processed), ("items_total", items_total)):
        if value is not None and (not is_int(value) or value < 0):
            raise ValidationError(f"{name} must be an integer >= 0, got {value!r}")
    if message is not None and (not isinstance(message, str) or len(message) > 1000):
        raise ValidationError("progress message must be a string of at most 1000 characters")


class RunStore(Protocol):
    """Where a registry keeps run records (plain dicts, UTC epoch-second times).

    :class:`MemoryRunStore` keeps them in this process;
    :class:`~prismq.queue.backends.sqlite.runs.SQLiteRunStore` and
    :class:`~prismq.queue.backends.postgres.runs.PostgresRunStore` in a queue database.
    The *owner* methods are what a :class:`BackgroundTaskManager` uses: each active run
    belongs to one manager, which holds a lease on it and renews it while it runs.
    """

    durable: bool

    def now(self) -> float:
        """The store's clock (UTC epoch seconds)."""
        ...

    def batch(self) -> Any:
        """A context manager grouping several calls into one commit."""
        ...

    def insert(self, record: dict[str, Any], locker: str, lease_until: float) -> dict[str, Any]:
        """Add a run; raise ``ValidationError`` if its id exists."""
        ...

    def update(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Overwrite a run's fields; ``None`` if it does not exist."""
        ...

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One run, or ``None``."""
        ...

    def query(
        self,
        statuses: Sequence[str] | None = None,
        module_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs matching the filters, newest first."""
        ...

    def delete_finished_before(self, before: float) -> int:
        """Delete finished runs that ended before ``before``; return how many."""
        ...

    def claim(self, record: dict[str, Any], owner: str, lease_until: float) -> dict[str, Any] | None:
        """Insert the run owned by ``owner``, or take over a free queued run of that id."""
        ...

    def save(self, records: Sequence[dict[str, Any]], owner: str) -> list[bool]:
        """Write runs ``owner`` holds; False where it no longer holds the run."""
        ...

    def save_active(self, records: Sequence[dict[str, Any]], owner: str) -> None:
        """Write progress and start of active runs ``owner`` holds (no result wanted).

        The records are partial: ``run_id``, ``task_id``, ``status``, the progress
        fields, ``attempts`` and ``started_at``.
        """
        ...

    def renew(self, owner: str, lease_until: float) -> dict[str, bool]:
        """Renew ``owner``'s leases; per held run, whether cancellation was requested."""
        ...

    def interrupt_orphans(self) -> list[str]:
        """Mark interrupted the active runs whose owner died; return their ids."""
        ...

    def ended_runs(self, owner: str) -> list[dict[str, Any]]:
        """Runs a registry finished while ``owner`` still holds their task's lease."""
        ...

    def take_rerunnable(
        self, module_ids: Sequence[str], owner: str, lease_until: float
    ) -> list[dict[str, Any]]:
        """Queue interrupted re-runnable runs of these modules again, owned by ``owner``."""
        ...

    def request_cancel(self, run_id: str) -> bool:
        """Ask an active run's owner to cancel it; False if the run is not active."""
        ...


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    """A record nobody else can change: its values are immutable but the parameters."""
    return {**record, "parameters": copy.deepcopy(record["parameters"])}


class MemoryRunStore:
    """Run records in this process only (the original behaviour): lost on exit.

    Owners cannot die without the store, so nothing is ever orphaned here; cancellation
    requests only come through the owning manager itself.
    """

    durable = False

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()

    def now(self) -> float:
        """The wall clock (UTC epoch seconds)."""
        return time.time()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the store's lock across several calls."""
        with self._lock:
            yield

    def __len__(self) -> int:
        return len(self._runs)

    def insert(self, record: dict[str, Any], locker: str, lease_until: float) -> dict[str, Any]:
        """Add a run; raise ``ValidationError`` if its id exists."""
        with self._lock:
            if record["run_id"] in self._runs:
                raise ValidationError(f"a run with id {record['run_id']!r} already exists")
            stored = {**_copy(record), "owner": None, "updated_at": self.now()}
            self._runs[record["run_id"]] = stored
            return _copy(stored)

    def update(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Overwrite a run's fields (its owner and task id stay)."""
        with self._lock:
            old = self._runs.get(record["run_id"])
            if old is None:
                return None
            new = {**_copy(record), "owner": old["owner"], "task_id": old["task_id"]}
            new["module_id"] = old["module_id"]
            new["created_at"] = old["created_at"]
            new["updated_at"] = self.now()
            self._runs[record["run_id"]] = new
            return _copy(new)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One run, or ``None``."""
        with self._lock:
            found = self._runs.get(run_id)
            return None if found is None else _copy(found)

    def query(
        self,
        statuses: Sequence[str] | None = None,
        module_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs matching the filters, newest first."""
        with self._lock:
            found = [
                r
                for r in self._runs.values()
                if (statuses is None or r["status"] in statuses)
                and (module_id is None or r["module_id"] == module_id)
            ]
            found.sort(key=lambda r: (r["created_at"], r["run_id"]), reverse=True)
            if limit is not None:
                found = found[:limit]
            return [_copy(r) for r in found]

    def delete_finished_before(self, before: float) -> int:
        """Delete finished runs that ended before ``before``."""
        with self._lock:
            old = [
                run_id
                for run_id, r in self._runs.items()
                if r["status"] not in ("queued", "running")
                and (r["completed_at"] if r["completed_at"] is not None else r["created_at"]) < before
            ]
            for run_id in old:
                del self._runs[run_id]
            return len(old)

    def claim(self, record: dict[str, Any], owner: str, lease_until: float) -> dict[str, Any] | None:
        """Insert the run owned by ``owner``, or take over a queued run nobody owns."""
        with self._lock:
            old = self._runs.get(record["run_id"])
            if old is None:
                stored = {**_copy(record), "owner": owner, "updated_at": self.now()}
                self._runs[record["run_id"]] = stored
                return _copy(stored)
            if old["status"] != "queued" or old["owner"] not in (None, owner):
                return None
            old["owner"] = owner
            old["updated_at"] = self.now()
            return _copy(old)

    def save(self, records: Sequence[dict[str, Any]], owner: str) -> list[bool]:
        """Write runs ``owner`` holds."""
        done = []
        with self._lock:
            for record in records:
                old = self._runs.get(record["run_id"])
                if old is None or old["owner"] != owner or old["status"] not in ("queued", "running"):
                    done.append(False)
                    continue
                new = {**_copy(record), "owner": owner, "task_id": old["task_id"]}
                new["module_id"] = old["module_id"]
                new["created_at"] = old["created_at"]
                new["updated_at"] = self.now()
                self._runs[record["run_id"]] = new
                done.append(True)
        return done

    def save_active(self, records: Sequence[dict[str, Any]], owner: str) -> None:
        """Write progress and start of active runs ``owner`` holds (partial records)."""
        now = self.now()
        with self._lock:
            for record in records:
                old = self._runs.get(record["run_id"])
                if old is not None and old["owner"] == owner and old["status"] in ("queued", "running"):
                    old.update(record, completed_at=None, updated_at=now, task_id=old["task_id"])

    def ended_runs(self, owner: str) -> list[dict[str, Any]]:
        """Nothing: runs here have no task whose lease could outlive them."""
        return []

    def renew(self, owner: str, lease_until: float) -> dict[str, bool]:
        """Runs ``owner`` holds (no leases to renew in memory)."""
        with self._lock:
            return {
                run_id: False
                for run_id, r in self._runs.items()
                if r["owner"] == owner and r["status"] in ("queued", "running")
            }

    def interrupt_orphans(self) -> list[str]:
        """Nothing is orphaned in memory: every owner lives in this process."""
        return []

    def take_rerunnable(
        self, module_ids: Sequence[str], owner: str, lease_until: float
    ) -> list[dict[str, Any]]:
        """Queue interrupted re-runnable runs of these modules again, owned by ``owner``."""
        taken = []
        now = self.now()
        with self._lock:
            for r in self._runs.values():
                if r["status"] == "interrupted" and r["rerunnable"] and r["module_id"] in module_ids:
                    r.update(
                        status="queued",
                        owner=owner,
                        started_at=None,
                        completed_at=None,
                        exit_code=None,
                        error_message=None,
                        progress_percent=0.0,
                        progress_message=None,
                        items_processed=None,
                        updated_at=now,
                    )
                    taken.append(_copy(r))
        return taken

    def request_cancel(self, run_id: str) -> bool:
        """Only the owning manager cancels in memory; nothing to flag."""
        return False


class RunRegistry:
    """Every run's record: in memory by default, or durable in a queue database.

    Args:
        queue: Keep runs in this queue database (SQLite or PostgreSQL) instead of in
            memory; its schema is created or migrated if needed.
        lease_duration: With ``queue``, seconds a run added here while active
            (queued or running) stays owned without a manager renewing it; a manager's
            ``start_task`` takes it over. Past that it counts as interrupted.

    The durable store is the one the queue database's backend provides
    (:meth:`Backend.run_store <prismq.queue.backends.base.Backend.run_store>`).

    Example:
        >>> registry = RunRegistry()
        >>> registry.add_run(Run(run_id="r1", module_id="youtube", parameters={"n": 5}))
        >>> registry.get_run("r1").status
        <RunStatus.QUEUED: 'queued'>
    """

    def __init__(
        self, queue: QueueDatabase | None = None, *, lease_duration: float = DEFAULT_LEASE_DURATION
    ) -> None:
        if not is_number(lease_duration) or lease_duration <= 0:
            raise ValidationError(
                f"lease_duration must be a positive number of seconds, got {lease_duration!r}"
            )
        self.lease_duration = float(lease_duration)
        self.queue: QueueDatabase | None = None
        self.store: RunStore = MemoryRunStore()
        self._locker = f"prismq.runs:{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        if queue is not None:
            self.use_queue(queue)

    @property
    def durable(self) -> bool:
        """True when runs live in a queue database."""
        return self.store.durable

    def use_queue(self, queue: QueueDatabase) -> None:
        """Keep runs in ``queue`` from now on (what ``BackgroundTaskManager(queue=...)`` does).

        Raises:
            ConfigError: The registry already uses another database or already holds
                runs in memory.
        """
        if self.queue is queue:
            return
        if self.queue is not None:
            raise ConfigError(f"this registry already keeps runs in {self.queue.location}; create another")
        if isinstance(self.store, MemoryRunStore) and len(self.store):
            raise ConfigError(
                "this registry already holds runs in memory; attach the queue database before adding runs"
            )
        queue.initialize_schema()
        self.store = queue.backend.run_store(queue.now)
        self.queue = queue

    def now(self) -> float:
        """The registry's clock: the queue database's, or the wall clock (epoch seconds)."""
        return self.store.now()

    # -- writing ---------------------------------------------------------------
    def add_run(self, run: Run) -> None:
        """Record a new run.

        Raises:
            ValidationError: A run with this id exists, or the run is malformed.
            PayloadError: Its parameters are not JSON.
        """
        validate_run(run)
        stored = self.store.insert(run_to_record(run), self._locker, self.now() + self.lease_duration)
        run.task_id = stored["task_id"]
        run.updated_at = epoch_to_datetime(stored["updated_at"])

    def update_run(self, run: Run) -> None:
        """Overwrite a run's record with the object's fields (its id and module stay).

        Raises:
            RunNotFoundError: No run with this id.
        """
        validate_run(run)
        stored = self.store.update(run_to_record(run))
        if stored is None:
            raise RunNotFoundError(f"no run with id {run.run_id!r}")
        run.updated_at = epoch_to_datetime(stored["updated_at"])

    def cleanup_old_runs(self, max_age_days: float = 30) -> int:
        """Delete runs that finished more than ``max_age_days`` ago (active runs stay).

        Returns:
            How many runs were deleted (with their queue tasks, when durable).
        """
        if not is_number(max_age_days) or max_age_days < 0:
            raise ValidationError(f"max_age_days must be a number >= 0, got {max_age_days!r}")
        return self.store.delete_finished_before(self.now() - max_age_days * 86400.0)

    # -- reading ---------------------------------------------------------------
    def get_run(self, run_id: str) -> Run | None:
        """A snapshot of one run, or ``None``."""
        record = self.store.get(run_id)
        return None if record is None else record_to_run(record)

    def get_active_runs(self) -> list[Run]:
        """Queued and running runs, newest first."""
        return self._runs(statuses=[s.value for s in ACTIVE_STATUSES])

    def get_runs_by_module(self, module_id: str, limit: int | None = None) -> list[Run]:
        """Runs of one module, newest first."""
        return self._runs(module_id=module_id, limit=limit)

    def get_runs_by_status(self, status: RunStatus | str, limit: int | None = None) -> list[Run]:
        """Runs in one status, newest first."""
        try:
            value = RunStatus(status).value
        except ValueError:
            raise ValidationError(
                f"unknown run status {status!r}; use one of {', '.join(s.value for s in RunStatus)}"
            ) from None
        return self._runs(statuses=[value], limit=limit)

    def get_recent_runs(self, limit: int = 50) -> list[Run]:
        """The ``limit`` newest runs."""
        return self._runs(limit=limit)

    def get_all_runs(self) -> list[Run]:
        """Every run, newest first."""
        return self._runs()

    def _runs(
        self, statuses: list[str] | None = None, module_id: str | None = None, limit: int | None = None
    ) -> list[Run]:
        if limit is not None and (not is_int(limit) or limit < 1):
            raise ValidationError(f"limit must be an integer >= 1, got {limit!r}")
        return [record_to_run(r) for r in self.store.query(statuses, module_id, limit)]

    def __repr__(self) -> str:
        where = self.queue.location if self.queue is not None else "memory"
        return f"RunRegistry({where!r})"
