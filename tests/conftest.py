"""Shared fixtures: a fresh queue database per test, on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prismq.queue import QueueClient, QueueDatabase


class FakeClock:
    """A controllable clock for QueueDatabase(clock=...): time moves only when told."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a not-yet-created SQLite queue file."""
    return tmp_path / "queue.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[QueueDatabase]:
    """An initialised SQLite queue database, closed after the test."""
    database = QueueDatabase(db_path)
    database.initialize_schema()
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked_db(db_path: Path, clock: FakeClock) -> Iterator[QueueDatabase]:
    """An initialised database whose time is the ``clock`` fixture."""
    database = QueueDatabase(db_path, clock=clock)
    database.initialize_schema()
    yield database
    database.close()


@pytest.fixture
def client(db: QueueDatabase) -> QueueClient:
    return QueueClient(db)
