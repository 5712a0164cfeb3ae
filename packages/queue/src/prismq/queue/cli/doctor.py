"""``prismq-queue doctor``: health checks an operator can act on."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from ..client import QueueClient
from ..database import QueueDatabase
from ..errors import QueueError

__all__ = ["CHECKPOINT_COMMAND", "WAL_WARN_BYTES", "run_doctor", "wal_bytes"]

WAL_WARN_BYTES = 64 * 1024 * 1024
"""A WAL file above this size means checkpoints cannot keep up (a long reader?)."""

CHECKPOINT_COMMAND = "prismq-queue checkpoint --mode TRUNCATE"
"""The command the WAL advice names (a test parses it with the CLI's own parser)."""


def wal_bytes(db: QueueDatabase) -> int:
    """Size of the SQLite database's ``-wal`` file (0 when absent or not SQLite)."""
    if db.path is None:
        return 0
    try:
        return os.path.getsize(f"{db.path}-wal")
    except FileNotFoundError:
        return 0


def _check(name: str, status: str, detail: str) -> dict[str, str]:
    return {"check": name, "status": status, "detail": detail}


def run_doctor(db: QueueDatabase, stale_after: float = 120.0) -> dict[str, Any]:
    """Run every check; each is ``ok``, ``warn`` or ``fail`` with a detail saying what to do.

    Returns:
        ``{"database": ..., "healthy": bool, "checks": [...]}``; healthy means no ``fail``.
    """
    checks: list[dict[str, str]] = []
    version = db.schema_version()
    latest = db.backend.latest_schema_version
    if version == 0:
        checks.append(_check("schema", "fail", "not initialised; run 'prismq-queue init'"))
    elif version < latest:
        checks.append(
            _check(
                "schema", "warn", f"version {version}, this release writes {latest}; run 'prismq-queue init'"
            )
        )
    else:
        checks.append(_check("schema", "ok", f"version {version}"))
    try:
        problems = db.integrity_check()
    except QueueError as exc:
        problems = [str(exc)]
    if problems == ["ok"]:
        checks.append(_check("integrity", "ok", "integrity_check passed"))
    else:
        checks.append(_check("integrity", "fail", "; ".join(problems[:5]) + " — restore the latest backup"))
    if db.path is not None:
        mode = db.backend.journal_mode
        checks.append(
            _check(
                "journal mode",
                "ok" if mode == "wal" else "warn",
                mode if mode == "wal" else f"{mode}: WAL is off, readers will block the writer",
            )
        )
        wal_size = wal_bytes(db)
        checks.append(
            _check(
                "WAL size",
                "warn" if wal_size > WAL_WARN_BYTES else "ok",
                f"{wal_size:,} bytes"
                + (
                    f" — run '{CHECKPOINT_COMMAND}' at a quiet moment, and look for long-open "
                    "read transactions that hold checkpoints back"
                    if wal_size > WAL_WARN_BYTES
                    else ""
                ),
            )
        )
    if version == 0:
        return {"database": db.location, "healthy": False, "checks": checks}
    client = QueueClient(db)
    try:
        stats = client.stats()
    except QueueError as exc:
        # A damaged file fails here too; report it instead of aborting the whole check-up.
        checks.append(_check("queue state", "fail", f"cannot read the tasks: {exc}"))
        return {"database": db.location, "healthy": False, "checks": checks}
    checks.append(
        _check(
            "expired leases",
            "warn" if stats.expired_leases else "ok",
            f"{stats.expired_leases} task(s) whose worker stopped renewing; the next claim reclaims them"
            if stats.expired_leases
            else "none",
        )
    )
    now = datetime.fromtimestamp(db.now(), tz=timezone.utc)  # the clock heartbeats are stamped with
    stale = [w for w in stats.workers if w.is_stale(now, stale_after)]
    checks.append(
        _check(
            "stale workers",
            "warn" if stale else "ok",
            ", ".join(f"{w.worker_id} (pid {w.pid} on {w.hostname})" for w in stale)
            + " — silent longer than the threshold; check those processes"
            if stale
            else "none",
        )
    )
    dead = stats.by_status.get("dead", 0)
    checks.append(
        _check(
            "dead tasks",
            "warn" if dead else "ok",
            f"{dead} task(s) failed for good; inspect with 'prismq-queue list --status dead'"
            if dead
            else "none",
        )
    )
    checks.append(_schedules_check(db, stale_after))
    healthy = not any(c["status"] == "fail" for c in checks)
    return {"database": db.location, "healthy": healthy, "checks": checks}


def _schedules_check(db: QueueDatabase, overdue_after: float) -> dict[str, str]:
    """Warn when a running schedule's tick is overdue: no worker runs the scheduler."""
    from ..schedules import Schedules

    try:
        schedules = [s for s in Schedules(db).list() if not s.paused]
    except QueueError as exc:
        return _check("schedules", "warn", f"cannot read the schedules: {exc}")
    now = db.now()
    overdue = [s for s in schedules if now - s.next_run.timestamp() > overdue_after]
    if not overdue:
        return _check("schedules", "ok", f"{len(schedules)} running, none overdue")
    oldest = min(overdue, key=lambda s: s.next_run)
    return _check(
        "schedules",
        "warn",
        f"{len(overdue)} schedule(s) overdue (the oldest, {oldest.name}, was due at "
        f"{oldest.next_run.isoformat()}); no worker is running the scheduler: start a worker, "
        "or check that 'scheduler' is not switched off everywhere",
    )
