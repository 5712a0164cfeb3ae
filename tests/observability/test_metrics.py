"""Prometheus metrics: queue-wide gauges read from the database, worker counters and histograms."""

from __future__ import annotations

import threading
import urllib.request
from typing import Any

import pytest
from metrics_support import parse, scrape, value
from runtime_helpers import wait_until

from prismq.queue import QueueClient, QueueDatabase, QueueWorker, Task
from prismq.queue.errors import ConfigError
from prismq.queue.observability.metrics import (
    MetricsObserver,
    QueueCollector,
    WorkerMetrics,
    metrics_exposition,
    serve_metrics,
)
from prismq.queue.runtime import (
    HandlerRegistry,
    TaskContext,
    TaskFailed,
    TaskObservation,
    TaskObserver,
    TaskOutcome,
)


def test_depth_by_type_and_status_age_leases_dead_and_workers(
    clocked_db: QueueDatabase, clock: Any, backend_name: str
) -> None:
    client = QueueClient(clocked_db)
    client.enqueue("email", {"n": 1})
    clock.advance(30)
    client.enqueue("email", {"n": 2})
    client.enqueue("email", {"n": 3}, delay=600)
    client.enqueue("report", None, max_attempts=1)
    clock.advance(10)
    worker = QueueWorker(clocked_db, worker_id="w-old", task_types=["report"], lease_duration=5)
    report = worker.claim_next_task()
    assert report is not None
    worker.fail_task(report.id, "broken")  # no attempt left: dead
    client.enqueue("report", None)
    leased = QueueWorker(clocked_db, worker_id="w-lease", task_types=["report"], lease_duration=5)
    assert leased.claim_next_task() is not None
    clock.advance(200)  # w-old and w-lease go silent; the lease runs out
    QueueWorker(clocked_db, worker_id="w-new")  # registers now: alive

    body, content_type = metrics_exposition(clocked_db)
    assert content_type.startswith("text/plain")
    samples = parse(body)
    assert value(samples, "prismq_queue_database_up") == 1
    assert value(samples, "prismq_queue_tasks", task_type="email", status="queued") == 3
    assert value(samples, "prismq_queue_tasks", task_type="email", status="dead") == 0
    assert value(samples, "prismq_queue_tasks", task_type="report", status="dead") == 1
    assert value(samples, "prismq_queue_tasks", task_type="report", status="leased") == 1
    assert value(samples, "prismq_queue_ready_tasks") == 2
    assert value(samples, "prismq_queue_delayed_tasks") == 1
    # The oldest ready email was enqueued 240 s before "now".
    assert value(samples, "prismq_queue_oldest_ready_age_seconds") == pytest.approx(240)
    assert value(samples, "prismq_queue_expired_leases") == 1
    assert value(samples, "prismq_queue_workers", state="alive") == 1
    assert value(samples, "prismq_queue_workers", state="stale") == 2
    ages = [labels for name, labels in samples if name == "prismq_queue_worker_heartbeat_age_seconds"]
    host = dict(ages[0])["hostname"]
    assert value(
        samples, "prismq_queue_worker_heartbeat_age_seconds", worker_id="w-old", hostname=host
    ) == pytest.approx(200)
    assert value(samples, "prismq_queue_worker_heartbeat_age_seconds", worker_id="w-new", hostname=host) == 0
    wal = [v for (name, _), v in samples.items() if name == "prismq_queue_sqlite_wal_bytes"]
    if backend_name == "sqlite":
        assert len(wal) == 1
        assert wal[0] > 0
    else:
        assert wal == []  # the server manages its own log


def test_stale_after_decides_alive_or_stale(clocked_db: QueueDatabase, clock: Any) -> None:
    QueueWorker(clocked_db, worker_id="w1")
    clock.advance(50)
    assert value(parse(metrics_exposition(clocked_db)[0]), "prismq_queue_workers", state="alive") == 1
    strict = parse(metrics_exposition(clocked_db, stale_after=30)[0])
    assert value(strict, "prismq_queue_workers", state="stale") == 1
    with pytest.raises(ConfigError, match="stale_after"):
        QueueCollector(clocked_db, stale_after=0)


@pytest.mark.sqlite_only
def test_an_unreadable_database_reports_down(db: QueueDatabase) -> None:
    db.close()  # every later read raises StorageError
    samples = parse(metrics_exposition(db)[0])
    assert value(samples, "prismq_queue_database_up") == 0
    assert not any(name == "prismq_queue_tasks" for name, _ in samples)


def _registry() -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register("ok", lambda ctx: {"ok": True})

    def broken(ctx: object) -> None:
        raise TaskFailed("broken")

    registry.register("broken", broken)

    def final(ctx: object) -> None:
        raise TaskFailed("final", retry=False)

    registry.register("final", final)
    return registry


