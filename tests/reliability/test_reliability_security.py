"""Security properties of the package, each checked by a test."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_support import POSIX

import prismq.queue
from prismq.queue import ConfigError, PayloadError, QueueClient, QueueDatabase, QueueWorker
from prismq.queue.backends.sqlite.connection import normalize_pragmas
from prismq.queue.cli import main as cli_main
from prismq.queue.runtime.registry import HandlerRegistry, import_object
from prismq.queue.runtime.settings import load_settings

PACKAGE = Path(prismq.queue.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
SQL_FILES = sorted(PACKAGE.rglob("*.sql"))


def parsed() -> Iterator[tuple[Path, ast.AST]]:
    for path in SOURCES:
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        base = func.value
        prefix = base.id if isinstance(base, ast.Name) else ast.unparse(base)
        return f"{prefix}.{func.attr}"
    return ast.unparse(func)


# -- no code execution from data ------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}


def test_no_pickle_eval_exec_marshal_or_dunder_import_in_the_package() -> None:
    assert len(SOURCES) > 20, "the scan found too few source files"
    problems = []
    for path, tree in parsed():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [
                    f"{path}: import {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] in FORBIDDEN_MODULES
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                problems.append(f"{path}: from {node.module} import ...")
            elif isinstance(node, ast.Call):
                name = call_name(node)
                if name in FORBIDDEN_CALLS or (
                    name.split(".")[-1] in {"loads", "load"} and name.split(".")[0] in FORBIDDEN_MODULES
                ):
                    problems.append(f"{path}:{node.lineno}: {name}(...)")
                if name.endswith((".literal_eval", "yaml.load", "yaml.unsafe_load")):
                    problems.append(f"{path}:{node.lineno}: {name}(...)")
    assert problems == []


def test_only_the_registry_imports_by_name() -> None:
    """Handlers are imported by ``import_object`` from config names; nothing else imports dynamically."""
    importers: dict[str, list[str]] = {}
    for path, tree in parsed():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and call_name(node).split(".")[-1] in (
                "import_module",
                "import_object",
            ):
                importers.setdefault(str(path.relative_to(PACKAGE)), []).append(call_name(node))
    # registry.py: handler references from config files, and nothing else: the run store
    # comes from the backend in use (Backend.run_store), never from a name.
    assert set(importers) == {os.path.join("runtime", "registry.py")}, importers
    # The task runner looks handlers up in the registry by task type; it never imports.
    for relative in ("worker.py", os.path.join("runtime", "runner.py")):
        text = (PACKAGE / relative).read_text(encoding="utf-8")
        assert "import_object" not in text
        assert "import_module" not in text


def test_import_object_takes_names_only(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for hostile in [
        f"os:system('touch {marker}')",
        f"__import__('os').system('touch {marker}')",
        "os.path:join; import os",
        "os:system()",
        "os:",
        ":system",
        "os..path:join",
        "os:path.join(1)",
    ]:
        with pytest.raises(ConfigError, match=r"is not a 'package\.module:name' reference"):
            import_object(hostile, "handler")
    assert not marker.exists()


def test_task_type_or_payload_naming_a_function_is_never_imported(tmp_path: Path) -> None:
    """A task whose type looks like a handler reference runs only if registered under that type."""
    db = QueueDatabase(tmp_path / "q.db")
    db.initialize_schema()
    client = QueueClient(db)
    marker = tmp_path / "pwned"
    evil = client.enqueue("os:system", {"handler": "os:system", "args": [f"touch {marker}"]})
    ran = []
    registry = HandlerRegistry()
    registry.register("safe", lambda ctx: ran.append(ctx.task_id))
    safe = client.enqueue("safe", {"handler": "os:system"})
    worker = QueueWorker(db, worker_id="sec", task_types=registry.task_types, lease_duration=5)
    summary = worker.run(registry, burst=True, install_signal_handlers=False)
    assert ran == [safe]
    assert summary.completed == 1
    assert client.get(evil).status.value == "queued"
    assert not marker.exists()
    db.close()


# -- SQL is parameterised ------------------------------------------------------------

# f-strings passed to execute(): each interpolates only values from a validated allow-list
# or a module constant; anything new here must be justified the same way.
ALLOWED_SQL_INTERPOLATION = {
    ("backends/sqlite/connection.py", ("name", "value")),  # normalize_pragmas allow-list
    ("backends/sqlite/connection.py", ("mode",)),  # BEGIN IMMEDIATE / DEFERRED, internal constants
    ("backends/sqlite/connection.py", ("SCHEMA_VERSION",)),
    ("backends/sqlite/connection.py", ("APPLICATION_ID",)),
    ("backends/sqlite/backend.py", ("word",)),  # checked against CHECKPOINT_MODES
    ("backends/sqlite/backend.py", ("Q[name]",)),  # EXPLAIN of the package's own queries
    ("backends/postgres/backend.py", ("Q[name]",)),
}


def test_execute_never_receives_formatted_data() -> None:
    found = set()
    problems = []
    for path, tree in parsed():
        relative = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in ("execute", "executemany", "executescript") or not node.args:
                continue
            sql = node.args[0]
            if isinstance(sql, ast.JoinedStr):
                names = tuple(ast.unparse(v.value) for v in sql.values if isinstance(v, ast.FormattedValue))
                found.add((relative, names))
                if (relative, names) not in ALLOWED_SQL_INTERPOLATION:
                    problems.append(f"{relative}:{node.lineno}: f-string SQL with {names}")
            elif isinstance(sql, ast.BinOp) and isinstance(sql.op, ast.Mod):
                problems.append(f"{relative}:{node.lineno}: %-formatted SQL")
            elif (
                isinstance(sql, ast.Call)
                and isinstance(sql.func, ast.Attribute)
                and sql.func.attr == "format"
            ):
                if not ast.unparse(sql.func.value).startswith("sql.SQL"):
                    problems.append(f"{relative}:{node.lineno}: str.format SQL")
            elif isinstance(sql, ast.BinOp) and isinstance(sql.op, ast.Add):
                problems.append(f"{relative}:{node.lineno}: SQL built with +")
    assert problems == []
    assert ("backends/sqlite/connection.py", ("name", "value")) in found, "the scan missed the PRAGMA line"


def test_sql_files_use_bound_parameters_only() -> None:
    assert SQL_FILES
    for path in SQL_FILES:
        raw = path.read_text(encoding="utf-8")
        text = re.sub(r"--[^\n]*", "", raw)
        # The only text substitutions: column lists built from the package's constant
        # column names (task_columns, run_columns, columns, updates), bind markers for
        # those columns (values), the PostgreSQL schema identifier (through psycopg's
        # sql.Identifier), the constant list of the queue's tables (queue_tables), the
        # claim template's piece (picked, see sqlfile.build_claims), and other named
        # statements of the same file (sqlfile.load_queries). No placeholder carries data.
        pieces = {"schema", "values", "updates", "picked", "queue_tables"}
        statements = set(re.findall(r"^--\s*name:\s*(\w+)\s*$", raw, re.MULTILINE))
        for name in re.findall(r"\{(\w+)\}", text):
            assert name.endswith("columns") or name in pieces | statements, (path, name)
        # No placeholder inside a quoted literal, where it would be spliced, not bound.
        for literal in re.findall(r"'[^']*'", text):
            assert not re.search(r"%\(|%s|:\w+|\?", literal), (path, literal)


@pytest.mark.parametrize(
    "pragmas",
    [
        {"journal_mode": "WAL; DROP TABLE tasks"},
        {"cache_size": "1; DROP"},
        {"cache_size": "1); DROP TABLE tasks; --"},
        {"busy_timeout": "5000 OR 1"},
        {"synchronous": "NORMAL; ATTACH DATABASE '/tmp/x' AS x"},
        {"journal_mode = WAL; DROP TABLE tasks; --": "WAL"},
        {"key": "secret"},
        {"temp_store": "MEMORY --"},
        {"max_page_count": 1.5},
        {"page_size": "4096; VACUUM"},
    ],
)
def test_pragma_allow_list_rejects_injection(tmp_path: Path, pragmas: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        normalize_pragmas(pragmas)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        QueueDatabase(tmp_path / "q.db", pragmas=pragmas)  # type: ignore[arg-type]
    assert not (tmp_path / "q.db").exists(), "a refused configuration created the file"


def test_checkpoint_mode_is_checked(tmp_path: Path) -> None:
    with QueueDatabase(tmp_path / "q.db") as db:
        db.initialize_schema()
        with pytest.raises(ConfigError):
            db.checkpoint("PASSIVE); DROP TABLE tasks; --")
        QueueClient(db).enqueue("still-here")
        assert db.integrity_check() == ["ok"]


# -- owner-only files ----------------------------------------------------------------


@contextlib.contextmanager
def open_umask() -> Iterator[None]:
    """Umask 0: the modes seen are those the library asks for, not the environment's."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_cli(*argv: str) -> tuple[int, str, str]:
    from prismq.queue.cli import output

    out, err = io.StringIO(), io.StringIO()
    saved = output.console.file, output.error_console.file
    output.console.file, output.error_console.file = out, err
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(list(argv))
    finally:
        output.console.file, output.error_console.file = saved
    return code, out.getvalue(), err.getvalue()


