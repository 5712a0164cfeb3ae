"""A small pool of daemon threads for the runtime's database and wait calls."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["DaemonThreadPool", "DaemonThreads"]

_STOP = object()


class DaemonThreads:
    """``size`` daemon threads serving one inbox; subclasses say what serving means.

    Daemon threads never keep the process alive at exit, so a call stuck in a database
    driver or a hung handler cannot hang a stop. A thread leaves when it takes the stop
    marker from the inbox (:meth:`shutdown` puts one per live thread).

    Args:
        size: Threads started at once.
        name: Thread name prefix (``name-1``, ``name-2``, ...).
    """

    def __init__(self, size: int, name: str) -> None:
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._name = name
        self._lock = threading.Lock()
        self._count = 0
        self._live = 0
        for _ in range(size):
            self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            self._count += 1
            self._live += 1
            number = self._count
        threading.Thread(target=self._serve, name=f"{self._name}-{number}", daemon=True).start()

    def _serve(self) -> None:
        """Take items from the inbox and handle them until a stop marker comes."""
        while True:
            item = self._inbox.get()
            if item is _STOP or not self._handle(item):
                with self._lock:
                    self._live -= 1
                return

    def _handle(self, item: Any) -> bool:
        """Handle one inbox item; False makes this thread leave."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Ask every thread to exit once it is idle and the queued items are done (does not wait)."""
        with self._lock:
            live = self._live
        for _ in range(live):
            self._inbox.put(_STOP)


class DaemonThreadPool(DaemonThreads):
    """Run callables on ``size`` daemon threads.

    Unlike ``ThreadPoolExecutor``, its threads are daemon threads, which never keep the
    process alive at exit, so a call stuck in a database driver cannot hang a stop.
    (Sync handlers run on :class:`~prismq.queue.runtime.slots.SyncSlots`.)
    """

    def _handle(self, item: Any) -> bool:
        future, func, args = item
        if not future.set_running_or_notify_cancel():
            return True
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # handed to the waiting coroutine
            future.set_exception(exc)
        return True

    def submit(self, func: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``func(*args)``; returns its future."""
        future: Future[Any] = Future()
        self._inbox.put((future, func, args))
        return future
