"""The baseline: a minimal queue written by hand on ``sqlite3``.

This is what a careful developer would write in an afternoon: one table with one partial
index of ready tasks, WAL with ``synchronous=NORMAL`` (the same PRAGMAs PrismQ uses), one
``BEGIN IMMEDIATE`` + ``UPDATE ... RETURNING`` per claim and the completion in its own
transaction, or 100 claims and 100 completions per transaction in the batched variant.
It has no validation, no lease tokens, no retry policies, no registry and no extra
indexes: the numbers PrismQ Queue is compared against are those of bare SQLite.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id          INTEGER PRIMARY KEY,
    task_type   TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'queued',
    priority    INTEGER NOT NULL DEFAULT 100,
    attempts    INTEGER NOT NULL DEFAULT 0,
    run_after   REAL    NOT NULL,
    lease_until REAL,
    locked_by   TEXT,
    result      TEXT,
    created_at  REAL    NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS idx_ready ON tasks (run_after) WHERE status = 'queued';
"""

INSERT = "INSERT INTO tasks (task_type, payload, run_after, created_at) VALUES (?, ?, ?, ?)"

CLAIM = """
UPDATE tasks
SET status = 'leased', attempts = attempts + 1, locked_by = ?, lease_until = ?
WHERE id IN (SELECT id FROM tasks WHERE status = 'queued' AND run_after <= ?
             ORDER BY run_after, id LIMIT ?)
RETURNING id, payload
"""

COMPLETE = """
UPDATE tasks
SET status = 'completed', result = ?, finished_at = ?, lease_until = NULL, locked_by = NULL
WHERE id = ? AND status = 'leased' AND locked_by = ?
"""

_BUSY_TRIES = 50


class RawQueue:
    """A hand-written SQLite queue; one connection, used by one thread.

    Args:
        path: The database file.
        pragmas: PRAGMAs applied on connect (``page_size`` and ``journal_mode`` first).
    """

    def __init__(self, path: str | Path, pragmas: Mapping[str, str | int]) -> None:
        timeout = int(pragmas.get("busy_timeout", 5000)) / 1000.0
        self.conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
        order = ["page_size", "journal_mode"] + [k for k in pragmas if k not in ("page_size", "journal_mode")]
        for name in order:
            if name in pragmas:
                self.conn.execute(f"PRAGMA {name} = {pragmas[name]}").fetchall()

    def create_schema(self) -> None:
        """Create the table and its index (idempotent)."""
        self.conn.executescript(SCHEMA)

    def _write(self, sql: str, params: Sequence[Any], many: bool = False) -> tuple[list[Any], int]:
        """Run one statement in its own ``BEGIN IMMEDIATE`` transaction; retry while busy.

        Returns:
            The rows it returned and its row count.
        """
        conn = self.conn
        for attempt in range(_BUSY_TRIES):
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == _BUSY_TRIES - 1:
                    raise
                time.sleep(0.001)
                continue
            try:
                cursor = conn.executemany(sql, params) if many else conn.execute(sql, params)
                rows = cursor.fetchall()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return rows, cursor.rowcount
        raise AssertionError("unreachable")

    def enqueue(self, task_type: str, payload: Any) -> None:
        """Insert one task in its own transaction."""
        now = time.time()
        self._write(INSERT, (task_type, json.dumps(payload), now, now))

    def enqueue_many(self, task_type: str, payloads: Sequence[Any]) -> None:
        """Insert many tasks in one transaction (``executemany``)."""
        now = time.time()
        rows = [(task_type, json.dumps(p), now, now) for p in payloads]
        self._write(INSERT, rows, many=True)

    def claim(self, worker: str, count: int = 1, lease: float = 60.0) -> list[tuple[int, Any]]:
        """Lease up to ``count`` ready tasks in one transaction; ``(id, payload)`` each."""
        now = time.time()
        rows, _ = self._write(CLAIM, (worker, now + lease, now, count))
        return [(task_id, json.loads(text)) for task_id, text in rows]

    def complete(self, task_ids: Sequence[int], worker: str) -> int:
        """Complete leased tasks in one transaction; returns how many were still held."""
        now = time.time()
        if len(task_ids) == 1:
            return self._write(COMPLETE, (None, now, task_ids[0], worker))[1]
        return self._write(COMPLETE, [(None, now, tid, worker) for tid in task_ids], many=True)[1]

    def all_ids(self) -> list[int]:
        """Every task id, in order."""
        return [r[0] for r in self.conn.execute("SELECT id FROM tasks ORDER BY id")]

    def count_by_status(self) -> dict[str, int]:
        """Task count per status."""
        return dict(self.conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