def test_observer_counts_outcomes_and_times(db: QueueDatabase) -> None:
    client = QueueClient(db)
    for n in range(5):
        client.enqueue("ok", {"n": n})
    client.enqueue("broken", None, max_attempts=3)
    client.enqueue("final", None)
    metrics = WorkerMetrics()
    summary = QueueWorker(db, worker_id="w").run(_registry(), burst=True, observer=metrics.observer())
    assert (summary.completed, summary.retried, summary.dead) == (5, 1, 1)
    samples = parse(metrics_exposition_of(metrics))
    assert value(samples, "prismq_queue_tasks_started_total", task_type="ok") == 5
    assert value(samples, "prismq_queue_tasks_completed_total", task_type="ok") == 5
    assert value(samples, "prismq_queue_tasks_failed_total", task_type="broken") == 1
    assert value(samples, "prismq_queue_tasks_retried_total", task_type="broken") == 1
    assert value(samples, "prismq_queue_tasks_failed_total", task_type="final") == 1
    assert value(samples, "prismq_queue_tasks_dead_total", task_type="final") == 1
    assert value(samples, "prismq_queue_task_wait_seconds_count", task_type="ok") == 5
    assert value(samples, "prismq_queue_task_run_seconds_count", task_type="ok") == 5
    assert value(samples, "prismq_queue_task_run_seconds_count", task_type="final") == 1
    assert value(samples, "prismq_queue_worker_tasks_running") == 0


def metrics_exposition_of(metrics: WorkerMetrics) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry)


@pytest.mark.sqlite_only
def test_wait_histogram_measures_enqueue_to_start(clocked_db: QueueDatabase, clock: Any) -> None:
    QueueClient(clocked_db).enqueue("ok", None)
    clock.advance(7)
    metrics = WorkerMetrics()
    QueueWorker(clocked_db, worker_id="w").run(_registry(), burst=True, observer=metrics.observer())
    samples = parse(metrics_exposition_of(metrics))
    assert value(samples, "prismq_queue_task_wait_seconds_sum", task_type="ok") == pytest.approx(7)
    assert value(samples, "prismq_queue_task_wait_seconds_bucket", task_type="ok", le="5.0") == 0
    assert value(samples, "prismq_queue_task_wait_seconds_bucket", task_type="ok", le="10.0") == 1


@pytest.mark.sqlite_only
def test_timeouts_and_lease_losses_are_counted(db: QueueDatabase) -> None:
    release = threading.Event()
    registry = HandlerRegistry()

    @registry.handler("slow", timeout=0.2)
    def slow(ctx: object) -> None:
        release.wait(5)

    client = QueueClient(db)
    client.enqueue("slow", None, max_attempts=1)
    metrics = WorkerMetrics()
    QueueWorker(db, worker_id="w").run(registry, burst=True, observer=metrics.observer())
    release.set()
    samples = parse(metrics_exposition_of(metrics))
    assert value(samples, "prismq_queue_task_timeouts_total", task_type="slow") == 1
    assert value(samples, "prismq_queue_tasks_dead_total", task_type="slow") == 1

    # A lease lost while running: another worker takes the task over; the result is discarded.
    lost_db = db
    task_id = client.enqueue("hold", None)
    started = threading.Event()
    finish = threading.Event()
    holder = HandlerRegistry()

    @holder.handler("hold")
    def hold(ctx: object) -> None:
        started.set()
        finish.wait(10)

    worker = QueueWorker(lost_db, worker_id="loser", lease_duration=0.3)
    metrics2 = WorkerMetrics()
    thread = threading.Thread(
        target=lambda: worker.run(holder, burst=True, observer=metrics2.observer()), daemon=True
    )
    thread.start()
    assert started.wait(10)
    # Another holder takes the task over (as after an expiry and a reclaim elsewhere).
    with lost_db.transaction() as conn:
        conn.execute("UPDATE tasks SET locked_by = 'thief', lease_token = 'stolen' WHERE id = ?", (task_id,))
    wait_until(lambda: worker.held_tasks == {})
    finish.set()
    thread.join(15)
    assert not thread.is_alive()
    samples = parse(metrics_exposition_of(metrics2))
    assert value(samples, "prismq_queue_lease_losses_total", task_type="hold") == 1
    assert ("prismq_queue_tasks_completed_total", (("task_type", "hold"),)) not in samples


def test_observer_errors_never_change_the_outcome(db: QueueDatabase) -> None:
    class Broken(TaskObserver):
        def task_started(self, task: object, worker_id: str) -> TaskObservation:
            return Exploding()

    class Exploding(TaskObservation):
        def finished(self, outcome: TaskOutcome, error: BaseException | None = None) -> None:
            raise RuntimeError("observer bug")

    class Raising(TaskObserver):
        def task_started(self, task: object, worker_id: str) -> TaskObservation:
            raise RuntimeError("observer bug")

    task_id = QueueClient(db).enqueue("ok", None)
    metrics = WorkerMetrics()
    summary = QueueWorker(db, worker_id="w").run(
        _registry(), burst=True, observer=[Broken(), Raising(), metrics.observer()]
    )
    assert summary.completed == 1
    assert QueueClient(db).get(task_id).status.value == "completed"
    samples = parse(metrics_exposition_of(metrics))
    assert value(samples, "prismq_queue_tasks_completed_total", task_type="ok") == 1


