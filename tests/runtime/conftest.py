"""Fixtures for the runtime tests: a queue file, workers on threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import ThreadedWorker

from prismq.queue import QueueDatabase
from prismq.queue.runtime import HandlerRegistry
from prismq.queue.worker import QueueWorker


@pytest.fixture
def file_db(db_path: Path) -> Iterator[QueueDatabase]:
    """An initialised SQLite queue file (the runtime tests use real files and processes)."""
    database = QueueDatabase(db_path)
    database.initialize_schema()
    yield database
    database.close()


@pytest.fixture
def threaded() -> Iterator[Callable[..., ThreadedWorker]]:
    """Factory: start a worker on a thread; every one is stopped after the test."""
    started: list[ThreadedWorker] = []

    def start(worker: QueueWorker, registry: HandlerRegistry, **options: Any) -> ThreadedWorker:
        runner = ThreadedWorker(worker, registry, **options).start()
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.stop.set()
    for runner in started:
        runner._thread.join(15)
