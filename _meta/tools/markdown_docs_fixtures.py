"""Pytest plugin for the executed documentation examples (``nox -s doctest``).

Loaded with ``-p markdown_docs_fixtures`` (``_meta/tools`` on ``PYTHONPATH``). It gives
every Markdown example and docstring example a sandbox, and lets pytest-markdown-docs see
the examples that Material for MkDocs shows inside admonitions and content tabs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
