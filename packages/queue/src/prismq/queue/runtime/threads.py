"""A small pool of daemon threads for the runtime's database and wait calls."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["DaemonThreadPool"]

_STOP = object()


class DaemonThreadPool:
    """Run callables on ``size`` daemon threads.

    Unlike ``ThreadPoolExecutor``, its threads are daemon threads, which never keep the
    process alive at exit, so a call stuck in a database driver cannot hang a stop.
    (Sync handlers run on :class:`~prismq.queue.runtime.slots.SyncSlots`.)
    """

    def __init__(self, size: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._name = name
        self._count = 0
        self._lock = threading.Lock()
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
        while True:
            item = self._queue.get()
            if item is _STOP:
                with self._lock:
                    self._live -= 1
                return
            future, func, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func(*args))
            except BaseException as exc:  # handed to the waiting coroutine
                future.set_exception(exc)

    def submit(self, func: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``func(*args)``; returns its future."""
        future: Future[Any] = Future()
        self._queue.put((future, func, args))
        return future

    def shutdown(self) -> None:
        """Ask every idle thread to exit once the queued calls are done (does not wait)."""
        with self._lock:
            live = self._live
        for _ in range(live):
            self._queue.put(_STOP)
