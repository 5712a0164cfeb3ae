"""Idle workers wake up soon after another process enqueues."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes import FakeClock
from runtime_helpers import PYTHON, ThreadedWorker, child_env, wait_until

from prismq.queue import QueueClient, QueueDatabase
from prismq.queue.models import TaskStatus
from prismq.queue.runtime import HandlerRegistry, TaskContext
from prismq.queue.runtime.wakeup import InotifyWaiter, PollingWaiter, make_waiter
from prismq.queue.worker import QueueWorker

LINUX = sys.platform.startswith("linux")

ENQUEUE = (
    "import sys\n"
    "from prismq.queue import QueueClient, QueueDatabase\n"
    "db = QueueDatabase(sys.argv[1])\n"
    "print(QueueClient(db).enqueue('ping', {'from': 'child'}))\n"
    "db.close()\n"
)


@pytest.mark.parametrize(
    "wake_mode",
    [
        "poll",
        pytest.param("inotify", marks=pytest.mark.skipif(not LINUX, reason="inotify is Linux only")),
    ],
)
def test_idle_worker_picks_up_a_task_enqueued_by_another_process(
    file_db: QueueDatabase, db_path: Path, threaded: Callable[..., ThreadedWorker], wake_mode: str
) -> None:
    client = QueueClient(file_db)
    handled = threading.Event()
    registry = HandlerRegistry()

    @registry.handler("ping")
    def ping(ctx: TaskContext) -> str:
        handled.set()
        return ctx.payload["from"]

    # idle_timeout 10 s: only the wake-up can explain a pick-up within 2 s.
    runner = threaded(QueueWorker(file_db, "idle"), registry, idle_timeout=10.0, wake_mode=wake_mode)
    time.sleep(0.5)  # let the worker go idle in its wait
    child = subprocess.run(
        [PYTHON, "-c", ENQUEUE, str(db_path)], capture_output=True, text=True, timeout=30, env=child_env()
    )
    assert child.returncode == 0, child.stderr
    task_id = int(child.stdout)
    assert handled.wait(10)
    task = client.wait(task_id, timeout=10)
    runner.join()
    assert task.status is TaskStatus.COMPLETED
    assert task.result == "child"
    assert (task.started_at - task.created_at).total_seconds() < 2.0


def test_make_waiter_picks_by_mode(file_db: QueueDatabase) -> None:
    poller = make_waiter(file_db.backend, "poll")
    assert isinstance(poller, PollingWaiter)
    poller.close()
    chosen = make_waiter(file_db.backend, "auto")
    try:
        assert isinstance(chosen, InotifyWaiter if LINUX else PollingWaiter)
    finally:
        chosen.close()


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(lambda db: PollingWaiter(db.backend), id="poll"),
        pytest.param(
            lambda db: InotifyWaiter(db.backend, db.path),
            id="inotify",
            marks=pytest.mark.skipif(not LINUX, reason="inotify is Linux only"),
        ),
    ],
)
def test_waiter_reports_commits_and_times_out_when_quiet(
    file_db: QueueDatabase, db_path: Path, factory: Callable[[QueueDatabase], object]
) -> None:
    waiter = factory(file_db)
    other = QueueDatabase(db_path)
    result: dict[str, bool] = {}
    waiting = threading.Event()

    def use_waiter() -> None:
        # data_version is per connection: a waiter is used from one thread, as the runner does.
        waiter.wait(0.01)  # the first look records the current version
        result["quiet"] = waiter.wait(0.2)
        waiting.set()
        result["commit"] = waiter.wait(10)

    thread = threading.Thread(target=use_waiter)
    thread.start()
    try:
        assert waiting.wait(10)
        time.sleep(0.2)
        QueueClient(other).enqueue("x", None)
        thread.join(15)
        assert result == {"quiet": False, "commit": True}
    finally:
        thread.join(15)
        waiter.close()
        other.close()


class _FileBackend:
    """A backend stand-in: a database path the test writes to, and a version it sets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version = 1
        self.reads = 0

    def data_version(self) -> int:
        self.reads += 1
        return self.version


