"""What the run stores of the SQL backends share (see :mod:`prismq.queue.integrations`).

A run is stored twice over, on purpose:

- as a **task** of type ``prismq.run:<module_id>`` in the ``tasks`` table, so
  :meth:`QueueClient.list <prismq.queue.client.QueueClient.list>`, ``stats`` and the CLI
  see every run: leased while it is queued or running (the lease belongs to the manager
  that runs it), then completed, dead (failed or interrupted) or cancelled;
- as a row of the ``runs`` table (migration 0002) holding what a run has beyond the task
  columns: its six-valued status, module name, parameters, item counts, exit code,
  owner and re-run flag. This row is the run's record; the task mirrors it.

A run's task changes only through the backend's fenced task operations: it is inserted
already leased (``Backend.insert_leased``, one attempt allowed, so a lease that runs out
makes it dead, never queued), leased again under a fresh token for a takeover or a re-run
(``Backend.lease_again``), and from then on renewed, updated and finished by its owning
manager's ``QueueWorker``. A run whose task no live manager leases any more (the lease ran
out, or the task was released to the queue, as ``prismq.queue.migrate`` releases every
lease it copies) is interrupted by :meth:`SQLRunStore.interrupt_orphans`, its task made
dead, and re-run by :meth:`SQLRunStore.take_rerunnable` if it is re-runnable. The
statements of ``runs.sql`` write ``runs`` rows only, and a queue worker claims a run task
only if it names run task types (the claim's ``ready_filter``). Records cross this
interface as plain dicts with UTC epoch-second times; :mod:`prismq.queue.integrations.runs`
turns them into ``Run`` objects.

Each backend's store subclasses :class:`SQLRunStore` with its ``runs.sql`` queries and
says how it binds a list and a flag and how it reports a duplicate run id.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from ..models import Task, TaskStatus
from .base import Connections, NewTask, TaskUpdate

__all__ = [
    "ACTIVE",
    "RECOVERY_HOLDER",
    "RUN_COLUMNS",
    "RUN_TASK_PREFIX",
    "SQLRunStore",
    "row_to_record",
    "run_params",
    "task_mirror",
]

RUN_COLUMNS = (
    "run_id",
    "task_id",
    "module_id",
    "module_name",
    "status",
    "parameters",
    "rerunnable",
    "progress_percent",
    "progress_message",
    "items_processed",
    "items_total",
    "exit_code",
    "error_message",
    "owner",
    "attempts",
    "created_at",
    "started_at",
    "completed_at",
    "updated_at",
)

RUN_TASK_PREFIX = "prismq.run:"
"""Task type prefix of run tasks; the module id follows it."""

RECOVERY_HOLDER = "prismq.runs:recovery"
"""Lease holder under which an interrupted run's released task is failed (see
:meth:`SQLRunStore.interrupt_orphans`)."""
RECOVERY_LEASE = 60.0
"""Seconds of that lease; it ends in the same transaction."""

ACTIVE = ("queued", "running")
# The task status that mirrors each run status.
_TASK_STATUS = {
    "queued": "leased",
    "running": "leased",
    "completed": "completed",
    "failed": "dead",
    "cancelled": "cancelled",
    "interrupted": "dead",
}


def row_to_record(row: Sequence[Any]) -> dict[str, Any]:
    """A ``runs`` row as a record dict (parameters decoded, flag as bool)."""
    record = dict(zip(RUN_COLUMNS, row, strict=True))
    record["parameters"] = json.loads(record["parameters"])
    record["rerunnable"] = bool(record["rerunnable"])
    return record


def run_params(record: dict[str, Any], now: float, fence: str | None, rerunnable: Any) -> dict[str, Any]:
    """Bind a run record's columns (``rerunnable`` already in the database's boolean form)."""
    return {
        "run_id": record["run_id"],
        "module_name": record["module_name"],
        "status": record["status"],
        "parameters": json.dumps(record["parameters"], separators=(",", ":")),
        "rerunnable": rerunnable,
        "progress_percent": record["progress_percent"],
        "progress_message": record["progress_message"],
        "items_processed": record["items_processed"],
        "items_total": record["items_total"],
        "exit_code": record["exit_code"],
        "error_message": record["error_message"],
        "attempts": record["attempts"],
        "started_at": record["started_at"],
        "completed_at": record["completed_at"],
        "now": now,
        "fence": fence,
    }


def task_mirror(record: dict[str, Any]) -> dict[str, Any]:
    """Task columns that reflect a run: status, result, error, progress."""
    status = record["status"]
    result = None
    if status == "completed":
        result = json.dumps({"run_id": record["run_id"], "exit_code": record["exit_code"]})
    error = record["error_message"] if status in ("failed", "interrupted") else None
    if status == "cancelled":
        error = record["error_message"] or "cancelled"
    return {
        "task_status": _TASK_STATUS[status],
        "result": result,
        "last_error": error,
        "progress": record["progress_percent"],
        "progress_message": record["progress_message"],
    }


class SQLRunStore:
    """Run storage logic shared by the SQL backends; SQL comes from ``queries``."""

    queries: ClassVar[dict[str, str]]

    def _array(self, values: list[Any]) -> Any:
        """Bind a list parameter."""
        raise NotImplementedError

    def _flag(self, value: bool) -> Any:
        """Bind a boolean parameter."""
        raise NotImplementedError

    def _insert_run(self, conn: Any, params: dict[str, Any], run_id: str) -> None:
        """Insert the ``runs`` row; raise ValidationError when ``run_id`` already exists."""
        raise NotImplementedError

    def _lock_run(self, conn: Any, run_id: str) -> None:
        """Serialise inserts and claims of one run id until commit (where the write lock does not)."""

    def _limit(self, limit: int | None) -> Any:
        """Bind a ``LIMIT`` (``None``: no limit)."""
        raise NotImplementedError

    def _executemany(self, conn: Any, sql: str, values: Sequence[dict[str, Any]]) -> None:
        """Run ``sql`` once per parameter set."""
        conn.executemany(sql, values)

    def _delete_finished(self, conn: Any, before: float) -> int:
        """Delete finished runs that ended before ``before`` with their tasks; return how many."""
        raise NotImplementedError

    def _run_params(self, record: dict[str, Any], now: float, fence: str | None) -> dict[str, Any]:
        return run_params(record, now, fence, self._flag(bool(record["rerunnable"])))

    def __init__(self, backend: Any, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend  # its fenced task operations; the run rows go through db
        self.db: Connections = backend.db
        self._clock = clock

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One write transaction; store calls made inside it on this thread join it."""
        with self.db.transaction():
            yield

    def _insert(
        self,
        conn: Any,
        record: dict[str, Any],
        owner: str | None,
        locker: str,
        lease_until: float,
        now: float,
    ) -> dict[str, Any]:
        """Insert a run: its task through the backend's fenced operations, then its row.

        The task is inserted leased by ``locker`` (:meth:`Backend.insert_leased`); a run
        recorded already finished has its task finished at once under that fresh lease.
        """
        status = record["status"]
        active = status in ACTIVE
        payload = {
            "run_id": record["run_id"],
            "module_id": record["module_id"],
            "module_name": record["module_name"],
            "parameters": record["parameters"],
        }
        new = NewTask(
            task_type=RUN_TASK_PREFIX + record["module_id"],
            payload_json=json.dumps(payload, separators=(",", ":")),
            priority=100,
            run_after=record["created_at"],
            max_attempts=1,
            retry_policy_json="{}",
        )
        task = self.backend.insert_leased(new, locker, lease_until, now)
        update = TaskUpdate(task.id, locker, task.lease_token or "")
        mirror = task_mirror(record)
        if mirror["progress"] or mirror["progress_message"] is not None:
            self.backend.update_progress(
                update, mirror["progress"] or 0.0, mirror["progress_message"], lease_until, now
            )
        if status == "completed":
            self.backend.complete_tasks([update], [mirror["result"]], now)
        elif not active:
            ended = TaskStatus.CANCELLED if status == "cancelled" else TaskStatus.DEAD
            self.backend.finish_attempt(update, ended, None, mirror["last_error"], None, True, now)
        run_params = {
            **self._run_params(record, now, None),
            "task_id": task.id,
            "module_id": record["module_id"],
            "owner": owner if active else None,
            "created_at": record["created_at"],
        }
        self._insert_run(conn, run_params, record["run_id"])
        stored = {**record, "task_id": task.id, "owner": owner if active else None, "updated_at": now}
        return {**stored, "task": task} if active else stored

    def _lease(self, conn: Any, task_id: int, owner: str, lease_until: float) -> Task | None:
        """Make ``owner`` the lease holder of a run's task, reviving it when it had ended.

        Through :meth:`Backend.lease_again`, under a fresh lease token: the run row was
        taken first (``claim_run``/``take_rerunnable``), so the task's current holder, if
        any, hands it over.
        """
        current = self.backend.get_task(task_id)
        handover = None if current is None else current.lease_token
        leased: Task | None = self.backend.lease_again(task_id, owner, lease_until, self.now(), handover)
        return leased

    def now(self) -> float:
        """The queue database's clock (UTC epoch seconds)."""
        return self._clock()

    # -- registry --------------------------------------------------------------
    def insert(self, record: dict[str, Any], locker: str, lease_until: float) -> dict[str, Any]:
        """Add a run (and its task); an active run's task is leased by ``locker``.

        Raises:
            ValidationError: A run with this id exists.
        """
        now = self.now()

        def work(conn: Any) -> dict[str, Any]:
            self._lock_run(conn, record["run_id"])
            stored = self._insert(conn, record, None, locker, lease_until, now)
            stored.pop("task", None)
            return stored

        return self.db.write(work)

    def query(
        self,
        statuses: Sequence[str] | None = None,
        module_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs matching the filters, newest first."""
        params = {
            "statuses": None if statuses is None else self._array(list(statuses)),
            "module_id": module_id,
            "limit": self._limit(limit),
        }
        rows = self.db.read(lambda c: c.execute(self.queries["list_runs"], params).fetchall())
        return [row_to_record(r) for r in rows]

    def delete_finished_before(self, before: float) -> int:
        """Delete finished runs (and their tasks) that ended before ``before``."""
        return int(self.db.write(lambda c: self._delete_finished(c, before)))

    # -- owning manager --------------------------------------------------------
    def claim(self, record: dict[str, Any], owner: str, lease_until: float) -> dict[str, Any] | None:
        """Record a run as owned by ``owner``: insert it, or take over a queued one.

        Returns:
            The stored record, or ``None`` when the run exists and is not a queued run
            free to take (finished, or held by a live manager).
        """
        now = self.now()

        def work(conn: Any) -> dict[str, Any] | None:
            params = {"run_id": record["run_id"], "owner": owner, "now": now}
            self._lock_run(conn, record["run_id"])
            row = conn.execute(self.queries["claim_run"], params).fetchone()
            if row is None:
                if conn.execute(self.queries["get_run"], {"run_id": record["run_id"]}).fetchone() is not None:
                    return None
                return self._insert(conn, record, owner, owner, lease_until, now)
            stored = row_to_record(row)
            return {**stored, "task": self._lease(conn, stored["task_id"], owner, lease_until)}

        return self.db.write(work)

    def save_active(self, records: Sequence[dict[str, Any]], owner: str) -> None:
        """Write the progress and start of active runs ``owner`` holds, in bulk.

        Cheaper than :meth:`save` (one statement executed over all records); runs the
        owner no longer holds are skipped silently. Only the ``runs`` rows: the owner
        mirrors progress on the tasks through its ``QueueWorker``.
        """
        if not records:
            return
        now = self.now()
        runs = [
            {
                "run_id": r["run_id"],
                "status": r["status"],
                "progress_percent": r["progress_percent"],
                "progress_message": r["progress_message"],
                "items_processed": r["items_processed"],
                "items_total": r["items_total"],
                "attempts": r["attempts"],
                "started_at": r["started_at"],
                "fence": owner,
                "now": now,
            }
            for r in records
        ]
        self.db.write(lambda conn: self._executemany(conn, self.queries["save_active_run"], runs))

    def update(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Overwrite a run's fields (not its owner): the ``runs`` row only.

        The task is changed only by the lease holder: a run finished here while a manager
        holds its task is finished there at its next renewal (:meth:`ended_runs`); with no
        live holder the task's lease runs out and it becomes dead.
        """
        now = self.now()

        def work(conn: Any) -> dict[str, Any] | None:
            row = conn.execute(self.queries["save_run"], self._run_params(record, now, None)).fetchone()
            if row is None:
                return None
            found = conn.execute(self.queries["get_run"], {"run_id": record["run_id"]}).fetchone()
            return row_to_record(found)

        return self.db.write(work)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One run's record, or ``None``."""
        row = self.db.read(lambda c: c.execute(self.queries["get_run"], {"run_id": run_id}).fetchone())
        return None if row is None else row_to_record(row)

    def save(self, records: Sequence[dict[str, Any]], owner: str) -> list[bool]:
        """Write the ``runs`` rows of runs ``owner`` holds; False for a run it no longer holds.

        The owner finishes or updates the tasks through its ``QueueWorker``.
        """
        now = self.now()

        def work(conn: Any) -> list[bool]:
            done = []
            for record in records:
                row = conn.execute(self.queries["save_run"], self._run_params(record, now, owner)).fetchone()
                done.append(row is not None)
            return done

        return self.db.write(work)

    def renew(self, owner: str, lease_until: float) -> dict[str, bool]:
        """The active runs ``owner`` holds (its ``runs`` row and its task's lease).

        Reads only: the owner renews its tasks' leases through its ``QueueWorker`` first.

        Returns:
            Per run still held, whether its cancellation was requested (by
            :meth:`request_cancel` or ``QueueClient.cancel`` on its task).
        """
        rows = self.db.read(lambda c: c.execute(self.queries["held_runs"], {"owner": owner}).fetchall())
        return {run_id: bool(flag) for run_id, flag in rows}

    def ended_runs(self, owner: str) -> list[dict[str, Any]]:
        """Runs finished by a registry whose task ``owner`` still leases (see :meth:`update`)."""
        rows = self.db.read(lambda c: c.execute(self.queries["ended_runs"], {"owner": owner}).fetchall())
        return [row_to_record(r) for r in rows]

    def interrupt_orphans(self) -> list[str]:
        """Mark interrupted every active run that no live manager holds; return their ids.

        A run is orphaned when no live owner leases its task: its manager stopped renewing
        the lease (the process died) and the lease ran out, a queue worker reclaimed the
        expired task, or the task was released to the queue (``prismq.queue.migrate``
        releases every lease it copies, so an active run arrives on its target this way).
        Every orphan ends alike: the run ``interrupted``, its task ``dead`` (or
        ``cancelled`` when its cancellation was requested). A task whose lease ran out is
        ended by the queue's own expiry (``reclaim_expired``: its one attempt is used); a
        released task is leased by :data:`RECOVERY_HOLDER` and failed through the fenced
        operations. Whether the run starts again is :meth:`take_rerunnable`'s decision,
        by the run's ``rerunnable`` flag.
        """
        now = self.now()

        def work(conn: Any) -> list[str]:
            found = conn.execute(self.queries["orphaned_runs"], {"now": now}).fetchall()
            out = []
            released = []
            for run_id, task_id, owner, lease_until, task_status in found:
                holder = f"manager {owner!r}" if owner else "no manager"
                if task_status == TaskStatus.QUEUED.value:
                    reason = (
                        f"interrupted: the run's task was released to the queue while {holder} "
                        "ran it (as migrate releases every lease it copies); no manager holds "
                        "the run any more"
                    )
                else:
                    reason = (
                        f"interrupted: {holder} stopped renewing the run's lease"
                        + ("" if lease_until is None else f" (it expired at epoch {lease_until:.3f})")
                        + "; its process ended before the run finished"
                    )
                params = {"run_id": run_id, "reason": reason, "now": now}
                if conn.execute(self.queries["interrupt_run"], params).rowcount:
                    out.append(run_id)
                    if task_status == TaskStatus.QUEUED.value:
                        released.append((task_id, reason))
            for task_id, reason in released:
                self._fail_released(task_id, reason, now)
            if out:
                # Their tasks' leases ran out: the queue's own expiry makes them dead.
                self.backend.reclaim_expired(now)
            return out

        return self.db.write(work)

    def _fail_released(self, task_id: int, reason: str, now: float) -> None:
        """End the released (queued) task of an interrupted run as ``dead``, as its expiry would.

        Leased by :data:`RECOVERY_HOLDER` (its one attempt), then failed under that lease,
        so the task moves only along the queue's legal transitions.
        """
        task = self.backend.lease_again(task_id, RECOVERY_HOLDER, now + RECOVERY_LEASE, now)
        if task is not None:
            update = TaskUpdate(task.id, RECOVERY_HOLDER, task.lease_token or "")
            self.backend.finish_attempt(update, TaskStatus.DEAD, None, reason, None, True, now)

    def take_rerunnable(
        self, module_ids: Sequence[str], owner: str, lease_until: float
    ) -> list[dict[str, Any]]:
        """Queue again, owned by ``owner``, every interrupted re-runnable run of these modules."""
        now = self.now()

        def work(conn: Any) -> list[dict[str, Any]]:
            params = {"modules": self._array(list(module_ids)), "owner": owner, "now": now}
            records = [
                row_to_record(r) for r in conn.execute(self.queries["take_rerunnable"], params).fetchall()
            ]
            return [
                {**record, "task": self._lease(conn, record["task_id"], owner, lease_until)}
                for record in records
            ]

        return self.db.write(work)

    def request_cancel(self, run_id: str) -> bool:
        """Flag an active run for cancellation; its owner stops it at its next renewal.

        The flag is the task's cancel request (``Backend.cancel_task`` on a leased task).
        """
        now = self.now()

        def work(conn: Any) -> bool:
            record = self.get(run_id)
            if record is None or record["status"] not in ACTIVE:
                return False
            task = self.backend.get_task(record["task_id"])
            if task is None or task.status is not TaskStatus.LEASED:
                return False
            self.backend.cancel_task(task.id, now)
            return True

        return bool(self.db.write(work))
