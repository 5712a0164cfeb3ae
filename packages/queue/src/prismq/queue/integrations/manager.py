"""``BackgroundTaskManager``: run coroutines in the background and track them as runs.

The API is the in-memory manager's, unchanged::

    # BEFORE (in-memory)
    task_manager = BackgroundTaskManager(registry)
    task_manager.start_task(run, coroutine)

    # AFTER (SQLite queue; or QueueDatabase("postgresql://host/db?schema=jobs"))
    queue = QueueDatabase("queue.db")
    task_manager = BackgroundTaskManager(registry, queue=queue)
    task_manager.start_task(run, coroutine)  # same API

The coroutine still runs on the caller's event loop, as an ``asyncio`` task. What
``queue=`` adds:

Durability and visibility
    Each run is a queue task (``prismq.run:<module_id>``) plus a ``runs`` row; status,
    progress and every status time are in the database, so other processes (and
    ``QueueClient.list``/``stats``) see them, and a crash loses nothing recorded.

No blocking
    Every database call runs on one writer thread owned by the manager. Calls that
    arrive while it is busy are committed together in one transaction (group commit),
    and progress reports are coalesced: only the latest report of each run is written.
    The event loop only ever waits on futures.

Dead owners
    Each manager has an owner id (``<host>-<pid>-<random>``) and holds a lease on the
    task of every run it executes, renewed every ``lease_duration / 3`` seconds while it
    has runs. A manager that dies (SIGKILL, power loss) stops renewing; once the lease has
    expired, the next manager that starts, or any live manager at its next renewal, marks
    the run ``interrupted``. A run copied while active by :mod:`prismq.queue.migrate`
    arrives with its task released and is recovered the same way, at once. A lease rather
    than a pid check: it works across machines, containers and pid reuse, at the cost of
    waiting up to ``lease_duration``.

Re-runs
    ``register_module(module_id, factory)`` declares how to run a module again; every
    interrupted run of that module marked ``rerunnable`` is then claimed (by exactly one
    manager) and started again under the same run id, ``attempts`` counting the starts.

Cancellation
    :meth:`BackgroundTaskManager.cancel_task` cancels the ``asyncio`` task, so the
    coroutine sees ``CancelledError`` at its current ``await``. A run executing in another
    process is flagged instead (so is one whose task was cancelled with
    ``QueueClient.cancel``); its owner cancels it at its next renewal.

Queue-native work
    :meth:`BackgroundTaskManager.schedule_task` enqueues a task for queue workers
    (possibly in other processes) instead of running a coroutine here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, LeaseLostError, ValidationError
from ..validation import is_int, is_number
from .runs import (
    DEFAULT_LEASE_DURATION,
    MAX_ID_LENGTH,
    Run,
    RunNotFoundError,
    RunRegistry,
    RunStatus,
    RunStore,
    check_progress,
    record_to_run,
    run_to_active_record,
    run_to_record,
    validate_run,
)

if TYPE_CHECKING:
    from ..database import QueueDatabase
    from ..worker import QueueWorker

__all__ = ["BackgroundTaskManager", "ModuleFactory"]

logger = logging.getLogger("prismq.queue.integrations")

ModuleFactory = Callable[[Run], Awaitable[Any]]
"""Builds the coroutine of a run of a module, for re-runs: ``factory(run) -> awaitable``."""

_LEASE_LOST = "lease lost"


class _StoreWriter:
    """Runs store calls on one thread, several per transaction (group commit).

    Calls are executed in submission order. Calls that queue up while a transaction is
    being written are committed together in the next one; if any of them fails, the
    batch is rolled back and each call is retried in its own transaction so only the
    failing one reports an error.
    """

    def __init__(self, store: RunStore, name: str, worker: QueueWorker | None = None) -> None:
        self._store = store
        self._worker = worker
        self._ops: list[tuple[Callable[..., Any], tuple[Any, ...], concurrent.futures.Future[Any]]] = []
        self._lock = threading.Lock()
        self._draining = False
        self._closed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the run manager was shut down")
            self._ops.append((fn, args, future))
            if not self._draining:
                self._draining = True
                self._executor.submit(self._drain)
        return future

    def _drain(self) -> None:
        while True:
            with self._lock:
                ops, self._ops = self._ops, []
                if not ops:
                    self._draining = False
                    return
            ops = [op for op in ops if op[2].set_running_or_notify_cancel()]
            if len(ops) > 1 and self._run_together(ops):
                continue
            for fn, args, future in ops:
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to the waiting coroutine
                    future.set_exception(exc)

    def _run_together(
        self, ops: list[tuple[Callable[..., Any], tuple[Any, ...], concurrent.futures.Future[Any]]]
    ) -> bool:
        before = None if self._worker is None else self._worker.held_tasks
        try:
            with self._store.batch():
                results = [fn(*args) for fn, args, _ in ops]
        except Exception:
            if self._worker is not None and before is not None:
                # Rolled back: the leases this worker holds are what they were before.
                for task_id in self._worker.held_tasks.keys() - before.keys():
                    self._worker.forget_task(task_id)
                self._worker._hold(before.values())
            return False
        for (_, _, future), result in zip(ops, results, strict=True):
            future.set_result(result)
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=True)


class _ProgressFlush:
    """One write of the latest progress of every run that reported since the last one.

    Idempotent: a retry (after a failed group commit) writes the same snapshots.
    """

    def __init__(self, manager: BackgroundTaskManager) -> None:
        self._manager = manager
        self._records: list[dict[str, Any]] | None = None

    def __call__(self) -> None:
        if self._records is None:
            self._records = self._manager._take_pending_progress()
        store = self._manager.registry.store
        with store.batch():  # the run rows and their tasks change in one commit
            store.save_active(self._records, self._manager.owner_id)
            self._manager._mirror_progress(self._records)


class BackgroundTaskManager:
    """Start coroutines as tracked runs; with ``queue=``, durable and shared.

    Args:
        registry: Where runs are recorded (a new in-memory :class:`RunRegistry` if
            ``None``). With ``queue``, an in-memory registry is switched to the database.
        queue: Record runs in this queue database: durable, visible to other processes,
            interrupted runs detected and re-run. ``None`` keeps the in-memory behaviour
            (unless the registry already uses a database).
        lease_duration: Seconds a dead manager's runs stay ``running`` before they count
            as interrupted; renewed every third of it while runs are active.
        owner_id: This manager's id (default ``<host>-<pid>-<random>``); must be unique.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     manager = BackgroundTaskManager(RunRegistry())
        ...     async def work():
        ...         manager.report_progress("r1", 50, items_processed=1, items_total=2)
        ...         return 0
        ...     manager.start_task(Run(run_id="r1", module_id="demo"), work())
        ...     await manager.wait_all()
        ...     return manager.registry.get_run("r1").status
        >>> asyncio.run(main())
        <RunStatus.COMPLETED: 'completed'>
    """

    def __init__(
        self,
        registry: RunRegistry | None = None,
        queue: QueueDatabase | None = None,
        *,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        owner_id: str | None = None,
    ) -> None:
        if registry is None:
            registry = RunRegistry()
        if queue is not None:
            registry.use_queue(queue)
        if not is_number(lease_duration) or lease_duration < 0.1:
            raise ValidationError(f"lease_duration must be at least 0.1 s, got {lease_duration!r}")
        if owner_id is None:
            owner_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        elif not isinstance(owner_id, str) or not 1 <= len(owner_id) <= 200:
            raise ValidationError(f"owner_id must be 1-200 characters, got {owner_id!r}")
        self.registry = registry
        self.queue: QueueDatabase | None = registry.queue
        self.lease_duration = float(lease_duration)
        self.heartbeat_interval = self.lease_duration / 3
        self.owner_id = owner_id
        self._store: RunStore = registry.store
        self._worker: QueueWorker | None = None
        self._writer: _StoreWriter | None = None
        if self._store.durable and self.queue is not None:
            from ..worker import QueueWorker

            # Holds the lease of every run task this manager executes: every change to
            # those tasks goes through its fenced operations.
            self._worker = QueueWorker(
                self.queue, worker_id=owner_id, lease_duration=self.lease_duration, register=False
            )
            self._writer = _StoreWriter(self._store, "prismq-runs", self._worker)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._runs: dict[str, Run] = {}
        self._reasons: dict[str, str] = {}
        self._modules: dict[str, ModuleFactory] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self._pending_lock = threading.Lock()
        self._flush_scheduled = False
        self._started = False
        self._starting: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._client: Any = None
        self._closed = False
        self._entered: set[str] = set()

    # -- store access ------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Start a store call now and return its future (on the writer thread when durable).

        Calls submitted in order are executed in order.
        """
        if self._writer is not None:
            return asyncio.wrap_future(self._writer.submit(fn, *args))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a store call and wait for it.

        The wait is shielded: a cancelled caller stops waiting, the write still happens.
        """
        if self._writer is None:
            return fn(*args)
        return await asyncio.shield(self._submit(fn, *args))

    def _lease_until(self) -> float:
        return self._store.now() + self.lease_duration

    def _stamp(self) -> datetime:
        return datetime.fromtimestamp(self._store.now(), tz=timezone.utc)

    # -- on the writer thread: runs rows in the store, tasks through the worker ---------
    def _adopt(self, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """Take the task leased with a stored run into the worker (durable stores only)."""
        if stored is not None:
            task = stored.pop("task", None)
            if task is not None and self._worker is not None:
                self._worker._hold([task])
        return stored

    def _claim(self, record: dict[str, Any]) -> dict[str, Any] | None:
        return self._adopt(self._store.claim(record, self.owner_id, self._lease_until()))

    def _take_rerunnable(self, module_ids: list[str]) -> list[dict[str, Any]]:
        records = self._store.take_rerunnable(module_ids, self.owner_id, self._lease_until())
        for record in records:
            self._adopt(record)
        return records

    def _mirror_progress(self, records: list[dict[str, Any]]) -> None:
        """Show active runs' progress on their tasks (skipped where the lease is gone)."""
        if self._worker is None:
            return
        for record in records:
            if record["task_id"] is None:
                continue
            with contextlib.suppress(LeaseLostError):
                self._worker.update_progress(
                    record["task_id"], record["progress_percent"], record["progress_message"]
                )

    def _finish_task(self, record: dict[str, Any]) -> None:
        """End a finished run's task as its record says, through the worker's lease."""
        worker, task_id, status = self._worker, record["task_id"], record["status"]
        if worker is None or task_id is None:
            return
        try:
            if status == RunStatus.COMPLETED.value:
                worker.complete_task(task_id, {"run_id": record["run_id"], "exit_code": record["exit_code"]})
            elif status == RunStatus.CANCELLED.value:
                worker.acknowledge_cancel(task_id, record["error_message"] or "cancelled")
            else:
                worker.fail_task(task_id, record["error_message"] or status, retry=False)
        except LeaseLostError as exc:
            logger.warning("run %s ended %s; its task was left as it is: %s", record["run_id"], status, exc)

    def _save_finished(self, record: dict[str, Any]) -> bool:
        """Record a finished run, then end its task; False if this manager no longer holds it."""
        with self._store.batch():  # the run row and its task change in one commit
            done = self._store.save([record], self.owner_id)[0]
            if done:
                self._finish_task(record)
        return done

    def _renew(self) -> dict[str, bool]:
        """Renew the held tasks' leases; finish those whose run a registry ended.

        Returns:
            Per active run still held, whether its cancellation was requested.
        """
        if self._worker is not None:
            self._worker.heartbeat()
            for record in self._store.ended_runs(self.owner_id):
                self._finish_task(record)
        return self._store.renew(self.owner_id, self._lease_until())

    # -- life cycle --------------------------------------------------------------
    async def start(self) -> None:
        """Recover, then keep leases alive. Idempotent; done on first use if not awaited.

        Marks ``interrupted`` the runs no live manager holds (their manager died and its
        lease expired, or their task was released, as ``migrate`` does with every lease it
        copies), re-runs the re-runnable ones of registered modules, and starts the lease
        renewal.
        """
        self._ensure_started()
        assert self._starting is not None
        await asyncio.shield(self._starting)

    def _ensure_started(self) -> None:
        starting = self._starting
        if starting is None or (starting.done() and (starting.cancelled() or starting.exception())):
            self._starting = self._spawn(self._start())  # first use, or retry after a failure

    async def _start(self) -> None:
        if self._writer is not None and self._heartbeat is None:
            # Renewal first: even if recovery fails now, leases stay alive and it is retried.
            self._heartbeat = asyncio.get_running_loop().create_task(
                self._heartbeat_loop(), name=f"prismq-runs-heartbeat:{self.owner_id}"
            )
        await self._recover()
        self._started = True

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("run manager background step failed", exc_info=task.exception())

    async def _recover(self) -> None:
        interrupted = await self._call(self._store.interrupt_orphans)
        for run_id in interrupted:
            logger.warning(
                "run %s was interrupted: no live manager held its task (its manager stopped "
                "renewing the lease, or the task was released, as migrate does)",
                run_id,
            )
        if self._modules:
            await self._rerun(list(self._modules))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._beat()
            except Exception:
                logger.exception("renewing the leases of manager %s failed; retrying", self.owner_id)

    async def _beat(self) -> None:
        # Only runs recorded before the renewal was sent can be judged by its answer.
        recorded = [
            run_id
            for run_id, run in self._runs.items()
            if run.task_id is not None and run.status.is_active and self.is_task_active(run_id)
        ]
        if recorded:
            held = await self._call(self._renew)
            for run_id in recorded:
                task = self._tasks.get(run_id)
                run = self._runs.get(run_id)
                if task is None or task.done() or run is None or run.status.is_terminal:
                    continue  # finished meanwhile
                if run_id not in held:
                    logger.warning(
                        "manager %s lost the lease of run %s (another manager marked it interrupted); "
                        "stopping it here",
                        self.owner_id,
                        run_id,
                    )
                    self._reasons[run_id] = _LEASE_LOST
                    task.cancel()
                elif held[run_id] and run_id not in self._reasons:
                    self._reasons[run_id] = RunStatus.CANCELLED.value
                    task.cancel()
        await self._recover()

    async def shutdown(self, timeout: float | None = 10.0) -> None:
        """Stop: active runs become ``interrupted`` (re-run later if re-runnable).

        Args:
            timeout: Seconds to wait for the coroutines to stop after cancellation.
        """
        self._closed = True
        for run_id in list(self._tasks):
            await self._let_start(run_id)
        for run_id, task in list(self._tasks.items()):
            if not task.done():
                self._reasons.setdefault(run_id, RunStatus.INTERRUPTED.value)
                task.cancel()
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        helpers: list[asyncio.Task[Any] | None] = [self._heartbeat, self._starting, *self._background]
        for helper in helpers:
            if helper is not None and not helper.done():
                helper.cancel()
        await self.flush()
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._writer.close)
            self._writer = None

    async def __aenter__(self) -> BackgroundTaskManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    async def flush(self) -> None:
        """Wait until every status and progress change made so far is committed."""
        if self._writer is not None:
            await self._call(lambda: None)

    # -- starting runs ------------------------------------------------------------
    def start_task(self, run: Run, coroutine: Awaitable[Any]) -> str:
        """Run ``coroutine`` in the background as ``run``; return the run id at once.

        Schedules the coroutine on the running event loop (an ``asyncio`` task). The run
        goes ``queued`` -> ``running`` -> ``completed`` / ``failed`` / ``cancelled``;
        each change sets its time and is recorded. A coroutine that returns an ``int``
        sets ``exit_code``; a non-zero one makes the run ``failed``. The run may already
        be in the registry (``registry.add_run(run)`` first, as before) or not.

        Recording the run is submitted at once, without waiting for it; ``await
        manager.flush()`` when it must be visible in the registry before you go on (for
        example before replying to the request that started it).

        Raises:
            RuntimeError: No event loop is running in this thread, or the manager was
                shut down.
            ValidationError: The run is already active here, or is finished.
            PayloadError: Its parameters are not JSON.
        """
        try:
            asyncio.get_running_loop()
            if self._closed:
                raise RuntimeError("this BackgroundTaskManager was shut down; create a new one")
            validate_run(run)
            if run.run_id in self._tasks:
                raise ValidationError(f"run {run.run_id!r} is already active in this manager")
            if run.status.is_terminal:
                raise ValidationError(
                    f"run {run.run_id!r} is already {run.status.value}; start a new Run to run it again"
                )
        except BaseException:
            _close(coroutine)
            raise
        run.status = RunStatus.QUEUED
        self._launch(run, coroutine, claimed=False)
        return run.run_id

    def _launch(self, run: Run, coroutine: Awaitable[Any], *, claimed: bool) -> None:
        self._runs[run.run_id] = run
        claim = None
        if not claimed:
            # Submitted now, so a flush() right after start_task covers the new run.
            claim = self._submit(self._claim, run_to_record(run))
        task = asyncio.get_running_loop().create_task(
            self._execute(run, coroutine, claim), name=f"prismq-run:{run.run_id}"
        )
        self._tasks[run.run_id] = task
        task.add_done_callback(lambda _t: self._forget(run.run_id, coroutine, claim))
        self._ensure_started()

    def _forget(self, run_id: str, coroutine: Awaitable[Any], claim: asyncio.Future[Any] | None) -> None:
        self._tasks.pop(run_id, None)
        self._runs.pop(run_id, None)
        self._reasons.pop(run_id, None)
        if run_id in self._entered:
            self._entered.discard(run_id)
            return
        # Cancelled from outside before its first step: nothing of _execute ran.
        _close(coroutine)
        if claim is not None and claim.done() and not claim.cancelled():
            claim.exception()  # retrieved: the lease simply expires into "interrupted"

    async def _let_start(self, run_id: str) -> None:
        """Give a just-launched run its first step, so cancelling it runs its handlers."""
        for _ in range(3):
            if run_id in self._entered or not self.is_task_active(run_id):
                return
            await asyncio.sleep(0)

    async def _execute(self, run: Run, coroutine: Awaitable[Any], claim: asyncio.Future[Any] | None) -> None:
        self._entered.add(run.run_id)
        started = False
        try:
            if claim is not None:
                stored = await asyncio.shield(claim)
                if stored is None:
                    _close(coroutine)
                    logger.error(
                        "run %s was not started: it exists and is finished or held by another manager",
                        run.run_id,
                    )
                    return
                run.task_id = stored["task_id"]
            run.status = RunStatus.RUNNING
            run.started_at = self._stamp()
            run.completed_at = None
            run.attempts += 1
            self._save(run)
            started = True
            result = await coroutine
        except asyncio.CancelledError:
            if not started:
                _close(coroutine)
            reason = self._reasons.get(run.run_id)
            if reason == _LEASE_LOST:
                run.status = RunStatus.INTERRUPTED
                run.completed_at = self._stamp()
                return
            if reason == RunStatus.CANCELLED.value:
                await self._finish(run, RunStatus.CANCELLED, "cancelled on request")
                return
            await self._finish(
                run,
                RunStatus.INTERRUPTED,
                "interrupted: the manager shut down before the run finished",
            )
            if reason is None:
                raise  # cancelled from outside (event loop shutting down): honour it
        except Exception as exc:
            if not started:
                _close(coroutine)
            logger.exception("run %s failed", run.run_id)
            await self._finish(run, RunStatus.FAILED, str(exc) or type(exc).__name__)
        else:
            if is_int(result):
                run.exit_code = result
                if result != 0:
                    await self._finish(run, RunStatus.FAILED, f"exited with code {result}")
                    return
            run.progress_percent = 100.0
            await self._finish(run, RunStatus.COMPLETED, None)

    async def _finish(self, run: Run, status: RunStatus, error: str | None) -> None:
        run.status = status
        run.completed_at = self._stamp()
        run.updated_at = run.completed_at
        if error is not None:
            run.error_message = error
        with self._pending_lock:
            self._pending.pop(run.run_id, None)
        try:
            done = await self._call(self._save_finished, run_to_record(run))
        except Exception:
            logger.exception("could not record run %s as %s", run.run_id, status.value)
            return
        if not done:
            logger.warning(
                "run %s ended %s here but was not recorded: this manager no longer holds it "
                "(another manager took it over, or it was never recorded)",
                run.run_id,
                status.value,
            )

    def _save(self, run: Run) -> None:
        """Record an active run's state without waiting (ordered before later writes)."""
        run.updated_at = self._stamp()
        record = run_to_active_record(run)
        if self._writer is None:
            self._store.save_active([record], self.owner_id)
            return
        with self._pending_lock:
            self._pending[run.run_id] = record
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self._writer.submit(_ProgressFlush(self))

    def _take_pending_progress(self) -> list[dict[str, Any]]:
        with self._pending_lock:
            records = list(self._pending.values())
            self._pending.clear()
            self._flush_scheduled = False
        return records

    # -- while running -----------------------------------------------------------
    def report_progress(
        self,
        run_id: str,
        percent: float,
        items_processed: int | None = None,
        items_total: int | None = None,
        message: str | None = None,
    ) -> None:
        """Record how far an active run has got. Never blocks; call it from the run.

        Reports are coalesced: with a queue database only the latest report of each run
        is written, at the next commit of the writer thread.

        Args:
            run_id: The run.
            percent: 0 to 100.
            items_processed: Items done so far (kept if ``None``).
            items_total: Items expected in all (kept if ``None``).
            message: A short note (at most 1000 characters; kept if ``None``).

        Raises:
            RunNotFoundError: The run is not active in this manager.
            ValidationError: A value is out of range.
        """
        check_progress(percent, items_processed, items_total, message)
        run = self._runs.get(run_id)
        if run is None or run.status is not RunStatus.RUNNING:
            raise RunNotFoundError(f"run {run_id!r} is not running in this manager")
        run.progress_percent = float(percent)
        if items_processed is not None:
            run.items_processed = items_processed
        if items_total is not None:
            run.items_total = items_total
        if message is not None:
            run.progress_message = message
        self._save(run)

    # -- cancelling and waiting ---------------------------------------------------
    async def cancel_task(self, run_id: str, timeout: float | None = None) -> bool:
        """Cancel a run: its coroutine gets ``CancelledError`` and the run becomes cancelled.

        A run executing in another manager (with a queue database) is flagged; that
        manager cancels it at its next lease renewal.

        Args:
            run_id: The run.
            timeout: Seconds to wait for a local coroutine to stop (``None``: until it does).

        Returns:
            True if the run was active and its cancellation was done or requested; False
            if no such run is active.
        """
        task = self._tasks.get(run_id)
        if task is not None and not task.done():
            await self._let_start(run_id)
            self._reasons[run_id] = RunStatus.CANCELLED.value
            task.cancel()
            await asyncio.wait([task], timeout=timeout)
            return True
        if self._writer is not None:
            return bool(await self._call(self._store.request_cancel, run_id))
        return False

    async def wait_all(self, timeout: float | None = None) -> bool:
        """Wait for every active run to end, then for their records to be committed.

        Args:
            timeout: Seconds to wait at most (``None``: no limit). Runs still going on
                afterwards keep running.

        Returns:
            True if every run ended, False if the timeout passed first.
        """
        pending: set[asyncio.Task[None]] = set()
        tasks = [t for t in self._tasks.values() if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
        await self.flush()
        return not pending

    def get_active_task_count(self) -> int:
        """How many runs are active (queued or running) in this manager."""
        return sum(1 for t in self._tasks.values() if not t.done())

    def get_active_task_ids(self) -> list[str]:
        """The ids of the runs active in this manager."""
        return [run_id for run_id, t in self._tasks.items() if not t.done()]

    def is_task_active(self, run_id: str) -> bool:
        """True while the run is queued or running in this manager."""
        task = self._tasks.get(run_id)
        return task is not None and not task.done()

    def get_active_run(self, run_id: str) -> Run | None:
        """The live ``Run`` object of a run active in this manager, or ``None``."""
        return self._runs.get(run_id) if self.is_task_active(run_id) else None

    # -- re-runs -----------------------------------------------------------------
    def register_module(self, module_id: str, factory: ModuleFactory) -> None:
        """Declare how to run ``module_id`` again after an interruption.

        Interrupted runs of the module marked ``rerunnable`` are started again with
        ``factory(run)`` (their ``run_id`` stays): now, if an event loop is running, else
        when :meth:`start` is awaited; and whenever a later interruption is detected.

        Raises:
            ValidationError: A malformed module id or a factory that is not callable.
        """
        if not isinstance(module_id, str) or not 1 <= len(module_id) <= MAX_ID_LENGTH:
            raise ValidationError(f"module_id must be 1-{MAX_ID_LENGTH} characters, got {module_id!r}")
        if not callable(factory):
            raise ValidationError(f"factory must be callable, got {type(factory).__name__}")
        self._modules[module_id] = factory
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._closed:
            return
        if self._started:
            self._spawn(self._rerun([module_id]))
        else:
            self._ensure_started()

    async def _rerun(self, module_ids: list[str]) -> list[str]:
        records = await self._call(self._take_rerunnable, module_ids)
        started = []
        for record in records:
            run = record_to_run(record)
            factory = self._modules[run.module_id]
            try:
                coroutine = factory(run)
            except Exception as exc:
                logger.exception("the factory of module %s failed for run %s", run.module_id, run.run_id)
                run.status = RunStatus.FAILED
                run.completed_at = self._stamp()
                run.error_message = f"re-run could not start: {exc}"
                await self._call(self._save_finished, run_to_record(run))
                continue
            logger.info("re-running interrupted run %s of module %s", run.run_id, run.module_id)
            self._launch(run, coroutine, claimed=True)
            started.append(run.run_id)
        return started

    # -- queue-native work -------------------------------------------------------
    async def schedule_task(self, task_type: str, payload: Any = None, **enqueue_options: Any) -> int:
        """Hand work to queue workers (any process) instead of running it here.

        The enqueue runs on the manager's writer thread, so the loop never waits on it.

        Args:
            task_type: The task type the workers' handler is registered for.
            payload: JSON arguments for the handler.
            **enqueue_options: ``priority``, ``delay``, ``run_after``, ``max_attempts``,
                ``retry_policy``, ``idempotency_key``: as :meth:`QueueClient.enqueue`.

        Returns:
            The task id.

        Raises:
            ConfigError: The manager has no queue database.
        """
        if self.queue is None or self._writer is None:
            raise ConfigError(
                "schedule_task needs a queue database: "
                "BackgroundTaskManager(registry, queue=QueueDatabase(...))"
            )
        if self._client is None:
            from ..client import QueueClient

            self._client = QueueClient(self.queue)
        client = self._client
        return int(await self._call(lambda: client.enqueue(task_type, payload, **enqueue_options)))

    def __repr__(self) -> str:
        return (
            f"BackgroundTaskManager({self.owner_id!r}, registry={self.registry!r}, "
            f"active={self.get_active_task_count()})"
        )


def _close(coroutine: Awaitable[Any]) -> None:
    """Close a coroutine that will never run (avoids the 'never awaited' warning)."""
    close = getattr(coroutine, "close", None)
    if callable(close):
        close()
