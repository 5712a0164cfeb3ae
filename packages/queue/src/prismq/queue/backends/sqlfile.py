"""Load SQL kept in ``.sql`` files beside a backend.

``queries.sql`` holds named statements, each introduced by a ``-- name: <name>`` line;
``migrations/NNNN_<what>.sql`` holds one schema step each, applied in number order.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["build_claims", "load_migrations", "load_queries"]

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def load_queries(package: str, filename: str = "queries.sql", **placeholders: str) -> dict[str, str]:
    """Read named queries from a package's SQL file.

    Args:
        package: The package holding the file, e.g. ``"prismq.queue.backends.sqlite"``.
        filename: The file name.
        **placeholders: ``{name}`` markers to fill (fixed SQL fragments such as column
            lists; never data). A marker naming a query written earlier in the file is
            filled with that query's text, so a statement built on another (as a
            subquery) does not restate it.

    Returns:
        Statement text per name, comments and surrounding blank lines stripped.
    """
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        statement = "\n".join(lines).strip().rstrip(";")
        for key, value in (*placeholders.items(), *queries.items()):
            statement = statement.replace("{" + key + "}", value)
        if name in queries:
            raise RuntimeError(f"duplicate query name {name!r} in {package}/{filename}")
        queries[name] = statement
    return queries


def build_claims(queries: dict[str, str]) -> dict[str, str]:
    """Build every claim variant from the one claim template of a backend's queries.

    ``claim_template`` holds the claim's ``UPDATE`` once, with a ``{picked}`` marker;
    each ``pick_<variant>`` query is what goes there (the selection of rows to lease), and
    becomes ``claim_<variant>``. ``ready_filter`` (extra conditions on the rows a claim
    may pick, as ``AND ...``; may be empty) replaces every ``{ready_filter}`` marker. The
    template, picks and filter are not kept as queries of their own.

    Raises:
        RuntimeError: A built name is already a query, or no template is given.
    """
    out = dict(queries)
    try:
        template = out.pop("claim_template")
    except KeyError:
        raise RuntimeError("no claim_template among the queries") from None
    ready_filter = out.pop("ready_filter", "")
    for name in [n for n in out if n.startswith("pick_")]:
        built = "claim_" + name.removeprefix("pick_")
        if built in out:
            raise RuntimeError(f"{built} is written out and built from {name}; keep one")
        out[built] = template.replace("{picked}", out.pop(name))
    return {name: sql.replace("{ready_filter}", ready_filter) for name, sql in out.items()}


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
