"""Fixtures for the runtime tests: a queue file, workers on threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from runtime_helpers import ThreadedWorker

from prismq.queue import QueueDatabase
from prismq.queue.runtime import HandlerRegistry
from prismq.queue.worker import QueueWorker


@pytest.fixture
def file_db(sqlite_db: QueueDatabase) -> QueueDatabase:
    """The runtime tests' name for ``sqlite_db``: they use real files and processes."""
    return sqlite_db


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
