"""``QueueWorker``: claim tasks under a lease, renew, report progress, finish them.

These are the primitives. :mod:`prismq.queue.runtime` builds the loop that runs handlers
on top of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import traceback as traceback_module
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from types import TracebackType
from typing import Any, Protocol, TypeVar

from .backends.base import Settlement, TaskUpdate
from .config import DEFAULT_LEASE_DURATION, ENV_LEASE_DURATION, ENV_WORKER_ID, QueueConfig
from .database import QueueDatabase
from .errors import (
    LeaseLostError,
    PayloadError,
    QueueError,
    ScheduleError,
    TaskNotFoundError,
    ValidationError,
)
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

__all__ = ["Ack", "AckKind", "AckResult", "QueueWorker", "WorkerRuntime"]

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


class AckKind(str, Enum):
    """How an attempt ends, in an :class:`Ack`."""

    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"
    RELEASE = "release"


@dataclass(frozen=True)
class Ack:
    """The outcome of one held attempt, for :meth:`QueueWorker.acknowledge`.

    Build one with :meth:`complete`, :meth:`fail`, :meth:`cancel` or :meth:`release`.

    Attributes:
        task_id: The held task.
        kind: How the attempt ends.
        result: The result to store (``COMPLETE``; JSON-serialisable).
        error: The error message or exception (``FAIL``; the reason for ``CANCEL``).
        retry: For ``FAIL``: False makes the failure final whatever attempts are left.
        traceback: A formatted traceback, when ``error`` is a string.
        delay: For ``RELEASE``: seconds before the task may be claimed again.
    """

    task_id: int
    kind: AckKind = AckKind.COMPLETE
    result: Any = None
    error: str | BaseException | None = None
    retry: bool = True
    traceback: str | None = None
    delay: float = 0.0

    @classmethod
    def complete(cls, task_id: int, result: Any = None) -> Ack:
        """Complete the task, storing ``result``."""
        return cls(task_id, AckKind.COMPLETE, result=result)

    @classmethod
    def fail(cls, task_id: int, error: str | BaseException, *, retry: bool = True) -> Ack:
        """Record a failed attempt (retried by the task's policy unless ``retry`` is False)."""
        return cls(task_id, AckKind.FAIL, error=error, retry=retry)

    @classmethod
    def cancel(cls, task_id: int, reason: str = "cancelled on request") -> Ack:
        """Stop a task whose cancellation was requested."""
        return cls(task_id, AckKind.CANCEL, error=reason)

    @classmethod
    def release(cls, task_id: int, delay: float = 0.0) -> Ack:
        """Give the task back without counting the attempt."""
        return cls(task_id, AckKind.RELEASE, delay=delay)


@dataclass(frozen=True)
class AckResult:
    """What :meth:`QueueWorker.acknowledge` did with one :class:`Ack`.

    Attributes:
        ack: The acknowledgement.
        saved: True when the change was written.
        status: The task's status after the change (``None`` when not saved).
        attempts: Attempts counted on the task (after the change).
        run_after: When a retried or released task may run again (epoch seconds).
        error: Why it was not saved: :class:`~prismq.queue.errors.LeaseLostError` (the
            lease was lost; nothing changed) or :class:`~prismq.queue.errors.PayloadError`
            (the result cannot be stored; the task is still held).
    """

    ack: Ack
    saved: bool
    status: TaskStatus | None = None
    attempts: int = 0
    run_after: float | None = None
    error: QueueError | None = None


class QueueWorker:
    """Claims tasks and reports their outcome, fenced by a per-claim lease token.

    Every call that changes a task checks, in the same SQL statement, that this worker
    still holds the lease it was given (worker id plus the claim's token). A worker whose
    lease ran out and whose task was reclaimed gets
    :class:`~prismq.queue.errors.LeaseLostError` and changes nothing.

    Expired leases are reclaimed by claiming workers themselves (at most once per
    ``reclaim_interval``, and whenever a claim comes back empty): no extra daemon.

    Thread safety: methods may be called from several threads at once (the runtime's
    database thread settles and renews while handler threads report progress). The
    record of held leases (:attr:`held_tasks`) is changed under a lock, and a renewed
    row is kept only while the same lease is still held, so a call that returns after
    the attempt was settled by another thread never brings the lease back.

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
        # Thread-safety contract: QueueWorker methods may be called from several threads
        # at once (a runner's database thread and its handler threads reporting progress).
        # ``_held`` is only changed under ``_held_lock``; a renewed row is written back
        # only while the same lease (same token) is still held, so a call that finishes
        # after the attempt was settled elsewhere never brings the lease back.
        self._held: dict[int, Task] = {}
        self._held_lock = threading.Lock()
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
        """The tasks this worker holds a lease on, by id (as claimed or last renewed).

        A copy, consistent at the moment it was taken, safe to read from any thread.
        """
        with self._held_lock:
            return dict(self._held)

    def _hold(self, tasks: Iterable[Task]) -> None:
        with self._held_lock:
            for task in tasks:
                self._held[task.id] = task

    def _drop(self, task_ids: Iterable[int]) -> None:
        with self._held_lock:
            for tid in task_ids:
                self._held.pop(tid, None)

    def _refresh(self, task: Task) -> None:
        """Store a renewed row, only if this same lease is still held."""
        with self._held_lock:
            current = self._held.get(task.id)
            if current is not None and current.lease_token == task.lease_token:
                self._held[task.id] = task

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
        """Complete ``updates`` (if any) and claim up to ``count`` tasks in one transaction."""
        return self._claim_with(
            count,
            lambda reclaim, now: self.backend.complete_and_claim(
                updates,
                results_json,
                self.worker_id,
                self.task_types,
                self.strategy,
                count,
                self.lease_duration,
                now,
                reclaim_first=reclaim,
            ),
            [u.task_id for u in updates],
        )

    def _claim_with(
        self,
        count: int,
        write: Callable[[bool, float], tuple[list[bool], list[Task]]],
        finished: Sequence[int],
    ) -> tuple[list[bool], list[Task]]:
        """Run ``write(reclaim_first, now)``, a backend call that ends and claims attempts.

        Expired leases are reclaimed first at most once per ``reclaim_interval``, and again
        when nothing was ready; the registry entry is refreshed every heartbeat interval.
        ``finished`` are the ids whose lease the write ends (dropped from
        :attr:`held_tasks` once it returns).
        """
        now = self.db.now()
        reclaim = now - self._last_reclaim >= self.reclaim_interval
        backend = self.backend
        done, tasks = write(reclaim, now)
        self._drop(finished)
        if reclaim:
            self._last_reclaim = now
        elif (
            count > 0
            and not tasks
            and all(done)
            and now - self._last_reclaim >= min(self.reclaim_interval, 0.25)
        ):
            # Nothing ready: an expired lease may be holding the only work there is.
            if backend.reclaim_expired(now):
                tasks = backend.claim(
                    self.worker_id, self.task_types, self.strategy, count, self.lease_duration, now
                )
            self._last_reclaim = now
        self._hold(tasks)
        if self._registered and now - self._last_heartbeat >= self.heartbeat_interval:
            backend.heartbeat_worker(self.worker_id, now)
            self._last_heartbeat = now
        return done, tasks

    def acknowledge(self, acks: Sequence[Ack], claim: int = 0) -> tuple[list[AckResult], list[Task]]:
        """End several held attempts and lease up to ``claim`` more, in one transaction.

        This is group commit: the outcomes of many tasks (completions, failures,
        cancellations, releases, in any mix) cost one commit, and the next claim shares it.
        Every outcome is fenced by its own lease token: one whose lease was lost changes
        nothing and is reported in its :class:`AckResult`; the others are still written and
        the claim still made.

        Args:
            acks: The outcomes, at most one per task.
            claim: Tasks to lease in the same transaction (0 to 1000).

        Returns:
            One :class:`AckResult` per ack, in order, and the leased tasks.

        Raises:
            ValidationError: ``claim`` out of range, or a task listed twice.
            QueueError: The database failed; nothing was written and every lease is still
                held, so the same call may be retried.

        Example:
            >>> import tempfile, pathlib
            >>> from prismq.queue import QueueClient
            >>> db = QueueDatabase(pathlib.Path(tempfile.mkdtemp()) / "queue.db")
            >>> _ = db.initialize_schema()
            >>> specs = [{"task_type": "resize", "payload": {"w": w}} for w in (1, 2, 3)]
            >>> _ = QueueClient(db).enqueue_many(specs)
            >>> worker = QueueWorker(db, worker_id="worker-01")
            >>> first, second = worker.claim_batch(2)
            >>> results, following = worker.acknowledge(
            ...     [Ack.complete(first.id, {"ok": True}), Ack.fail(second.id, "bad input", retry=False)],
            ...     claim=5,
            ... )
            >>> [(r.saved, r.status.value) for r in results], [t.payload for t in following]
            ([(True, 'completed'), (True, 'dead')], [{'w': 3}])
            >>> db.close()
        """
        if not is_int(claim) or not 0 <= claim <= MAX_BATCH:
            raise ValidationError(f"claim must be an integer from 0 to {MAX_BATCH}, got {claim!r}")
        now = self.db.now()
        results: list[AckResult | None] = [None] * len(acks)
        settlements: list[Settlement] = []
        attempts: list[int] = []
        positions: list[int] = []
        seen: set[int] = set()
        for index, ack in enumerate(acks):
            tid = validate_task_id(ack.task_id)
            if tid in seen:
                raise ValidationError(f"task {tid} is acknowledged twice in one call")
            seen.add(tid)
            try:
                settlement, after = self._settlement(ack, tid, now)
            except (LeaseLostError, PayloadError) as exc:
                results[index] = AckResult(ack, False, error=exc)
                continue
            settlements.append(settlement)
            attempts.append(after)
            positions.append(index)

        def write(reclaim: bool, at: float) -> tuple[list[bool], list[Task]]:
            return self.backend.settle_and_claim(
                settlements,
                self.worker_id,
                self.task_types,
                self.strategy,
                claim,
                self.lease_duration,
                at,
                reclaim_first=reclaim,
            )

        done, tasks = self._claim_with(claim, write, [s.update.task_id for s in settlements])
        for index, settlement, after, ok in zip(positions, settlements, attempts, done, strict=True):
            ack = acks[index]
            if ok:
                results[index] = AckResult(ack, True, settlement.status, after, settlement.run_after)
            else:
                results[index] = AckResult(
                    ack,
                    False,
                    error=LeaseLostError(
                        f"cannot {ack.kind.value} task {settlement.update.task_id}: worker "
                        f"{self.worker_id!r} no longer holds its lease "
                        f"({self.backend.diagnose_lost_lease(settlement.update)}); "
                        "this attempt's outcome is discarded"
                    ),
                )
        return [r for r in results if r is not None], tasks

    def _settlement(self, ack: Ack, tid: int, now: float) -> tuple[Settlement, int]:
        """The fenced change for ``ack`` and the attempts counted after it.

        Raises:
            LeaseLostError: The task is not held here.
            PayloadError: The result cannot be stored.
            ValidationError: A bad release delay.
        """
        update, held = self._held_update(tid, ack.kind.value)
        kind = ack.kind
        if kind is AckKind.COMPLETE:
            encoded = None if ack.result is None else encode_json(ack.result, "result", self.max_result_bytes)
            return Settlement(update, TaskStatus.COMPLETED, result_json=encoded), held.attempts
        if kind is AckKind.RELEASE:
            run_after = now + validate_delay(ack.delay)
            return (
                Settlement(update, TaskStatus.QUEUED, run_after=run_after, count_attempt=False),
                max(held.attempts - 1, 0),
            )
        if kind is AckKind.CANCEL:
            reason = "cancelled on request" if ack.error is None else str(ack.error)
            return Settlement(update, TaskStatus.CANCELLED, error=reason), held.attempts
        message, traceback = _describe_error(ack.error if ack.error is not None else "failed", ack.traceback)
        if ack.retry and held.attempts < held.max_attempts:
            policy = RetryPolicy.from_dict(held.retry_policy) if held.retry_policy else RetryPolicy()
            run_after = now + policy.delay_for(held.attempts)
            return (
                Settlement(
                    update, TaskStatus.QUEUED, run_after=run_after, error=message, traceback=traceback
                ),
                held.attempts,
            )
        return Settlement(update, TaskStatus.DEAD, error=message, traceback=traceback), held.attempts

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
        return self._held_update(task_id, action)[0]

    def _held_update(self, task_id: int | Task, action: str) -> tuple[TaskUpdate, Task]:
        """The fenced update for a held task and the task as held (one consistent read)."""
        tid = validate_task_id(task_id)
        with self._held_lock:
            held = self._held.get(tid)
        if held is None or held.lease_token is None:
            raise LeaseLostError(
                f"cannot {action} task {tid}: worker {self.worker_id!r} does not hold it "
                "(never claimed here, already finished, or released)"
            )
        return TaskUpdate(tid, self.worker_id, held.lease_token), held

    def _forget_on_loss(self, tid: int) -> None:
        self._drop((tid,))

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
        self._refresh(task)
        return task

    def heartbeat(self) -> list[Task]:
        """Renew every held lease and the worker's registry entry.

        Returns:
            The renewed tasks. Tasks whose lease was lost are dropped from
            :attr:`held_tasks` and logged, not raised.
        """
        renewed = []
        for tid, held in self.held_tasks.items():
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
        """Record how far a held task has got, and renew its lease.

        Reporting progress extends the lease to now plus the lease duration, like
        :meth:`renew_lease` with no argument; a lease already running longer (renewed
        with a larger ``extend_by``) is left as it is.

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
        now = self.db.now()
        try:
            task = self.backend.update_progress(
                update, float(percent), message, now + self.lease_duration, now
            )
        except LeaseLostError:
            self._forget_on_loss(update.task_id)
            raise
        self._refresh(task)
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
        self._drop((update.task_id,))
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
            with self._held_lock:
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
            with self._held_lock:
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
        update, held = self._held_update(task_id, "fail")
        message, traceback = _describe_error(error, traceback)
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
            self._drop((update.task_id,))
            raise
        self._drop((update.task_id,))
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
        self._drop((validate_task_id(task_id),))

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
            for tid in self.held_tasks:
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


def _describe_error(error: str | BaseException, traceback: str | None) -> tuple[str, str | None]:
    """The stored message (at most 10,000 characters) and traceback of a failure."""
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
        if traceback is None and error.__traceback__ is not None:
            traceback = "".join(traceback_module.format_exception(type(error), error, error.__traceback__))
    else:
        message = str(error)
    return message[:10_000], traceback
