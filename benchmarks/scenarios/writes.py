"""Write amplification: database pages written to the WAL per task, PrismQ Queue vs raw.

A count, not a timing, so it does not depend on machine load: with automatic
checkpoints off, ``PRAGMA wal_checkpoint(PASSIVE)`` reports how many frames (pages) the
write-ahead log holds after each step. Every page of every transaction is written (and
later checkpointed, with an ``fsync``), so pages per task explains most of the gap between
the two queues' one-task-per-transaction rates: each index a row is in, or leaves, is one
more page per commit.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from common import Settings, payload, ratio, scratch_dir, target_row
from raw_queue import RawQueue

from prismq.queue import QueueClient, QueueDatabase, QueueWorker, TaskSpec

NAME = "writes"
TITLE = "Write amplification (WAL pages per task)"

STEPS = (
    "enqueue",
    "enqueue_many",
    "claim",
    "complete",
    "claim_batch",
    "complete_many",
    "complete_and_claim",
)


def _frames(conn: sqlite3.Connection) -> int:
    """Frames in the WAL now; then empty it so the next step starts from zero."""
    frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return int(frames)


def _prismq(path: Path, n: int, batch: int, pragmas: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    with QueueDatabase(path, pragmas=pragmas) as db:
        db.initialize_schema()
        conn = db.backend.connection()  # type: ignore[attr-defined]
        client = QueueClient(db)
        worker = QueueWorker(db, worker_id="bench-writes")
        _frames(conn)
        for i in range(n):
            client.enqueue("noop", payload(i))
        out["enqueue"] = _frames(conn) / n
        for offset in range(0, 2 * n, batch):
            client.enqueue_many([TaskSpec("noop", payload(offset + i)) for i in range(batch)])
        out["enqueue_many"] = _frames(conn) / (2 * n)
        held = [worker.claim_next_task() for _ in range(n)]
        out["claim"] = _frames(conn) / n
        for task in held:
            assert task is not None
            worker.complete_task(task)
        out["complete"] = _frames(conn) / n
        claimed = [worker.claim_batch(batch) for _ in range(n // batch)]
        out["claim_batch"] = _frames(conn) / n
        for tasks in claimed:
            worker.complete_many(tasks)
        out["complete_many"] = _frames(conn) / n
        task = worker.claim_next_task()
        _frames(conn)
        for _ in range(n - 1):
            assert task is not None
            task = worker.complete_and_claim(task)
        out["complete_and_claim"] = _frames(conn) / (n - 1)
        worker.close()
    return out


def _raw(path: Path, n: int, batch: int, pragmas: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    raw = RawQueue(path, pragmas)
    try:
        raw.create_schema()
        conn = raw.conn
        _frames(conn)
        for i in range(n):
            raw.enqueue("noop", payload(i))
        out["enqueue"] = _frames(conn) / n
        for offset in range(0, 2 * n, batch):
            raw.enqueue_many("noop", [payload(offset + i) for i in range(batch)])
        out["enqueue_many"] = _frames(conn) / (2 * n)
        held = [raw.claim("raw-writes", 1)[0][0] for _ in range(n)]
        out["claim"] = _frames(conn) / n
        for task_id in held:
            raw.complete([task_id], "raw-writes")
        out["complete"] = _frames(conn) / n
        claimed = [[tid for tid, _ in raw.claim("raw-writes", batch)] for _ in range(n // batch)]
        out["claim_batch"] = _frames(conn) / n
        for ids in claimed:
            raw.complete(ids, "raw-writes")
        out["complete_many"] = _frames(conn) / n
    finally:
        raw.close()
    return out


def run(settings: Settings) -> dict[str, Any]:
    """Count WAL pages per task for each operation on both queues."""
    n = 200 if settings.smoke else 2_000
    batch = settings.batch_size
    pragmas = {**settings.pragmas, "wal_autocheckpoint": 0}
    with scratch_dir() as folder:
        prismq = _prismq(folder / "prismq.db", n, batch, pragmas)
        raw = _raw(folder / "raw.db", n, batch, pragmas)
    labels = {
        "enqueue": "enqueue, one task per transaction",
        "enqueue_many": f"enqueue_many, {batch} per transaction",
        "claim": "claim one task per transaction",
        "complete": "complete one task per transaction",
        "claim_batch": f"claim {batch} per transaction",
        "complete_many": f"complete {batch} per transaction",
        "complete_and_claim": "complete_and_claim (complete one, claim the next: one transaction)",
    }
    # The raw queue has no combined call: its claim and its completion, two transactions.
    raw["complete_and_claim"] = raw["claim"] + raw["complete"]
    rows = [
        target_row(
            labels[step],
            unit="pages/task",
            prismq=prismq[step],
            baseline=raw[step],
            baseline_name="raw queue: claim + complete" if step == "complete_and_claim" else "raw queue",
            value=ratio(prismq[step], raw[step]),
        )
        for step in STEPS
    ]
    return {"title": TITLE, "rows": rows, "checks": [], "params": {"tasks": n, "batch": batch}}
