"""Shared fixtures: a fresh queue database per test, on each backend.

Every test that uses ``db``, ``clocked_db``, ``client``, ``make_db`` or ``backend_name``
runs twice: on SQLite (id ``sqlite``) and on PostgreSQL (id ``postgresql``, marked
``postgres``). The PostgreSQL case works in a schema of its own on
``PRISMQ_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) and
drops it afterwards. When that server cannot be reached the PostgreSQL cases are skipped
with the reason, except under ``CI=true``, where they fail.

Tests about SQLite itself (PRAGMAs, the file) build their database from ``db_path``, or
carry ``@pytest.mark.sqlite_only`` (or ``postgres_only``) to run only that case of these fixtures.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClock

from prismq.queue import QueueClient, QueueDatabase

__all__ = ["FakeClock"]

POSTGRES_URL_ENV = "PRISMQ_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKEND_NAMES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: run only the SQLite case of the backend-parametrised fixtures"
    )
    config.addinivalue_line(
        "markers", "postgres_only: run only the PostgreSQL case of the backend-parametrised fixtures"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``backend_name`` (and so ``db``, ``clocked_db``, ...) over both backends."""
    if "backend_name" not in metafunc.fixturenames:
        return
    names = list(BACKEND_NAMES)
    if metafunc.definition.get_closest_marker("sqlite_only"):
        names = ["sqlite"]
    elif metafunc.definition.get_closest_marker("postgres_only"):
        names = ["postgresql"]
    params = [
        pytest.param(name, id=name, marks=[pytest.mark.postgres] if name == "postgresql" else [])
        for name in names
    ]
    metafunc.parametrize("backend_name", params, indirect=True)


def postgres_unavailable(reason: str) -> None:
    """Skip the current test for ``reason``, or fail it when the environment has CI=true."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the test PostgreSQL server, checked once per session."""
    url = os.environ.get(POSTGRES_URL_ENV, "").strip() or DEFAULT_POSTGRES_URL
    try:
        import psycopg

        from prismq.queue.backends.postgres.connection import redact
    except ImportError as exc:
        postgres_unavailable(
            f"PostgreSQL tests need the postgres extra ({exc.name}); pip install -e '.[postgres]'"
        )
        raise  # pragma: no cover - postgres_unavailable always raises
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        postgres_unavailable(
            f"no PostgreSQL server at {redact(url)} ({str(exc).strip().splitlines()[0]}); set "
            f"{POSTGRES_URL_ENV} to a reachable server"
        )
    return url


def drop_postgres_schema(url: str, schema: str) -> None:
    """Drop a test schema and everything in it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def postgres_schema(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """``(url, schema)``: a unique schema name on the test server, dropped after the test."""
    url = request.getfixturevalue("postgres_url")
    schema = f"prismq_test_{secrets.token_hex(6)}"
    yield url, schema
    drop_postgres_schema(url, schema)


@pytest.fixture
def backend_name(request: pytest.FixtureRequest) -> str:
    """``"sqlite"`` or ``"postgresql"``: the backend this test case runs on."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a not-yet-created SQLite queue file."""
    return tmp_path / "queue.db"


@pytest.fixture
def sqlite_db(db_path: Path) -> Iterator[QueueDatabase]:
    """An initialised SQLite queue file at ``db_path``, closed after the test."""
    database = QueueDatabase(db_path)
    database.initialize_schema()
    yield database
    database.close()


@pytest.fixture
def make_db(
    backend_name: str, db_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., QueueDatabase]]:
    """Factory: open a queue database on this test's backend (all closed afterwards).

    Every call opens the same database (the same SQLite file, or the same PostgreSQL
    schema), like a second process would. Keyword arguments go to ``QueueDatabase``;
    ``initialize=False`` skips ``initialize_schema()``.
    """
    opened: list[QueueDatabase] = []
    target: dict[str, Any] = {}
    if backend_name == "postgresql":
        target["url"], target["schema"] = request.getfixturevalue("postgres_schema")

    def make(*, initialize: bool = True, **kwargs: Any) -> QueueDatabase:
        if backend_name == "postgresql":
            from prismq.queue.backends.postgres import PostgresBackend

            backend = PostgresBackend(target["url"], schema=target["schema"], max_size=4)
            database = QueueDatabase(backend=backend, **kwargs)
        else:
            database = QueueDatabase(db_path, **kwargs)
        opened.append(database)
        if initialize:
            database.initialize_schema()
        return database

    yield make
    for database in opened:
        database.close()


@pytest.fixture
def db(make_db: Callable[..., QueueDatabase]) -> QueueDatabase:
    """An initialised queue database on this test's backend, closed after the test."""
    return make_db()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked_db(make_db: Callable[..., QueueDatabase], clock: FakeClock) -> QueueDatabase:
    """An initialised database whose time is the ``clock`` fixture."""
    return make_db(clock=clock)


@pytest.fixture
def client(db: QueueDatabase) -> QueueClient:
    return QueueClient(db)
