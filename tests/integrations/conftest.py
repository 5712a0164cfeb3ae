"""Fixtures for the integrations suite: every behavioural test runs in every storage mode.

Modes: ``memory`` (the original in-process registry), ``queue-sqlite`` and
``queue-postgresql`` (runs kept in a queue database on that backend).
"""

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
    """One storage mode: builds registries and managers that share that storage.

    Args:
        name: ``"memory"``, ``"queue-sqlite"`` or ``"queue-postgresql"``.
        tmp_path: Where the SQLite file goes.
        postgres: ``(url, schema)`` of the test schema, for ``queue-postgresql``.
    """

    def __init__(self, name: str, tmp_path: Path, postgres: tuple[str, str] | None = None) -> None:
        self.name = name
        self.durable = name.startswith("queue")
        self.backend_name = name.removeprefix("queue-") if self.durable else None
        self.path = tmp_path / "runs.db"
        self.postgres = postgres
        self.databases: list[QueueDatabase] = []
        self._shared_registry: RunRegistry | None = None

    @property
    def target(self) -> str:
        """What ``QueueDatabase(...)`` opens, as another process would be told: path or URL."""
        if self.postgres is None:
            return str(self.path)
        url, schema = self.postgres
        return f"{url}{'&' if '?' in url else '?'}schema={schema}"

    def database(self) -> QueueDatabase:
        """A new connection set to the shared database (as another process would open)."""
        if self.postgres is not None:
            from prismq.queue.backends.postgres import PostgresBackend

            url, schema = self.postgres
            db = QueueDatabase(backend=PostgresBackend(url, schema=schema, max_size=4))
        else:
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


def _open_mode(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Mode:
    postgres = request.getfixturevalue("postgres_schema") if name == "queue-postgresql" else None
    return Mode(name, tmp_path, postgres)


MODES = [
    pytest.param("memory", id="memory"),
    pytest.param("queue-sqlite", id="queue-sqlite"),
    pytest.param("queue-postgresql", id="queue-postgresql", marks=pytest.mark.postgres),
]
DURABLE_MODES = MODES[1:]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mode]:
    """The storage mode under test: in memory, or a queue database on either backend.

    The PostgreSQL case works in a schema of its own (``postgres_schema``), and skips
    when the server is unreachable (fails under ``CI=true``).
    """
    selected = _open_mode(request.param, request, tmp_path)
    yield selected
    selected.close()


@pytest.fixture(params=DURABLE_MODES)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mode]:
    """The queue-backed modes alone (SQLite and PostgreSQL), for what only a database can do."""
    selected = _open_mode(request.param, request, tmp_path)
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
