"""Child process bodies for test_reliability_storage.py (importable by the spawn method)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from prismq.queue import QueueDatabase


def initialise_each_file(folder: str, trials: int, barrier: Any, out: Any) -> None:
    """For each trial, wait for every sibling, then open and initialise ``q<trial>.db``.

    Puts the list of ``"<trial> <error type>: <message>"`` failures on ``out``.
    """
    failures = []
    for trial in range(trials):
        barrier.wait()
        try:
            with QueueDatabase(Path(folder) / f"q{trial}.db") as db:
                db.initialize_schema()
        except Exception as exc:  # every failure is reported, whatever its type
            failures.append(f"{trial} {type(exc).__name__}: {exc}")
    out.put(failures)


def initialise_each_schema(url: str, prefix: str, trials: int, barrier: Any, out: Any) -> None:
    """For each trial, wait for every sibling, then initialise the fresh schema ``<prefix><trial>``."""
    failures = []
    for trial in range(trials):
        barrier.wait()
        try:
            with QueueDatabase(f"{url}?schema={prefix}{trial}") as db:
                db.initialize_schema()
        except Exception as exc:  # every failure is reported, whatever its type
            failures.append(f"{trial} {type(exc).__name__}: {exc}")
    out.put(failures)


def hold_write_lock(path: str, locked: Any, release: Any) -> None:
    """Take the file's write lock (``BEGIN IMMEDIATE``) and keep it until ``release`` is set."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(120)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