def test_served_over_http_on_loopback(db: QueueDatabase) -> None:
    QueueClient(db).enqueue("email", None)
    server = serve_metrics(db, 0)
    try:
        assert server.host == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        samples = scrape(server.url)
        assert value(samples, "prismq_queue_tasks", task_type="email", status="queued") == 1
    finally:
        server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)


def test_bad_port_is_a_config_error(db: QueueDatabase) -> None:
    with pytest.raises(ConfigError, match="65535"):
        serve_metrics(db, 70000)
    busy = serve_metrics(db, 0)
    try:
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{busy.port}"):
            serve_metrics(db, busy.port)
    finally:
        busy.close()


def test_observer_default_is_the_process_metrics(db: QueueDatabase) -> None:
    observer = MetricsObserver()
    QueueClient(db).enqueue("ok", None)
    QueueWorker(db, worker_id="w").run(_registry(), burst=True, observer=observer)
    # metrics_exposition serves this process's worker metrics beside the gauges.
    samples = parse(metrics_exposition(db)[0])
    assert value(samples, "prismq_queue_tasks_completed_total", task_type="ok") >= 1


def test_the_core_and_the_cli_never_import_the_extras() -> None:
    import subprocess
    import sys

    code = (
        "import sys, prismq.queue, prismq.queue.cli, prismq.queue.runtime\n"
        "from prismq.queue.cli.parsing import build_parser\n"
        "build_parser().parse_args(['worker', '--handlers', 'm:r', '--metrics-port', '9464', '--tracing'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))))\n"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("blocked", "module", "extra"),
    [
        ("prometheus_client", "prismq.queue.observability.metrics", "metrics"),
        ("opentelemetry", "prismq.queue.observability.tracing", "otel"),
    ],
)
def test_a_missing_extra_is_named(blocked: str, module: str, extra: str) -> None:
    import subprocess
    import sys

    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from prismq.queue import ConfigError, ExtraNotInstalledError\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as exc:\n"
        "    assert isinstance(exc, ExtraNotInstalledError) and isinstance(exc, ConfigError)\n"
        "    print(exc)\n"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert f"pip install 'prismq-queue[{extra}]'" in done.stdout


def test_worker_metrics_without_the_extra_is_a_clear_usage_error(tmp_path: Any) -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from prismq.queue.cli import main\n"
        f"sys.exit(main(['--db', {str(tmp_path / 'q.db')!r}, 'worker', '--handlers', 'h:registry',"
        " '--metrics-port', '0']))\n"
    )
    (tmp_path / "h.py").write_text(
        "from prismq.queue.runtime import HandlerRegistry\nregistry = HandlerRegistry()\n"
        "registry.register('a', lambda ctx: None)\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "pip install 'prismq-queue[metrics]'" in done.stderr


@pytest.mark.sqlite_only
def test_a_lease_lost_at_the_group_commit_is_reported_per_task(db: QueueDatabase) -> None:
    """Outcomes written together: the one whose lease was lost meanwhile is a lease loss alone."""
    client = QueueClient(db)
    stolen_id = client.enqueue("steal", None)
    kept_id = client.enqueue("keep", None)
    registry = HandlerRegistry()

    @registry.handler("steal")
    def steal(ctx: TaskContext) -> str:
        # Another holder takes the task over after the handler ran, before its outcome is written.
        with db.transaction() as conn:
            conn.execute(
                "UPDATE tasks SET locked_by = 'thief', lease_token = 'stolen' WHERE id = ?", (ctx.task_id,)
            )
        return "discarded"

    @registry.handler("keep")
    def keep(ctx: TaskContext) -> str:
        return "kept"

    seen: list[tuple[int, TaskOutcome]] = []

    class Recorded(TaskObservation):
        def __init__(self, task_id: int) -> None:
            self.task_id = task_id

        def finished(self, outcome: TaskOutcome, error: BaseException | None = None) -> None:
            seen.append((self.task_id, outcome))

    class Recorder(TaskObserver):
        def task_started(self, task: Task, worker_id: str) -> TaskObservation:
            return Recorded(task.id)

    metrics = WorkerMetrics()
    summary = QueueWorker(db, worker_id="w").run(
        registry, burst=True, concurrency=2, linger=1.0, observer=[Recorder(), metrics.observer()]
    )
    assert (summary.completed, summary.lease_lost) == (1, 1)
    assert sorted(seen) == [(stolen_id, TaskOutcome.LEASE_LOST), (kept_id, TaskOutcome.COMPLETED)]
    samples = parse(metrics_exposition_of(metrics))
    assert value(samples, "prismq_queue_lease_losses_total", task_type="steal") == 1
    assert value(samples, "prismq_queue_tasks_completed_total", task_type="keep") == 1
    assert ("prismq_queue_tasks_completed_total", (("task_type", "steal"),)) not in samples
    assert value(samples, "prismq_queue_worker_tasks_running") == 0
