"""``prismq-queue`` commands."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..client import QueueClient
from ..config import default_db_path
from ..database import QueueDatabase
from ..errors import ConfigError, QueueError, ValidationError
from ..flow import Unique
from ..models import TaskStatus
from ..runtime.logs import configure_logging
from ..runtime.settings import WorkerSettings, resolve_settings
from . import dashboard, flow, output
from .parsing import UsageError, build_parser, parse_json
from .schedules import cmd_schedules

__all__ = ["main"]


def _open(args: argparse.Namespace, initialize: bool = True) -> QueueDatabase:
    db = QueueDatabase(args.db)
    if initialize:
        db.initialize_schema()
    return db


def _now() -> datetime:
    return datetime.now(timezone.utc)


def cmd_init(args: argparse.Namespace) -> int:
    with _open(args, initialize=False) as db:
        version = db.initialize_schema()
        if args.json:
            output.emit_json({"database": db.location, "schema_version": version})
        else:
            output.console.print(f"Queue database ready: {db.location} (schema version {version})")
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    if args.payload == "-":
        payload = parse_json(sys.stdin.read())
    elif args.payload is None:
        payload = None
    else:
        payload = parse_json(args.payload)
    unique = _unique(args)
    with _open(args) as db:
        task_id, created = QueueClient(db).enqueue_outcome(
            args.task_type,
            payload,
            priority=args.priority,
            delay=args.delay,
            max_attempts=args.max_attempts,
            idempotency_key=args.idempotency_key,
            concurrency_key=args.concurrency_key,
            unique=unique,
        )
        if args.json:
            output.emit_json({"id": task_id, "created": created})
        elif created:
            output.console.print(f"Enqueued task {task_id} ({args.task_type})", markup=False)
        else:
            output.console.print(
                f"Existing task {task_id} ({args.task_type}) returned; no new task was enqueued",
                markup=False,
            )
    return 0


def _unique(args: argparse.Namespace) -> Unique | None:
    """The ``--unique*`` and ``--on-duplicate`` options as a :class:`Unique`, if any.

    Raises:
        UsageError: A ``--unique-*`` option without ``--unique`` or ``--unique-key``, or
            with ``--idempotency-key``.
    """
    wanted = args.unique or args.unique_key is not None
    refinements = {
        "--unique-period": args.unique_period,
        "--unique-states": args.unique_states,
        "--on-duplicate": args.on_duplicate,
    }
    if not wanted:
        given = [name for name, value in refinements.items() if value is not None]
        if given:
            raise UsageError(f"prismq-queue enqueue: {given[0]} needs --unique or --unique-key (see --help)")
        return None
    if args.idempotency_key is not None:
        raise UsageError(
            "prismq-queue enqueue: give either --idempotency-key or --unique/--unique-key, "
            "not both (see --help)"
        )
    return Unique(
        key=args.unique_key,
        period=args.unique_period,
        states=args.unique_states or "queued",
        on_duplicate=args.on_duplicate or "return",
    )


def _worker_settings(args: argparse.Namespace) -> WorkerSettings:
    overrides: dict[str, Any] = {
        "database": args.db,
        "registry": args.handlers,
        "strategy": args.strategy,
        "weights": args.weights,
        "task_types": args.task_types,
        "concurrency": args.concurrency,
        "processes": args.processes,
        "lease_duration": args.lease,
        "task_timeout": args.timeout,
        "grace_period": args.grace,
        "burst": args.burst,
        "max_tasks": args.max_tasks,
        "worker_id": args.worker_id,
        "tracing": args.tracing,
        "batch_size": args.batch_size,
        "linger": args.linger,
        "prefetch": args.prefetch,
    }
    return resolve_settings(args.config, overrides)


def cmd_worker(args: argparse.Namespace) -> int:
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")])
        )
    settings = _worker_settings(args)
    if args.metrics_port is not None:
        from .observability import run_with_metrics

        return run_with_metrics(settings, args.metrics_port, args.metrics_host)
    if settings.processes > 1:
        from ..runtime.supervisor import Supervisor

        return Supervisor(settings).run()
    db = settings.open_database()
    try:
        worker = settings.make_worker(db)
        worker.run(settings.build_registry(), install_signal_handlers=True, **settings.runner_options())
    finally:
        db.close()
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as db:
        stats = QueueClient(db).stats()
        now = datetime.fromtimestamp(db.now(), tz=timezone.utc)  # the clock heartbeats are stamped with
    if args.json:
        output.emit_json(output.stats_to_dict(stats))
    else:
        for table in output.stats_tables(stats, now, args.task_types):
            output.console.print(table)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _open(args) as db:
        tasks = QueueClient(db).list(
            status=args.status,
            task_type=args.task_type,
            limit=args.limit,
            offset=args.offset,
            newest_first=not args.oldest_first,
        )
    if args.json:
        output.emit_json([output.task_to_dict(t) for t in tasks])
    else:
        output.console.print(output.tasks_table(tasks))
    return 0


def _single(args: argparse.Namespace, action: Callable[[QueueClient, int], Any], verb: str) -> int:
    with _open(args) as db:
        task = action(QueueClient(db), args.task_id)
    if args.json:
        output.emit_json(output.task_to_dict(task))
    elif verb == "show":
        output.console.print(output.task_table(task))
    else:
        note = (
            " (the worker will stop it at its next heartbeat)"
            if task.cancel_requested and task.status is TaskStatus.LEASED
            else ""
        )
        output.console.print(f"Task {task.id} is now {task.status.value}{note}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    return _single(args, QueueClient.get, "show")


def cmd_retry(args: argparse.Namespace) -> int:
    return _single(args, QueueClient.retry, "retry")


def cmd_cancel(args: argparse.Namespace) -> int:
    return _single(args, QueueClient.cancel, "cancel")


def cmd_prune(args: argparse.Namespace) -> int:
    statuses = args.status or ["completed", "cancelled"]
    with _open(args) as db:
        deleted = QueueClient(db).prune(args.older_than, statuses)
    if args.json:
        output.emit_json({"deleted": deleted, "statuses": statuses, "older_than_seconds": args.older_than})
    else:
        output.console.print(f"Deleted {deleted} finished task(s) ({', '.join(statuses)})")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    destination = Path(args.destination)
    is_folder = False
    with contextlib.suppress(OSError):  # an unusable name is reported by backup() itself
        is_folder = destination.is_dir()
    if is_folder:
        destination = destination / f"queue-{_now().strftime('%Y%m%d-%H%M%S')}.db"
    with _open(args) as db:
        written = db.backup(destination)
    if args.json:
        output.emit_json({"backup": str(written), "bytes": written.stat().st_size})
    else:
        output.console.print(f"Backup written: {written} ({written.stat().st_size:,} bytes)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("restore replaces every task in the database; pass --yes to confirm")
        answer = input(f"Replace the content of the queue database with {args.source}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            output.console.print("Nothing was restored.")
            return 1
    with _open(args) as db:
        db.restore(args.source)
        counts = QueueClient(db).count_by_status()
    if args.json:
        output.emit_json({"restored_from": args.source, "by_status": counts})
    else:
        output.console.print(f"Restored from {args.source}: {sum(counts.values())} task(s)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    with _open(args, initialize=False) as db:
        report = run_doctor(db, stale_after=args.stale_after)
    if args.json:
        output.emit_json(report)
    else:
        output.console.print(output.doctor_table(report))
    return 0 if report["healthy"] else 1


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from .doctor import wal_bytes

    with _open(args, initialize=False) as db:
        if db.path is None:
            detail = (
                "the database server checkpoints its write-ahead log by itself (on PostgreSQL: "
                "checkpoint_timeout, max_wal_size); there is nothing for the queue to do"
            )
            if args.json:
                output.emit_json(
                    {"database": db.location, "backend": db.backend_name, "applies": False, "detail": detail}
                )
            else:
                output.console.print(f"No checkpoint needed: {detail}.")
            return 0
        before = wal_bytes(db)
        busy, log_frames, copied = db.checkpoint(args.mode)
        after = wal_bytes(db)
    if args.json:
        output.emit_json(
            {
                "database": db.location,
                "backend": db.backend_name,
                "applies": True,
                "mode": args.mode,
                "busy": bool(busy),
                "log_frames": log_frames,
                "checkpointed_frames": copied,
                "wal_bytes_before": before,
                "wal_bytes_after": after,
            }
        )
    else:
        output.console.print(
            f"Checkpoint {args.mode}: {copied} of {log_frames} WAL frame(s) copied into {db.location}; "
            f"-wal file {before:,} -> {after:,} bytes"
        )
        if busy:
            output.console.print(
                "Not complete: a reader or writer held it back. Run it again at a quiet moment, "
                "and look for long-open read transactions."
            )
    return 1 if busy else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..migrate import migrate

    with QueueDatabase(args.source or args.db) as source, QueueDatabase(args.target) as target:
        source.initialize_schema()
        progress = Progress(
            TextColumn("[bold]Copying tasks"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=output.error_console if args.json else output.console,
            disable=args.json,
        )
        with progress:
            bar = progress.add_task("copy", total=None)
            report = migrate(
                source,
                target,
                batch_size=args.batch_size,
                progress=lambda done, total: progress.update(bar, completed=done, total=total),
            )
    if args.json:
        output.emit_json(
            {
                "source": report.source,
                "target": report.target,
                "tasks_copied": report.tasks_copied,
                "by_status": report.by_status,
                "leases_requeued": report.leases_requeued,
                "runs_copied": report.runs_copied,
                "runs_active": report.runs_active,
                "schedules_copied": report.schedules_copied,
                "limits_copied": report.limits_copied,
                "checksum": report.checksum,
                "verified": report.verified,
                "seconds": round(report.seconds, 3),
            }
        )
    else:
        output.console.print(report.summary())
    return 0 if report.verified else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if not args.debug:
        logging.getLogger().setLevel(logging.WARNING)
    return run_demo(args.db, tasks=args.tasks, processes=args.processes, concurrency=args.concurrency)


def cmd_limits(args: argparse.Namespace) -> int:
    from .limits import cmd_limits as run_limits

    with _open(args) as db:
        return run_limits(args, db)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": cmd_init,
    "enqueue": cmd_enqueue,
    "worker": cmd_worker,
    "stats": cmd_stats,
    "list": cmd_list,
    "show": cmd_show,
    "retry": cmd_retry,
    "cancel": cmd_cancel,
    "prune": cmd_prune,
    "backup": cmd_backup,
    "restore": cmd_restore,
    "doctor": cmd_doctor,
    "checkpoint": cmd_checkpoint,
    "migrate": cmd_migrate,
    "demo": cmd_demo,
    "limits": cmd_limits,
    "schedules": cmd_schedules,
}
COMMANDS.update(flow.COMMANDS)
COMMANDS.update(dashboard.COMMANDS)


def _one_line(text: str) -> str:
    """``text`` with control characters, line breaks and lone surrogates escaped.

    Error messages echo what the user typed; a newline (or NEL, U+2028...) in an argument
    must not split the one-line error, and a lone surrogate must not break the output.
    """
    return "".join(
        ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")
        else ch
        for ch in text
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``prismq-queue`` with ``argv`` (``sys.argv[1:]`` by default); return the exit code."""
    parser = build_parser()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        if args.version:
            output.console.print(f"prismq-queue {__version__}")
            return 0
        if not args.command:
            raise UsageError("prismq-queue: choose a command, e.g. 'prismq-queue demo' (see --help)")
        configure_logging(logging.DEBUG if args.debug else logging.INFO)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        output.error_console.print(_one_line(f"error: {exc}"), markup=False)
        return 2
    except (ValidationError, ConfigError) as exc:
        if debug:
            traceback.print_exc()
        output.error_console.print(_one_line(f"error: {exc}"), markup=False)
        return 2
    except QueueError as exc:
        if debug:
            traceback.print_exc()
        output.error_console.print(_one_line(f"error: {type(exc).__name__}: {exc}"), markup=False)
        return 1
    except KeyboardInterrupt:
        output.error_console.print("interrupted", markup=False)
        return 130


def default_location() -> str:
    """Where the CLI's database is when ``--db`` is not given."""
    return str(default_db_path())
