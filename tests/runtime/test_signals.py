"""Graceful shutdown of a real ``prismq-queue worker`` process on real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_helpers import PYTHON, child_env, wait_until, write_module

from prismq.queue import QueueClient, QueueDatabase
from prismq.queue.models import TaskStatus
from prismq.queue.worker import QueueWorker

HANDLERS = """
import time
from prismq.queue.runtime import HandlerRegistry

registry = HandlerRegistry()

@registry.handler("short")
def short(ctx):
    time.sleep(1.5)
    return {"slept": 1.5}

@registry.handler("long")
def long(ctx):
    time.sleep(60)
    return "should never finish"
"""

WINDOWS = sys.platform == "win32"


def _flavours() -> list[object]:
    out: list[object] = []
    for name in ("SIGINT", "SIGTERM", "CTRL_BREAK_EVENT"):
        usable = (name == "CTRL_BREAK_EVENT") == WINDOWS and hasattr(signal, name)
        marks = [] if usable else [pytest.mark.skip(reason=f"{name} cannot be sent on {sys.platform}")]
        out.append(pytest.param(name, id=name, marks=marks))
    return out


def _interrupt(proc: subprocess.Popen[str], name: str | None = None) -> None:
    """Send the platform's interrupt (or the named signal)."""
    name = name or ("CTRL_BREAK_EVENT" if WINDOWS else "SIGINT")
    proc.send_signal(getattr(signal, name))


class WorkerProcess:
    def __init__(self, tmp_path: Path, db_path: Path) -> None:
        write_module(tmp_path, "signal_handlers", HANDLERS)
        self.tmp_path = tmp_path
        self.db_path = db_path
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *extra: str) -> subprocess.Popen[str]:
        command = [PYTHON, "-m", "prismq.queue", "--db", str(self.db_path), "worker"]
        command += ["--handlers", "signal_handlers:registry", "--concurrency", "2", *extra]
        proc = subprocess.Popen(
            command,
            cwd=self.tmp_path,
            env=child_env(self.tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            creationflags=subprocess.CREATE_NEW_PROCESS_GROUP if WINDOWS else 0,
        )
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def worker_process(tmp_path: Path, db_path: Path) -> Iterator[WorkerProcess]:
    wp = WorkerProcess(tmp_path, db_path)
    try:
        yield wp
    finally:
        wp.kill_all()


def _running(client: QueueClient, task_id: int) -> bool:
    return client.get(task_id).status is TaskStatus.LEASED


@pytest.mark.parametrize("flavour", _flavours())
def test_signal_lets_the_running_task_finish(
    worker_process: WorkerProcess, file_db: QueueDatabase, flavour: str
) -> None:
    client = QueueClient(file_db)
    task_id = client.enqueue("short", None)
    proc = worker_process.start()
    wait_until(lambda: _running(client, task_id), timeout=15)
    _interrupt(proc, flavour)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    task = client.get(task_id)
    assert task.status is TaskStatus.COMPLETED
    assert task.result == {"slept": 1.5}
    assert task.attempts == 1
    assert "finishing running tasks" in stderr
    assert QueueClient(file_db).list_workers() == []  # it left the registry


def test_signal_releases_a_task_that_outlasts_the_grace_period(
    worker_process: WorkerProcess, file_db: QueueDatabase
) -> None:
    client = QueueClient(file_db)
    task_id = client.enqueue("long", None)
    proc = worker_process.start("--grace", "0.5s")
    wait_until(lambda: _running(client, task_id), timeout=15)
    assert client.get(task_id).attempts == 1
    _interrupt(proc)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    task = client.get(task_id)
    assert task.status is TaskStatus.QUEUED
    assert task.attempts == 0  # a release does not count the attempt
    assert task.locked_by is None
    assert task.last_error is None
    # Released, so another worker can claim it right away.
    other = QueueWorker(file_db, "after-release", lease_duration=5)
    claimed = other.claim_next_task()
    assert claimed is not None
    assert claimed.id == task_id
    other.release_task(claimed.id)


def test_second_signal_stops_at_once_and_the_lease_expires(
    worker_process: WorkerProcess, file_db: QueueDatabase
) -> None:
    client = QueueClient(file_db)
    task_id = client.enqueue("long", None)
    proc = worker_process.start("--lease", "2s")
    wait_until(lambda: _running(client, task_id), timeout=15)
    _interrupt(proc)
    time.sleep(0.3)  # let the first signal be handled on its own
    assert proc.poll() is None  # still waiting for the long task
    _interrupt(proc)
    proc.communicate(timeout=10)
    assert proc.returncode != 0
    task = client.get(task_id)
    assert task.status is TaskStatus.LEASED  # abandoned, not released
    assert task.locked_by is not None
    other = QueueWorker(file_db, "rescuer", lease_duration=5, reclaim_interval=0.0)
    assert other.claim_next_task() is None  # the lease still holds
    reclaimed = wait_until(other.claim_next_task, timeout=10, interval=0.1)
    assert reclaimed.id == task_id
    assert reclaimed.attempts == 2
    other.release_task(reclaimed.id)
