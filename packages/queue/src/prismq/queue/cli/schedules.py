"""``prismq-queue schedules``: list, add, pause, resume, remove and run periodic schedules now.

Each subcommand opens the queue database, acts through
:class:`~prismq.queue.schedules.Schedules`, and prints a table or line for people, or JSON
with ``--json``. Bad cron expressions, time zones and misfire settings end with one
``error:`` line and exit code 2, an unknown schedule name with exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from rich.table import Table

from ..database import QueueDatabase
from ..models import DEFAULT_PRIORITY
from ..schedules import MISFIRE_POLICIES, Schedule, Schedules
from . import output
from .values import UsageError, parse_duration, parse_json

__all__ = ["cmd_schedules", "register", "schedule_to_dict"]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    """A schedule as JSON-ready data (times in ISO 8601, UTC)."""
    d = schedule.definition
    return {
        "name": d.name,
        "cron": d.cron,
        "timezone": d.timezone,
        "task_type": d.task_type,
        "payload": d.payload,
        "priority": d.priority,
        "max_attempts": d.max_attempts,
        "misfire": d.misfire,
        "max_backfill": d.max_backfill,
        "grace": d.grace,
        "source": d.source,
        "paused": schedule.paused,
        "next_run": _iso(schedule.next_run),
        "last_run": _iso(schedule.last_run),
        "last_task_id": schedule.last_task_id,
        "created_at": _iso(schedule.created_at),
        "updated_at": _iso(schedule.updated_at),
    }


def _misfire_text(schedule: Schedule) -> str:
    d = schedule.definition
    if d.misfire == "backfill":
        return f"backfill {d.max_backfill}"
    if d.misfire == "skip":
        return f"skip (grace {d.grace:g}s)"
    return d.misfire


def _table(schedules: list[Schedule]) -> Table:
    table = Table(title="Schedules", title_justify="left")
    columns = ["Name", "Cron", "Time zone", "Task type", "Misfire", "State"]
    for column in [*columns, "Next run (UTC)", "Last run", "Source"]:
        table.add_column(column)
    for s in schedules:
        d = s.definition
        table.add_row(
            d.name,
            d.cron,
            d.timezone,
            d.task_type,
            _misfire_text(s),
            "paused" if s.paused else "running",
            "-" if s.paused else s.next_run.strftime("%Y-%m-%d %H:%M:%S"),
            "-" if s.last_run is None else s.last_run.strftime("%Y-%m-%d %H:%M:%S"),
            d.source,
        )
    return table


def register(sub: Any) -> None:
    """Add the ``schedules`` command and its subcommands to the CLI's subparsers."""
    p = sub.add_parser(
        "schedules",
        help="periodic schedules: list, add, pause, resume, remove, run-now",
        description="Periodic schedules: each tick of a cron expression enqueues one task.",
    )
    actions = p.add_subparsers(dest="schedules_command", metavar="ACTION", parser_class=type(p))

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        a.add_argument("--json", action="store_true", help="print JSON for scripts")
        return a

    action("list", "list every schedule with its next and last run")
    a = action("add", "add a schedule (its first tick is the first after now)")
    a.add_argument("name", help="unique schedule name")
    a.add_argument("cron", help="cron expression, e.g. '*/5 * * * *' (quote it)")
    a.add_argument("task_type", help="type of the task each tick enqueues")
    a.add_argument("payload", nargs="?", help="JSON payload of that task")
    a.add_argument("--timezone", default="UTC", help="IANA time zone of the expression (default UTC)")
    a.add_argument("--misfire", choices=MISFIRE_POLICIES, default="run_once", help="default run_once")
    a.add_argument("--max-backfill", type=int, default=10, help="with backfill: most missed ticks enqueued")
    a.add_argument("--grace", type=parse_duration, default=60.0, help="with skip: lateness allowed (60s)")
    a.add_argument("--priority", type=int, default=DEFAULT_PRIORITY, help="0 (most urgent) to 1000")
    a.add_argument("--max-attempts", type=int, default=3, help="claims allowed per task (default 3)")
    a.add_argument("--replace", action="store_true", help="overwrite a schedule of the same name")
    for name, help_text in (
        ("pause", "stop enqueuing a schedule's ticks, on every worker"),
        ("resume", "enqueue a paused schedule's ticks again, from the next one"),
        ("remove", "delete a schedule (its tasks stay)"),
        ("run-now", "enqueue one task of a schedule now, outside its ticks"),
    ):
        action(name, help_text).add_argument("name", help="the schedule's name")


def cmd_schedules(args: argparse.Namespace) -> int:
    """Run ``prismq-queue schedules ACTION``."""
    verb = getattr(args, "schedules_command", None)
    if not verb:
        raise UsageError(
            "prismq-queue schedules: choose an action: list, add, pause, resume, remove, run-now"
        )
    payload = None
    if verb == "add" and args.payload is not None:
        payload = parse_json(sys.stdin.read() if args.payload == "-" else args.payload)
    with QueueDatabase(args.db) as db:
        db.initialize_schema()
        schedules = Schedules(db)
        if verb == "list":
            found = schedules.list()
            if args.json:
                output.emit_json([schedule_to_dict(s) for s in found])
            elif found:
                output.console.print(_table(found))
            else:
                output.console.print("No schedules.")
            return 0
        if verb == "run-now":
            task_id = schedules.run_now(args.name)
            if args.json:
                output.emit_json({"name": args.name, "task_id": task_id})
            else:
                output.console.print(f"Enqueued task {task_id} for schedule {args.name}", markup=False)
            return 0
        if verb == "remove":
            schedules.remove(args.name)
            if args.json:
                output.emit_json({"name": args.name, "removed": True})
            else:
                output.console.print(f"Removed schedule {args.name}", markup=False)
            return 0
        if verb == "add":
            schedule = schedules.add(
                args.name,
                args.cron,
                args.task_type,
                payload,
                timezone=args.timezone,
                misfire=args.misfire,
                max_backfill=args.max_backfill,
                grace=args.grace,
                priority=args.priority,
                max_attempts=args.max_attempts,
                replace=args.replace,
            )
            line = f"Added schedule {schedule.name}; next run {schedule.next_run.isoformat()}"
        elif verb == "pause":
            schedule = schedules.pause(args.name)
            line = f"Paused schedule {schedule.name}"
        else:
            schedule = schedules.resume(args.name)
            line = f"Resumed schedule {schedule.name}; next run {schedule.next_run.isoformat()}"
    if args.json:
        output.emit_json(schedule_to_dict(schedule))
    else:
        output.console.print(line, markup=False)
    return 0