def test_poller_looks_often_after_work_and_slowly_otherwise(file_db: QueueDatabase, db_path: Path) -> None:
    clock = FakeClock(100.0)
    waiter = PollingWaiter(file_db.backend, interval=0.008, idle_interval=0.03, busy_for=1.0, clock=clock)
    assert waiter.changed() is True  # the first look records the current version
    assert waiter.pace == 0.03  # no work seen yet: the slow pace
    waiter.note_work()
    assert waiter.pace == 0.008
    clock.now += 1.0
    assert waiter.pace == 0.03  # busy_for passed: slow again
    with QueueDatabase(db_path) as other:  # a commit from another connection
        QueueClient(other).enqueue("job", {})
    clock.now += 1.0  # past recheck_every: data_version is read whatever the file says
    assert waiter.changed() is True
    assert waiter.pace == 0.03  # a change alone (say a peer's heartbeat) is not work
    waiter.note_work()
    assert waiter.pace == 0.008  # work resets the quick pace


def test_a_look_reads_data_version_only_when_the_file_moved(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    backend = _FileBackend(tmp_path / "queue.db")
    wal = tmp_path / "queue.db-wal"
    wal.write_bytes(b"w" * 32)
    waiter = PollingWaiter(backend, recheck_every=0.25, clock=clock)
    assert waiter.changed() is True
    assert backend.reads == 1
    for _ in range(5):
        assert waiter.changed() is False
    assert backend.reads == 1  # the -wal file did not move: no SQLite call

    with wal.open("ab") as handle:  # a commit appends to the -wal file
        handle.write(b"frame")
    backend.version = 2
    assert waiter.changed() is True  # seen by the stat, with no time passing
    assert backend.reads == 2
    assert waiter.changed() is False
    assert backend.reads == 2

    clock.now += 0.25  # a commit the stat could not reveal is still found
    backend.version = 3
    assert waiter.changed() is True
    assert backend.reads == 3

    wal.unlink()  # no -wal file: the main file is watched, and a change of file is seen
    (tmp_path / "queue.db").write_bytes(b"m")
    assert waiter.changed() is False
    assert backend.reads == 4
    assert waiter.changed() is False
    assert backend.reads == 4

    (tmp_path / "queue.db").unlink()  # nothing to stat: data_version at every look
    assert waiter.changed() is False
    assert waiter.changed() is False
    assert backend.reads == 6


def test_slow_poller_still_wakes_for_an_enqueue(file_db: QueueDatabase, db_path: Path) -> None:
    waiter = PollingWaiter(file_db.backend, idle_interval=0.03)
    settled = threading.Event()
    outcome: list[bool] = []

    def idle_worker() -> None:  # the waiter lives on one thread, as in the runtime
        waiter.changed()
        outcome.append(waiter.wait(0.05))  # nothing happened: False
        settled.set()
        outcome.append(waiter.wait(30))

    thread = threading.Thread(target=idle_worker)
    thread.start()
    assert settled.wait(30)
    assert waiter.pace == 0.03  # no work noted: the slow pace
    child = subprocess.run(
        [PYTHON, "-c", ENQUEUE, str(db_path)], env=child_env(), capture_output=True, text=True, timeout=30
    )
    assert child.returncode == 0, child.stderr
    thread.join(30)
    assert outcome == [False, True]


def test_interrupt_ends_a_slow_pause_at_once(file_db: QueueDatabase) -> None:
    waiter = PollingWaiter(file_db.backend, interval=5.0, idle_interval=5.0)
    waiter.changed()
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(waiter.wait(60)))
    thread.start()
    time.sleep(0.05)
    waiter.interrupt()
    waiter.interrupt()  # a second request is harmless
    thread.join(5)
    assert not thread.is_alive()
    assert outcome == [False]
    assert waiter.wait(60) is False  # later waits end at once too


def test_runner_notes_work_to_its_waiter(
    file_db: QueueDatabase, threaded: Callable[..., ThreadedWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    import prismq.queue.runtime.runner as runner_module

    made: list[PollingWaiter] = []
    noted: list[int] = []

    class SpyWaiter(PollingWaiter):
        def note_work(self) -> None:
            noted.append(1)
            super().note_work()

    def make(backend: object, mode: str) -> PollingWaiter:
        made.append(SpyWaiter(backend))
        return made[-1]

    monkeypatch.setattr(runner_module, "make_waiter", make)
    registry = HandlerRegistry()
    done = threading.Event()

    @registry.handler("ping")
    def ping(ctx: TaskContext) -> None:
        done.set()

    runner = threaded(QueueWorker(file_db, "noting"), registry, wake_mode="poll", idle_timeout=0.05)
    wait_until(lambda: made)
    assert noted == []  # idle spells without tasks do not speed the waiter up
    QueueClient(file_db).enqueue("ping", None)
    assert done.wait(10)
    wait_until(lambda: noted)
    runner.join()
    assert noted == [1]  # once per idle spell that follows work
