"""Idle workers wake up soon after another process enqueues."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from runtime_helpers import PYTHON, ThreadedWorker, child_env

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
