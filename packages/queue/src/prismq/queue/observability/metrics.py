"""Prometheus metrics of the queue and of its workers (``pip install "prismq-queue[metrics]"``).

Two kinds of metric, so every number stays right however many processes run:

- **Queue-wide gauges** (depth by task type and status, age of the oldest ready task,
  expired leases, workers alive and stale, the SQLite ``-wal`` size) are read from the
  database at scrape time by :class:`QueueCollector`. Any process can serve them and
  they agree, since they come from the one source of truth.
- **Worker counters and histograms** (tasks started, completed, failed, retried, dead,
  cancelled, lease losses, timeouts; enqueue-to-start and run time) are counted in the
  worker process by :class:`MetricsObserver`. With ``--processes N`` the children write
  them to prometheus_client's multiprocess files in a folder the supervisor owns, and the
  supervisor serves their sum.

:func:`metrics_exposition` renders both as the Prometheus text format, for any web
framework (the dashboard serves it at ``/metrics``). The *Metrics and traces* page of
the documentation has runnable examples.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import timezone
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ExtraNotInstalledError, QueueError
from ..models import TaskStatus
from ..runtime.observer import TaskObservation, TaskObserver, TaskOutcome
from ..validation import is_int, is_number

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
        start_http_server,
    )
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ExtraNotInstalledError(
        f"Prometheus metrics need prometheus_client ({exc.name or exc}); install it with "
        "pip install 'prismq-queue[metrics]'"
    ) from None

if TYPE_CHECKING:
    from ..database import QueueDatabase
    from ..models import Task

__all__ = [
    "DEFAULT_STALE_AFTER",
    "MULTIPROCESS_ENV",
    "MetricsObserver",
    "MetricsServer",
    "QueueCollector",
    "WorkerMetrics",
    "metrics_exposition",
    "metrics_registry",
    "serve_metrics",
    "worker_metrics",
]

logger = logging.getLogger("prismq.queue.metrics")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's variable: the folder where every process writes its worker metrics."""

DEFAULT_STALE_AFTER = 120.0
"""Seconds without a heartbeat after which a registered worker counts as stale (as ``doctor``)."""

DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
)  # fmt: skip
"""Histogram buckets (seconds) of the enqueue-to-start and run-time histograms."""


def _wal_bytes(db: QueueDatabase) -> int | None:
    """Size of the SQLite ``-wal`` file (0 when absent); ``None`` for a server database."""
    if db.path is None:
        return None
    try:
        return os.path.getsize(f"{db.path}-wal")
    except FileNotFoundError:
        return 0


class QueueCollector:
    """Queue-wide gauges, read from the database at each scrape.

    One consistent snapshot (:meth:`prismq.queue.QueueClient.stats`) per scrape. When the
    database cannot be read, only ``prismq_queue_database_up 0`` is reported (and the
    error logged), so an alert can fire on it.

    Args:
        db: The queue database.
        stale_after: Seconds without a heartbeat after which a worker counts as stale.
    """

    def __init__(self, db: QueueDatabase, *, stale_after: float = DEFAULT_STALE_AFTER) -> None:
        if not is_number(stale_after) or not stale_after > 0:
            raise ConfigError(f"stale_after must be a positive number of seconds, got {stale_after!r}")
        self.db = db
        self.stale_after = float(stale_after)

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: registering must not read the database."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Read the database and yield every queue-wide gauge."""
        up = GaugeMetricFamily("prismq_queue_database_up", "1 when the queue database could be read")
        try:
            now = self.db.now()
            stats = self.db.backend.stats(now)
            wal = _wal_bytes(self.db)
        except QueueError as exc:
            logger.error("metrics: cannot read the queue database: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        tasks = GaugeMetricFamily(
            "prismq_queue_tasks",
            "Tasks in the database by task type and status",
            labels=["task_type", "status"],
        )
        for task_type in sorted(stats.by_type):
            counts = stats.by_type[task_type]
            for status in TaskStatus:
                tasks.add_metric([task_type, status.value], counts.get(status.value, 0))
        yield tasks
        yield GaugeMetricFamily(
            "prismq_queue_ready_tasks", "Queued tasks whose run_after has passed", stats.ready
        )
        yield GaugeMetricFamily(
            "prismq_queue_delayed_tasks", "Queued tasks waiting for their run_after", stats.delayed
        )
        yield GaugeMetricFamily(
            "prismq_queue_oldest_ready_age_seconds",
            "Seconds the oldest ready task has waited (0 when none is ready)",
            stats.oldest_ready_age or 0.0,
        )
        yield GaugeMetricFamily(
            "prismq_queue_expired_leases",
            "Leased tasks whose lease ran out (their worker is gone; reclaimed at the next claim)",
            stats.expired_leases,
        )
        workers = GaugeMetricFamily(
            "prismq_queue_workers",
            "Registered workers, alive or stale (silent past stale_after)",
            labels=["state"],
        )
        ages = GaugeMetricFamily(
            "prismq_queue_worker_heartbeat_age_seconds",
            "Seconds since each registered worker's last heartbeat",
            labels=["worker_id", "hostname"],
        )
        alive = stale = 0
        for worker in stats.workers:
            age = max(now - worker.last_heartbeat.astimezone(timezone.utc).timestamp(), 0.0)
            ages.add_metric([worker.worker_id, worker.hostname], age)
            if age > self.stale_after:
                stale += 1
            else:
                alive += 1
        workers.add_metric(["alive"], alive)
        workers.add_metric(["stale"], stale)
        yield workers
        yield ages
        if wal is not None:
            yield GaugeMetricFamily(
                "prismq_queue_sqlite_wal_bytes", "Size of the SQLite -wal file in bytes", wal
            )


