"""``QueueWorker``: claim tasks under a lease, renew, report progress, finish them.

These are the primitives. :mod:`prismq.queue.runtime` builds the loop that runs handlers
on top of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import traceback as traceback_module
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Protocol, TypeVar

from .backends.base import TaskUpdate
from .config import DEFAULT_LEASE_DURATION, ENV_LEASE_DURATION, ENV_WORKER_ID, QueueConfig
from .database import QueueDatabase
from .errors import LeaseLostError, ScheduleError, TaskNotFoundError, ValidationError
from .models import Task, TaskStatus, WorkerInfo
from .retry import RetryPolicy
from .strategies import SchedulingStrategy, resolve_strategy
from .validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    encode_json,
    is_int,
    is_number,
    show_number,
    validate_delay,
    validate_task_id,
    validate_task_type,
)

__all__ = ["QueueWorker", "WorkerRuntime"]

_Summary = TypeVar("_Summary", covariant=True)


class WorkerRuntime(Protocol[_Summary]):
    """What runs handlers for a worker (:class:`prismq.queue.runtime.HandlerRegistry`).

    The runtime sits above the worker: :meth:`QueueWorker.run` hands itself to the
    registry it is given, so this module never imports the runtime.
    """

    def run_worker(self, worker: QueueWorker, **options: Any) -> _Summary:
        """Run ``worker`` on a fresh event loop until it stops."""
        ...

    async def run_worker_async(self, worker: QueueWorker, **options: Any) -> _Summary:
        """Run ``worker`` on the caller's running event loop until it stops."""
        ...


logger = logging.getLogger("prismq.queue.worker")

MAX_BATCH = 1000


