"""``prismq-queue pause | resume | paused``: stop and restart claims of a task type."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..client import QueueClient
from ..database import QueueDatabase
from . import output

__all__ = ["COMMANDS", "add_parsers"]


def add_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add the flow-control subcommands through the main parser's ``command`` helper."""
    p = command("pause", "stop every worker from claiming a task type (its tasks keep queueing)")
    p.add_argument("task_type")
    p = command("resume", "let workers claim a paused task type again")
    p.add_argument("task_type")
    command("paused", "list the paused task types")


def _client(args: argparse.Namespace) -> tuple[QueueDatabase, QueueClient]:
    db = QueueDatabase(args.db)
    db.initialize_schema()
    return db, QueueClient(db)


def cmd_pause(args: argparse.Namespace) -> int:
    db, client = _client(args)
    with db:
        changed = client.pause(args.task_type)
    if args.json:
        output.emit_json({"task_type": args.task_type, "paused": True, "changed": changed})
    else:
        state = "paused" if changed else "was already paused"
        output.console.print(f"{args.task_type} {state}: its tasks stay queued until 'resume'", markup=False)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    db, client = _client(args)
    with db:
        changed = client.resume(args.task_type)
    if args.json:
        output.emit_json({"task_type": args.task_type, "paused": False, "changed": changed})
    else:
        state = "resumed" if changed else "was not paused"
        output.console.print(f"{args.task_type} {state}", markup=False)
    return 0


def cmd_paused(args: argparse.Namespace) -> int:
    db, client = _client(args)
    with db:
        paused = client.paused()
    if args.json:
        output.emit_json([{"task_type": t, "paused_at": at.isoformat()} for t, at in paused.items()])
    elif not paused:
        output.console.print("No task type is paused.")
    else:
        for task_type, at in paused.items():
            output.console.print(f"{task_type}  paused since {at:%Y-%m-%d %H:%M:%S} UTC", markup=False)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "pause": cmd_pause,
    "resume": cmd_resume,
    "paused": cmd_paused,
}