@pytest.mark.skipif(not POSIX, reason="file modes are POSIX")
def test_database_wal_shm_and_backups_are_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "deep" / "queue.db"
    with open_umask():
        db = QueueDatabase(path)
        db.initialize_schema()
        QueueClient(db).enqueue_many({"task_type": "t", "payload": {"n": n}} for n in range(100))
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert wal.exists()
        assert shm.exists()
        assert (mode(path), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
        backup = db.backup(tmp_path / "backup.db")
        assert mode(backup) == 0o600
        db.close()
        monkeypatch.chdir(tmp_path)
        folder = tmp_path / "backups"
        folder.mkdir()
        code, out, err = run_cli("--db", str(path), "backup", str(folder), "--json")
        assert code == 0, err
        written = Path(json.loads(out)["backup"])
        assert mode(written) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_cli_backup_names_stay_where_they_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_path = tmp_path / "queue.db"
    with QueueDatabase(db_path) as db:
        db.initialize_schema()
        QueueClient(db).enqueue("t", {"n": 1})
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    # An explicit relative destination is written exactly where it points.
    code, out, err = run_cli("--db", str(db_path), "backup", "../../explicit.db", "--json")
    assert code == 0, err
    assert (tmp_path / "explicit.db").is_file()
    assert Path(json.loads(out)["backup"]).resolve() == (tmp_path / "explicit.db").resolve()
    # A folder gets a dated name inside that folder, however the folder is spelled.
    folder = tmp_path / "backups"
    (folder / "sub").mkdir(parents=True)
    for spelling in (str(folder), str(folder) + "/", str(folder / "sub" / ".."), "../../backups"):
        before = set(folder.iterdir())
        code, out, err = run_cli("--db", str(db_path), "backup", spelling, "--json")
        assert code == 0, err
        written = Path(json.loads(out)["backup"]).resolve()
        assert written.parent == folder.resolve(), (spelling, written)
        assert re.fullmatch(r"queue-\d{8}-\d{6}\.db", written.name)
        assert set(folder.iterdir()) - before <= {written}
        written.unlink()
    assert sorted(p.name for p in folder.iterdir()) == ["sub"]


# -- limits --------------------------------------------------------------------------


def test_payload_and_result_size_limits_are_enforced(tmp_path: Path) -> None:
    with QueueDatabase(tmp_path / "q.db") as db:
        db.initialize_schema()
        client = QueueClient(db, max_payload_bytes=100)
        exact = "x" * 98  # 98 characters plus two quotes: exactly 100 bytes of JSON
        client.enqueue("t", exact)
        with pytest.raises(PayloadError, match="over the limit of 100 bytes"):
            client.enqueue("t", exact + "x")
        with pytest.raises(PayloadError, match="101 bytes"):
            client.enqueue("t", "é" * 49 + "x")  # 49 two-byte characters: 101 bytes, 51 characters
        with pytest.raises(PayloadError):
            QueueClient(db).enqueue("t", "x" * (1024 * 1024))
        assert QueueClient(db).count_by_status()["queued"] == 1
        worker = QueueWorker(db, worker_id="limits", max_result_bytes=50, lease_duration=5)
        task = worker.claim_next_task()
        assert task is not None
        with pytest.raises(PayloadError):
            worker.complete_task(task.id, "r" * 60)
        assert client.get(task.id).status.value == "leased"
        worker.complete_task(task.id, "small")
        assert client.get(task.id).result == "small"


# -- handler configuration ------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_for_prismq:run", "cannot import module 'no_such_module_for_prismq'"),
        ("os:no_such_function", "has no attribute 'no_such_function'"),
        ("os:sep", "must be callable"),
        ("os.system('id')", "is not a 'package.module:name' reference"),
        ("__import__('os'):system", "is not a 'package.module:name' reference"),
    ],
)
def test_handler_config_names_only_importable_callables(tmp_path: Path, reference: str, message: str) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(f'[worker]\ndatabase = "q.db"\n\n[handlers]\nemail = {json.dumps(reference)}\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    text = str(info.value)
    assert message in text
    assert str(config) in text, text
    assert "'email'" in text, text
    # The CLI says it in one line, exit code 2.
    code, _out, err = run_cli("worker", "--config", str(config))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_handler_config_with_an_importable_callable_loads(tmp_path: Path) -> None:
    config = tmp_path / "worker.json"
    config.write_text(json.dumps({"handlers": {"join": "os.path:join"}}))
    settings = load_settings(config)
    assert settings.build_registry().get("join").func is os.path.join  # type: ignore[union-attr]