class QueueWorker:
    """Claims tasks and reports their outcome, fenced by a per-claim lease token.

    Every call that changes a task checks, in the same SQL statement, that this worker
    still holds the lease it was given (worker id plus the claim's token). A worker whose
    lease ran out and whose task was reclaimed gets
    :class:`~prismq.queue.errors.LeaseLostError` and changes nothing.

    Expired leases are reclaimed by claiming workers themselves (at most once per
    ``reclaim_interval``, and whenever a claim comes back empty): no extra daemon.

    Args:
        db: The queue database.
        worker_id: This worker's id (default: ``PRISMQ_QUEUE_WORKER_ID`` or
            ``<hostname>-<pid>``). Two live workers must not share an id.
        strategy: A :class:`~prismq.queue.strategies.SchedulingStrategy` or its name
            (``"fifo"`` default, ``"lifo"``, ``"priority"``, ``"weighted_random"``).
        lease_duration: Seconds a claim is leased for (default:
            ``PRISMQ_QUEUE_LEASE_DURATION`` or 60).
        task_types: Claim only these task types (``None``: every type).
        reclaim_interval: Least seconds between two reclaim passes.
        register: Record this worker in the worker registry.

    Example:
        >>> import tempfile, pathlib
        >>> from prismq.queue import QueueClient
        >>> db = QueueDatabase(pathlib.Path(tempfile.mkdtemp()) / "queue.db")
        >>> _ = db.initialize_schema()
        >>> _ = QueueClient(db).enqueue("resize", {"w": 640})
        >>> worker = QueueWorker(db, worker_id="worker-01")
        >>> task = worker.claim_next_task()
        >>> task.payload, task.attempts
        ({'w': 640}, 1)
        >>> worker.complete_task(task.id, result={"ok": True})
        >>> db.close()
    """

    def __init__(
        self,
        db: QueueDatabase,
        worker_id: str | None = None,
        *,
        strategy: SchedulingStrategy | str | None = None,
        lease_duration: float | None = None,
        task_types: Iterable[str] | None = None,
        reclaim_interval: float = 1.0,
        register: bool = True,
        max_result_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.db = db
        self.backend = db.backend
        config = None
        if worker_id is None or lease_duration is None:
            env_needed = {ENV_WORKER_ID, ENV_LEASE_DURATION}
            config = QueueConfig.from_env({k: v for k, v in os.environ.items() if k in env_needed})
        if worker_id is None:
            assert config is not None
            worker_id = config.worker_id
        if not isinstance(worker_id, str) or not worker_id.strip() or len(worker_id) > 200:
            raise ValidationError(
                f"worker_id must be a non-empty string of at most 200 characters, got {worker_id!r}"
            )
        self.worker_id = worker_id
        if lease_duration is None:
            lease_duration = config.lease_duration if config else DEFAULT_LEASE_DURATION
        self.lease_duration = validate_delay(lease_duration, "lease_duration")
        if self.lease_duration < 0.05:
            raise ScheduleError(f"lease_duration must be at least 0.05 s, got {lease_duration!r}")
        self.strategy = resolve_strategy(strategy)
        self.task_types: tuple[str, ...] | None = (
            None if task_types is None else tuple(dict.fromkeys(validate_task_type(t) for t in task_types))
        )
        if self.task_types == ():
            raise ValidationError("task_types is empty; pass None to claim every type")
        self.reclaim_interval = validate_delay(reclaim_interval, "reclaim_interval")
        self.max_result_bytes = max_result_bytes
        self.heartbeat_interval = min(max(self.lease_duration / 4, 0.05), 5.0)
        self._held: dict[int, Task] = {}
        self._last_reclaim = float("-inf")
        self._last_heartbeat = float("-inf")
        self._registered = False
        if register:
            self.register()

    # -- registry --------------------------------------------------------------
    def register(self) -> None:
        """Record this worker (id, host, pid, task types, strategy) in the registry."""
        now = self.db.now()
        stamp = datetime.fromtimestamp(now, tz=timezone.utc)
        self.backend.register_worker(
            WorkerInfo(
                worker_id=self.worker_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                task_types=self.task_types,
                strategy=self.strategy.name,
                started_at=stamp,
                last_heartbeat=stamp,
            )
        )
        self._last_heartbeat = now
        self._registered = True

    def deregister(self) -> None:
        """Remove this worker from the registry (held leases are left to expire)."""
        if self._registered:
            self.backend.deregister_worker(self.worker_id)
            self._registered = False

    # -- claiming --------------------------------------------------------------
    @property
    def held_tasks(self) -> dict[int, Task]:
        """The tasks this worker holds a lease on, by id (as claimed or last renewed)."""
        return dict(self._held)

    def claim_next_task(self) -> Task | None:
        """Lease the next ready task by this worker's strategy, or return ``None``.

        The claim is one write transaction: the task's status becomes ``leased``, its
        attempt count goes up by one and it gets a fresh lease token.
        """
        tasks = self.claim_batch(1)
        return tasks[0] if tasks else None

    def claim_batch(self, count: int) -> list[Task]:
        """Lease up to ``count`` ready tasks in one transaction, in strategy order.

        Args:
            count: 1 to 1000.

        Returns:
            The leased tasks (empty when nothing is ready).
        """
        if not is_int(count) or not 1 <= count <= MAX_BATCH:
            raise ValidationError(f"count must be an integer from 1 to {MAX_BATCH}, got {count!r}")
        return self._claim(count, (), ())[1]

    def _claim(
        self, count: int, updates: Sequence[TaskUpdate], results_json: Sequence[str | None]
    ) -> tuple[list[bool], list[Task]]:
        """Complete ``updates`` (if any) and claim up to ``count`` tasks in one transaction.

        Expired leases are reclaimed first at most once per ``reclaim_interval``, and again
        when nothing was ready; the registry entry is refreshed every heartbeat interval.
        """
        now = self.db.now()
        reclaim = now - self._last_reclaim >= self.reclaim_interval
        backend = self.backend
        done, tasks = backend.complete_and_claim(
            updates,
            results_json,
            self.worker_id,
            self.task_types,
            self.strategy,
            count,
            self.lease_duration,
            now,
            reclaim_first=reclaim,
        )
        held = self._held
        for update in updates:
            held.pop(update.task_id, None)
        if reclaim:
            self._last_reclaim = now
        elif not tasks and all(done) and now - self._last_reclaim >= min(self.reclaim_interval, 0.25):
            # Nothing ready: an expired lease may be holding the only work there is.
            if backend.reclaim_expired(now):
                tasks = backend.claim(
                    self.worker_id, self.task_types, self.strategy, count, self.lease_duration, now
                )
            self._last_reclaim = now
        for task in tasks:
            held[task.id] = task
        if self._registered and now - self._last_heartbeat >= self.heartbeat_interval:
            backend.heartbeat_worker(self.worker_id, now)
            self._last_heartbeat = now
        return done, tasks

    def _log_fields(self, task: Task) -> dict[str, Any]:
        """The fields every record about a task carries (see ``runtime.logs``)."""
        return {
            "worker_id": self.worker_id,
            "task_id": task.id,
            "task_type": task.task_type,
            "attempt": task.attempts,
        }

    # -- while running ---------------------------------------------------------
    def _update_for(self, task_id: int | Task, action: str) -> TaskUpdate:
        tid = validate_task_id(task_id)
        held = self._held.get(tid)
        if held is None or held.lease_token is None:
            raise LeaseLostError(
                f"cannot {action} task {tid}: worker {self.worker_id!r} does not hold it "
                "(never claimed here, already finished, or released)"
            )
        return TaskUpdate(tid, self.worker_id, held.lease_token)

    def _forget_on_loss(self, tid: int) -> None:
        self._held.pop(tid, None)

    def renew_lease(self, task_id: int | Task, extend_by: float | None = None) -> Task:
        """Push the lease's expiry to now plus ``extend_by`` (default: the lease duration).

        Returns:
            The task as stored (check ``cancel_requested`` to see a cancellation).

        Raises:
            LeaseLostError: The lease ran out and the task was reclaimed.
        """
        update = self._update_for(task_id, "renew the lease of")
        extend = self.lease_duration if extend_by is None else validate_delay(extend_by, "extend_by")
        now = self.db.now()
        try:
            task = self.backend.renew_lease(update, now + extend, now)
        except LeaseLostError:
            self._forget_on_loss(update.task_id)
            raise
        self._held[task.id] = task
        return task

    def heartbeat(self) -> list[Task]:
        """Renew every held lease and the worker's registry entry.

        Returns:
            The renewed tasks. Tasks whose lease was lost are dropped from
            :attr:`held_tasks` and logged, not raised.
        """
        renewed = []
        for tid, held in list(self._held.items()):
            try:
                renewed.append(self.renew_lease(tid))
            except LeaseLostError as exc:
                logger.warning("%s", exc, extra=self._log_fields(held))
        now = self.db.now()
        if self._registered:
            self.backend.heartbeat_worker(self.worker_id, now)
            self._last_heartbeat = now
        return renewed

    def update_progress(self, task_id: int | Task, percent: float, message: str | None = None) -> Task:
        """Record how far a held task has got.

        Args:
            task_id: The task.
            percent: 0 to 100.
            message: A short human-readable note (at most 1000 characters).

        Raises:
            ValidationError: ``percent`` outside 0..100 or ``message`` too long.
            LeaseLostError: The lease is no longer held.
        """
        if not is_number(percent) or not 0 <= percent <= 100:
            raise ValidationError(f"percent must be a number from 0 to 100, got {show_number(percent)}")
        if message is not None and (not isinstance(message, str) or len(message) > 1000):
            raise ValidationError("message must be a string of at most 1000 characters")
        update = self._update_for(task_id, "report progress on")
        try:
            task = self.backend.update_progress(update, float(percent), message, self.db.now())
        except LeaseLostError:
            self._forget_on_loss(update.task_id)
            raise
        self._held[task.id] = task
        return task

    def is_cancel_requested(self, task_id: int | Task) -> bool:
        """Read the task's ``cancel_requested`` flag from the database."""
        task = self.backend.get_task(validate_task_id(task_id))
        return bool(task and task.cancel_requested)

    # -- finishing -------------------------------------------------------------
    def complete_task(self, task_id: int | Task, result: Any = None) -> None:
        """Mark a held task completed, storing ``result`` (JSON).

        Raises:
            PayloadError: The result is not JSON-serialisable or too large (the task stays
                leased; fail it or complete it with another result).
            LeaseLostError: The lease is no longer held; nothing was changed.
        """
        update = self._update_for(task_id, "complete")
        result_json = None if result is None else encode_json(result, "result", self.max_result_bytes)
        done = self.backend.complete_tasks([update], [result_json], self.db.now())
        self._held.pop(update.task_id, None)
        if not done[0]:
            raise self._completion_refused(update, "the result was discarded")

    def complete_and_claim(self, task_id: int | Task, result: Any = None) -> Task | None:
        """Complete a held task and lease the next ready one, in one transaction.

        The same as :meth:`complete_task` followed by :meth:`claim_next_task`, with one
        commit instead of two: the loop to use when a worker drains tasks one at a time.

        Returns:
            The next leased task, or ``None`` when nothing is ready.

        Raises:
            PayloadError: The result is not JSON-serialisable or too large (nothing was
                changed; the task stays leased).
            LeaseLostError: The lease on the finished task is no longer held; nothing was
                changed and nothing was claimed.
        """
        update = self._update_for(task_id, "complete")
        result_json = None if result is None else encode_json(result, "result", self.max_result_bytes)
        done, tasks = self._claim(1, (update,), (result_json,))
        if not done[0]:
            raise self._completion_refused(update, "the result was discarded and no task was claimed")
        return tasks[0] if tasks else None

    def _completion_refused(self, update: TaskUpdate, outcome: str) -> LeaseLostError:
        """The error for a completion whose lease was lost, saying who holds the task now."""
        return LeaseLostError(
            f"cannot complete task {update.task_id}: worker {self.worker_id!r} no longer "
            f"holds its lease ({self.backend.diagnose_lost_lease(update)}); {outcome}"
        )

    def complete_many(
        self, task_ids: Sequence[int | Task], results: Sequence[Any] | None = None
    ) -> list[int]:
        """Complete several held tasks in one transaction.

        Args:
            task_ids: The tasks.
            results: One result per task, or ``None`` for no results.

        Returns:
            The ids that were completed. A task whose lease was lost is skipped (and
            logged), the others are still completed.
        """
        if results is not None and len(results) != len(task_ids):
            raise ValidationError(f"got {len(results)} results for {len(task_ids)} tasks")
        updates: list[TaskUpdate] = []
        encoded: list[str | None] = []
        for index, task_id in enumerate(task_ids):
            tid = validate_task_id(task_id)
            held = self._held.get(tid)
            if held is None or held.lease_token is None:
                logger.warning(
                    "task %s is not held by %s; skipped",
                    tid,
                    self.worker_id,
                    extra={"worker_id": self.worker_id, "task_id": tid, "task_type": "-", "attempt": "-"},
                )
                continue
            updates.append(TaskUpdate(tid, self.worker_id, held.lease_token))
            value = None if results is None else results[index]
            encoded.append(None if value is None else encode_json(value, "result", self.max_result_bytes))
        if not updates:
            return []
        done = self.backend.complete_tasks(updates, encoded, self.db.now())
        completed = []
        for update, ok in zip(updates, done, strict=True):
            held = self._held.pop(update.task_id, None)
            if ok:
                completed.append(update.task_id)
            else:
                logger.warning(
                    "lease on task %s was lost before completion; result discarded",
                    update.task_id,
                    extra=self._log_fields(held) if held else {"worker_id": self.worker_id},
                )
        return completed

    def fail_task(
        self,
        task_id: int | Task,
        error: str | BaseException,
        *,
        retry: bool = True,
        traceback: str | None = None,
    ) -> Task:
        """Record a failed attempt; retry it later or make it dead.

        With ``retry`` and attempts left, the task goes back to ``queued`` with
        ``run_after`` set by its retry policy (exponential backoff with jitter);
        otherwise it becomes ``dead``. The error and traceback are kept either way.

        Args:
            task_id: The task.
            error: A message, or the exception (its traceback is recorded too).
            retry: False makes the failure final whatever attempts are left.
            traceback: A formatted traceback, if ``error`` is a string.

        Returns:
            The task after the change (``queued`` or ``dead``).

        Raises:
            LeaseLostError: The lease is no longer held; nothing was changed.
        """
        update = self._update_for(task_id, "fail")
        held = self._held[update.task_id]
        if isinstance(error, BaseException):
            message = f"{type(error).__name__}: {error}"
            if traceback is None and error.__traceback__ is not None:
                traceback = "".join(
                    traceback_module.format_exception(type(error), error, error.__traceback__)
                )
        else:
            message = str(error)
        message = message[:10_000]
        now = self.db.now()
        if retry and held.attempts < held.max_attempts:
            policy = RetryPolicy.from_dict(held.retry_policy) if held.retry_policy else RetryPolicy()
            status, run_after = TaskStatus.QUEUED, now + policy.delay_for(held.attempts)
        else:
            status, run_after = TaskStatus.DEAD, None
        return self._finish(update, status, run_after, message, traceback, True, now)

    def _finish(
        self,
        update: TaskUpdate,
        status: TaskStatus,
        run_after: float | None,
        error: str | None,
        traceback: str | None,
        count_attempt: bool,
        now: float,
    ) -> Task:
        """End the held attempt; the lease is forgotten once the change is made or lost.

        A transient failure (busy database, full disk) keeps the lease in
        :attr:`held_tasks`, so the caller can retry the same call.
        """
        try:
            task = self.backend.finish_attempt(
                update, status, run_after, error, traceback, count_attempt, now
            )
        except (LeaseLostError, TaskNotFoundError):
            self._held.pop(update.task_id, None)
            raise
        self._held.pop(update.task_id, None)
        return task

    def release_task(self, task_id: int | Task, delay: float = 0.0) -> Task:
        """Give a held task back without counting the attempt (for example on shutdown).

        Args:
            task_id: The task.
            delay: Seconds before it may be claimed again.
        """
        update = self._update_for(task_id, "release")
        # Checked before the try: a refused delay must not drop the lease this worker holds.
        seconds = validate_delay(delay)
        now = self.db.now()
        return self._finish(update, TaskStatus.QUEUED, now + seconds, None, None, False, now)

    def forget_task(self, task_id: int | Task) -> None:
        """Stop holding a task without changing it: its lease is no longer renewed.

        For an attempt whose outcome could not be saved (the database stayed unavailable):
        the task stays leased until the lease expires, then runs again. Nothing is written.
        """
        self._held.pop(validate_task_id(task_id), None)

    def acknowledge_cancel(self, task_id: int | Task, reason: str = "cancelled on request") -> Task:
        """Stop a held task whose cancellation was requested: its status becomes cancelled."""
        update = self._update_for(task_id, "cancel")
        return self._finish(update, TaskStatus.CANCELLED, None, reason, None, True, self.db.now())

    # -- running handlers ------------------------------------------------------
    def run(self, registry: WorkerRuntime[_Summary], **options: Any) -> _Summary:
        """Run handlers from ``registry`` until stopped: claim, run, complete or fail.

        A thin front to :class:`prismq.queue.runtime.WorkerRunner`; ``options`` are its
        keyword arguments (``concurrency``, ``burst``, ``max_tasks``, ``task_timeout``,
        ``grace_period``, ``stop_flag``, ``install_signal_handlers``, ...).

        Returns:
            What the run did (counts of completed, retried, dead, ... tasks).
        """
        return registry.run_worker(self, **options)

    async def run_async(self, registry: WorkerRuntime[_Summary], **options: Any) -> _Summary:
        """:meth:`run` on the caller's running event loop."""
        return await registry.run_worker_async(self, **options)

    # -- life cycle ------------------------------------------------------------
    def close(self, release: bool = True) -> None:
        """Release held tasks (unless ``release`` is False) and leave the registry."""
        if release:
            for tid in list(self._held):
                with contextlib.suppress(LeaseLostError):
                    self.release_task(tid)
        self.deregister()

    def __enter__(self) -> QueueWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"QueueWorker({self.worker_id!r}, strategy={self.strategy!r}, task_types={self.task_types!r})"
