"""The worker loop: claim, run the handler, complete or fail; renew leases meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import multiprocessing.synchronize
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import ConfigError, LeaseLostError, PayloadError, QueueError, ValidationError
from ..models import Task
from ..validation import is_int, is_number
from ..worker import QueueWorker
from .context import TaskCancelled, TaskContext, TaskFailed
from .logs import task_logger, worker_logger
from .observer import MultiObserver, TaskObservation, TaskObserver, TaskOutcome
from .outcomes import HandlerEscaped, base_exception_outcome, guard_coroutine, save_with_retry
from .threads import DaemonThreadPool
from .wakeup import ChangeWaiter, make_waiter

if TYPE_CHECKING:
    from .registry import Handler, HandlerRegistry

__all__ = ["RunSummary", "StopFlag", "TaskTimeoutError", "WorkerRunner"]

T = TypeVar("T")

STOP_FLAG_POLL = 0.25
"""Seconds between looks at a stop flag that can only be polled (a process-shared flag)."""


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


class WorkerRunner:
    """Runs handlers from a registry on a :class:`~prismq.queue.worker.QueueWorker`.

    Sync handlers run on a pool of ``concurrency`` threads, async handlers as tasks on the
    event loop; database calls go through one dedicated thread so they never block the
    loop. While a handler runs its lease is renewed every ``worker.heartbeat_interval``
    seconds; a cancellation request is passed to the handler (async handlers are
    cancelled, sync handlers see ``ctx.cancel_requested``).

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
        observer: TaskObserver | Sequence[TaskObserver] | None = None,
    ) -> None:
        if len(registry) == 0:
            raise ConfigError("the handler registry is empty; register at least one handler")
        if not is_int(concurrency) or not 1 <= concurrency <= 1000:
            raise ConfigError(f"concurrency must be an integer from 1 to 1000, got {concurrency!r}")
        if max_tasks is not None and (not isinstance(max_tasks, int) or max_tasks < 1):
            raise ConfigError(f"max_tasks must be a positive integer, got {max_tasks!r}")
        for name, value in (("grace_period", grace_period), ("idle_timeout", idle_timeout)):
            if not is_number(value) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if wake_mode not in ("auto", "notify", "inotify", "poll"):
            raise ConfigError(f"wake_mode must be auto, notify, inotify or poll, got {wake_mode!r}")
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
        self.observer = MultiObserver(observer) if isinstance(observer, Sequence) else observer
        self._observations: dict[int, TaskObservation] = {}
        self.summary = RunSummary()
        self.log = worker_logger(worker.worker_id)
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._contexts: dict[int, TaskContext] = {}
        self._async_calls: dict[int, asyncio.Future[Any]] = {}
        self._cancel_reasons: dict[int, str] = {}
        self._stop: asyncio.Event | None = None
        self._pending_wait: asyncio.Future[Any] | None = None
        self._started_when_idle = 0
        self._immediate = False
        self._signals_seen = 0
        self._exit_exception: BaseException | None = None

    # -- stopping --------------------------------------------------------------
    def request_stop(self, immediate: bool = False) -> None:
        """Stop claiming; with ``immediate``, abandon running tasks (their leases expire)."""
        self._immediate = self._immediate or immediate
        if self._stop is not None:
            self._stop.set()

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
        self._handler_pool = DaemonThreadPool(self.concurrency, "prismq-queue-handler")
        self._wait_pool = DaemonThreadPool(1, "prismq-queue-wait")
        waiter = await self._call(make_waiter, self.worker.backend, self.wake_mode)
        restore_signals = self._install_signals(loop) if self.install_signal_handlers else (lambda: None)
        watcher = self._watch_stop_flag(loop)
        heartbeat = asyncio.ensure_future(self._heartbeat_loop())
        self.log.info(
            "worker started: types=%s strategy=%s concurrency=%d",
            ",".join(self.worker.task_types or ()),
            self.worker.strategy.name,
            self.concurrency,
        )
        try:
            await self._loop(waiter)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self._shutdown()
            watcher.set()
            # Stop the idle wait and close the waiter on its own thread, and wait for both:
            # once run() returns, no thread of this worker is inside a database call, so the
            # caller may close the database.
            waiter.interrupt()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.wrap_future(self._wait_pool.submit(waiter.close)), 30)
            restore_signals()
            self._handler_pool.shutdown()
            self._wait_pool.shutdown()
            self._db_pool.shutdown()
            self.log.info("worker stopped: %s", self.summary)
        if self._exit_exception is not None:
            raise self._exit_exception  # a handler's SystemExit, once its attempt is failed
        return self.summary

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

    async def _loop(self, waiter: ChangeWaiter) -> None:
        while not self._should_stop():
            if self.max_tasks is not None and self.summary.started >= self.max_tasks:
                break
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                await self._wait_any(self.idle_timeout)
                continue
            if self.max_tasks is not None:
                free = min(free, self.max_tasks - self.summary.started)
            try:
                tasks = await self._call(self.worker.claim_batch, free)
            except QueueError as exc:
                self.log.error("claim failed: %s; retrying", exc)
                await self._wait_any(min(self.idle_timeout, 1.0))
                continue
            if tasks:
                for task in tasks:
                    self._start(task)
                continue
            if self.burst and not self._inflight:
                break
            await self._idle(waiter)
        if self.max_tasks is not None or self.burst:
            # Natural end: let running tasks finish.
            while self._inflight and not self._should_stop():
                await self._wait_any(self.idle_timeout)

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
        await self._wait_any(timeout + 0.05, extra=self._pending_wait)

    async def _wait_any(self, timeout: float, extra: asyncio.Future[Any] | None = None) -> None:
        """Wait until a running task ends, ``extra`` resolves, a stop is asked, or ``timeout``."""
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiting: set[asyncio.Future[Any]] = set(self._inflight.values())
        stop_wait = asyncio.ensure_future(self._stop.wait())
        waiting.add(stop_wait)
        if extra is not None:
            waiting.add(extra)
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                # A stop flag without a safe wait() can only be polled: look at it every
                # STOP_FLAG_POLL seconds (each look wakes the event loop, so not more often).
                polled = self.stop_flag is not None and (
                    not callable(getattr(self.stop_flag, "wait", None)) or _is_process_event(self.stop_flag)
                )
                slice_ = min(remaining, STOP_FLAG_POLL) if polled else remaining
                done, _ = await asyncio.wait(waiting, timeout=slice_, return_when=asyncio.FIRST_COMPLETED)
                if done or self._should_stop():
                    return
        finally:
            stop_wait.cancel()

    # -- one task --------------------------------------------------------------
    def _start(self, task: Task) -> None:
        self.summary.started += 1
        # Each task runs in a context of its own, made here: what an observer sets in it (the
        # current span) is seen by the handler and by nothing else.
        context = contextvars.copy_context()
        if self.observer is not None:
            try:
                observation = context.run(self.observer.task_started, task, self.worker.worker_id)
            except Exception:
                self.log.exception("task observer failed; ignored")
                observation = None
            if observation is not None:
                self._observations[task.id] = observation
        execution = context.run(asyncio.ensure_future, self._execute(task))
        self._inflight[task.id] = execution
        execution.add_done_callback(functools.partial(self._finished, task.id))

    def _finished(self, task_id: int, _future: asyncio.Future[None]) -> None:
        self._inflight.pop(task_id, None)
        self._contexts.pop(task_id, None)
        self._async_calls.pop(task_id, None)
        self._cancel_reasons.pop(task_id, None)
        self._observed(task_id, TaskOutcome.ABANDONED)

    def _observed(self, task_id: int, outcome: TaskOutcome, error: BaseException | None = None) -> None:
        """Tell the task's observation how its attempt ended (once; later calls do nothing)."""
        observation = self._observations.pop(task_id, None)
        if observation is not None:
            try:
                observation.finished(outcome, error)
            except Exception:
                self.log.exception("task observer failed; ignored")

    async def _execute(self, task: Task) -> None:
        log = task_logger(self.worker.worker_id, task)
        handler = self.registry.get(task.task_type)
        assert handler is not None  # claims are filtered by the registry's types
        ctx = TaskContext(task, self.worker, log)
        self._contexts[task.id] = ctx
        timeout = handler.timeout or self.task_timeout
        log.debug("started")
        try:
            result = await self._invoke(handler, ctx, timeout)
        except asyncio.TimeoutError:
            ctx._request_cancel()
            self.summary.timed_out += 1
            error = TaskTimeoutError(
                f"handler for {task.task_type!r} ran longer than its timeout of {timeout:g} s"
            )
            log.error("%s", error)
            if not handler.is_async:
                await self._await_thread(task.id, log)
            await self._fail(task, error, retry=True, log=log)
        except asyncio.CancelledError as exc:
            reason = self._cancel_reasons.get(task.id)
            if reason == "abandon":  # this execution itself was cancelled (immediate stop)
                raise
            if reason is None:  # raised by the handler (a future it awaited was cancelled)
                await self._handler_raised_base(task, exc, log)
                return
            await self._after_interruption(task, reason, log)
        except HandlerEscaped as exc:
            await self._handler_raised_base(task, exc.original, log)
        except TaskCancelled:
            await self._outcome(
                self.worker.acknowledge_cancel, task, log, "cancelled", "cancelled on request"
            )
        except TaskFailed as exc:
            await self._fail(task, exc, retry=exc.retry, log=log)
        except Exception as exc:
            log.info("handler raised %s: %s", type(exc).__name__, exc)
            await self._fail(task, exc, retry=True, log=log)
        except BaseException as exc:  # from a sync handler's thread, or a custom class
            await self._handler_raised_base(task, exc, log)
        else:
            if ctx.lease_lost:
                self.summary.lease_lost += 1
                self._observed(task.id, TaskOutcome.LEASE_LOST)
                log.warning("lease was lost while running; result discarded")
                return
            try:
                await self._complete(task, log, result)
            except PayloadError as exc:
                await self._fail(task, exc, retry=False, log=log)

    async def _complete(self, task: Task, log: Any, result: Any) -> None:
        """Complete a task; claim the slot's next task in the same transaction when one is due.

        The loop would claim for the freed slot right away, so the completion and that
        claim share one commit (:meth:`QueueWorker.complete_and_claim`). With
        ``max_tasks`` or a stop under way, the task is only completed.
        """
        if self.max_tasks is not None or self._should_stop():
            await self._outcome(self.worker.complete_task, task, log, "completed", result)
            return
        following = await self._outcome(self.worker.complete_and_claim, task, log, "completed", result)
        if following is not None:
            self._start(following)

    async def _invoke(self, handler: Handler, ctx: TaskContext, timeout: float) -> Any:
        if handler.is_async:
            call: asyncio.Future[Any] = asyncio.ensure_future(guard_coroutine(handler.func(ctx)))  # type: ignore[arg-type]
            self._async_calls[ctx.task_id] = call
            return await asyncio.wait_for(call, timeout)
        # In a copy of this task's context: the handler sees what observers set (a span).
        run = contextvars.copy_context().run
        call = asyncio.wrap_future(self._handler_pool.submit(run, handler.func, ctx))
        self._async_calls[ctx.task_id] = call
        # Shielded: a timeout must not drop the thread's future, whose end is awaited.
        return await asyncio.wait_for(asyncio.shield(call), timeout)

    async def _await_thread(self, task_id: int, log: Any) -> None:
        """Wait for a timed-out sync handler's thread to return; its outcome is discarded.

        A thread cannot be stopped, so the attempt keeps its lease (renewed by the
        heartbeat) and its concurrency slot until the handler returns: only then is the
        attempt failed, so a retry never runs while the old attempt still does.
        """
        call = self._async_calls.get(task_id)
        if call is None or call.done():
            return
        log.warning("the timed-out handler is still running; its lease and slot are kept until it returns")
        await asyncio.wait({call})
        if not call.cancelled():
            call.exception()  # retrieved, so asyncio does not report it as never retrieved

    async def _handler_raised_base(self, task: Task, exc: BaseException, log: Any) -> None:
        """End an attempt whose handler raised a ``BaseException`` (see :func:`base_exception_outcome`)."""
        outcome = base_exception_outcome(exc)
        log.warning("handler raised %s (not an Exception): %s", type(exc).__name__, exc)
        if outcome == "release":
            await self._outcome(self.worker.release_task, task, log, "released")
            self.request_stop()
            return
        await self._fail(task, exc, retry=True, log=log)
        if outcome == "fail_and_exit":
            self._exit_exception = self._exit_exception or exc
            self.request_stop()

    async def _after_interruption(self, task: Task, reason: str, log: Any) -> None:
        if reason == "cancel":
            await self._outcome(
                self.worker.acknowledge_cancel, task, log, "cancelled", "cancelled on request"
            )
        elif reason == "lost":
            self.summary.lease_lost += 1
            self._observed(task.id, TaskOutcome.LEASE_LOST)
            log.warning("lease was lost; the attempt was stopped")
        elif reason == "shutdown":
            await self._outcome(self.worker.release_task, task, log, "released")

    async def _save(self, task: Task, log: Any, method: Callable[..., T], *args: Any) -> T:
        """Call a finishing ``method`` on the task, retrying transient errors (:mod:`.outcomes`)."""
        return await save_with_retry(lambda: self._call(method, task.id, *args), self.worker, task.id, log)

    def _unsaved(self, task: Task, error: QueueError, log: Any) -> None:
        """Give up an attempt whose outcome could not be saved: its lease is left to expire."""
        self.worker.forget_task(task.id)
        self.summary.abandoned += 1
        self._observed(task.id, TaskOutcome.ABANDONED, error)
        log.error(
            "the outcome could not be saved (%s: %s); the task runs again once its lease expires",
            type(error).__name__,
            error,
        )

    async def _fail(self, task: Task, error: BaseException, *, retry: bool, log: Any) -> None:
        try:
            updated = await self._save(
                task, log, functools.partial(self.worker.fail_task, retry=retry), error
            )
        except LeaseLostError as exc:
            self.summary.lease_lost += 1
            self._observed(task.id, TaskOutcome.LEASE_LOST)
            log.warning("%s", exc)
            return
        except QueueError as exc:
            self._unsaved(task, exc, log)
            return
        if updated.status.value == "dead":
            self.summary.dead += 1
            self._observed(task.id, TaskOutcome.DEAD, error)
            log.error("failed for good after %d attempt(s): %s", updated.attempts, updated.last_error)
        else:
            self.summary.retried += 1
            self._observed(task.id, TaskOutcome.RETRIED, error)
            log.info("failed; retry at %s", updated.run_after.isoformat())

    async def _outcome(
        self, method: Callable[..., Any], task: Task, log: Any, counter: str, *args: Any
    ) -> Any:
        """Call a finishing ``method`` on the task and count it; return what it returned.

        A lost lease is counted and logged instead, and gives ``None``.
        """
        try:
            returned = await self._save(task, log, method, *args)
        except LeaseLostError as exc:
            self.summary.lease_lost += 1
            self._observed(task.id, TaskOutcome.LEASE_LOST)
            log.warning("%s", exc)
            return None
        except ValidationError:
            raise  # a result that cannot be stored: the caller fails the attempt instead
        except QueueError as exc:
            self._unsaved(task, exc, log)
            return None
        setattr(self.summary, counter, getattr(self.summary, counter) + 1)
        if counter in _OUTCOMES:
            self._observed(task.id, _OUTCOMES[counter])
        log.debug("%s", counter)
        return returned

    # -- leases ----------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.worker.heartbeat_interval)
            if not self._inflight:
                continue
            try:
                renewed = await self._call(self.worker.heartbeat)
            except QueueError as exc:
                self.log.error("lease renewal failed: %s", exc)
                continue
            alive = {task.id: task for task in renewed}
            for task_id in list(self._contexts):
                ctx = self._contexts.get(task_id)
                if ctx is None:
                    continue
                task = alive.get(task_id)
                if task is None:
                    if task_id not in self.worker.held_tasks:
                        ctx._mark_lease_lost()
                        self._interrupt(task_id, "lost")
                elif task.cancel_requested and not ctx.cancel_requested:
                    ctx.logger.info("cancellation requested")
                    ctx._request_cancel()
                    self._interrupt(task_id, "cancel")

    def _interrupt(self, task_id: int, reason: str) -> None:
        """Cancel an async handler's coroutine; sync handlers only see ``ctx`` flags."""
        ctx = self._contexts.get(task_id)
        handler = self.registry.get(ctx.task.task_type) if ctx else None
        call = self._async_calls.get(task_id)
        if call is not None and handler is not None and handler.is_async and not call.done():
            self._cancel_reasons[task_id] = reason
            call.cancel()

    async def _shutdown(self) -> None:
        if not self._inflight:
            await self._deregister()
            return
        if not self._immediate:
            self.log.info("waiting up to %g s for %d running task(s)", self.grace_period, len(self._inflight))
            assert self._stop is not None
            deadline = asyncio.get_running_loop().time() + self.grace_period
            while self._inflight and not self._immediate:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                await asyncio.wait(set(self._inflight.values()), timeout=min(remaining, 0.1))
        if self._immediate:
            for task_id, execution in list(self._inflight.items()):
                self._cancel_reasons[task_id] = "abandon"
                execution.cancel()
            self.log.warning("abandoned %d running task(s); their leases will expire", len(self._inflight))
            return
        for task_id in list(self._inflight):
            ctx = self._contexts.get(task_id)
            if ctx is not None:
                ctx._request_cancel()
            call = self._async_calls.get(task_id)
            if call is not None and not call.done():
                self._cancel_reasons[task_id] = "shutdown"
                call.cancel()
        async_pending = [e for t, e in self._inflight.items() if self._cancel_reasons.get(t) == "shutdown"]
        if async_pending:
            await asyncio.wait(async_pending, timeout=5.0)
        for task_id in list(self._inflight):
            if task_id in self.worker.held_tasks:
                try:
                    await self._call(self.worker.release_task, task_id)
                    self.summary.released += 1
                    self._observed(task_id, TaskOutcome.RELEASED)
                except LeaseLostError:
                    self._observed(task_id, TaskOutcome.LEASE_LOST)
                except QueueError as exc:
                    self.log.error("could not release task %s at shutdown: %s", task_id, exc)
            execution = self._inflight.get(task_id)
            if execution is not None:
                self._cancel_reasons[task_id] = "abandon"
                execution.cancel()
        await self._deregister()

    async def _deregister(self) -> None:
        try:
            await self._call(self.worker.deregister)
        except QueueError as exc:
            self.log.warning("could not leave the worker registry: %s", exc)


_OUTCOMES = {outcome.value: outcome for outcome in TaskOutcome}
"""Summary counters that name how an attempt ended, as the observers' outcomes."""


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