class WorkerMetrics:
    """The worker counters and histograms of one process.

    Counted by :class:`MetricsObserver`. In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
    set before the process imported prometheus_client) the values go to that folder, and
    whoever serves the folder reports their sum over every process.

    Args:
        registry: Where to register them (default: a registry of their own).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)

        def counter(name: str, text: str) -> Counter:
            return Counter(name, text, ["task_type"], registry=self.registry)

        self.started = counter("prismq_queue_tasks_started", "Attempts started by workers")
        self.completed = counter("prismq_queue_tasks_completed", "Tasks completed by workers")
        self.failed = counter(
            "prismq_queue_tasks_failed", "Failed attempts (the handler raised or timed out), retried or not"
        )
        self.retried = counter("prismq_queue_tasks_retried", "Failed attempts whose task was queued again")
        self.dead = counter("prismq_queue_tasks_dead", "Tasks that failed for good")
        self.cancelled = counter("prismq_queue_tasks_cancelled", "Tasks cancelled on request while running")
        self.released = counter("prismq_queue_tasks_released", "Tasks given back unfinished at shutdown")
        self.lease_losses = counter(
            "prismq_queue_lease_losses", "Attempts whose lease was lost (the outcome was discarded)"
        )
        self.timeouts = counter(
            "prismq_queue_task_timeouts", "Attempts failed for running past their timeout"
        )
        self.wait = Histogram(
            "prismq_queue_task_wait_seconds",
            "Enqueue to start: seconds from when a task became ready (enqueued, or its run_after) "
            "to its claim",
            ["task_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.run_time = Histogram(
            "prismq_queue_task_run_seconds",
            "Seconds from the start of an attempt to its outcome",
            ["task_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.running = Gauge(
            "prismq_queue_worker_tasks_running",
            "Attempts running now in live worker processes",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def observer(self) -> MetricsObserver:
        """A task observer counting into these metrics (pass it as the runner's ``observer``)."""
        return MetricsObserver(self)


class _Attempt(TaskObservation):
    __slots__ = ("metrics", "started", "task_type")

    def __init__(self, metrics: WorkerMetrics, task_type: str) -> None:
        self.metrics = metrics
        self.task_type = task_type
        self.started = time.monotonic()

    def finished(self, outcome: TaskOutcome, error: BaseException | None = None) -> None:
        m = self.metrics
        m.running.dec()
        m.run_time.labels(self.task_type).observe(time.monotonic() - self.started)
        counter = {
            TaskOutcome.COMPLETED: m.completed,
            TaskOutcome.RETRIED: m.retried,
            TaskOutcome.DEAD: m.dead,
            TaskOutcome.CANCELLED: m.cancelled,
            TaskOutcome.RELEASED: m.released,
            TaskOutcome.LEASE_LOST: m.lease_losses,
        }.get(outcome)
        if counter is not None:
            counter.labels(self.task_type).inc()
        if outcome in (TaskOutcome.RETRIED, TaskOutcome.DEAD):
            m.failed.labels(self.task_type).inc()
            from ..runtime.runner import TaskTimeoutError

            if isinstance(error, TaskTimeoutError):
                m.timeouts.labels(self.task_type).inc()


class MetricsObserver(TaskObserver):
    """Counts every attempt into :class:`WorkerMetrics`.

    Args:
        metrics: Where to count (default: this process's :func:`worker_metrics`).
    """

    def __init__(self, metrics: WorkerMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else worker_metrics()

    def task_started(self, task: Task, worker_id: str) -> TaskObservation:
        """Count the start and its wait since the task became ready."""
        m = self.metrics
        m.started.labels(task.task_type).inc()
        m.running.inc()
        if task.started_at is not None:
            waited = (task.started_at - max(task.run_after, task.created_at)).total_seconds()
            m.wait.labels(task.task_type).observe(max(waited, 0.0))
        return _Attempt(m, task.task_type)


_process_metrics: WorkerMetrics | None = None
_process_lock = threading.Lock()


def worker_metrics() -> WorkerMetrics:
    """This process's worker metrics, created on first use."""
    global _process_metrics
    with _process_lock:
        if _process_metrics is None:
            _process_metrics = WorkerMetrics()
        return _process_metrics


def metrics_registry(db: QueueDatabase, *, stale_after: float = DEFAULT_STALE_AFTER) -> CollectorRegistry:
    """A registry holding the queue-wide gauges and the worker metrics.

    The worker metrics are those of every process writing to ``PROMETHEUS_MULTIPROC_DIR``
    when it is set, else those of this process (once :func:`worker_metrics` exists).

    Args:
        db: The queue database the gauges are read from.
        stale_after: Seconds without a heartbeat after which a worker counts as stale.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(db, stale_after=stale_after))
    folder = os.environ.get(MULTIPROCESS_ENV)
    if folder:
        MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ProcessMetrics())
    return registry


class _ProcessMetrics:
    """Relays this process's worker metrics, once they exist, into an exposition registry."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        current = _process_metrics
        return iter(()) if current is None else iter(current.registry.collect())


def metrics_exposition(db: QueueDatabase, *, stale_after: float = DEFAULT_STALE_AFTER) -> tuple[bytes, str]:
    """Every metric in the Prometheus text format, ready to serve at ``/metrics``.

    Args:
        db: The queue database the gauges are read from.
        stale_after: Seconds without a heartbeat after which a worker counts as stale.

    Returns:
        The body and its ``Content-Type``.
    """
    return generate_latest(metrics_registry(db, stale_after=stale_after)), CONTENT_TYPE_LATEST


class MetricsServer:
    """A running ``/metrics`` HTTP endpoint (see :func:`serve_metrics`).

    Attributes:
        host: The address it listens on.
        port: The port it listens on (the real one when 0 was asked for).
    """

    def __init__(self, server: Any, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = server.server_port

    @property
    def url(self) -> str:
        """The metrics URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and wait for the server thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(
    db: QueueDatabase,
    port: int,
    host: str = "127.0.0.1",
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
) -> MetricsServer:
    """Serve :func:`metrics_registry` over HTTP on a background thread.

    Args:
        db: The queue database the gauges are read from (its connections are per
            thread, so it may be the one the worker uses).
        port: TCP port (0 picks a free one; read it from the result).
        host: Address to bind; the loopback interface by default.
        stale_after: Seconds without a heartbeat after which a worker counts as stale.

    Raises:
        ConfigError: The port is out of range or cannot be bound.
    """
    if not is_int(port) or not 0 <= port <= 65535:
        raise ConfigError(f"metrics port must be an integer from 0 to 65535, got {port!r}")
    registry = metrics_registry(db, stale_after=stale_after)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    return MetricsServer(server, thread, host)
