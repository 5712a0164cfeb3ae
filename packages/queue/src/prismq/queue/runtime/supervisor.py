"""``Supervisor``: run several worker processes, restart the ones that die.

Children are started with the ``spawn`` method on every platform, so the supervisor works
the same on Windows, macOS and Linux and no child inherits a half-copied database
connection. A child receives only :class:`~prismq.queue.runtime.settings.WorkerSettings`
(plain data) and imports its handlers itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import wait as wait_for_sentinels
from typing import Any

from ..config import default_worker_id
from .logs import configure_logging
from .settings import WorkerSettings

__all__ = ["ChildExit", "SharedStopFlag", "Supervisor"]

logger = logging.getLogger("prismq.queue.supervisor")


@dataclass(frozen=True)
class ChildExit:
    """A report that a worker process ended.

    Attributes:
        worker_id: The child's worker id.
        pid: Its process id.
        exitcode: Its exit code (negative: killed by that signal number on POSIX).
        restarted: True when the supervisor starts a replacement.
    """

    worker_id: str
    pid: int | None
    exitcode: int | None
    restarted: bool


class SharedStopFlag:
    """A stop flag shared with spawned children through one byte of shared memory.

    It takes no lock, so a child killed at any moment cannot leave it blocked (a
    ``multiprocessing.Event`` can: a child killed inside ``wait()`` or ``is_set()`` may
    hold its internal lock or count as a sleeper for ever, and the next ``set()`` hangs).
    ``wait()`` polls every 50 ms.
    """

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.RawValue("b", 0)

    def set(self) -> None:
        """Ask every holder to stop."""
        self._value.value = 1

    def is_set(self) -> bool:
        """True once :meth:`set` was called."""
        return bool(self._value.value)

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or until ``timeout`` seconds passed; return :meth:`is_set`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05 if deadline is None else max(min(0.05, deadline - time.monotonic()), 0))
        return True


def _child_main(settings: WorkerSettings, worker_id: str, stop_flag: Any, log_level: int) -> None:
    """Entry point of a worker process (must stay importable for ``spawn``)."""
    configure_logging(log_level)
    db = settings.open_database()
    try:
        registry = settings.build_registry()
        worker = settings.make_worker(db, worker_id)
        summary = worker.run(
            registry, stop_flag=stop_flag, install_signal_handlers=True, **settings.runner_options()
        )
        logger.info("worker %s finished: %s", worker_id, summary)
    finally:
        db.close()


class Supervisor:
    """Start ``processes`` worker processes and keep them running.

    A child that exits with a non-zero code (a crash, or a kill) is reported through
    ``on_exit`` and the log, and restarted after ``restart_delay`` seconds (doubling, up to
    30 s, while children keep dying within 10 s of starting). A child that exits with 0
    (burst mode drained the queue, or ``max_tasks`` reached) is not restarted.

    The first SIGINT/SIGTERM (Ctrl+C or CTRL_BREAK on Windows) asks every child to finish
    its running tasks and exit; a second one kills them at once (their leases expire and
    the tasks run elsewhere).

    Args:
        settings: The workers' settings (``settings.processes`` is the default count).
        processes: How many worker processes (default: ``settings.processes``).
        restart_delay: First delay before restarting a crashed child.
        on_exit: Called with a :class:`ChildExit` whenever a child ends.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        processes: int | None = None,
        *,
        restart_delay: float = 1.0,
        on_exit: Callable[[ChildExit], None] | None = None,
    ) -> None:
        self.settings = settings
        self.processes = processes or settings.processes
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        self.restart_delay = restart_delay
        self.on_exit = on_exit
        self.restarts = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = SharedStopFlag(self._ctx)
        self._signals = 0
        self._children: dict[int, tuple[Any, str, float]] = {}
        self._prefix = settings.worker_id or default_worker_id()
        self._generation = 0

    @property
    def stop_event(self) -> Any:
        """Set it to stop the children gracefully (what the first signal does)."""
        return self._stop

    def child_pids(self) -> list[int]:
        """Process ids of the running children."""
        return [proc.pid for proc, _, _ in self._children.values() if proc.pid is not None]

    def _spawn(self, slot: int) -> None:
        self._generation += 1
        worker_id = f"{self._prefix}-{slot + 1}"
        if self._generation > self.processes:
            worker_id = f"{worker_id}.{self._generation}"
        proc = self._ctx.Process(
            target=_child_main,
            args=(
                replace(self.settings, processes=1),
                worker_id,
                self._stop,
                logging.getLogger().level,
            ),
            name=worker_id,
            daemon=False,
        )
        proc.start()
        self._children[slot] = (proc, worker_id, time.monotonic())
        logger.info("started worker %s (pid %s)", worker_id, proc.pid)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info("signal %s: asking workers to finish and exit", signum)
            self._stop.set()
        else:
            logger.warning("second signal %s: killing workers now", signum)
            for proc, _, _ in self._children.values():
                if proc.is_alive():
                    proc.kill()

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        wanted = [signal.SIGINT, signal.SIGTERM]
        if sys.platform == "win32" and hasattr(signal, "SIGBREAK"):
            wanted.append(signal.SIGBREAK)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in wanted}

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    def run(self, install_signal_handlers: bool = True) -> int:
        """Run until every child has exited after a stop (or finished its burst).

        Returns:
            0 after a clean stop, 1 if a child was still failing when stopped.
        """
        restore = self._install_signals() if install_signal_handlers else (lambda: None)
        delay = self.restart_delay
        last_failed = False
        try:
            for slot in range(self.processes):
                self._spawn(slot)
            while self._children:
                sentinels = {proc.sentinel: slot for slot, (proc, _, _) in self._children.items()}
                ready = wait_for_sentinels(list(sentinels), timeout=0.5)
                for sentinel in ready:
                    slot = sentinels[sentinel]
                    proc, worker_id, started = self._children.pop(slot)
                    proc.join()
                    crashed = proc.exitcode != 0
                    restart = crashed and not self._stop.is_set()
                    last_failed = crashed and not self._stop.is_set()
                    report = ChildExit(worker_id, proc.pid, proc.exitcode, restart)
                    if crashed:
                        logger.error(
                            "worker %s (pid %s) exited with code %s%s",
                            worker_id,
                            proc.pid,
                            proc.exitcode,
                            "; restarting" if restart else "",
                        )
                    if self.on_exit is not None:
                        self.on_exit(report)
                    if restart:
                        delay = delay * 2 if time.monotonic() - started < 10 else self.restart_delay
                        delay = min(delay, 30.0)
                        if self._stop.wait(
                            min(delay, 30.0) if delay > self.restart_delay else self.restart_delay
                        ):
                            continue
                        self.restarts += 1
                        self._spawn(slot)
        finally:
            restore()
        return 1 if last_failed else 0
