"""The worker loop: claim, run the handler, complete or fail; renew leases meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import multiprocessing.synchronize
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import ConfigError, PayloadError, QueueError
from ..models import Task, TaskStatus
from ..schedules import Schedules
from ..validation import is_int, is_number
from ..worker import MAX_BATCH, Ack, AckKind, AckResult, QueueWorker
from .acks import DEFAULT_BATCH_SIZE, DEFAULT_LINGER, AckCollector
from .context import TaskCancelled, TaskContext, TaskFailed
from .logs import task_logger, worker_logger
from .observer import MultiObserver, TaskObservation, TaskObserver, TaskOutcome
from .outcomes import (
    OUTCOME_RETRY_FIRST_PAUSE,
    OUTCOME_RETRY_MAX_PAUSE,
    TRANSIENT_ERRORS,
    HandlerEscaped,
    base_exception_outcome,
    guard_coroutine,
)
from .scheduler import SchedulerLoop
from .slots import Outcome, SyncSlots
from .threads import DaemonThreadPool
from .wakeup import ChangeWaiter, make_waiter

if TYPE_CHECKING:
    from .registry import Handler, HandlerRegistry

__all__ = ["InFlight", "RunSummary", "StopFlag", "TaskState", "TaskTimeoutError", "WorkerRunner"]

T = TypeVar("T")

STOP_FLAG_POLL = 0.25
"""Seconds between looks at a stop flag that can only be polled (a process-shared flag)."""

DEFAULT_PREFETCH = 100
"""Most tasks a worker leases ahead of its free slots (fewer when handlers are slow)."""


class StopFlag(Protocol):
    """Anything with ``is_set()``: a ``threading.Event`` or a ``multiprocessing.Event``."""

    def is_set(self) -> bool:
        """True once the worker should stop."""
        ...


class TaskTimeoutError(QueueError):
    """A handler ran longer than its timeout; the attempt is failed and may be retried."""


@dataclass
class RunSummary:
    """What a worker run did.

    Attributes:
        started: Tasks whose handler was started.
        completed: Tasks completed.
        retried: Failed attempts that went back to the queue.
        dead: Tasks that failed for good.
        cancelled: Tasks stopped on a cancellation request.
        released: Tasks given back unfinished at shutdown.
        timed_out: Attempts failed for running past their timeout.
        lease_lost: Attempts whose lease was lost (outcome discarded).
        abandoned: Attempts whose outcome could not be saved, even after retrying while
            the lease lasted; they run again once their lease expires.
        stopped_by_signal: True when a signal or the stop flag ended the run.
    """

    started: int = 0
    completed: int = 0
    retried: int = 0
    dead: int = 0
    cancelled: int = 0
    released: int = 0
    timed_out: int = 0
    lease_lost: int = 0
    abandoned: int = 0
    stopped_by_signal: bool = False


class TaskState(Enum):
    """Where a task this process holds stands in the runner."""

    RUNNING = "running"
    """The handler runs."""
    CANCELLING = "cancelling"
    """A cancellation was requested; an async handler was interrupted for it."""
    LEASE_LOST = "lease_lost"
    """The lease was lost; an async handler was interrupted, the outcome is discarded."""
    SHUTTING_DOWN = "shutting_down"
    """The worker stops; an async handler was interrupted, the task will be released."""
    TIMED_OUT = "timed_out"
    """A sync handler ran past its timeout: lease and slot are kept until its thread returns,
    then the attempt fails (a retry never runs beside it)."""
    ABANDONED = "abandoned"
    """The worker stops at once: the execution is cancelled and the lease left to expire."""
    SETTLING = "settling"
    """The handler is done; its outcome waits in the acknowledgement collector."""


_INTERRUPTED = (TaskState.CANCELLING, TaskState.LEASE_LOST, TaskState.SHUTTING_DOWN)


@dataclass(eq=False)
class InFlight:
    """One task this process runs: the single record of its state in the runner.

    Attributes:
        task: The task as claimed.
        ctx: The handler's context.
        handler: The handler that runs it.
        log: The task's logger.
        state: Where it stands.
        execution: The coroutine that runs the handler and hands over its outcome.
        call: The handler call itself (a thread's future, or the async handler's task).
        started_at: Event-loop time the handler started.
        timeout_error: The error a timed-out attempt is failed with.
        observation: What the runner's observer watches of this attempt (``None``: nothing),
            told how it ended once, where the runner counts the outcome.
    """

    task: Task
    ctx: TaskContext
    handler: Handler
    log: Any
    state: TaskState = TaskState.RUNNING
    execution: asyncio.Future[None] | None = None
    call: asyncio.Future[Any] | None = None
    started_at: float = 0.0
    timeout_error: QueueError | None = None
    observation: TaskObservation | None = None


PREFETCH_HORIZON = 0.05
"""Prefetch holds at most the tasks the slots are expected to start within this many seconds."""


class WorkerRunner:
    """Runs handlers from a registry on a :class:`~prismq.queue.worker.QueueWorker`.

    Sync handlers run on a pool of ``concurrency`` threads, async handlers as tasks on the
    event loop; database calls go through one dedicated thread so they never block the
    loop. While a handler runs its lease is renewed every ``worker.heartbeat_interval``
    seconds; a cancellation request is passed to the handler (async handlers are
    cancelled, sync handlers see ``ctx.cancel_requested``).

    Outcomes are group-committed (see :mod:`prismq.queue.runtime.acks`): they wait until
    ``batch_size`` are ready or the oldest has waited ``linger`` seconds (or a slot has
    nothing left to run), then all are written in one transaction that also leases the
    next tasks. Every outcome stays fenced by its own lease token. Up to ``prefetch``
    tasks are leased ahead of the free slots so that slots never wait for a claim; fewer
    when handlers are slow (no more than the slots will start within about
    ``PREFETCH_HORIZON`` seconds), so slow tasks are not hoarded.

    Args:
        worker: The worker whose claims and fenced updates are used. When its
            ``task_types`` is ``None`` it is set to the registry's types, so it never
            claims a task it cannot run.
        registry: The handlers.
        concurrency: Tasks run at once.
        burst: Exit when no task is ready and none is running.
        max_tasks: Exit after starting this many tasks.
        task_timeout: Default seconds before a running task is failed as hung
            (default: ten lease durations).
        grace_period: Seconds to let running tasks finish after a stop request; the
            rest are released to run elsewhere.
        idle_timeout: Longest idle sleep between claims when nothing changes (expired leases
            of crashed workers are reclaimed at this pace).
        wake_mode: ``"auto"``, ``"notify"``, ``"inotify"`` or ``"poll"`` (see
            :mod:`prismq.queue.runtime.wakeup`).
        stop_flag: Checked every loop; when set, the worker stops gracefully.
        install_signal_handlers: Stop gracefully on SIGINT/SIGTERM (and CTRL_BREAK on
            Windows); a second signal stops at once.
        batch_size: Outcomes written in one transaction at most (1 to 1000).
        linger: Longest wait, in seconds, of a finished task's outcome before it is
            written (0 to 1).
        prefetch: Most tasks leased ahead of the free slots (0 to 1000).
        scheduler: Store the registry's periodic schedules at start and run the
            scheduler loop (:mod:`prismq.queue.runtime.scheduler`) beside the claims.
        observer: Told when each attempt starts and how it ends (metrics, tracing); a
            list is called in order. See :mod:`prismq.queue.runtime.observer`.

    Raises:
        ConfigError: Bad settings, or the worker's task types include one the registry has
            no handler for.
    """

    def __init__(
        self,
        worker: QueueWorker,
        registry: HandlerRegistry,
        *,
        concurrency: int = 1,
        burst: bool = False,
        max_tasks: int | None = None,
        task_timeout: float | None = None,
        grace_period: float = 30.0,
        idle_timeout: float = 1.0,
        wake_mode: str = "auto",
        stop_flag: StopFlag | None = None,
        install_signal_handlers: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        linger: float = DEFAULT_LINGER,
        prefetch: int = DEFAULT_PREFETCH,
        scheduler: bool = True,
        observer: TaskObserver | Sequence[TaskObserver] | None = None,
    ) -> None:
        if len(registry) == 0:
            raise ConfigError("the handler registry is empty; register at least one handler")
        if not is_int(concurrency) or not 1 <= concurrency <= 1000:
            raise ConfigError(f"concurrency must be an integer from 1 to 1000, got {concurrency!r}")
        if max_tasks is not None and (not isinstance(max_tasks, int) or max_tasks < 1):
            raise ConfigError(f"max_tasks must be a positive integer, got {max_tasks!r}")
        if not is_int(prefetch) or not 0 <= prefetch <= 1000:
            raise ConfigError(f"prefetch must be an integer from 0 to 1000, got {prefetch!r}")
        for name, value in (("grace_period", grace_period), ("idle_timeout", idle_timeout)):
            if not is_number(value) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if wake_mode not in ("auto", "notify", "inotify", "poll"):
            raise ConfigError(f"wake_mode must be auto, notify, inotify or poll, got {wake_mode!r}")
        self._acks: AckCollector[InFlight | Task] = AckCollector(batch_size, linger, time.monotonic)
        if worker.task_types is None:
            worker.task_types = registry.task_types
        missing = [t for t in worker.task_types if t not in registry]
        if missing:
            raise ConfigError(
                f"worker {worker.worker_id!r} claims task types with no handler: {', '.join(missing)}; "
                "register handlers for them or drop them from task_types"
            )
        self.worker = worker
        self.registry = registry
        self.concurrency = concurrency
        self.burst = burst
        self.max_tasks = max_tasks
        self.task_timeout = float(task_timeout) if task_timeout is not None else worker.lease_duration * 10
        if self.task_timeout <= 0:
            raise ConfigError(f"task_timeout must be positive, got {task_timeout!r}")
        self.grace_period = float(grace_period)
        self.idle_timeout = max(float(idle_timeout), 0.01)
        self.wake_mode = wake_mode
        self.stop_flag = stop_flag
        self.install_signal_handlers = install_signal_handlers
        self.prefetch = prefetch
        self.scheduler = scheduler
        self.observer = MultiObserver(observer) if isinstance(observer, Sequence) else observer
        self.summary = RunSummary()
        self.log = worker_logger(worker.worker_id)
        self._inflight: dict[int, InFlight] = {}
        self._busy = 0  # records whose handler runs or is queued to run (every state but SETTLING)
        self._async_running = 0  # of which async handlers
        self._buffer: deque[Task] = deque()  # prefetched: leased, not started
        self._claimed = 0
        self._nothing_ready = False  # the last claim found no task
        self._short = False  # the last claim found fewer tasks than it asked for
        self._run_time = 0.0  # moving average of a handler's run time (seconds)
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Future[bool] | None = None
        self._pending_wait: asyncio.Future[Any] | None = None
        self._started_when_idle = 0
        self._immediate = False
        self._signals_seen = 0
        self._exit_exception: BaseException | None = None

    @property
    def batch_size(self) -> int:
        """Outcomes written in one transaction at most."""
        return self._acks.batch_size

    @property
    def linger(self) -> float:
        """Longest wait of an outcome before it is written."""
        return self._acks.linger

    # -- stopping --------------------------------------------------------------
    def request_stop(self, immediate: bool = False) -> None:
        """Stop claiming; with ``immediate``, abandon running tasks (their leases expire)."""
        self._immediate = self._immediate or immediate
        if self._stop is not None:
            self._stop.set()
            self._notify()

    def _on_signal(self, signum: int) -> None:
        self._signals_seen += 1
        self.summary.stopped_by_signal = True
        if self._signals_seen == 1:
            self.log.info("signal %s: finishing running tasks (send it again to stop at once)", signum)
            self.request_stop()
        else:
            self.log.warning("second signal %s: stopping at once; leases will expire", signum)
            self.request_stop(immediate=True)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        wanted = [signal.SIGINT, signal.SIGTERM]
        if sys.platform == "win32" and hasattr(signal, "SIGBREAK"):
            wanted.append(signal.SIGBREAK)
        previous: dict[int, Any] = {}
        for signum in wanted:
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
                previous[signum] = None
            except (NotImplementedError, RuntimeError, ValueError):
                previous[signum] = signal.signal(
                    signum, lambda num, _frame: loop.call_soon_threadsafe(self._on_signal, num)
                )

        def restore() -> None:
            for signum, old in previous.items():
                if old is None:
                    with contextlib.suppress(Exception):
                        loop.remove_signal_handler(signum)
                else:
                    signal.signal(signum, old)

        return restore

    # -- running ---------------------------------------------------------------
    async def run(self) -> RunSummary:
        """Run until stopped (or, with ``burst``, until the queue is drained)."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._db_pool = DaemonThreadPool(1, "prismq-queue-db")
        self._slots = SyncSlots(self.concurrency, "prismq-queue-handler", loop, self._deliver)
        self._wait_pool = DaemonThreadPool(1, "prismq-queue-wait")
        waiter = await self._call(make_waiter, self.worker.backend, self.wake_mode)
        restore_signals = self._install_signals(loop) if self.install_signal_handlers else (lambda: None)
        watcher = self._watch_stop_flag(loop)
        heartbeat = asyncio.ensure_future(self._heartbeat_loop())
        watchdog = asyncio.ensure_future(self._watchdog())
        schedules: asyncio.Future[None] | None = None
        self.log.info(
            "worker started: types=%s strategy=%s concurrency=%d batch=%d linger=%gs prefetch=%d",
            ",".join(self.worker.task_types or ()),
            self.worker.strategy.name,
            self.concurrency,
            self.batch_size,
            self.linger,
            self.prefetch,
        )
        try:
            if self.scheduler:
                schedules = await self._start_scheduler()
            await self._loop(waiter)
        finally:
            for helper in (heartbeat, watchdog, schedules):
                if helper is not None:
                    helper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await helper
            await self._shutdown()
            watcher.set()
            # Stop the idle wait and close the waiter on its own thread, and wait for both:
            # once run() returns, no thread of this worker is inside a database call, so the
            # caller may close the database.
            waiter.interrupt()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.wrap_future(self._wait_pool.submit(waiter.close)), 30)
            restore_signals()
            self._slots.shutdown()
            self._wait_pool.shutdown()
            self._db_pool.shutdown()
            self.log.info("worker stopped: %s", self.summary)
        if self._exit_exception is not None:
            raise self._exit_exception  # a handler's SystemExit, once its attempt is failed
        return self.summary

    async def _start_scheduler(self) -> asyncio.Future[None] | None:
        """Store the registry's schedules, then run the scheduler loop as a task.

        A backend without schedule storage (a custom one) runs no loop, unless the
        registry defines schedules, which is a ConfigError.
        """
        assert self._stop is not None
        try:
            schedules = Schedules(self.worker.db)
        except ConfigError:
            if self.registry.schedules:
                raise
            return None
        loop = SchedulerLoop(
            schedules,
            self.registry.schedules,
            poll_interval=self.idle_timeout,
            logger=self.log,
        )
        await self._call(loop.sync)
        return asyncio.ensure_future(loop.run(self._call, self._stop))

    def _watch_stop_flag(self, loop: asyncio.AbstractEventLoop) -> threading.Event:
        """Relay an outside stop flag to the loop from a thread that blocks on it.

        Returns an event that ends the relay thread when the run is over.
        """
        finished = threading.Event()
        flag = self.stop_flag
        wait = getattr(flag, "wait", None)
        if flag is None or not callable(wait) or _is_process_event(flag):
            return finished

        def relay() -> None:
            while not finished.is_set():
                if wait(0.5):
                    self.summary.stopped_by_signal = True
                    loop.call_soon_threadsafe(self.request_stop)
                    return

        threading.Thread(target=relay, name="prismq-queue-stop-relay", daemon=True).start()
        return finished

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._db_pool.submit(func, *args))

    def _should_stop(self) -> bool:
        assert self._stop is not None
        if self.stop_flag is not None and not self._stop.is_set() and self.stop_flag.is_set():
            self.summary.stopped_by_signal = True
            self._stop.set()
        return self._stop.is_set()

    def _limit_reached(self) -> bool:
        return self.max_tasks is not None and self._claimed >= self.max_tasks

    def _want(self) -> int:
        """Tasks to lease now: the free slots plus the prefetch, less what is buffered."""
        if self._should_stop():
            return 0
        # No more than the slots will start within PREFETCH_HORIZON seconds (none before
        # a handler has been timed).
        prefetch = 0
        if self.prefetch and self._run_time > 0:
            prefetch = min(self.prefetch, int(self.concurrency * PREFETCH_HORIZON / self._run_time))
        want = self.concurrency + prefetch - self._busy - len(self._buffer)
        if self.max_tasks is not None:
            want = min(want, self.max_tasks - self._claimed)
        return max(0, min(want, MAX_BATCH))

    async def _loop(self, waiter: ChangeWaiter) -> None:
        acks = self._acks
        while not self._should_stop():
            self._start_buffered()
            want = self._want()
            starving = want > 0 and self._busy < self.concurrency and not self._buffer
            claim_now = starving and not self._short and not self._limit_reached()
            if acks and (acks.due_in() == 0 or claim_now or self._busy == 0):
                await self._flush(want)
                continue
            if claim_now:
                await self._flush(want)
                continue
            if acks:
                await self._wait_change(acks.due_in())
                continue
            if self._busy or self._buffer:
                if self._short and self._busy < self.concurrency and not self._limit_reached():
                    # Free slots, but the last claim found less than it asked for: wait for
                    # new tasks as an idle worker does (or for a task to end), then claim.
                    await self._idle(waiter)
                    self._short = False
                else:
                    await self._wait_change(self.idle_timeout)  # every slot is busy
                continue
            # Nothing runs and nothing waits to be written.
            if self._limit_reached():
                break
            if not self._nothing_ready:
                self._short = False
                await self._flush(want)
                continue
            if self.burst:
                break
            await self._idle(waiter)
            self._nothing_ready = self._short = False

    async def _flush(self, want: int) -> None:
        """Write the waiting outcomes and lease up to ``want`` tasks, in one transaction.

        A transient error (busy database, dropped server connection) is retried with
        growing pauses while the leases last (at most one lease duration); then, or at
        once for any other error, the outcomes are given up: their leases are no longer
        renewed and their tasks run again once the leases expire.
        """
        batch = self._acks.take()
        acks = [ack for _, ack in batch]
        loop = asyncio.get_running_loop()
        pause = OUTCOME_RETRY_FIRST_PAUSE
        give_up_at: float | None = None
        tries = 0
        while True:
            tries += 1
            try:
                results, tasks = await self._call(self.worker.acknowledge, acks, want)
                break
            except QueueError as exc:
                if not batch:  # a claim alone: the loop tries again after a pause
                    self.log.error("claim failed: %s; retrying", exc)
                    await self._wait_change(min(self.idle_timeout, 1.0), stop_ends=False)
                    return
                if isinstance(exc, TRANSIENT_ERRORS):
                    now = loop.time()
                    give_up_at = give_up_at if give_up_at is not None else now + self.worker.lease_duration
                    if now + pause <= give_up_at and pause < self._lease_left(acks):
                        self.log.warning(
                            "saving %d outcome(s) failed (%s); trying again in %.2f s", len(batch), exc, pause
                        )
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, OUTCOME_RETRY_MAX_PAUSE)
                        continue
                self._give_up(batch, exc, tries)
                return
        for (record, _), result in zip(batch, results, strict=True):
            self._settled(record, result)
        if want:
            self._nothing_ready = not tasks
            self._short = len(tasks) < want
        if tasks:
            self._claimed += len(tasks)
            self._buffer.extend(tasks)
            self._start_buffered()

    def _lease_left(self, acks: list[Ack]) -> float:
        """Seconds until the first of these held leases expires (0 when one is not held)."""
        held = self.worker.held_tasks
        now = self.worker.db.now()
        left = float("inf")
        for ack in acks:
            task = held.get(ack.task_id)
            if task is None or task.lease_until is None:
                return 0.0
            left = min(left, task.lease_until.timestamp() - now)
        return left

    def _give_up(self, batch: list[tuple[InFlight | Task, Ack]], error: QueueError, tries: int) -> None:
        """Outcomes that could not be saved: their leases are left to expire."""
        for record, ack in batch:
            task = record.task if isinstance(record, InFlight) else record
            log = record.log if isinstance(record, InFlight) else task_logger(self.worker.worker_id, task)
            self.worker.forget_task(ack.task_id)
            self.summary.abandoned += 1
            self._observed(record, TaskOutcome.ABANDONED, error)
            if isinstance(record, InFlight):
                self._inflight.pop(task.id, None)
            log.error(
                "the outcome could not be saved after %d tries (%s: %s); the task runs again once "
                "its lease expires",
                tries,
                type(error).__name__,
                error,
            )

    def _settled(self, record: InFlight | Task, result: AckResult) -> None:
        """Count and log one written (or refused) outcome; free its record."""
        if isinstance(record, InFlight):
            task, log = record.task, record.log
        else:  # a prefetched task given back
            task, log = record, task_logger(self.worker.worker_id, record)
        ack = result.ack
        if not result.saved and isinstance(result.error, PayloadError) and ack.kind is AckKind.COMPLETE:
            # The result cannot be stored: the attempt fails for good instead.
            log.error("%s", result.error)
            self._acks.add(record, Ack.fail(task.id, result.error, retry=False))
            return
        if isinstance(record, InFlight):
            self._inflight.pop(task.id, None)
        if not result.saved:
            self._observed(record, TaskOutcome.LEASE_LOST)
            if ack.kind is AckKind.RELEASE:
                log.debug("not released: %s", result.error)
            else:
                self.summary.lease_lost += 1
                log.warning("%s", result.error)
            return
        kind = ack.kind
        if kind is AckKind.COMPLETE:
            self.summary.completed += 1
            log.debug("completed")
        elif kind is AckKind.CANCEL:
            self.summary.cancelled += 1
            log.debug("cancelled")
        elif kind is AckKind.RELEASE:
            self.summary.released += 1
            log.debug("released")
        elif result.status is TaskStatus.DEAD:
            self.summary.dead += 1
            log.error("failed for good after %d attempt(s): %s", result.attempts, _message(ack))
        else:
            self.summary.retried += 1
            assert result.run_after is not None
            when = datetime.fromtimestamp(result.run_after, tz=timezone.utc)
            log.info("failed; retry at %s", when.isoformat())
        if isinstance(record, InFlight) and record.observation is not None:
            if kind is AckKind.FAIL:
                outcome = TaskOutcome.DEAD if result.status is TaskStatus.DEAD else TaskOutcome.RETRIED
            else:
                outcome = _OBSERVED[kind]
            self._observed(record, outcome, ack.error)

    def _start_buffered(self) -> None:
        """Start prefetched tasks while slots allow.

        Async handlers start while fewer than ``concurrency`` tasks run. Sync handlers are
        queued to the handler threads at once (the threads themselves cap how many run),
        so a thread that finishes a task starts the next without waiting for the loop;
        with async handlers running too, sync ones are only queued into free slots.
        """
        buffer = self._buffer
        limit = self.concurrency
        while buffer:
            handler = self.registry.get(buffer[0].task_type)
            assert handler is not None  # claims are filtered by the registry's types
            sync_active = min(self._busy - self._async_running, limit)
            if handler.is_async:
                if self._async_running + sync_active >= limit:
                    return
            elif self._async_running and self._async_running + sync_active >= limit:
                return
            self._start(buffer.popleft(), handler)

    async def _idle(self, waiter: ChangeWaiter) -> None:
        if self.summary.started != self._started_when_idle:
            # Tasks ran since the last idle spell: more may follow, so look often for a while.
            self._started_when_idle = self.summary.started
            waiter.note_work()
        timeout = self.idle_timeout
        next_at = await self._call(self.worker.backend.next_run_after, self.worker.task_types)
        if next_at is not None:
            timeout = min(timeout, max(next_at - self.worker.db.now(), 0.0))
        if timeout <= 0:
            return
        # One wait at a time on the wait thread: a wait still running from an earlier idle
        # spell is reused, so a change it reports is never lost behind a queued second wait.
        if self._pending_wait is None or self._pending_wait.done():
            self._pending_wait = asyncio.wrap_future(self._wait_pool.submit(waiter.wait, timeout))
        await self._wait_change(timeout + 0.05, extra=self._pending_wait)

    def _notify(self) -> None:
        """Wake the loop: a task ended, an outcome is waiting, or a stop was asked."""
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(True)

    async def _wait_change(
        self, timeout: float, extra: asyncio.Future[Any] | None = None, *, stop_ends: bool = True
    ) -> None:
        """Wait until :meth:`_notify`, ``extra`` resolves, a stop is asked, or ``timeout``.

        With ``stop_ends`` False (while shutting down) a stop already asked does not end it.
        """
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A stop flag without a safe wait() can only be polled: look at it every
        # STOP_FLAG_POLL seconds (each look wakes the event loop, so not more often).
        polled = self.stop_flag is not None and (
            not callable(getattr(self.stop_flag, "wait", None)) or _is_process_event(self.stop_flag)
        )

        def on_extra(_future: asyncio.Future[Any]) -> None:
            self._notify()

        if extra is not None:
            extra.add_done_callback(on_extra)
        try:
            while True:
                remaining = deadline - loop.time()
                if (
                    remaining <= 0
                    or (stop_ends and self._should_stop())
                    or (extra is not None and extra.done())
                ):
                    return
                wake = self._wake = loop.create_future()
                timer = loop.call_later(
                    min(remaining, STOP_FLAG_POLL) if polled else remaining, _resolve, wake
                )
                try:
                    notified = await wake
                finally:
                    timer.cancel()
                    self._wake = None
                if notified:
                    return
        finally:
            if extra is not None:
                extra.remove_done_callback(on_extra)

    # -- one task --------------------------------------------------------------
    def _start(self, task: Task, handler: Handler) -> None:
        self.summary.started += 1
        log = task_logger(self.worker.worker_id, task)
        record = InFlight(task, TaskContext(task, self.worker, log), handler, log)
        self._inflight[task.id] = record
        self._busy += 1
        if self.observer is not None:
            self._start_observed(record)
        elif handler.is_async:
            self._async_running += 1
            record.execution = asyncio.ensure_future(self._execute(record))
        else:
            self._slots.submit(record, handler.func, record.ctx)

    def _start_observed(self, record: InFlight) -> None:
        """Start a task in a context of its own, in which the observer is told first.

        What the observer sets in that context (the current span) is seen by the handler,
        on the event loop or on its slot thread, and by nothing else.
        """
        assert self.observer is not None
        context = contextvars.copy_context()
        try:
            record.observation = context.run(self.observer.task_started, record.task, self.worker.worker_id)
        except Exception:
            self.log.exception("task observer failed; ignored")
        handler = record.handler
        if handler.is_async:
            self._async_running += 1
            record.execution = context.run(asyncio.ensure_future, self._execute(record))
        else:
            func = handler.func

            def run_in_context(ctx: TaskContext) -> Any:
                return context.run(func, ctx)

            self._slots.submit(record, run_in_context, record.ctx)

    def _observed(self, record: InFlight | Task, outcome: TaskOutcome, error: object = None) -> None:
        """Tell the attempt's observation how it ended (once; later calls do nothing)."""
        observation = record.observation if isinstance(record, InFlight) else None
        if observation is None:
            return
        record.observation = None  # type: ignore[union-attr]
        try:
            observation.finished(outcome, error if isinstance(error, BaseException) else None)
        except Exception:
            self.log.exception("task observer failed; ignored")

    def _handler_done(self, record: InFlight, ack: Ack | None, run_time: float | None = None) -> None:
        """The handler is over: hand its outcome to the collector and free the slot."""
        if record.state is TaskState.SETTLING:
            return
        record.state = TaskState.SETTLING
        self._busy -= 1
        if record.handler.is_async:
            self._async_running -= 1
        if run_time is not None:
            self._run_time = run_time if not self._run_time else self._run_time * 0.9 + run_time * 0.1
        if ack is None:
            self._inflight.pop(record.task.id, None)
        else:
            self._acks.add(record, ack)
        # Start the next prefetched task in the freed slot at once, even while a flush runs.
        self._start_buffered()
        self._notify()

    def _deliver(self, outcomes: list[Outcome]) -> None:
        """Outcomes of sync handlers, handed back by their threads (on the loop)."""
        for record, returned, raised, seconds in outcomes:
            if record.state is TaskState.SETTLING:
                continue  # released meanwhile (shutdown): this late outcome is discarded
            if record.state is TaskState.TIMED_OUT:
                # The thread of a timed-out handler returned: only now is the attempt failed.
                assert record.timeout_error is not None
                self._handler_done(record, Ack.fail(record.task.id, record.timeout_error), seconds)
                continue
            self._handler_done(record, self._ack_for(record, returned, raised), seconds)

    def _ack_for(self, record: InFlight, returned: Any, raised: BaseException | None) -> Ack | None:
        """The outcome to write for a handler that returned or raised (``None``: none)."""
        task, log = record.task, record.log
        if raised is None:
            if record.ctx.lease_lost:
                self.summary.lease_lost += 1
                self._observed(record, TaskOutcome.LEASE_LOST)
                log.warning("lease was lost while running; result discarded")
                return None
            return Ack.complete(task.id, returned)
        if isinstance(raised, HandlerEscaped):
            raised = raised.original
        if isinstance(raised, TaskCancelled):
            return Ack.cancel(task.id)
        if isinstance(raised, TaskFailed):
            return Ack.fail(task.id, raised, retry=raised.retry)
        if isinstance(raised, Exception):
            log.info("handler raised %s: %s", type(raised).__name__, raised)
            return Ack.fail(task.id, raised)
        # A BaseException that is not an Exception never leaves its task leased.
        outcome = base_exception_outcome(raised)
        log.warning("handler raised %s (not an Exception): %s", type(raised).__name__, raised)
        if outcome == "release":  # KeyboardInterrupt: give the task back and stop
            self.request_stop()
            return Ack.release(task.id)
        if outcome == "fail_and_exit":  # SystemExit: fail the attempt, stop, re-raise from run()
            self._exit_exception = self._exit_exception or raised
            self.request_stop()
        return Ack.fail(task.id, raised)

    async def _execute(self, record: InFlight) -> None:
        """Run an async handler on the loop, with its timeout."""
        task, ctx, handler, log = record.task, record.ctx, record.handler, record.log
        timeout = handler.timeout or self.task_timeout
        loop = asyncio.get_running_loop()
        record.started_at = loop.time()
        ack: Ack | None = None
        try:
            result = await self._invoke(record, timeout)
        except asyncio.TimeoutError:
            ctx._request_cancel()
            ack = self._timed_out(record, timeout)
        except asyncio.CancelledError as exc:
            state = record.state
            if state is TaskState.ABANDONED:  # this execution itself was cancelled (immediate stop)
                raise
            if state not in _INTERRUPTED:  # raised by the handler (a future it awaited was cancelled)
                self._handler_done(record, self._ack_for(record, None, exc), loop.time() - record.started_at)
                return
            if state is TaskState.CANCELLING:
                ack = Ack.cancel(task.id)
            elif state is TaskState.SHUTTING_DOWN:
                ack = Ack.release(task.id)
            else:
                self.summary.lease_lost += 1
                self._observed(record, TaskOutcome.LEASE_LOST)
                log.warning("lease was lost; the attempt was stopped")
        except BaseException as exc:  # HandlerEscaped and custom BaseExceptions included
            ack = self._ack_for(record, None, exc)
        else:
            ack = self._ack_for(record, result, None)
        self._handler_done(record, ack, loop.time() - record.started_at)

    def _timed_out(self, record: InFlight, timeout: float) -> Ack:
        self.summary.timed_out += 1
        error = TaskTimeoutError(
            f"handler for {record.task.task_type!r} ran longer than its timeout of {timeout:g} s"
        )
        record.log.error("%s", error)
        record.timeout_error = error
        return Ack.fail(record.task.id, error)

    async def _watchdog(self) -> None:
        """Mark sync handlers that run past their timeout.

        A thread cannot be stopped, so the attempt keeps its lease (renewed by the
        heartbeat) and its slot until the handler returns; only then is it failed, so a
        retry never runs while the old attempt still does.
        """
        timeouts = [h.timeout or self.task_timeout for h in self.registry if not h.is_async]
        if not timeouts:
            return
        interval = min(max(min(timeouts) / 10, 0.01), 1.0)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for record in list(self._inflight.values()):
                if record.handler.is_async or record.state is not TaskState.RUNNING:
                    continue
                started = self._slots.started_at(record)
                timeout = record.handler.timeout or self.task_timeout
                if started is not None and now - started > timeout:
                    record.ctx._request_cancel()
                    record.state = TaskState.TIMED_OUT
                    self._timed_out(record, timeout)
                    record.log.warning(
                        "the timed-out handler is still running; its lease and slot are kept until it returns"
                    )

    async def _invoke(self, record: InFlight, timeout: float) -> Any:
        call: asyncio.Future[Any] = asyncio.ensure_future(guard_coroutine(record.handler.func(record.ctx)))
        record.call = call
        return await asyncio.wait_for(call, timeout)

    # -- leases ----------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.worker.heartbeat_interval)
            if not self._inflight and not self._buffer:
                continue
            try:
                renewed = await self._call(self.worker.heartbeat)
            except QueueError as exc:
                self.log.error("lease renewal failed: %s", exc)
                continue
            alive = {task.id: task for task in renewed}
            held = self.worker.held_tasks
            if self._buffer:
                kept = [task for task in self._buffer if task.id in alive or task.id in held]
                self._buffer = deque(kept)
            for record in list(self._inflight.values()):
                if record.state is not TaskState.RUNNING:
                    continue
                ctx = record.ctx
                task = alive.get(record.task.id)
                if task is None:
                    if record.task.id not in held:
                        ctx._mark_lease_lost()
                        if not record.handler.is_async and self._slots.withdraw(record):
                            # Leased ahead and not started yet: it will not run here.
                            self.summary.lease_lost += 1
                            self._observed(record, TaskOutcome.LEASE_LOST)
                            record.log.warning("lease was lost before the task started")
                            self._handler_done(record, None)
                        else:
                            self._interrupt(record, TaskState.LEASE_LOST)
                elif task.cancel_requested and not ctx.cancel_requested:
                    ctx.logger.info("cancellation requested")
                    ctx._request_cancel()
                    self._interrupt(record, TaskState.CANCELLING)

    def _interrupt(self, record: InFlight, state: TaskState) -> None:
        """Cancel an async handler's coroutine; sync handlers only see ``ctx`` flags."""
        call = record.call
        if record.handler.is_async and call is not None and not call.done():
            record.state = state
            call.cancel()

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        # Prefetched tasks never started: give them back at once.
        while self._buffer:
            task = self._buffer.popleft()
            self._acks.add(task, Ack.release(task.id))
        for record in list(self._inflight.values()):
            sync = not record.handler.is_async and record.state is TaskState.RUNNING
            if sync and self._slots.withdraw(record):
                self._handler_done(record, Ack.release(record.task.id))
        if self._busy and not self._immediate:
            self.log.info("waiting up to %g s for %d running task(s)", self.grace_period, self._busy)
            deadline = loop.time() + self.grace_period
            while self._busy and not self._immediate:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if self._acks.full:
                    await self._flush(0)
                await self._wait_change(min(remaining, 0.1), stop_ends=False)
        if self._immediate:
            running = [r for r in self._inflight.values() if r.state is not TaskState.SETTLING]
            for record in running:
                if record.execution is not None:
                    record.state = TaskState.ABANDONED
                    record.execution.cancel()
            if running:
                self.log.warning("abandoned %d running task(s); their leases will expire", len(running))
        else:
            running = [
                r for r in self._inflight.values() if r.state in (TaskState.RUNNING, TaskState.TIMED_OUT)
            ]
            for record in running:
                record.ctx._request_cancel()
                self._interrupt(record, TaskState.SHUTTING_DOWN)
            interrupted = [
                r.execution for r in running if r.state is TaskState.SHUTTING_DOWN and r.execution is not None
            ]
            if interrupted:
                await asyncio.wait(interrupted, timeout=5.0)
            for record in running:
                if record.state is TaskState.SETTLING:
                    continue
                # A sync handler still running (or an async one that ignored the cancel):
                # give the task back; whatever the handler does now is discarded.
                execution = record.execution
                self._handler_done(record, Ack.release(record.task.id))
                if execution is not None:
                    record.state = TaskState.ABANDONED
                    execution.cancel()
        # Write every outcome still waiting, the releases included.
        while self._acks:
            batch_size = len(self._acks)
            await self._flush(0)
            if len(self._acks) >= batch_size:  # the write failed: give up, leases expire
                self.log.error("%d outcome(s) could not be written; their tasks will run again", batch_size)
                break
        for record in self._inflight.values():  # abandoned, or their outcome not written
            self._observed(record, TaskOutcome.ABANDONED)
        await self._deregister()

    async def _deregister(self) -> None:
        try:
            await self._call(self.worker.deregister)
        except QueueError as exc:
            self.log.warning("could not leave the worker registry: %s", exc)


_OBSERVED = {
    AckKind.COMPLETE: TaskOutcome.COMPLETED,
    AckKind.CANCEL: TaskOutcome.CANCELLED,
    AckKind.RELEASE: TaskOutcome.RELEASED,
}
"""How a written outcome ends an attempt, for the observers (a failure: retried or dead)."""


def _resolve(wake: asyncio.Future[bool]) -> None:
    """The timer side of :meth:`WorkerRunner._wait_change`: the time is up."""
    if not wake.done():
        wake.set_result(False)


def _message(ack: Ack) -> str:
    error = ack.error
    return f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)


def _is_process_event(flag: object) -> bool:
    """A ``multiprocessing.Event``: polled only, since a killed process can leave wait() stuck."""
    return isinstance(flag, multiprocessing.synchronize.Event)


def run_worker(worker: QueueWorker, registry: HandlerRegistry, **options: Any) -> RunSummary:
    """Run a worker on a fresh event loop until it stops (see :class:`WorkerRunner`)."""
    runner = WorkerRunner(worker, registry, **options)
    summary = asyncio.run(runner.run())
    if runner._immediate and options.get("install_signal_handlers"):
        os._exit(130)
    return summary
