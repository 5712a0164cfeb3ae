"""Cheap idle waiting: wake a worker soon after another process enqueues.

An idle worker must neither hammer the database nor sleep through new work. Three
waiters, chosen by :func:`make_waiter`:

- :class:`BackendWaiter`: the backend pushes changes (PostgreSQL ``LISTEN/NOTIFY``).
- :class:`InotifyWaiter` (Linux): the kernel reports writes to the database folder (the
  ``-wal`` file grows on every commit); the waiter confirms with ``PRAGMA data_version``.
  Idles near 0% CPU and wakes within about a millisecond.
- :class:`PollingWaiter` (everywhere): looks every 8 ms for 1 s after the worker found
  work, and every 30 ms otherwise. A look is one ``stat`` of the ``-wal`` file;
  ``PRAGMA data_version`` (no lock taken; it changes whenever another connection commits)
  is read only when the file changed, and at least every 0.25 s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

__all__ = ["BackendWaiter", "ChangeWaiter", "InotifyWaiter", "PollingWaiter", "make_waiter"]


class ChangeWaiter(Protocol):
    """Blocks until the queue may have changed, or a timeout passes."""

    def wait(self, timeout: float) -> bool:
        """Return True as soon as a change may have happened, False after ``timeout``."""
        ...

    def note_work(self) -> None:
        """The caller just found work: more may follow soon (a hint for polling waiters)."""
        ...

    def interrupt(self) -> None:
        """Make a wait in progress (on another thread) return soon."""
        ...

    def close(self) -> None:
        """Release what the waiter holds."""
        ...


class PollingWaiter:
    """Poll for commits of other connections: often right after work, slowly otherwise.

    Every change since the previous :meth:`wait` returned is reported, so a commit that
    lands between a worker's empty claim and its next wait is never missed. A look is
    cheap: on a database file, one ``stat`` of the ``-wal`` file (of the main file when
    there is none), which every commit writes; ``PRAGMA data_version`` is read only when
    the file's modification time or size moved, and at least every ``recheck_every``
    seconds in case the filesystem reports modification times coarsely or late. Without
    a file (or when it cannot be read) ``data_version`` is read at every look.

    Looks come every ``interval`` seconds for ``busy_for`` seconds after
    :meth:`note_work` (the runner calls it when it ran tasks, since more often follow),
    and every ``idle_interval`` seconds otherwise. Mere changes do not speed it up: the
    registry heartbeats of idle workers commit every few seconds. A task enqueued for an
    idle worker waits at most about ``idle_interval`` before it is seen; each look wakes
    a thread, which is what an idle worker spends its CPU on.

    Args:
        backend: A backend with ``data_version()`` (and ``path`` for a database file).
        interval: Seconds between looks shortly after work.
        idle_interval: Seconds between looks otherwise.
        busy_for: Seconds after :meth:`note_work` at the ``interval`` pace.
        recheck_every: Longest time, in seconds, between two reads of ``data_version``.
        clock: Monotonic seconds (a stand-in in tests).
    """

    def __init__(
        self,
        backend: Any,
        interval: float = 0.008,
        idle_interval: float = 0.030,
        busy_for: float = 1.0,
        recheck_every: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.interval = interval
        self.idle_interval = max(idle_interval, interval)
        self.busy_for = busy_for
        self.recheck_every = recheck_every
        self._clock = clock
        self._last: int | None = None
        self._last_work = float("-inf")
        self._last_read = float("-inf")
        path = backend.path
        self._wal = None if path is None else f"{path}-wal"
        self._main = "" if path is None else str(path)
        # The watched file's stat when data_version was last read (-1: none).
        self._mtime_ns = -1
        self._size = -1
        # Held until a stop is asked: interrupt() releases it, which ends a pause at once.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._guard = threading.Lock()
        self._interrupted = False

    @property
    def pace(self) -> float:
        """Seconds between looks now: ``interval`` shortly after work, else ``idle_interval``."""
        return self._pace_at(self._clock())

    def _pace_at(self, now: float) -> float:
        return self.interval if now - self._last_work < self.busy_for else self.idle_interval

    def note_work(self) -> None:
        """Look every ``interval`` seconds for the next ``busy_for`` seconds.

        Safe to call from another thread than the one waiting.
        """
        self._last_work = self._clock()

    def changed(self) -> bool:
        """True when ``data_version`` moved since the last check (and remember it)."""
        return self._look(self._clock())

    def _look(self, now: float) -> bool:
        """One look at ``now`` (a reading of the clock); see :meth:`changed`."""
        mtime_ns = size = -1
        if self._wal is not None:
            try:
                info = os.stat(self._wal)
            except OSError:  # not in WAL mode, or before the first connection opened
                try:
                    info = os.stat(self._main)
                except OSError:
                    info = None
            if info is not None:
                mtime_ns = info.st_mtime_ns
                size = info.st_size
                if (
                    mtime_ns == self._mtime_ns
                    and size == self._size
                    and now - self._last_read < self.recheck_every
                    and self._last is not None
                ):
                    return False
        version = self.backend.data_version()
        # Keep the stat taken before the read: a commit after the read moves the file again.
        self._mtime_ns = mtime_ns
        self._size = size
        self._last_read = now
        if version != self._last:
            self._last = version
            return True
        return False

    def wait(self, timeout: float) -> bool:
        """Block until a change may have happened (True) or ``timeout`` passed (False).

        Once :meth:`interrupt` was called, returns after one look.
        """
        clock = self._clock
        now = clock()
        deadline = now + timeout
        while True:
            if self._look(now):
                return True
            remaining = deadline - now
            if remaining <= 0 or self._interrupted:
                return False
            pause = self._pace_at(now)
            if self._wake.acquire(True, pause if pause < remaining else remaining):
                return False  # interrupted; the flag ends later waits after one look
            now = clock()

    def interrupt(self) -> None:
        """Make a wait in progress (on another thread) return at once, and later ones too."""
        with self._guard:
            if not self._interrupted:
                self._interrupted = True
                self._wake.release()

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

    def note_work(self) -> None:
        """Events wake this waiter at once; nothing to speed up."""

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

    def note_work(self) -> None:
        """The backend pushes changes; nothing to speed up."""

    def interrupt(self) -> None:
        """A wait returns within its timeout slice; nothing to do."""

    def close(self) -> None:
        """Release the waiter's resources."""
        self.backend.stop_listening()


def make_waiter(backend: Any, mode: str = "auto") -> ChangeWaiter:
    """Pick the cheapest waiter this backend and platform support.

    Args:
        backend: The queue backend.
        mode: ``"auto"``, ``"notify"`` (backend push), ``"inotify"`` or ``"poll"``.
    """
    if mode in ("auto", "notify") and backend.notifies_changes:
        return BackendWaiter(backend)
    path = backend.path
    if mode in ("auto", "inotify") and path is not None and sys.platform.startswith("linux"):
        try:
            return InotifyWaiter(backend, path)
        except OSError:
            if mode == "inotify":
                raise
    return PollingWaiter(backend)
