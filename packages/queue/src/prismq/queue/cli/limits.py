"""``prismq-queue limits``: list, set and remove concurrency and rate limits."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.table import Table

from ..client import QueueClient
from ..database import QueueDatabase
from . import output

__all__ = ["add_limits_parser", "cmd_limits"]


def add_limits_parser(
    command: Callable[..., argparse.ArgumentParser], duration: Callable[[str], float]
) -> None:
    """Add the ``limits`` command and its subcommands.

    Args:
        command: The CLI's factory of subcommand parsers (name, help text).
        duration: The parser of durations such as ``30s`` or ``5m``.
    """
    p = command(
        "limits", "list, set and remove concurrency and rate limits (flow control)", json_output=False
    )
    actions = p.add_subparsers(dest="limits_action", metavar="ACTION", required=True)

    def scoped(name: str, help_text: str) -> argparse.ArgumentParser:
        q = actions.add_parser(name, help=help_text, description=help_text)
        q.add_argument("--type", dest="task_type", help="the task type covered (default: every type)")
        q.add_argument("--key", help="the concurrency key covered (default: every key)")
        q.add_argument("--json", action="store_true", help="print JSON for scripts")
        return q

    text = "every limit, with the tasks leased and the claims in its period now"
    q = actions.add_parser("list", help=text, description=text)
    q.add_argument("--json", action="store_true", help="print JSON for scripts")
    q = scoped("set-concurrency", "allow at most N tasks of a scope leased at once")
    q.add_argument("limit", type=int, help="most tasks leased at once (1 to 1000000)")
    q = scoped("set-rate", "allow at most N claims of a scope's tasks per period")
    q.add_argument("limit", type=int, help="most claims per period (1 to 1000000)")
    q.add_argument("period", type=duration, help="the window, e.g. 1s, 1m")
    q = scoped("remove", "remove a scope's concurrency or rate limit")
    q.add_argument("kind", choices=["concurrency", "rate"], help="which limit of the scope to remove")


def _limits_rows(db: QueueDatabase) -> list[dict[str, Any]]:
    client = QueueClient(db)
    usage = client.limit_usage()
    rows = []
    for limit in client.list_limits():
        leased, started = usage.get((limit.task_type, limit.key), (0, 0))
        rows.append(
            {
                "task_type": limit.task_type or None,
                "key": limit.key or None,
                "max_leased": limit.max_leased,
                "leased": leased if limit.max_leased is not None else None,
                "max_starts": limit.max_starts,
                "period": limit.period,
                "started_in_period": started if limit.max_starts is not None else None,
            }
        )
    return rows


def cmd_limits(args: argparse.Namespace, db: QueueDatabase) -> int:
    """Run ``prismq-queue limits ACTION`` on an open database."""
    client = QueueClient(db)
    action = args.limits_action
    if action == "list":
        rows = _limits_rows(db)
        if args.json:
            output.emit_json(rows)
            return 0
        table = Table(title="Flow limits")
        for column in ("type", "key", "concurrency", "rate"):
            table.add_column(column)
        for row in rows:
            concurrency = "" if row["max_leased"] is None else f"{row['leased']} / {row['max_leased']} leased"
            rate = (
                ""
                if row["max_starts"] is None
                else f"{row['started_in_period']} / {row['max_starts']} per {row['period']:g}s"
            )
            table.add_row(row["task_type"] or "(every)", row["key"] or "(every)", concurrency, rate)
        output.console.print(table if rows else "No limits set.")
        return 0
    scope = {"task_type": args.task_type, "key": args.key}
    if action == "set-concurrency":
        client.set_concurrency_limit(args.limit, **scope)
        message = f"At most {args.limit} leased at once"
    elif action == "set-rate":
        client.set_rate_limit(args.limit, args.period, **scope)
        message = f"At most {args.limit} started per {args.period:g}s"
    else:
        removed = (
            client.remove_concurrency_limit(**scope)
            if args.kind == "concurrency"
            else client.remove_rate_limit(**scope)
        )
        message = f"Removed the {args.kind} limit" if removed else f"No {args.kind} limit was set"
    where = f"type {args.task_type or '(every)'}, key {args.key or '(every)'}"
    if args.json:
        output.emit_json({"action": action, "task_type": args.task_type, "key": args.key, "message": message})
    else:
        output.console.print(f"{message}: {where}", markup=False)
    return 0
