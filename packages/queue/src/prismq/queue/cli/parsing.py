"""Argument parsing for ``prismq-queue``: one clear line and exit code 2 on bad usage."""

from __future__ import annotations

import argparse
from typing import NoReturn

from ..backends.base import CHECKPOINT_MODES
from ..errors import ConfigError, ValidationError
from ..flow import validate_period
from ..strategies import resolve_strategy
from . import dashboard, flow, schedules
from .observability import add_observability_arguments
from .values import UsageError, parse_duration, parse_json

__all__ = ["UsageError", "build_parser", "parse_duration", "parse_json", "parse_weights"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def parse_weights(text: str) -> tuple[tuple[str, float], ...]:
    """``a=3,b=1`` to weight pairs."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not name or weight < 0:
            raise argparse.ArgumentTypeError(f"{part!r} is not TYPE=WEIGHT with a weight >= 0")
        pairs.append((name.strip(), weight))
    return tuple(pairs)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _unique_period(text: str) -> float:
    """A duration that :class:`~prismq.queue.flow.Unique` takes as its period."""
    seconds = parse_duration(text)
    try:
        return validate_period(seconds)
    except ValidationError:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 1ms to 366d") from None


def _task_types(text: str) -> tuple[str, ...]:
    types = tuple(t.strip() for t in text.split(",") if t.strip())
    if not types:
        raise argparse.ArgumentTypeError("give at least one task type, e.g. --task-types email,report")
    return types


def _strategy(text: str) -> str:
    """A strategy name or alias, as :func:`~prismq.queue.strategies.resolve_strategy` takes it."""
    try:
        return resolve_strategy(text).name
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every subcommand."""
    parser = _Parser(prog="prismq-queue", description="PrismQ Queue: a durable task queue on SQLite.")
    parser.add_argument(
        "--db", help="database path or URL (default: PRISMQ_QUEUE_DB_PATH or the platform default)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str, json_output: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if json_output:
            p.add_argument("--json", action="store_true", help="print JSON for scripts")
        return p

    command("init", "create or migrate the queue database")

    p = command("enqueue", "add a task")
    p.add_argument("task_type", help="the task type, e.g. send_email")
    p.add_argument("payload", nargs="?", help="JSON payload, or - to read it from stdin")
    p.add_argument("--priority", type=int, default=100, help="0 (most urgent) to 1000; default 100")
    p.add_argument("--delay", type=parse_duration, help="wait before it may run, e.g. 30s, 5m")
    p.add_argument("--max-attempts", type=_positive_int, help="claims allowed before it goes dead")
    p.add_argument("--idempotency-key", help="enqueue at most once per key")
    p.add_argument("--concurrency-key", help="the key its concurrency and rate limits count it by")
    p.add_argument(
        "--unique",
        action="store_true",
        help="add it only if no equal task (same type and payload) is pending; else print that one's id",
    )
    p.add_argument("--unique-key", metavar="KEY", help="unique by this key instead (implies --unique)")
    p.add_argument(
        "--unique-period",
        type=_unique_period,
        metavar="DURATION",
        help="with --unique: only equal tasks created this recently count, e.g. 10m (default: any age)",
    )
    p.add_argument(
        "--unique-states",
        choices=("queued", "active"),
        help="with --unique: equal tasks that are queued (default), or queued or running (active)",
    )
    p.add_argument(
        "--on-duplicate",
        choices=("return", "raise"),
        help="with --unique: print the equal task's id (return, default) or fail with exit 1 (raise)",
    )

    p = command(
        "worker", "run workers until stopped (Ctrl+C finishes running tasks first)", json_output=False
    )
    p.add_argument("--handlers", help="handler registry, module:attribute (default attribute: registry)")
    p.add_argument("--config", help="worker config file (.toml, .json, .yaml)")
    p.add_argument(
        "--strategy",
        type=_strategy,
        metavar="{fifo,lifo,priority,weighted_random}",
        help="default fifo; weighted and weighted-random mean weighted_random",
    )
    p.add_argument("--weights", type=parse_weights, help="weighted_random weights, e.g. email=3,report=1")
    p.add_argument("--task-types", type=_task_types, help="claim only these types, comma-separated")
    p.add_argument("--concurrency", type=_positive_int, help="tasks at once per process (default 1)")
    p.add_argument(
        "--processes", type=_positive_int, help="worker processes (default: PRISMQ_QUEUE_MAX_WORKERS, else 1)"
    )
    p.add_argument("--lease", type=parse_duration, help="lease duration, e.g. 60s")
    p.add_argument(
        "--timeout",
        type=parse_duration,
        help="per-task timeout (default ten leases); a timed-out sync handler keeps its lease "
        "and slot until its thread returns, so a retry never overlaps it",
    )
    p.add_argument("--grace", type=parse_duration, help="shutdown grace period (default 30s)")
    p.add_argument("--burst", action="store_true", default=None, help="exit when no task is ready")
    p.add_argument("--max-tasks", type=_positive_int, help="exit after this many tasks per process")
    p.add_argument("--worker-id", help="worker id (prefix with several processes)")
    p.add_argument("--batch-size", type=_positive_int, help="outcomes written per transaction (default 100)")
    p.add_argument("--linger", type=parse_duration, help="longest wait of an outcome, e.g. 5ms (default 5ms)")
    p.add_argument("--prefetch", type=_count, help="tasks leased ahead of free slots (default 100)")
    add_observability_arguments(p)

    p = command("stats", "counts by status and type, backlog age, throughput, workers")
    p.add_argument("--type", dest="task_types", type=_task_types, help="show only these task types")

    p = command("list", "list tasks, newest first")
    p.add_argument("--status", action="append", help="filter by status (repeatable)")
    p.add_argument("--type", action="append", dest="task_type", help="filter by task type (repeatable)")
    p.add_argument("--limit", type=_positive_int, default=50, help="tasks per page")
    p.add_argument("--offset", type=int, default=0, help="tasks to skip, for the next page (e.g. 50)")
    p.add_argument("--oldest-first", action="store_true", help="oldest task first")

    for name, help_text in (
        ("show", "show one task"),
        ("retry", "queue a dead or cancelled task again"),
        ("cancel", "cancel a queued or running task"),
    ):
        p = command(name, help_text)
        p.add_argument("task_id", type=int, help="the task's id")

    p = command("prune", "delete finished tasks older than an age")
    p.add_argument("--older-than", type=parse_duration, required=True, help="e.g. 7d, 12h")
    p.add_argument("--status", action="append", help="statuses to delete (default completed, cancelled)")

    p = command("backup", "write an online backup of the database")
    p.add_argument("destination", help="backup file, or an existing folder (a dated name is chosen)")

    p = command("restore", "replace the database's content with a verified backup")
    p.add_argument("source", help="a backup file written by the backup command")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = command("doctor", "check integrity, WAL size, schema, stale leases and workers")
    p.add_argument(
        "--stale-after", type=parse_duration, default=120.0, help="worker silence that counts as stale"
    )

    p = command("checkpoint", "copy the SQLite write-ahead log (-wal file) back into the database file")
    p.add_argument(
        "--mode",
        type=str.upper,
        choices=CHECKPOINT_MODES,
        default="PASSIVE",
        help="PASSIVE (default, never waits), FULL (waits for writers), RESTART (also restarts the "
        "log), TRUNCATE (also shrinks the -wal file to zero bytes)",
    )

    p = command("migrate", "copy every task to another database (SQLite <-> PostgreSQL), verified")
    p.add_argument("--from", dest="source", help="source path or URL (default: --db)")
    p.add_argument("--to", dest="target", required=True, help="target path or URL, e.g. postgresql://host/db")
    p.add_argument(
        "--batch-size", type=_positive_int, default=1000, help="rows per transaction (default 1000)"
    )

    from .limits import add_limits_parser

    add_limits_parser(command, parse_duration)

    p = command(
        "demo", "run a mixed demo workload on a fresh database and show the results", json_output=False
    )
    p.add_argument("--tasks", type=_positive_int, default=600, help="tasks to enqueue (default 600)")
    p.add_argument("--processes", type=_positive_int, default=2, help="worker processes (default 2)")
    p.add_argument("--concurrency", type=_positive_int, default=4, help="tasks at once per process")
    # Commands kept in modules of their own.
    flow.add_parsers(command)
    dashboard.add_parsers(command)
    schedules.register(sub)
    return parser
