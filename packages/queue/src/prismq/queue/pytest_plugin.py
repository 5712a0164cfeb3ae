"""Pytest fixtures for testing code that uses the queue (loaded on install, ``pytest11``).

Fixtures:

- ``prismq_clock``: a :class:`~prismq.queue.testing.TestClock` for this test.
- ``prismq_db``: a fresh SQLite queue database timed by ``prismq_clock``.
- ``prismq_postgres_db``: the same on PostgreSQL, in a schema of its own on the server
  named by ``PRISMQ_TEST_POSTGRES_URL`` (the test is skipped, with the reason, when the
  variable is not set).
- ``prismq_client``: a :class:`~prismq.queue.QueueClient` of ``prismq_db``.
- ``prismq_queue``: a factory, ``prismq_queue("sqlite" | "postgresql")``, for tests
  that choose the backend themselves (each call gives a new database, removed after
  the test).

Turn the plugin off with ``-p no:prismq_queue``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import pytest

from .client import QueueClient
from .database import QueueDatabase
from .testing import POSTGRES_URL_ENV, SERVER_BACKENDS, TestClock, temporary_queue

__all__ = [
    "prismq_client",
    "prismq_clock",
    "prismq_db",
    "prismq_postgres_db",
    "prismq_queue",
]


@pytest.fixture
def prismq_clock() -> TestClock:
    """A clock that moves only when told (``advance``), the queue fixtures' clock."""
    return TestClock()


@pytest.fixture
def prismq_queue(prismq_clock: TestClock) -> Iterator[Callable[..., QueueDatabase]]:
    """Factory: a new temporary queue database on the backend asked for.

    ``prismq_queue()`` (SQLite) or ``prismq_queue("postgresql")``; keyword arguments go
    to :func:`~prismq.queue.testing.temporary_queue` (the clock defaults to
    ``prismq_clock``). Every database is closed and removed after the test.
    """
    with contextlib.ExitStack() as stack:

        def make(backend: str = "sqlite", **options: object) -> QueueDatabase:
            if backend in SERVER_BACKENDS and not (options.get("url") or os.environ.get(POSTGRES_URL_ENV)):
                pytest.skip(f"set {POSTGRES_URL_ENV} to a PostgreSQL server to run this test")
            options.setdefault("clock", prismq_clock)
            return stack.enter_context(temporary_queue(backend, **options))  # type: ignore[arg-type]

        yield make


@pytest.fixture
def prismq_db(prismq_queue: Callable[..., QueueDatabase]) -> QueueDatabase:
    """A fresh SQLite queue database, timed by ``prismq_clock``."""
    return prismq_queue("sqlite")


@pytest.fixture
def prismq_postgres_db(prismq_queue: Callable[..., QueueDatabase]) -> QueueDatabase:
    """A fresh PostgreSQL queue database (a schema of its own), timed by ``prismq_clock``."""
    return prismq_queue("postgresql")


@pytest.fixture
def prismq_client(prismq_db: QueueDatabase) -> QueueClient:
    """A :class:`~prismq.queue.QueueClient` of ``prismq_db``."""
    return QueueClient(prismq_db)
