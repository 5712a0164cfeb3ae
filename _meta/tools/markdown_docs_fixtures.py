"""Pytest plugin for the executed documentation examples (``nox -s doctest``).

Loaded with ``-p markdown_docs_fixtures`` (``_meta/tools`` on ``PYTHONPATH``). It gives
every Markdown example and docstring example a sandbox, and lets pytest-markdown-docs see
the examples that Material for MkDocs shows inside admonitions and content tabs.

Examples that use PostgreSQL read their server from ``PRISMQ_DOCS_POSTGRES_URL``: see
:func:`doc_example_postgres`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from doc_fences import scan
from markdown_it import MarkdownIt

DB_ENV = "PRISMQ_QUEUE_DB_PATH"


@pytest.fixture(autouse=True)
def doc_example_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each example in its own empty folder, with the queue database inside it.

    The working directory is a fresh temporary folder, and ``PRISMQ_QUEUE_DB_PATH``
    points at ``queue.db`` in it, so ``QueueDatabase()`` with no argument never touches a
    real queue.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DB_ENV, str(tmp_path / "queue.db"))
    return tmp_path


def dedent_nested_fences(text: str) -> str:
    """Move fences indented inside admonitions, tabs or lists to the left margin.

    CommonMark reads a fence indented by four spaces under ``!!! note`` or ``=== "Tab"``
    as an indented code block, so pytest-markdown-docs would skip it silently. Only the
    fence lines are moved; every line keeps its number, so failures point at the right
    line of the page.

    Args:
        text: A Markdown document.

    Returns:
        The same document with every indented fence dedented.
    """
    lines = text.splitlines(keepends=True)
    for fence in scan(Path("<markdown>"), text):
        if fence.indent == 0:
            continue
        for number in range(fence.line - 1, fence.end_line):
            line = lines[number]
            stripped = line.expandtabs(4)
            removable = len(stripped) - len(stripped.lstrip(" "))
            lines[number] = stripped[min(fence.indent, removable) :]
    return "".join(lines)


class _NestedFenceMarkdownIt(MarkdownIt):
    def parse(self, src: str, env: Any = None) -> Any:
        return super().parse(dedent_nested_fences(src), env)


@pytest.hookimpl(tryfirst=True)
def pytest_markdown_docs_markdown_it() -> MarkdownIt:
    """Give pytest-markdown-docs a parser that also sees the indented fences."""
    return _NestedFenceMarkdownIt(config="commonmark")


# -- PostgreSQL for the examples ------------------------------------------------------

POSTGRES_DOCS_ENV = "PRISMQ_DOCS_POSTGRES_URL"
"""What an example reads: a ``postgresql://`` URL with a ``schema=`` of its own."""
POSTGRES_BASE_ENV = "PRISMQ_TEST_POSTGRES_URL"
"""The server, shared with the test suite; :data:`DEFAULT_POSTGRES_URL` when unset."""
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_FIXTURE = "docs_postgres_url"
"""Opt-in for an example that reaches the server without naming the variable in its code:
``{.python fixture:docs_postgres_url}`` (the fixture's value is the same URL)."""

_server_checked: dict[str, str | None] = {}


def _base_postgres_url() -> str:
    return os.environ.get(POSTGRES_BASE_ENV, "").strip() or DEFAULT_POSTGRES_URL


def _with_schema(url: str, schema: str | None) -> str:
    """``url`` with its ``schema=`` query parameter set to ``schema`` (removed for None)."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key != "schema"]
    if schema is not None:
        query.append(("schema", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _server_problem(url: str) -> str | None:
    """Why the server at ``url`` cannot be used, or None; checked once per URL."""
    if url not in _server_checked:
        try:
            import psycopg
        except ImportError as exc:
            _server_checked[url] = (
                f"PostgreSQL examples need psycopg ({exc.name}); pip install 'prismq-queue[postgres]'"
            )
        else:
            try:
                psycopg.connect(_with_schema(url, None), connect_timeout=3).close()
            except psycopg.Error as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                _server_checked[url] = (
                    f"no PostgreSQL server at {_redacted(url)} ({first}); set {POSTGRES_BASE_ENV} "
                    "to a reachable server"
                )
            else:
                _server_checked[url] = None
    return _server_checked[url]


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(_with_schema(url, None), connect_timeout=3, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def uses_postgres(item: pytest.Item) -> bool:
    """True for an example whose code names ``PRISMQ_DOCS_POSTGRES_URL``, or that opts in."""
    code = getattr(item, "code", None)
    if isinstance(code, str) and POSTGRES_DOCS_ENV in code:
        return True
    return POSTGRES_FIXTURE in getattr(item, "fixturenames", ())


@pytest.fixture(autouse=True)
def doc_example_postgres(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """Give a PostgreSQL example a schema of its own; keep every other example off the server.

    For an example that uses PostgreSQL (see :func:`uses_postgres`; a ``continuation``
    block includes the code of the blocks before it), ``PRISMQ_DOCS_POSTGRES_URL`` is the
    server of ``PRISMQ_TEST_POSTGRES_URL`` (default
    ``postgresql://postgres@127.0.0.1:5432/test``) with ``?schema=prismq_docs_<random>``,
    and that schema is dropped after the example. When the server cannot be reached the
    example is skipped with the reason, or fails when the environment has ``CI=true``.

    Every other example runs with the variable unset, so a SQLite example never depends
    on a server.
    """
    if not uses_postgres(request.node):
        monkeypatch.delenv(POSTGRES_DOCS_ENV, raising=False)
        yield None
        return
    base = _base_postgres_url()
    problem = _server_problem(base)
    if problem is not None:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"{problem} (CI=true: the PostgreSQL examples must run)", pytrace=False)
        pytest.skip(problem)
    schema = f"prismq_docs_{secrets.token_hex(6)}"
    url = _with_schema(base, schema)
    monkeypatch.setenv(POSTGRES_DOCS_ENV, url)
    try:
        yield url
    finally:
        _drop_schema(base, schema)


@pytest.fixture
def docs_postgres_url(doc_example_postgres: str | None) -> str | None:
    """The example's ``PRISMQ_DOCS_POSTGRES_URL``; request it to opt in explicitly."""
    return doc_example_postgres
