"""Load SQL kept in ``.sql`` files beside a backend.

``queries.sql`` holds named statements, each introduced by a ``-- name: <name>`` line;
``migrations/NNNN_<what>.sql`` holds one schema step each, applied in number order.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["load_migrations", "load_queries"]

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def load_queries(package: str, filename: str = "queries.sql", **placeholders: str) -> dict[str, str]:
    """Read named queries from a package's SQL file.

    Args:
        package: The package holding the file, e.g. ``"prismq.queue.backends.sqlite"``.
        filename: The file name.
        **placeholders: ``{name}`` markers to fill (fixed SQL fragments such as column
            lists; never data).

    Returns:
        Statement text per name, comments and surrounding blank lines stripped.
    """
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        statement = "\n".join(lines).strip().rstrip(";")
        for key, value in placeholders.items():
            statement = statement.replace("{" + key + "}", value)
        if name in queries:
            raise RuntimeError(f"duplicate query name {name!r} in {package}/{filename}")
        queries[name] = statement
    return queries


def load_migrations(package: str) -> list[tuple[int, str, str]]:
    """Read ``migrations/NNNN_*.sql`` of a package as ``(version, name, sql)``, in order.

    Raises:
        RuntimeError: Versions do not run 1, 2, 3, ... without gaps.
    """
    folder = resources.files(package).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    expected = list(range(1, len(found) + 1))
    if [v for v, _, _ in found] != expected:
        raise RuntimeError(f"migrations of {package} must be numbered 1..n without gaps")
    return found
