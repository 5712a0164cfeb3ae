"""Copy a queue from one database to another: SQLite to PostgreSQL, or back.

::

    from prismq.queue import QueueDatabase
    from prismq.queue.migrate import migrate

    with QueueDatabase("queue.db") as source, QueueDatabase("postgresql://db/jobs") as target:
        report = migrate(source, target, progress=lambda done, total: print(done, total))
    print(report.summary())

Every task is copied with its id, so ids that callers kept stay valid:

- ready, delayed, dead, cancelled and completed tasks (with their results) as they are;
- every leased task (running when the copy was made) goes back to ``queued`` with that
  attempt not counted, as a release would; one whose cancellation was requested becomes
  ``cancelled``. Their workers' leases do not survive the move. The task of an active run
  is no exception: its type is never looked at.

The runs of :mod:`prismq.queue.integrations` (the ``runs`` table) follow their tasks, in
task id order, upserted by run id, as they are. A run that was active (queued or running)
therefore arrives still active, with its task released: no manager holds it on the target.
The first :class:`~prismq.queue.integrations.BackgroundTaskManager` that starts there
recovers it as after a crash (``interrupt_orphans`` of the run store, the code that handles
a manager whose lease ran out): the run becomes ``interrupted`` and its task ``dead`` (its
task arrived ``cancelled`` if its cancellation was requested); then a manager that
registered the run's module re-runs it under the same run id and task id if the run is
``rerunnable``, and leaves it interrupted otherwise.

Periodic schedules (the ``schedules`` table of :mod:`prismq.queue.schedules`) are copied
after the runs, with their state (paused, next and last run), upserted by name and read back.

The flow-control limits (:mod:`prismq.queue.flow`) follow, upserted by scope (task type and
key) and read back: each copied scope gets exactly the source's concurrency and rate limit,
written through the target backend's own ``set_limit`` (and ``remove_limit`` for a part the
source's scope lacks), so the target's bookkeeping for them starts from its own tasks.
Limits of scopes the source does not have are left as they are. The rate limits' record of
recent claims (``flow_starts``) is not copied: a rate limit starts on the target with no
claims counted.

The copy is an upsert by id in batches, so it is safe to run again: a second run brings
the target up to date with the source. The target should be empty or an earlier copy of
the same source: a target task with a copied id (or run with a copied run id) is
overwritten. Each batch is read back from the target and compared, and the report carries
the row counts and a SHA-256 over every copied row, tasks then runs.
Stop workers and producers on the source first: rows changed during the copy are copied
as they were when their batch was read (run it again to catch up). The worker registry is
not copied; workers register again when they start on the target. Paused task types are
not copied either: pause them again on the target (``QueueClient.pause``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends.common import TASK_COPY_COLUMNS
from .backends.runstore import ACTIVE, RUN_COLUMNS
from .backends.schedulestore import ScheduleStore
from .database import QueueDatabase
from .errors import ConfigError, QueueError, StorageError
from .flow import write_limits
from .validation import is_int

__all__ = ["MigrationError", "MigrationReport", "migrate"]

COLUMNS = TASK_COPY_COLUMNS
"""Every column of ``tasks``, in the order rows are read and hashed."""


class MigrationError(StorageError):
    """The copy could not be made, or the target does not match what was written."""


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did.

    Attributes:
        source: Where the tasks came from (path or URL without password).
        target: Where they went.
        tasks_copied: Tasks written to the target (all of the source's).
        by_status: Copied tasks per status, as written to the target.
        leases_requeued: Leased tasks returned to the queue (or cancelled) on the way, the
            tasks of active runs among them.
        runs_copied: Runs (of ``prismq.queue.integrations``) written to the target.
        runs_active: Copied runs that were active (queued or running): a manager on the
            target recovers them as after a crash (re-run if re-runnable, else interrupted).
        schedules_copied: Periodic schedules written to the target.
        limits_copied: Scopes whose flow-control limits were written to the target.
        checksum: SHA-256 over every copied row as written: tasks in id order, then runs
            in task id order.
        verified: True: every batch read back from the target matched.
        seconds: How long the copy took.
    """

    source: str
    target: str
    tasks_copied: int
    by_status: dict[str, int] = field(default_factory=dict)
    leases_requeued: int = 0
    runs_copied: int = 0
    runs_active: int = 0
    schedules_copied: int = 0
    limits_copied: int = 0
    checksum: str = ""
    verified: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for people: counts, checksum and verification."""
        counts = ", ".join(f"{status} {n}" for status, n in sorted(self.by_status.items()))
        return (
            f"copied {self.tasks_copied} tasks from {self.source} to {self.target} ({counts or 'none'}) "
            f"and {self.runs_copied} runs, {self.schedules_copied} schedules and "
            f"{self.limits_copied} limits; {self.leases_requeued} running tasks requeued, "
            f"{self.runs_active} active runs left to recover; sha256 {self.checksum[:16]}...; "
            f"{'verified' if self.verified else 'NOT verified'} in {self.seconds:.1f} s"
        )


class _Tasks:
    """Row-level reads and upserts of ``tasks`` and ``runs`` on one database."""

    def __init__(self, database: QueueDatabase) -> None:
        self.location = database.location
        self.backend = database.backend

    def count(self) -> int:
        return self.backend.copy_count("tasks")

    def after(self, after: int, limit: int) -> list[dict[str, Any]]:
        return self.backend.copy_read("tasks", after, limit)

    def between(self, first: int, last: int) -> list[dict[str, Any]]:
        return self.backend.copy_read_between("tasks", first, last)

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        self.backend.copy_write("tasks", rows)

    def count_runs(self) -> int:
        """Runs in the database (0 when its schema has no ``runs`` table)."""
        return self.backend.copy_count("runs")

    def runs_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        return self.backend.copy_read("runs", after, limit)

    def runs_between(self, first: int, last: int) -> list[dict[str, Any]]:
        return self.backend.copy_read_between("runs", first, last)

    def upsert_runs(self, rows: Sequence[dict[str, Any]]) -> None:
        self.backend.copy_write("runs", rows)


def _requeue(row: dict[str, Any], now: float) -> dict[str, Any]:
    """A leased row as it goes to the target: released (or cancelled if asked)."""
    out = {**row, "lease_until": None, "locked_by": None, "lease_token": None, "updated_at": now}
    if row["cancel_requested"]:
        out.update(status="cancelled", finished_at=now)
    else:
        out.update(status="queued", attempts=max(int(row["attempts"]) - 1, 0))
    return out


def _copy_schedules(source: QueueDatabase, target: QueueDatabase) -> int:
    """Copy every periodic schedule with its state; read each back. Returns the count."""
    reader, writer = source.backend.schedule_store(), target.backend.schedule_store()
    if not _has_schedules(reader):
        return 0
    records = reader.list()
    for record in records:
        try:
            writer.put(record)
        except QueueError as exc:
            raise MigrationError(
                f"copying schedule {record['name']!r} to {target.location} failed: {exc}; every task "
                "and run was copied, run the migration again once the cause is fixed"
            ) from None
        stored = writer.get(record["name"])
        if stored != record:
            raise MigrationError(
                f"schedule {record['name']!r} read back from {target.location} differs from the source"
            )
    return len(records)


def _copy_limits(source: QueueDatabase, target: QueueDatabase) -> int:
    """Copy every flow-control limit definition by scope; read them back. Returns the count.

    Written through the target backend's ``set_limit``/``remove_limit``
    (:func:`~prismq.queue.flow.write_limits`), in one transaction; ``flow_starts`` is not
    copied.
    """
    try:
        limits = source.backend.list_limits()
    except StorageError:
        return 0  # a schema from before flow control: no limits to copy
    try:
        with target.backend.transaction():
            count = write_limits(target.backend, limits, replace=False)
    except QueueError as exc:
        raise MigrationError(
            f"copying the flow-control limits to {target.location} failed: {exc}; every task, "
            "run and schedule was copied, run the migration again once the cause is fixed"
        ) from None
    wanted = {(limit.task_type, limit.key): limit for limit in limits}
    stored = {(limit.task_type, limit.key): limit for limit in target.backend.list_limits()}
    if {scope: stored.get(scope) for scope in wanted} != wanted:
        raise MigrationError(
            f"the flow-control limits read back from {target.location} differ from the source"
        )
    return count


def _has_schedules(store: ScheduleStore) -> bool:
    """True when the database has the ``schedules`` table (a schema that knows schedules)."""
    try:
        store.next_due()
    except StorageError:
        return False
    return True


def _same_database(a: QueueDatabase, b: QueueDatabase) -> bool:
    return a.backend.identity == b.backend.identity


def _row_bytes(row: dict[str, Any], columns: Sequence[str] = COLUMNS) -> bytes:
    return (json.dumps([row[c] for c in columns], separators=(",", ":")) + "\n").encode("utf-8")


def migrate(
    source: QueueDatabase,
    target: QueueDatabase,
    *,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> MigrationReport:
    """Copy every task, run, schedule and limit from ``source`` to ``target``; verify the copy.

    Ids are kept. The target's schema is created if needed. Running it again is safe: rows
    are upserted by id (schedules by name, limits by scope).

    Args:
        source: The database to copy from (left unchanged).
        target: The database to copy into (SQLite or PostgreSQL, either direction).
        batch_size: Rows per read and per write transaction (1 to 100,000).
        progress: Called as ``progress(copied, total)`` after every batch; the counts are
            of rows, tasks and runs together.

    Returns:
        The counts, checksum and verification result.

    Raises:
        MigrationError: Source and target are the same database, a batch could not be
            written (for instance an idempotency key already used by another task in the
            target), a schedule or limit could not be written, or the target did not read
            back as written.
        ConfigError: ``batch_size`` is out of range.
    """
    if not is_int(batch_size) or not 1 <= batch_size <= 100_000:
        raise ConfigError(f"batch_size must be an integer from 1 to 100000, got {batch_size!r}")
    if _same_database(source, target):
        raise MigrationError(f"source and target are the same database ({source.location})")
    started = time.monotonic()
    reader, writer = _Tasks(source), _Tasks(target)
    target.initialize_schema()
    total = reader.count()
    total_runs = reader.count_runs()
    now = source.now()
    digest_written, digest_read = hashlib.sha256(), hashlib.sha256()
    by_status: dict[str, int] = {}
    copied = requeued = 0
    after = 0
    while True:
        rows = reader.after(after, batch_size)
        if not rows:
            break
        outgoing = []
        for row in rows:
            if row["status"] == "leased":
                row = _requeue(row, now)
                requeued += 1
            outgoing.append(row)
            by_status[row["status"]] = by_status.get(row["status"], 0) + 1
            digest_written.update(_row_bytes(row))
        first, last = outgoing[0]["id"], outgoing[-1]["id"]
        try:
            writer.upsert(outgoing)
        except QueueError as exc:
            raise MigrationError(
                f"copying tasks {first}..{last} to {writer.location} failed: {exc}. Tasks before "
                f"{first} were copied; fix the cause and run migrate again."
            ) from None
        wanted = {row["id"] for row in outgoing}
        stored = [row for row in writer.between(first, last) if row["id"] in wanted]
        for row in stored:
            digest_read.update(_row_bytes(row))
        if stored != outgoing:
            raise MigrationError(
                f"tasks {first}..{last} read back from {writer.location} differ from what was "
                "written; the target is not trustworthy. Check it, then run migrate again."
            )
        copied += len(outgoing)
        after = last
        if progress is not None:
            progress(copied, max(total, copied) + total_runs)
    runs_copied = runs_active = 0
    after = 0
    while True:
        rows = reader.runs_after(after, batch_size)
        if not rows:
            break
        outgoing = rows  # as they are: an active run is recovered on the target (see above)
        for row in outgoing:
            runs_active += row["status"] in ACTIVE
            digest_written.update(_row_bytes(row, RUN_COLUMNS))
        first, last = outgoing[0]["task_id"], outgoing[-1]["task_id"]
        try:
            writer.upsert_runs(outgoing)
        except QueueError as exc:
            raise MigrationError(
                f"copying the runs of tasks {first}..{last} to {writer.location} failed: {exc}. "
                "Every task and the runs before them were copied; fix the cause (a run id or "
                "task id the target already uses for another run) and run migrate again."
            ) from None
        wanted = {row["run_id"] for row in outgoing}
        stored = [row for row in writer.runs_between(first, last) if row["run_id"] in wanted]
        for row in stored:
            digest_read.update(_row_bytes(row, RUN_COLUMNS))
        if stored != outgoing:
            raise MigrationError(
                f"the runs of tasks {first}..{last} read back from {writer.location} differ from "
                "what was written; the target is not trustworthy. Check it, then run migrate again."
            )
        runs_copied += len(outgoing)
        after = last
        if progress is not None:
            progress(copied + runs_copied, max(total, copied) + max(total_runs, runs_copied))
    if digest_written.hexdigest() != digest_read.hexdigest():  # pragma: no cover - caught per batch
        raise MigrationError("the checksum of the copy does not match the checksum of the source rows")
    schedules_copied = _copy_schedules(source, target)
    limits_copied = _copy_limits(source, target)
    return MigrationReport(
        source=source.location,
        target=target.location,
        tasks_copied=copied,
        by_status=by_status,
        leases_requeued=requeued,
        runs_copied=runs_copied,
        runs_active=runs_active,
        schedules_copied=schedules_copied,
        limits_copied=limits_copied,
        checksum=digest_written.hexdigest(),
        verified=True,
        seconds=time.monotonic() - started,
    )
