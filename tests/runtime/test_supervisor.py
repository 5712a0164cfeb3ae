"""Supervisor: spawn worker processes that drain a queue once, restart killed ones."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest
from runtime_helpers import wait_until, write_module

from prismq.queue import QueueClient, QueueDatabase, TaskSpec
from prismq.queue.models import TaskStatus
from prismq.queue.runtime.settings import WorkerSettings
from prismq.queue.runtime.supervisor import ChildExit, Supervisor

HANDLERS = """
import os
import time
from prismq.queue.runtime import HandlerRegistry

registry = HandlerRegistry()
LOG = os.environ["SUPERVISOR_TEST_LOG"]
both_started = False

@registry.handler("count")
def count(ctx):
    line = f"{ctx.task_id} {os.getpid()}\\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    # Hold every task until both children have run one, so both take part however slowly
    # the second one starts (the runtime drains 500 no-op tasks faster than a spawn starts;
    # a child leases at most batch + prefetch of them, so the other always finds work).
    global both_started
    deadline = time.monotonic() + 60
    while not both_started and time.monotonic() < deadline:
        with open(LOG) as log:
            both_started = len({line.split()[1] for line in log if line.strip()}) >= 2
        if not both_started:
            time.sleep(0.01)
    return ctx.task_id

@registry.handler("slow")
def slow(ctx):
    time.sleep(0.4)
    return os.getpid()
"""


@pytest.fixture
def handlers_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "mods"
    folder.mkdir()
    write_module(folder, "supervisor_handlers", HANDLERS)
    monkeypatch.syspath_prepend(str(folder))  # spawn children get the parent's sys.path
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    )
    log = tmp_path / "executions.log"
    monkeypatch.setenv("SUPERVISOR_TEST_LOG", str(log))
    return log


def _supervise(supervisor: Supervisor) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(supervisor.run(install_signal_handlers=False)), daemon=True
    )
    thread.start()
    return thread, codes


def _stop(supervisor: Supervisor, thread: threading.Thread) -> None:
    # set() must return even after children exited or were killed (it once blocked for ever
    # on a sleeper count left behind by a child that died inside Event.wait()).
    setter = threading.Thread(target=supervisor.stop_event.set, daemon=True)
    setter.start()
    setter.join(10)
    assert not setter.is_alive(), "stop_event.set() blocked"
    thread.join(20)
    for pid in supervisor.child_pids():  # only if a child ignored the stop
        with contextlib.suppress(OSError):
            os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))


def test_two_processes_drain_500_tasks_exactly_once(
    file_db: QueueDatabase, db_path: Path, handlers_module: Path
) -> None:
    client = QueueClient(file_db)
    ids = client.enqueue_many([TaskSpec("count", {"n": n}) for n in range(500)])
    exits: list[ChildExit] = []
    settings = WorkerSettings(
        database=str(db_path),
        registry="supervisor_handlers:registry",
        concurrency=4,
        burst=True,
        lease_duration=30,
        idle_timeout=0.2,
    )
    supervisor = Supervisor(settings, 2, on_exit=exits.append)
    thread, codes = _supervise(supervisor)
    try:
        thread.join(45)
        assert not thread.is_alive(), "the supervisor did not finish"
    finally:
        _stop(supervisor, thread)
    assert codes == [0]
    assert sorted(e.exitcode for e in exits) == [0, 0]
    assert not any(e.restarted for e in exits)
    assert client.count_by_status()["completed"] == 500
    tasks = client.list(limit=1000)
    assert all(t.attempts == 1 for t in tasks)
    assert {t.result for t in tasks} == set(ids)
    lines = handlers_module.read_text().split()
    executed = Counter(int(tid) for tid in lines[0::2])
    assert set(executed) == set(ids)
    assert max(executed.values()) == 1  # nothing ran twice
    assert len(set(lines[1::2])) == 2  # both processes took part
    assert {t.locked_by for t in tasks} == {None}


def test_killed_child_is_restarted_and_its_task_reclaimed(
    file_db: QueueDatabase, db_path: Path, handlers_module: Path
) -> None:
    client = QueueClient(file_db)
    ids = client.enqueue_many([TaskSpec("slow", None) for _ in range(8)])
    exits: list[ChildExit] = []
    settings = WorkerSettings(
        database=str(db_path),
        registry="supervisor_handlers:registry",
        worker_id="sup",
        concurrency=1,
        lease_duration=1.0,
        idle_timeout=0.2,
    )
    supervisor = Supervisor(settings, 2, restart_delay=0.2, on_exit=exits.append)
    thread, _codes = _supervise(supervisor)
    try:
        victim = wait_until(
            lambda: next((t for t in client.list(status="leased") if t.locked_by), None), timeout=20
        )
        workers = {w.worker_id: w.pid for w in client.list_workers()}
        pid = workers[victim.locked_by]
        assert pid in supervisor.child_pids()
        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        wait_until(lambda: any(e.pid == pid for e in exits), timeout=10)
        report = next(e for e in exits if e.pid == pid)
        assert report.restarted is True
        assert report.worker_id == victim.locked_by
        assert report.exitcode != 0
        wait_until(lambda: supervisor.restarts == 1 and len(supervisor.child_pids()) == 2, timeout=10)
        assert pid not in supervisor.child_pids()
        # The queue still drains, the killed child's task included (after its lease).
        wait_until(lambda: client.count_by_status()["completed"] == len(ids), timeout=30, interval=0.1)
    finally:
        _stop(supervisor, thread)
    assert not thread.is_alive()
    reclaimed = client.get(victim.id)
    assert reclaimed.status is TaskStatus.COMPLETED
    assert reclaimed.attempts == 2
    assert reclaimed.result != pid
    assert all(client.get(i).attempts == 1 for i in ids if i != victim.id)
    # After the stop every child exited cleanly and none was restarted again.
    assert [e.restarted for e in exits if e.pid != pid] == [False, False]
    assert supervisor.restarts == 1
