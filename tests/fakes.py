"""Test doubles shared by every test folder (importable as ``fakes``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["FakeClock", "sqlite_file_at_version"]


def sqlite_file_at_version(path: Path, version: int) -> sqlite3.Connection:
    """A queue file as schema ``version`` wrote it (its first migrations only), left open.

    The caller adds the rows that version would have held, commits and closes it.
    """
    from prismq.queue.backends.sqlite.connection import APPLICATION_ID, MIGRATIONS, _split_statements

    raw = sqlite3.connect(path)
    for _number, _name, sql in MIGRATIONS[:version]:
        for statement in _split_statements(sql):
            raw.execute(statement)
    raw.execute(f"PRAGMA user_version = {int(version)}")
    raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    return raw


class FakeClock:
    """A controllable clock (``QueueDatabase(clock=...)``, a waiter's monotonic clock).

    Time moves only when told: :meth:`advance`, or by setting :attr:`now`.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
