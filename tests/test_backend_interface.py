"""The Backend protocol is the whole interface between the queue's layers and a database.

Every backend defines every member, and nothing above ``backends/`` reaches past the
protocol: no ``getattr``/``hasattr`` probes for backend members, no branches on the
backend's name, no store picked by module name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from prismq.queue import QueueDatabase
from prismq.queue.backends.base import BACKEND_MEMBERS, Backend, missing_members
from prismq.queue.cli.doctor import run_doctor
from prismq.queue.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1] / "packages" / "queue" / "src" / "prismq" / "queue"
BACKEND_NAMES = {"sqlite", "postgresql"}
# Members a backend class has beyond the protocol, which higher layers must not touch.
BACKEND_INTERNALS = {"db", "schema", "server_clock", "queries", "transfer_queries", "connection"}


def _higher_layers() -> list[tuple[str, ast.Module]]:
    """Every module of the package outside ``backends/``, parsed."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "backends":
            continue
        out.append((str(relative), ast.parse(path.read_text(encoding="utf-8"))))
    return out


def _string(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def test_every_backend_defines_every_member(db: QueueDatabase) -> None:
    assert missing_members(db.backend) == []
    assert isinstance(db.backend, Backend)
    assert db.backend.latest_schema_version == db.initialize_schema()
    assert db.backend.location in db.backend.identity


def test_the_protocol_lists_the_capabilities_higher_layers_use() -> None:
    for member in (
        "wait_for_change",
        "stop_listening",
        "notifies_changes",
        "path",
        "run_store",
        "copy_read",
        "copy_write",
        "latest_schema_version",
        "journal_mode",
        "clock",
        "identity",
    ):
        assert member in BACKEND_MEMBERS


def test_a_partial_backend_is_refused_with_what_it_lacks() -> None:
    class HalfBackend:
        name = "half"
        location = "half://queue"

        def close(self) -> None:
            """Nothing to close."""

    with pytest.raises(ConfigError, match=r"backend HalfBackend lacks .*\bclaim\b.*\brun_store\b"):
        QueueDatabase(backend=HalfBackend())  # type: ignore[arg-type]


def test_no_layer_above_the_backends_probes_or_branches_on_the_backend() -> None:
    probed = BACKEND_INTERNALS | set(BACKEND_MEMBERS)
    problems = []
    for relative, tree in _higher_layers():
        for node in ast.walk(tree):
            where = f"{relative}:{getattr(node, 'lineno', '?')}"
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and "backend" in ast.unparse(node.args[0])
                and _string(node.args[1]) in probed
            ):
                problems.append(f"{where}: {node.func.id}(..., {_string(node.args[1])!r})")
            if isinstance(node, ast.Compare):
                constants = {_string(n) for n in (node.left, *node.comparators)}
                if constants & BACKEND_NAMES:
                    problems.append(f"{where}: compares with a backend name")
            if isinstance(node, ast.Attribute) and node.attr in BACKEND_INTERNALS:
                inner = node.value
                inner_name = inner.attr if isinstance(inner, ast.Attribute) else getattr(inner, "id", "")
                if inner_name == "backend":
                    problems.append(f"{where}: backend.{node.attr}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if "importlib" in names and relative != "runtime/registry.py":
                    problems.append(f"{where}: imports importlib")
    assert problems == []


def test_doctor_says_when_the_schema_is_out_of_date(db: QueueDatabase, backend_name: str) -> None:
    latest = db.initialize_schema()
    assert latest == db.backend.latest_schema_version
    check = next(c for c in run_doctor(db)["checks"] if c["check"] == "schema")
    assert check == {"check": "schema", "status": "ok", "detail": f"version {latest}"}
    with db.transaction() as conn:
        if backend_name == "sqlite":
            conn.execute(f"PRAGMA user_version = {latest - 1}")
        else:
            conn.execute("UPDATE prismq_schema_version SET version = %s", (latest - 1,))
    assert db.schema_version() == latest - 1
    check = next(c for c in run_doctor(db)["checks"] if c["check"] == "schema")
    assert check["status"] == "warn"
    assert check["detail"] == f"version {latest - 1}, this release writes {latest}; run 'prismq-queue init'"


@pytest.mark.parametrize("package", ["sqlite", "postgres"])
def test_every_claim_is_built_from_one_template(package: str) -> None:
    from prismq.queue.backends.sqlfile import build_claims, load_queries

    text = (PACKAGE / "backends" / package / "queries.sql").read_text(encoding="utf-8")
    assert text.count("SET status = 'leased'") == 1
    raw = load_queries(f"prismq.queue.backends.{package}", task_columns="id")
    built = build_claims(raw)
    picks = {name.removeprefix("pick_") for name in raw if name.startswith("pick_")}
    claims = {name.removeprefix("claim_") for name in built if name.startswith("claim_")}
    assert picks == claims
    assert len(picks) >= 4
    for variant in claims:
        sql = built[f"claim_{variant}"]
        assert sql.count("SET status = 'leased'") == 1
        assert "{" not in sql  # every marker filled
    assert "claim_template" not in built
    assert "ready_filter" not in built


def test_a_query_names_an_earlier_one_to_build_on_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prismq.queue.backends.sqlfile import load_queries

    package = tmp_path / "sql_pkg_for_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "queries.sql").write_text(
        "-- name: inner\nSELECT {cols} FROM t;\n\n"
        "-- name: outer\nSELECT EXISTS (SELECT 1 FROM ({inner}) AS u WHERE {later});\n\n"
        "-- name: later\nSELECT 2;\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    queries = load_queries("sql_pkg_for_test", cols="a, b")
    # Filled with the earlier query as loaded (its own markers filled); a later name is not.
    assert queries["outer"] == "SELECT EXISTS (SELECT 1 FROM (SELECT a, b FROM t) AS u WHERE {later})"


def test_postgresql_over_limit_check_reads_the_counters_of_the_claims_plan() -> None:
    from prismq.queue.backends.postgres.backend import Q

    text = (PACKAGE / "backends" / "postgres" / "queries.sql").read_text(encoding="utf-8")
    # The counting of leases and of starts in the window is written once ...
    assert text.count("FROM flow_released r") == 1
    assert text.count("FROM flow_starts s") == 1
    # ... and the check after an optimistic claim is built on the claim's own read.
    assert Q["flow_limits_for_claim"] in Q["flow_over_limit"]


def test_claim_templates_take_extra_filters_in_one_place() -> None:
    from prismq.queue.backends.sqlfile import build_claims

    queries = {
        "claim_template": "UPDATE t SET leased WHERE id IN ({picked})",
        "ready_filter": "AND paused = 0",
        "pick_one": "SELECT id FROM t WHERE ready {ready_filter}",
        "candidates_one": "SELECT id FROM t WHERE ready {ready_filter}",
    }
    built = build_claims(queries)
    assert built == {
        "claim_one": "UPDATE t SET leased WHERE id IN (SELECT id FROM t WHERE ready AND paused = 0)",
        "candidates_one": "SELECT id FROM t WHERE ready AND paused = 0",
    }
    with pytest.raises(RuntimeError, match="claim_one is written out and built from pick_one"):
        build_claims({**queries, "claim_one": "UPDATE t"})
    with pytest.raises(RuntimeError, match="no claim_template"):
        build_claims({"pick_one": "SELECT 1"})
