"""``prismq-queue worker --metrics-port`` and ``--tracing``: metrics and traces of workers.

One endpoint, whatever ``--processes`` is: with one process the worker serves its own
metrics; with several, each child writes its counters to prometheus_client's
multiprocess files in a temporary folder, and the supervisor serves their sum beside
the queue-wide gauges it reads from the database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace

from ..runtime.settings import WorkerSettings
from . import output

__all__ = ["add_observability_arguments", "run_with_metrics"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 0 to 65535")
    return value


def add_observability_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--metrics-port``, ``--metrics-host`` and ``--tracing`` to the worker command."""
    parser.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs prismq-queue[metrics])",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)"
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        default=None,
        help="an OpenTelemetry span per execution (needs prismq-queue[otel] and a configured SDK)",
    )


@contextlib.contextmanager
def _multiprocess_folder() -> Iterator[str]:
    """A folder for the children's metric files, named in the environment they inherit."""
    from ..observability.metrics import MULTIPROCESS_ENV

    given = os.environ.get(MULTIPROCESS_ENV)
    if given:  # the operator's own folder: use it, leave it
        yield given
        return
    folder = tempfile.mkdtemp(prefix="prismq-queue-metrics-")
    os.environ[MULTIPROCESS_ENV] = folder
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def run_with_metrics(settings: WorkerSettings, port: int, host: str) -> int:
    """Run the workers of ``settings`` and serve their metrics until they stop.

    Args:
        settings: The workers' settings (``metrics`` is turned on).
        port: TCP port of the endpoint (0: any free port; the log line names it).
        host: Address to bind.

    Returns:
        The worker command's exit code.

    Raises:
        ConfigError: prometheus_client is missing, or the port cannot be bound.
    """
    from ..observability.metrics import serve_metrics

    settings = replace(settings, metrics=True)
    db = settings.open_database()
    try:
        if settings.processes > 1:
            from prometheus_client import multiprocess

            from ..runtime.supervisor import ChildExit, Supervisor

            def forget(report: ChildExit) -> None:
                if report.pid is not None:
                    multiprocess.mark_process_dead(report.pid)  # type: ignore[no-untyped-call]

            with _multiprocess_folder():
                server = serve_metrics(db, port, host)
                output.error_console.print(f"metrics: {server.url}", markup=False)
                try:
                    return Supervisor(settings, on_exit=forget).run()
                finally:
                    server.close()
        server = serve_metrics(db, port, host)
        output.error_console.print(f"metrics: {server.url}", markup=False)
        try:
            worker = settings.make_worker(db)
            worker.run(settings.build_registry(), install_signal_handlers=True, **settings.runner_options())
        finally:
            server.close()
    finally:
        db.close()
    return 0
