"""Fixtures for the integrations suite: every behavioural test runs in both modes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from prismq.queue import QueueDatabase
from prismq.queue.integrations import BackgroundTaskManager, RunRegistry

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a test coroutine on a fresh event loop, failing it if it hangs."""

    async def guarded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(guarded())


class Mode:
    """One storage mode: builds registries and managers that share that storage."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name = name
        self.durable = name == "queue"
        self.path = tmp_path / "runs.db"
        self.databases: list[QueueDatabase] = []
        self._shared_registry: RunRegistry | None = None

    def database(self) -> QueueDatabase:
        """A new connection set to the shared database file (as another process would open)."""
        db = QueueDatabase(self.path)
        self.databases.append(db)
        return db

    def registry(self) -> RunRegistry:
        """The registry a fresh manager would use (in memory: one object shared by all)."""
        if self.durable:
            return RunRegistry(queue=self.database())
        if self._shared_registry is None:
            self._shared_registry = RunRegistry()
        return self._shared_registry

    def manager(self, registry: RunRegistry | None = None, **options: Any) -> BackgroundTaskManager:
        """A manager over ``registry``, the AFTER way (``queue=``) in durable mode."""
        registry = registry if registry is not None else RunRegistry()
        if self.durable and registry.queue is None:
            return BackgroundTaskManager(registry, queue=self.database(), **options)
        if not self.durable and self._shared_registry is None:
            self._shared_registry = registry
        return BackgroundTaskManager(registry, **options)

    def close(self) -> None:
        for db in self.databases:
            db.close()


@pytest.fixture(params=["memory", "queue"])
def mode(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mode]:
    """The storage mode under test: in-memory, or the SQLite queue database."""
    selected = Mode(request.param, tmp_path)
    yield selected
    selected.close()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Mode]:
    """The queue-backed mode alone, for what only a database can do."""
    selected = Mode("queue", tmp_path)
    yield selected
    selected.close()


async def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll ``check`` (run off the loop) until it returns a truthy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(interval)
