"""Group-committed outcomes, proven with real worker processes.

A crash loses at most the outcomes not yet written, and their tasks run again after their
lease (never lost); several processes still run every task exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from runtime_helpers import PYTHON, ThreadedWorker, child_env, write_module

from prismq.queue import Ack, ConfigError, QueueClient, QueueDatabase, TaskStatus
from prismq.queue.runtime import HandlerRegistry, TaskContext, WorkerRunner
from prismq.queue.runtime.acks import AckCollector
from prismq.queue.worker import QueueWorker

HANDLERS = """
import os, signal, time
from prismq.queue.runtime import HandlerRegistry

registry = HandlerRegistry()
_fd = os.open(os.environ["IDS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

@registry.handler("noop")
def noop(ctx):
    os.write(_fd, b"%d %d %d\\n" % (ctx.task_id, ctx.attempt, os.getpid()))
    return ctx.task_id

@registry.handler("work")
def work(ctx):
    os.write(_fd, b"%d %d %d\\n" % (ctx.task_id, ctx.attempt, os.getpid()))
    time.sleep(0.001)  # enough work that every process starts before the queue is drained
    return ctx.task_id

@registry.handler("crash")
def crash(ctx):
    os.write(_fd, b"%d %d %d\\n" % (ctx.task_id, ctx.attempt, os.getpid()))
    if ctx.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # dies with the earlier outcomes unwritten
    return ctx.task_id
"""


def _worker(tmp_path: Path, db_path: Path | str, *options: str) -> subprocess.CompletedProcess[str]:
    write_module(tmp_path, "group_handlers", HANDLERS)
    env = child_env(tmp_path)
    env["IDS_FILE"] = str(tmp_path / "ids.txt")
    command = [PYTHON, "-m", "prismq.queue", "--db", str(db_path), "worker"]
    command += ["--handlers", "group_handlers:registry", "--burst", *options]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def _runs(tmp_path: Path) -> list[tuple[int, int, int]]:
    lines = (tmp_path / "ids.txt").read_text().split("\n")
    return [tuple(int(x) for x in line.split()) for line in lines if line]  # type: ignore[misc]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL of the worker itself is POSIX-only")
def test_a_crash_with_unwritten_outcomes_reruns_those_tasks_after_their_lease(
    tmp_path: Path, file_db: QueueDatabase, db_path: Path
) -> None:
    client = QueueClient(file_db)
    ids = client.enqueue_many([{"task_type": "noop"} for _ in range(60)])
    crash_id = client.enqueue("crash")
    # A long linger and a large batch: the outcomes wait in the process when it dies.
    killed = _worker(tmp_path, db_path, "--lease", "2s", "--linger", "1s", "--batch-size", "1000")
    assert killed.returncode == -9, killed.stderr
    counts = client.count_by_status()
    ran_once = {tid for tid, _, _ in _runs(tmp_path)}
    assert ran_once == {*ids, crash_id}  # every handler ran before the crash
    unwritten = [tid for tid in ids if client.get(tid).status is TaskStatus.LEASED]
    assert unwritten, "expected outcomes still waiting in the killed process"
    assert counts["completed"] + len(unwritten) == len(ids)
    time.sleep(2.2)  # the dead worker's leases expire
    again = _worker(tmp_path, db_path, "--lease", "5s")
    assert again.returncode == 0, again.stderr
    final = client.count_by_status()
    assert final["completed"] == len(ids) + 1  # none lost
    runs = Counter(tid for tid, _, _ in _runs(tmp_path))
    # Exactly the tasks whose outcome was not written ran again (at-least-once).
    assert {tid for tid, n in runs.items() if n == 2} == {*unwritten, crash_id}
    assert max(runs.values()) == 2
    assert all(client.get(tid).attempts == 2 for tid in unwritten)


def test_four_worker_processes_run_every_task_exactly_once(
    tmp_path: Path, file_db: QueueDatabase, db_path: Path
) -> None:
    client = QueueClient(file_db)
    ids = client.enqueue_many([{"task_type": "work"} for _ in range(4000)])
    done = _worker(tmp_path, db_path, "--processes", "4", "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    runs = _runs(tmp_path)
    per_task = Counter(tid for tid, _, _ in runs)
    assert set(per_task) == set(ids)
    assert max(per_task.values()) == 1  # no duplicates
    assert len({pid for _, _, pid in runs}) >= 2  # the processes shared the work
    assert client.count_by_status()["completed"] == 4000
    assert {t.result for t in client.list(limit=4000)} == set(ids)
    assert all(t.attempts == 1 for t in client.list(limit=4000))


def test_the_collector_says_when_a_flush_is_due() -> None:
    now = [100.0]
    collector: AckCollector[str] = AckCollector(3, 0.01, lambda: now[0])
    assert collector.due_in() == float("inf")

    collector.add("a", Ack.complete(1))
    assert collector.due_in() == pytest.approx(0.01)
    now[0] += 0.004
    collector.add("b", Ack.complete(2))
    assert collector.due_in() == pytest.approx(0.006)  # timed from the oldest
    now[0] += 0.01
    assert collector.due_in() == 0
    collector.add("c", Ack.complete(3))
    collector.add("d", Ack.complete(4))
    assert collector.full
    batch = collector.take()
    assert [record for record, _ in batch] == ["a", "b", "c"]  # oldest first, at most batch_size
    assert len(collector) == 1
    collector.put_back(batch)
    assert [record for record, _ in collector.take()] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("batch_size", "linger", "message"),
    [
        (0, 0.01, "batch_size"),
        (1001, 0.01, "batch_size"),
        (True, 0.01, "batch_size"),
        (5, -1, "linger"),
        (5, 2, "linger"),
    ],
)
def test_the_collector_refuses_bad_settings(batch_size: int, linger: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AckCollector(batch_size, linger, time.monotonic)


def test_a_task_enqueued_while_another_runs_starts_in_a_free_slot_at_once(
    file_db: QueueDatabase, threaded: Callable[..., ThreadedWorker]
) -> None:
    client = QueueClient(file_db)
    registry = HandlerRegistry()
    release = threading.Event()
    started: dict[str, float] = {}

    @registry.handler("long")
    def long(ctx: TaskContext) -> None:
        started["long"] = time.monotonic()
        release.wait(20)

    @registry.handler("short")
    def short(ctx: TaskContext) -> None:
        started["short"] = time.monotonic()

    client.enqueue("long")
    runner = threaded(QueueWorker(file_db, "w"), registry, concurrency=2)
    try:
        deadline = time.monotonic() + 10
        while "long" not in started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # the worker has looked for more work and found none
        enqueued = time.monotonic()
        client.enqueue("short")
        while "short" not in started:
            assert time.monotonic() < enqueued + 2, "the free slot waited for the running task"
            time.sleep(0.005)
        assert started["short"] - enqueued < 1.0
    finally:
        release.set()
    summary = runner.join()
    assert summary.completed == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer from 1 to 1000"),
        ({"linger": 1.5}, "linger must be a number of seconds from 0 to 1"),
        ({"prefetch": -1}, "prefetch must be an integer from 0 to 1000"),
        ({"prefetch": True}, "prefetch must be an integer"),
    ],
)
def test_the_runner_refuses_bad_group_commit_settings(
    file_db: QueueDatabase, options: dict[str, object], message: str
) -> None:
    registry = HandlerRegistry()
    registry.register("noop", lambda ctx: None)
    with pytest.raises(ConfigError, match=message):
        WorkerRunner(QueueWorker(file_db, "w"), registry, **options)


def test_worker_command_flags_take_milliseconds_and_counts(
    tmp_path: Path, file_db: QueueDatabase, db_path: Path
) -> None:
    client = QueueClient(file_db)
    ids = client.enqueue_many([{"task_type": "noop"} for _ in range(50)])
    done = _worker(tmp_path, db_path, "--batch-size", "7", "--linger", "2ms", "--prefetch", "0")
    assert done.returncode == 0, done.stderr
    assert "batch=7 linger=0.002s prefetch=0" in done.stderr
    assert sorted(tid for tid, _, _ in _runs(tmp_path)) == ids
    refused = _worker(tmp_path, db_path, "--prefetch", "-3")
    assert refused.returncode != 0
    assert "must be 0 or more" in refused.stderr


@pytest.mark.postgres
def test_four_worker_processes_on_postgresql_run_every_task_exactly_once(
    tmp_path: Path, postgres_schema: tuple[str, str]
) -> None:
    url, schema = postgres_schema
    target = f"{url}{'&' if '?' in url else '?'}schema={schema}"
    with QueueDatabase(target) as db:
        db.initialize_schema()
        ids = QueueClient(db).enqueue_many([{"task_type": "work"} for _ in range(2000)])
    done = _worker(tmp_path, target, "--processes", "4", "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    runs = _runs(tmp_path)
    per_task = Counter(tid for tid, _, _ in runs)
    assert set(per_task) == set(ids)
    assert max(per_task.values()) == 1
    assert len({pid for _, _, pid in runs}) >= 2
    with QueueDatabase(target) as db:
        client = QueueClient(db)
        assert client.count_by_status()["completed"] == 2000
        assert all(t.attempts == 1 for t in client.list(limit=2000))
