"""Cheap idle waiting: wake a worker soon after another process enqueues.

An idle worker must neither hammer the database nor sleep through new work. Three
waiters, chosen by :func:`make_waiter`:

- :class:`BackendWaiter`: the backend pushes changes (PostgreSQL ``LISTEN/NOTIFY``).
- :class:`InotifyWaiter` (Linux): the kernel reports writes to the database folder (the
  ``-wal`` file grows on every commit); the waiter confirms with ``PRAGMA data_version``.
  Idles near 0% CPU and wakes within about a millisecond.
- :class:`PollingWaiter` (everywhere): reads ``PRAGMA data_version`` every 8 ms after
  activity and every 16 ms once the queue has been quiet for 5 s. It takes no lock;
  ``data_version`` changes whenever another connection commits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = ["BackendWaiter", "ChangeWaiter", "InotifyWaiter", "PollingWaiter", "make_waiter"]


class ChangeWaiter(Protocol):
    """Blocks until the queue may have changed, or a timeout passes."""

    def wait(self, timeout: float) -> bool:
        """Return True as soon as a change may have happened, False after ``timeout``."""
        ...

    def interrupt(self) -> None:
        """Make a wait in progress (on another thread) return soon."""
        ...

    def close(self) -> None:
        """Release what the waiter holds."""
        ...


class PollingWaiter:
    """Poll ``data_version`` (no lock taken), every ``interval`` seconds while busy.

    Every change since the previous :meth:`wait` returned is reported, so a commit that
    lands between a worker's empty claim and its next wait is never missed. After
    ``settle_after`` seconds without a change the pace drops to ``idle_interval``: a long
    idle worker then costs half as much, and the first task after a lull waits at most
    ``idle_interval`` (about 8 ms on average) before it is seen.

    Args:
        backend: A backend with ``data_version()``.
        interval: Seconds between reads shortly after activity.
        idle_interval: Seconds between reads after ``settle_after`` quiet seconds.
        settle_after: Quiet seconds before switching to ``idle_interval``.
    """

    def __init__(
        self, backend: Any, interval: float = 0.008, idle_interval: float = 0.016, settle_after: float = 5.0
    ) -> None:
        self.backend = backend
        self.interval = interval
        self.idle_interval = max(idle_interval, interval)
        self.settle_after = settle_after
        self._last: int | None = None
        self._last_change = time.monotonic()
        self._interrupted = threading.Event()
        path = getattr(backend, "path", None)
        self._watched = [f"{path}-wal", str(path)] if path is not None else []
        self._signature: tuple[Any, ...] | None = None
        self._last_read = 0.0

    def _file_signature(self) -> tuple[Any, ...] | None:
        for name in self._watched:
            try:
                info = os.stat(name)
            except OSError:
                continue
            return (name, info.st_mtime_ns, info.st_size)
        return None

    def changed(self) -> bool:
        """True when ``data_version`` moved since the last check (and remember it).

        On a database file, a ``stat`` of the ``-wal`` file (every commit writes it) is
        the cheap first look; ``data_version`` is read when the file changed, and at
        least every 0.25 s in case the filesystem is slow to report modification times.
        """
        if self._watched:
            signature = self._file_signature()
            now = time.monotonic()
            if signature == self._signature and self._last is not None and now - self._last_read < 0.25:
                return False
            self._signature = signature
            self._last_read = now
        version = self.backend.data_version()
        if version != self._last:
            self._last = version
            self._last_change = time.monotonic()
            return True
        return False

    def wait(self, timeout: float) -> bool:
        """Block until a change may have happened (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.changed():
                return True
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return False
            pace = self.interval if now - self._last_change < self.settle_after else self.idle_interval
            if self._interrupted.wait(min(pace, remaining)):
                return False

    def interrupt(self) -> None:
        """Make a wait in progress return at its next pause."""
        self._interrupted.set()

    def close(self) -> None:
        """Release the waiter's resources."""
        self._last = None


_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000


class InotifyWaiter:
    """Linux: sleep in ``select`` on an inotify watch of the database's folder.

    Any write in the folder wakes the waiter, which then confirms a real commit by
    ``data_version``; a slow poll (``fallback_interval``) covers filesystems that do not
    report events (network shares).

    Raises:
        OSError: inotify is unavailable (not Linux, or the watch limit is reached).
    """

    def __init__(self, backend: Any, database_path: Path, fallback_interval: float = 0.25) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError("inotify is only available on Linux")
        libc_name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(libc_name, use_errno=True)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        folder = os.fsencode(str(Path(database_path).resolve().parent))
        mask = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
        if libc.inotify_add_watch(fd, folder, mask) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, "inotify_add_watch failed")
        self._fd = fd
        self._wake_read, self._wake_write = os.pipe()
        self._interrupted = False
        self._poller = PollingWaiter(backend)
        self.fallback_interval = fallback_interval

    def _drain(self) -> None:
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> bool:
        """Block until a change may have happened (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._poller.changed():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._interrupted:
                return False
            pause = min(remaining, self.fallback_interval)
            readable, _, _ = select.select([self._fd, self._wake_read], [], [], pause)
            if self._wake_read in readable:
                return False
            if readable:
                self._drain()

    def interrupt(self) -> None:
        """Wake a wait in progress at once (through a pipe it also selects on)."""
        if not self._interrupted:
            self._interrupted = True
            os.write(self._wake_write, b"x")

    def close(self) -> None:
        """Release the waiter's resources (call it when no wait is in progress)."""
        if self._fd >= 0:
            for fd in (self._fd, self._wake_read, self._wake_write):
                os.close(fd)
            self._fd = -1


class BackendWaiter:
    """Use the backend's own change notification (``wait_for_change(timeout)``)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def wait(self, timeout: float) -> bool:
        """Block until a change may have happened (True) or ``timeout`` passed (False)."""
        return bool(self.backend.wait_for_change(timeout))

    def interrupt(self) -> None:
        """A wait returns within its timeout slice; nothing to do."""

    def close(self) -> None:
        """Release the waiter's resources."""
        closer = getattr(self.backend, "stop_listening", None)
        if callable(closer):
            closer()


def make_waiter(backend: Any, mode: str = "auto") -> ChangeWaiter:
    """Pick the cheapest waiter this backend and platform support.

    Args:
        backend: The queue backend.
        mode: ``"auto"``, ``"notify"`` (backend push), ``"inotify"`` or ``"poll"``.
    """
    if mode in ("auto", "notify") and callable(getattr(backend, "wait_for_change", None)):
        return BackendWaiter(backend)
    path = getattr(backend, "path", None)
    if mode in ("auto", "inotify") and path is not None and sys.platform.startswith("linux"):
        try:
            return InotifyWaiter(backend, path)
        except OSError:
            if mode == "inotify":
                raise
    return PollingWaiter(backend)
