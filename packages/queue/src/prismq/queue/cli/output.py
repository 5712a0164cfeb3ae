"""Rendering for the CLI: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from ..backends.base import QueueStats
from ..models import Task, TaskStatus, WorkerInfo

__all__ = [
    "console",
    "doctor_table",
    "emit_json",
    "stats_tables",
    "stats_to_dict",
    "task_table",
    "task_to_dict",
    "tasks_table",
]

console = Console(highlight=False, soft_wrap=True)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def task_to_dict(task: Task) -> dict[str, Any]:
    """A task as JSON-ready data (times in ISO 8601, UTC)."""
    return {
        "id": task.id,
        "task_type": task.task_type,
        "status": task.status.value,
        "priority": task.priority,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "payload": task.payload,
        "result": task.result,
        "progress": task.progress,
        "progress_message": task.progress_message,
        "last_error": task.last_error,
        "idempotency_key": task.idempotency_key,
        "locked_by": task.locked_by,
        "cancel_requested": task.cancel_requested,
        "run_after": _iso(task.run_after),
        "lease_until": _iso(task.lease_until),
        "created_at": _iso(task.created_at),
        "started_at": _iso(task.started_at),
        "finished_at": _iso(task.finished_at),
    }


def worker_to_dict(worker: WorkerInfo) -> dict[str, Any]:
    """A worker registry entry as JSON-ready data."""
    return {
        "worker_id": worker.worker_id,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "task_types": None if worker.task_types is None else list(worker.task_types),
        "strategy": worker.strategy,
        "started_at": _iso(worker.started_at),
        "last_heartbeat": _iso(worker.last_heartbeat),
    }


def stats_to_dict(stats: QueueStats) -> dict[str, Any]:
    """Queue statistics as JSON-ready data."""
    return {
        "total": stats.total,
        "by_status": stats.by_status,
        "by_type": stats.by_type,
        "ready": stats.ready,
        "delayed": stats.delayed,
        "oldest_ready_age_seconds": stats.oldest_ready_age,
        "expired_leases": stats.expired_leases,
        "finished_last_minute": stats.finished_last_minute,
        "finished_last_5_minutes": stats.finished_last_5_minutes,
        "throughput_per_second_1m": round(stats.finished_last_minute / 60.0, 3),
        "throughput_per_second_5m": round(stats.finished_last_5_minutes / 300.0, 3),
        "workers": [worker_to_dict(w) for w in stats.workers],
    }


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def stats_tables(stats: QueueStats, now: datetime, type_filter: tuple[str, ...] | None = None) -> list[Table]:
    """Tables for ``stats``: totals, per type, workers."""
    statuses = [s.value for s in TaskStatus]
    overview = Table(title="Queue", show_header=True)
    overview.add_column("Measure")
    overview.add_column("Value", justify="right")
    for status in statuses:
        overview.add_row(status, str(stats.by_status.get(status, 0)))
    overview.add_row("ready now", str(stats.ready))
    overview.add_row("delayed", str(stats.delayed))
    overview.add_row("oldest ready task waits", _age(stats.oldest_ready_age))
    overview.add_row("expired leases", str(stats.expired_leases))
    overview.add_row(
        "finished, last minute", f"{stats.finished_last_minute} ({stats.finished_last_minute / 60:.1f}/s)"
    )
    overview.add_row(
        "finished, last 5 minutes",
        f"{stats.finished_last_5_minutes} ({stats.finished_last_5_minutes / 300:.1f}/s)",
    )
    by_type = Table(title="By task type")
    by_type.add_column("Task type")
    for status in statuses:
        by_type.add_column(status, justify="right")
    for task_type in sorted(stats.by_type):
        if type_filter is not None and task_type not in type_filter:
            continue
        counts = stats.by_type[task_type]
        by_type.add_row(task_type, *(str(counts.get(s, 0)) for s in statuses))
    tables = [overview, by_type]
    if stats.workers:
        workers = Table(title="Workers")
        for column in ("Worker", "Host", "PID", "Strategy", "Types", "Last heartbeat"):
            workers.add_column(column)
        for w in stats.workers:
            workers.add_row(
                w.worker_id,
                w.hostname,
                str(w.pid),
                w.strategy,
                "all" if w.task_types is None else ",".join(w.task_types),
                f"{_age((now - w.last_heartbeat).total_seconds())} ago",
            )
        tables.append(workers)
    return tables


def tasks_table(tasks: list[Task]) -> Table:
    """A one-line-per-task table for ``list``."""
    table = Table(title=f"{len(tasks)} task(s)")
    for column in ("ID", "Type", "Status", "Priority", "Attempts", "Progress", "Created", "Last error"):
        table.add_column(column)
    for t in tasks:
        table.add_row(
            str(t.id),
            t.task_type,
            t.status.value,
            str(t.priority),
            f"{t.attempts}/{t.max_attempts}",
            "-" if t.progress is None else f"{t.progress:.0f}%",
            t.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            (t.last_error or "")[:60],
        )
    return table


def task_table(task: Task) -> Table:
    """Every field of one task, for ``show``."""
    table = Table(title=f"Task {task.id}", show_header=False)
    table.add_column("Field")
    table.add_column("Value", overflow="fold")
    for key, value in task_to_dict(task).items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value
        table.add_row(key, "-" if shown is None else str(shown))
    if task.last_traceback:
        table.add_row("last_traceback", task.last_traceback)
    return table


def doctor_table(report: dict[str, Any]) -> Table:
    """The doctor's checks as a table."""
    table = Table(title=f"Doctor: {report['database']}")
    table.add_column("Check")
    table.add_column("Status")
    table.add_column("Detail", overflow="fold")
    colours = {"ok": "green", "warn": "yellow", "fail": "red"}
    for check in report["checks"]:
        status = check["status"]
        table.add_row(check["check"], f"[{colours[status]}]{status}[/]", check["detail"])
    return table
