"""``prismq-queue worker --metrics-port``: one endpoint, right with one or several processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from metrics_support import Samples, scrape, value
from runtime_helpers import PYTHON, child_env, wait_until, write_module

from prismq.queue import QueueClient, QueueDatabase, TaskSpec
from prismq.queue.cli import main

HANDLERS = """
import os
import time
from pathlib import Path
from prismq.queue.runtime import HandlerRegistry, TaskFailed

registry = HandlerRegistry()

@registry.handler("work")
def work(ctx):
    with open(os.environ["METRICS_TEST_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{os.getpid()}\\n")
    time.sleep(0.02)
    return ctx.payload

@registry.handler("fail")
def fail(ctx):
    raise TaskFailed("always", retry=False)

@registry.handler("hold")
def hold(ctx):
    while not Path(os.environ["METRICS_TEST_RELEASE"]).exists():
        time.sleep(0.02)
"""

WINDOWS = sys.platform == "win32"


class Workers:
    def __init__(self, tmp_path: Path, db_path: Path) -> None:
        write_module(tmp_path, "metrics_handlers", HANDLERS)
        self.tmp_path = tmp_path
        self.db_path = db_path
        self.log = tmp_path / "pids.log"
        self.release = tmp_path / "release"
        self.temp = tmp_path / "tmp"
        self.temp.mkdir()
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *extra: str) -> tuple[subprocess.Popen[str], str]:
        command = [PYTHON, "-m", "prismq.queue", "--db", str(self.db_path), "worker"]
        command += ["--handlers", "metrics_handlers:registry", "--metrics-port", "0", *extra]
        env = child_env(self.tmp_path)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(
            METRICS_TEST_LOG=str(self.log),
            METRICS_TEST_RELEASE=str(self.release),
            TMPDIR=str(self.temp),
            TEMP=str(self.temp),
            TMP=str(self.temp),
        )
        proc = subprocess.Popen(
            command,
            cwd=self.tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            creationflags=subprocess.CREATE_NEW_PROCESS_GROUP if WINDOWS else 0,
        )
        self.procs.append(proc)
        assert proc.stderr is not None
        for _ in range(200):
            line = proc.stderr.readline()
            match = re.search(r"metrics: (http://\S+)", line)
            if match:
                return proc, match.group(1)
            if not line and proc.poll() is not None:
                break
        raise AssertionError(f"no metrics URL announced; exit code {proc.poll()}")

    def stop(self, proc: subprocess.Popen[str]) -> int:
        proc.send_signal(signal.CTRL_BREAK_EVENT if WINDOWS else signal.SIGINT)  # type: ignore[attr-defined]
        proc.communicate(timeout=60)
        return proc.returncode

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def workers(tmp_path: Path, db_path: Path) -> Iterator[Workers]:
    QueueDatabase(db_path).initialize_schema()
    started = Workers(tmp_path, db_path)
    try:
        yield started
    finally:
        started.kill_all()


def _pids(log: Path) -> set[str]:
    return set(log.read_text(encoding="utf-8").split()) if log.exists() else set()


def _scrape_until(url: str, predicate: Callable[[Samples], bool], timeout: float = 30) -> Samples:
    """Scrape until ``predicate`` holds for the samples; return them."""
    found: list[Samples] = []

    def check() -> bool:
        samples = scrape(url)
        found[:] = [samples]
        return predicate(samples)

    wait_until(check, timeout=timeout)
    return found[0]


@pytest.mark.slow
def test_several_processes_serve_one_summed_endpoint(workers: Workers, db_path: Path) -> None:
    with QueueDatabase(db_path) as db:
        client = QueueClient(db)
        client.enqueue_many([TaskSpec("work", {"n": n}) for n in range(60)])
        client.enqueue_many([TaskSpec("fail", None) for _ in range(3)])
        proc, url = workers.start("--processes", "2", "--concurrency", "2")

        def drained() -> bool:
            counts = client.count_by_status()
            return counts["completed"] == 60 and counts["dead"] == 3

        wait_until(drained, timeout=60)
        assert len(_pids(workers.log)) == 2, "both worker processes ran tasks"
        samples = _scrape_until(url, lambda s: value(s, "prismq_queue_workers", state="alive") == 2)
    # The children's counters, summed by the supervisor.
    assert value(samples, "prismq_queue_tasks_completed_total", task_type="work") == 60
    assert value(samples, "prismq_queue_tasks_started_total", task_type="work") == 60
    assert value(samples, "prismq_queue_tasks_dead_total", task_type="fail") == 3
    assert value(samples, "prismq_queue_task_run_seconds_count", task_type="work") == 60
    assert value(samples, "prismq_queue_task_wait_seconds_count", task_type="work") == 60
    assert value(samples, "prismq_queue_worker_tasks_running") == 0
    # And the gauges read from the database.
    assert value(samples, "prismq_queue_tasks", task_type="work", status="completed") == 60
    assert value(samples, "prismq_queue_tasks", task_type="fail", status="dead") == 3
    assert workers.stop(proc) == 0
    assert list(workers.temp.iterdir()) == [], "the supervisor removes its metrics folder"


@pytest.mark.slow
@pytest.mark.skipif(WINDOWS, reason="SIGKILL of one child is a POSIX signal")
def test_a_killed_child_keeps_its_counts_and_leaves_the_gauge(workers: Workers, db_path: Path) -> None:
    with QueueDatabase(db_path) as db:
        client = QueueClient(db)
        client.enqueue_many([TaskSpec("work", {"n": n}) for n in range(10)])
        # No prefetch: each process leases only the task it runs, so each holds one.
        proc, url = workers.start("--processes", "2", "--lease", "2s", "--prefetch", "0")
        wait_until(lambda: client.count_by_status()["completed"] == 10, timeout=60)
        client.enqueue_many([TaskSpec("hold", None) for _ in range(2)])
        _scrape_until(url, lambda s: value(s, "prismq_queue_worker_tasks_running") == 2)
        victim = int(sorted(_pids(workers.log))[0])
        os.kill(victim, signal.SIGKILL)
        # The dead child's running task no longer counts; its completions still do.
        samples = _scrape_until(url, lambda s: value(s, "prismq_queue_worker_tasks_running") == 1)
        assert value(samples, "prismq_queue_tasks_completed_total", task_type="work") == 10
        workers.release.touch()
        wait_until(lambda: client.count_by_status()["completed"] == 12, timeout=60)
    assert workers.stop(proc) == 0


@pytest.mark.slow
def test_one_process_serves_its_own_metrics(workers: Workers, db_path: Path) -> None:
    with QueueDatabase(db_path) as db:
        client = QueueClient(db)
        client.enqueue_many([TaskSpec("work", {"n": n}) for n in range(5)])
        proc, url = workers.start()
        assert url.startswith("http://127.0.0.1:")
        wait_until(lambda: client.count_by_status()["completed"] == 5, timeout=30)
        samples = scrape(url)
    assert value(samples, "prismq_queue_tasks_completed_total", task_type="work") == 5
    assert value(samples, "prismq_queue_workers", state="alive") == 1
    assert workers.stop(proc) == 0


def test_bad_metrics_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--handlers", "x:y", "--metrics-port", "70000"]) == 2
    assert "not a port from 0 to 65535" in capsys.readouterr().err
