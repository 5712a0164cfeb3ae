"""Regenerate the parts of the documentation that restate the code.

* ``_meta/docs/queue/QUEUE_CLI_REFERENCE.md``: every ``prismq-queue`` command, argument,
  default and exit code, read from the argparse parser, and the real output of ``stats``,
  ``list``, ``show`` and ``doctor`` run on a seeded database with a fixed clock.
* Tables between ``<!-- generated: NAME -->`` and ``<!-- /generated: NAME -->`` in the
  other pages: PRAGMAs, environment variables, runtime options, strategies and their
  aliases, the error tree, the indexes of both backends, the schema migrations. Columns read from the code are
  rewritten; the prose columns (why, when to change, what it serves) are kept, matched by
  the row's first cell. A row the code gained is added with empty prose, which fails the
  run until someone writes it; a row the code lost disappears.
* The error tree in the docstring of ``prismq.queue.errors``.

Usage::

    python _meta/tools/generate_docs.py          # rewrite what is stale
    python _meta/tools/generate_docs.py --check  # exit 1 and show a diff if anything is stale
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import logging
import re
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "_meta" / "docs" / "queue"
CLI_PAGE = DOCS / "QUEUE_CLI_REFERENCE.md"
ERRORS_MODULE = ROOT / "packages" / "queue" / "src" / "prismq" / "queue" / "errors.py"
POSTGRES_MIGRATIONS = (
    ROOT / "packages" / "queue" / "src" / "prismq" / "queue" / "backends" / "postgres" / "migrations"
)
SEED_TIME = 1_800_000_000.0  # 2027-01-15 08:00 UTC: the fixed clock of the sample outputs
COMMAND = "python _meta/tools/generate_docs.py"

try:
    import prismq.queue  # noqa: F401
except ImportError:  # a plain checkout, not installed
    sys.path.insert(0, str(ROOT / "packages" / "queue" / "src"))

# Exit codes every command shares (see prismq.queue.cli.app.main), then the ones a command adds.
COMMON_EXIT_CODES = [
    ("0", "success"),
    ("1", "the queue refused: any other `QueueError` (no such task, busy, lease lost, a storage fault...)"),
    ("2", "bad usage, bad input (`ValidationError`) or bad configuration (`ConfigError`)"),
    ("130", "interrupted with Ctrl+C"),
]
COMMAND_EXIT_CODES = {
    "doctor": [("1", "a check failed (`fail`); warnings alone exit 0")],
    "checkpoint": [("1", "the checkpoint could not finish (a reader or writer held it back)")],
    "migrate": [("1", "the copy did not verify (counts or checksum differ)")],
    "restore": [("1", "the confirmation was declined")],
}
SAMPLE_COMMANDS = [
    ["stats"],
    ["list"],
    ["show", "2"],
    ["doctor"],
]


# -- Markdown helpers ----------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    # An empty cell is "| |": markdownlint's compact table style allows no wider gap.
    lines += ["|" + "|".join(f" {_cell(c)} " if c else " " for c in row) + "|" for row in rows]
    return "\n".join(lines)


def _split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def _existing_rows(block: str) -> dict[str, list[str]]:
    """A Markdown table's body rows by their first cell."""
    rows = [line for line in block.splitlines() if line.startswith("|")]
    return {cells[0]: cells for cells in map(_split_row, rows[2:])}


@dataclass
class Merged:
    """A table whose code columns come from the code and whose prose is kept by row key."""

    header: list[str]
    rows: list[list[str | None]]  # None: a prose cell, kept from the page

    def render(self, old_block: str, missing: list[str], name: str) -> str:
        old = _existing_rows(old_block)
        out: list[list[str]] = []
        for row in self.rows:
            assert row[0] is not None
            before = old.get(row[0], [])
            cells = []
            for i, value in enumerate(row):
                if value is None:
                    value = before[i] if i < len(before) else ""
                    if not value:
                        missing.append(f"{name}: write the {self.header[i]!r} cell of row {row[0]}")
                cells.append(value)
            out.append(cells)
        return _table(self.header, out)


# -- what the code says ---------------------------------------------------------------------
def _pragmas() -> Merged:
    from prismq.queue.backends.sqlite import DEFAULT_PRAGMAS

    units = {"busy_timeout": " ms", "wal_autocheckpoint": " pages"}
    rows: list[list[str | None]] = []
    for name, value in DEFAULT_PRAGMAS.items():
        shown = f"`{value}`{units.get(name, '')}"
        if isinstance(value, int) and value >= 1 << 20:
            shown += f" ({value >> 20} MiB)"
        rows.append([f"`{name}`", shown, None, None])
    return Merged(["PRAGMA", "Default", "Why", "When to change"], rows)


def _environment() -> Merged:
    from prismq.queue import config

    home = {"HOME": "~"}

    def path(platform: str, environ: dict[str, str]) -> str:
        if platform == "win32":
            return f"`{config.WINDOWS_DEFAULT_DB_PATH}`"
        return f"`{config.default_db_path(platform, environ).as_posix()}`"

    db_default = (
        f"Windows: {path('win32', home)}; macOS: {path('darwin', home)}; Linux: {path('linux', home)} "
        "(under `$XDG_DATA_HOME` when set)"
    )
    defaults = {
        config.ENV_DB_PATH: db_default,
        config.ENV_WORKER_ID: "`<hostname>-<pid>`",
        config.ENV_LEASE_DURATION: f"`{config.DEFAULT_LEASE_DURATION:g}`",
        config.ENV_MAX_WORKERS: f"`{config.env_max_workers({})}`",
    }
    names = [getattr(config, n) for n in config.__all__ if n.startswith("ENV_")]
    return Merged(["Variable", "Meaning", "Default"], [[f"`{n}`", None, defaults.get(n)] for n in names])


_OPTION_FLAGS = {
    "lease_duration": "lease",
    "task_timeout": "timeout",
    "grace_period": "grace",
    "metrics": "metrics_port",
}


def _runtime_options() -> Merged:
    from prismq.queue.cli.parsing import build_parser, parse_duration
    from prismq.queue.runtime.settings import WorkerSettings

    worker = _subparsers(build_parser())["worker"]
    flags = {a.dest: a for a in worker._actions if a.option_strings}
    names = ["concurrency", "processes", *WorkerSettings().runner_options(), "metrics", "tracing"]
    defaults = {f.name: f.default for f in fields(WorkerSettings)}
    rows: list[list[str | None]] = []
    for name in dict.fromkeys(names):
        action = flags.get(_OPTION_FLAGS.get(name, name))
        flag = ""
        if action is not None:
            metavar = "DURATION" if action.type is parse_duration else action.metavar or "N"
            flag = (
                f"`{action.option_strings[0]}`"
                if action.nargs == 0
                else f"`{action.option_strings[0]} {metavar}`"
            )
        default = defaults.get(name)
        shown: str | None
        if name == "processes":
            from prismq.queue.config import ENV_MAX_WORKERS, env_max_workers

            shown = f"`{ENV_MAX_WORKERS}`, else {env_max_workers({})}"
        elif isinstance(default, bool):
            shown = "on" if default else "off"
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            shown = f"{default:g} s" if isinstance(default, float) else str(default)
        elif isinstance(default, str):
            shown = f"`{default}`"
        else:
            shown = None  # computed (processes) or None (described in prose)
        rows.append([f"`{name}`", flag, shown, None])
    return Merged(["Option", "Command-line flag", "Default", "Meaning"], rows)


def _shown_default(value: object) -> str | None:
    """A default as the tables show it; ``None`` for a default only prose can say."""
    if isinstance(value, bool):
        return f"`{value}`"
    if isinstance(value, int) and value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value >> 20} MiB"
    if isinstance(value, float):
        return f"{value:g} s"
    if isinstance(value, int):
        return str(value)
    return None


def _worker_arguments() -> Merged:
    """The keyword arguments of ``QueueWorker``, with their defaults where the code has one."""
    import inspect

    from prismq.queue import QueueWorker

    rows: list[list[str | None]] = []
    for name, parameter in inspect.signature(QueueWorker).parameters.items():
        if name == "db":
            continue
        rows.append([f"`{name}`", _shown_default(parameter.default), None])
    return Merged(["Argument of `QueueWorker`", "Default", "Guidance"], rows)


def _strategies() -> Merged:
    from prismq.queue import strategies

    classes = [
        strategies.FIFOStrategy,
        strategies.LIFOStrategy,
        strategies.PriorityStrategy,
        strategies.WeightedRandomStrategy,
    ]
    rows: list[list[str | None]] = []
    for cls in classes:
        aliases = [a for a, target in strategies.STRATEGY_ALIASES.items() if target == cls.name]
        default = " (default)" if strategies.resolve_strategy(None).name == cls.name else ""
        ctor = (
            "WeightedRandomStrategy(weights, default_weight=1.0)"
            if cls is strategies.WeightedRandomStrategy
            else f"{cls.__name__}()"
        )
        rows.append(
            [f"`{cls.name}`{default}", ", ".join(f"`{a}`" for a in aliases) or "", f"`{ctor}`", None, None]
        )
    return Merged(["Name", "Also accepted", "Object", "Use it for", "Watch out for"], rows)


def _error_classes() -> type[Exception]:
    """``QueueError``, with every module of the package imported so its subclasses exist.

    Errors live outside ``prismq.queue.errors`` too (``MigrationError`` in ``migrate``,
    ``TaskFailed`` in the runtime); a module whose optional dependency is missing is
    skipped.
    """
    import importlib
    import pkgutil

    import prismq.queue
    from prismq.queue.errors import QueueError

    for module in pkgutil.walk_packages(prismq.queue.__path__, "prismq.queue."):
        if module.name.endswith(".__main__"):
            continue  # an entry point, not a module of classes
        with contextlib.suppress(ImportError):
            importlib.import_module(module.name)
    return QueueError


def _markdown_text(text: str) -> str:
    """Help text as Markdown: ``*`` escaped (cron fields), web addresses in code spans."""
    text = text.replace("*", "\\*")
    return re.sub(r"(https?://[^\s)]+)", r"`\1`", text)


def render_error_tree(summaries: bool = True) -> str:
    """The ``QueueError`` hierarchy as a text tree, with each class's one-line summary.

    Args:
        summaries: Add the first line of each class's docstring (the API reference does;
            the module docstring of ``prismq.queue.errors`` names the classes only).
    """
    root = _error_classes()
    lines: list[str] = [root.__name__]
    entries: list[tuple[str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        children = sorted(
            (c for c in cls.__subclasses__() if c.__module__.startswith("prismq.queue")),
            key=lambda c: (c.__module__ != "prismq.queue.errors", c.__module__, _source_order(c)),
        )
        for i, child in enumerate(children):
            last = i == len(children) - 1
            summary = _summary(child) if summaries else _home(child)
            entries.append((f"{prefix}{'└── ' if last else '├── '}{child.__name__}", summary))
            walk(child, prefix + ("    " if last else "│   "))

    walk(root, "")
    width = max(len(label) for label, _ in entries) + 1
    lines += [f"{label.ljust(width)}{summary}".rstrip() for label, summary in entries]
    return "\n".join(lines)


def _source_order(cls: type) -> int:
    import inspect

    try:
        return inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return 0


def _home(cls: type) -> str:
    return "" if cls.__module__ == "prismq.queue.errors" else f"in {cls.__module__}"


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    text = doc[0].rstrip(".") if doc else ""
    return text + (f" ({_home(cls)})" if _home(cls) else "")


def _index_definitions(sql: str) -> Iterator[tuple[str, str, str, bool, str | None]]:
    """(name, table, key, unique, where) of each CREATE INDEX in ``sql``."""
    for match in re.finditer(
        r"CREATE\s+(UNIQUE\s+)?INDEX\s+(?:IF NOT EXISTS\s+)?(\w+)\s+ON\s+(\w+)\s*\(", sql, re.I
    ):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        key = " ".join(sql[match.end() : i - 1].split())
        rest = re.match(r"\s*WHERE\s+(.*?)\s*(?:;|$)", sql[i:], re.S | re.I)
        where = " ".join(rest.group(1).split()) if rest else None
        yield match.group(2), match.group(3), key, bool(match.group(1)), where


def _sqlite_indexes() -> list[tuple[str, str, str, bool, str | None]]:
    from prismq.queue import QueueDatabase

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "schema.db"
        with QueueDatabase(path) as db:
            db.initialize_schema()
        conn = sqlite3.connect(path)
        try:
            sql = ";\n".join(
                row[0]
                for row in conn.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                )
            )
        finally:
            conn.close()
    return sorted(_index_definitions(sql + ";"), key=lambda d: (d[1] != "tasks", d[1], d[0]))


def _postgres_indexes() -> list[tuple[str, str, str, bool, str | None]]:
    found: dict[str, tuple[str, str, str, bool, str | None]] = {}
    for path in sorted(POSTGRES_MIGRATIONS.glob("*.sql")):
        sql = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
        for dropped in re.findall(r"DROP\s+INDEX\s+(?:IF EXISTS\s+)?(\w+)", sql, re.I):
            found.pop(dropped, None)
        for table in re.findall(r"DROP\s+TABLE\s+(?:IF EXISTS\s+)?(\w+)", sql, re.I):
            found = {name: d for name, d in found.items() if d[1] != table}  # its indexes go with it
        for definition in _index_definitions(sql):
            found[definition[0]] = definition
    return sorted(found.values(), key=lambda d: (d[1] != "tasks", d[1], d[0]))


def _index_table(definitions: list[tuple[str, str, str, bool, str | None]]) -> Merged:
    rows: list[list[str | None]] = [
        [
            f"`{name}`" + (" (unique)" if unique else ""),
            f"`{table}`",
            f"`{key}`",
            f"`{where}`" if where else "every row",
            None,
        ]
        for name, table, key, unique, where in definitions
    ]
    return Merged(["Index", "Table", "Key", "Rows held", "Serves"], rows)


def _migrations(backend: str) -> Merged:
    """One row per schema version of ``backend`` (``sqlite`` or ``postgres``): its migration file.

    Each backend numbers its own migrations, so the same version number may mean different
    changes on the two backends.
    """
    from prismq.queue.backends.sqlfile import load_migrations

    found = load_migrations(f"prismq.queue.backends.{backend}")
    rows: list[list[str | None]] = [[str(version), f"`{name}`", None, None] for version, name, _ in found]
    return Merged(["Version", "File", "What changed", "Upgrading"], rows)


# -- the CLI reference ----------------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _default(action: argparse.Action) -> str:
    if action.required or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
        return ""
    if isinstance(action.default, float) and action.default.is_integer():
        return f"`{int(action.default)}`"
    return f"`{action.default}`"


def _argument_rows(parser: argparse.ArgumentParser) -> list[list[str]]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += f" {action.metavar or action.dest.upper()}"
        else:
            name = action.metavar or action.dest
        choices = f" One of: {', '.join(map(str, action.choices))}." if action.choices else ""
        required = (
            "yes" if action.required or (not action.option_strings and action.nargs not in ("?", "*")) else ""
        )
        rows.append([f"`{name}`", required, _default(action), _markdown_text((action.help or "") + choices)])
    return rows


@contextlib.contextmanager
def _inside(folder: str) -> Iterator[None]:
    """Run the body with ``folder`` as the working folder (``contextlib.chdir`` is 3.11+)."""
    import os

    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _sample_outputs() -> dict[str, str]:
    """Run the sample commands on a seeded database with a fixed clock; their output by command."""
    from functools import partial

    from rich.console import Console

    from prismq.queue import QueueClient, QueueDatabase, QueueWorker
    from prismq.queue.cli import app, output

    now = [SEED_TIME]

    def clock() -> float:
        return now[0]

    captured: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder, _inside(folder):
        with QueueDatabase("queue.db", clock=clock) as db:
            db.initialize_schema()
            client = QueueClient(db)
            client.enqueue("send_email", {"to": "ada@example.com"}, priority=50)
            client.enqueue("render_video", {"video_id": "abc123"})
            client.enqueue("send_email", {"to": "alan@example.com"}, priority=50, max_attempts=1)
            client.enqueue("send_report", {"month": "2027-01"}, delay=3600)
            client.enqueue("render_video", {"video_id": "def456"})
            worker = QueueWorker(db, worker_id="worker-01", strategy="priority", lease_duration=60)
            now[0] += 30
            first = worker.claim_next_task()
            assert first is not None
            worker.complete_task(first, {"sent": True})
            now[0] += 5
            failing = worker.claim_next_task()
            assert failing is not None
            worker.fail_task(failing, "SMTP server refused the recipient")
            now[0] += 10
            running = worker.claim_next_task()
            assert running is not None
            worker.update_progress(running, 40, "encoding frame 480 of 1200")
            # The registry stores this machine's name and pid: give the sample stable ones.
            with db.transaction() as conn:
                conn.execute("UPDATE workers SET hostname = 'app-01', pid = 4242")
            now[0] += 20
            db.checkpoint("TRUNCATE")
        console = Console(file=io.StringIO(), width=120, highlight=False, soft_wrap=True, color_system=None)
        real_console, real_db = output.console, app.QueueDatabase
        output.console, app.QueueDatabase = console, partial(QueueDatabase, clock=clock)
        root = logging.getLogger()
        root_handlers, root_level = root.handlers[:], root.level  # main() configures logging
        try:
            for args in SAMPLE_COMMANDS:
                console.file = io.StringIO()
                code = app.main(["--db", "queue.db", *args])
                text = console.file.getvalue()
                lines = [line.rstrip() for line in text.splitlines()]
                captured[" ".join(args)] = "\n".join(lines).strip("\n") + f"\n# exit code {code}"
        finally:
            output.console, app.QueueDatabase = real_console, real_db
            root.handlers[:], root.level = root_handlers, root_level
    return captured


def _command_section(path: list[str], sub: argparse.ArgumentParser, samples: dict[str, str]) -> list[str]:
    """The section of one command, and of its own subcommands (one heading level deeper)."""
    name = " ".join(path)
    heading = "#" * (len(path) + 1)
    description = (sub.description or "").rstrip(".")
    out = [f"{heading} {name}", "", description[:1].upper() + description[1:] + ".", "", "```text"]
    usage = " ".join(sub.format_usage().split())
    out += [usage.removeprefix("usage: "), "```", ""]
    rows = _argument_rows(sub)
    children = _subparsers(sub)
    if rows:
        out += [_table(["Argument", "Required", "Default", "Meaning"], rows), ""]
    elif not children:
        out += ["No arguments.", ""]
    if children:
        listed = ", ".join(f"`{child}`" for child in children)
        out += [f"Subcommands: {listed}, each below.", ""]
    if name in COMMAND_EXIT_CODES:
        out += ["Exit codes besides the common ones:", ""]
        out += [_table(["Code", "Meaning"], [[f"`{c}`", m] for c, m in COMMAND_EXIT_CODES[name]]), ""]
    for sample, text in samples.items():
        if sample.split()[: len(path)] == path and not children:
            out += [f"Sample output of `prismq-queue {sample}`:", "", "```text", text, "```", ""]
    for child, parser in children.items():
        out += _command_section([*path, child], parser, samples)
    return out


def render_cli_reference() -> str:
    """The whole CLI reference page."""
    from prismq.queue.cli.parsing import build_parser

    parser = build_parser()
    commands = _subparsers(parser)
    samples = _sample_outputs()
    out = [
        "# PrismQ Queue CLI Reference",
        "",
        f"<!-- Generated by {COMMAND} from the argparse parser; do not edit by hand. -->",
        "",
        "Every command of `prismq-queue` (also `python -m prismq.queue`), with its arguments,",
        "defaults and exit codes, read from the command's parser. The sample outputs below",
        "are real: the generator runs the commands on a seeded database with a fixed clock.",
        "A test fails when this page no longer matches the code.",
        "",
        "## Global options",
        "",
        "Global options come before the command: `prismq-queue --db queue.db stats`.",
        "",
        _table(["Option", "Required", "Default", "Meaning"], _argument_rows(parser)),
        "",
        "## Exit codes",
        "",
        _table(["Code", "Meaning"], [[f"`{c}`", m] for c, m in COMMON_EXIT_CODES]),
        "",
        "Errors are one line on stderr (`error: ...`); `--debug` adds the traceback.",
        "Commands with other exit codes list them in their section.",
        "",
        "## Commands",
        "",
        _table(
            ["Command", "What it does"],
            [[f"[`{n}`](#{n})", p.description or ""] for n, p in commands.items()],
        ),
        "",
    ]
    for name, sub in commands.items():
        out += _command_section([name], sub, samples)
    return "\n".join(out).rstrip("\n") + "\n"


# -- blocks in the existing pages -----------------------------------------------------------
TABLES: dict[tuple[str, str], Callable[[], Merged | str]] = {
    ("QUEUE_CONFIGURATION.md", "pragmas"): _pragmas,
    ("QUEUE_CONFIGURATION.md", "environment"): _environment,
    ("QUEUE_CONFIGURATION.md", "runtime-options"): _runtime_options,
    ("QUEUE_CONFIGURATION.md", "strategies"): _strategies,
    ("QUEUE_CONFIGURATION.md", "worker-arguments"): _worker_arguments,
    ("QUEUE_ARCHITECTURE.md", "sqlite-indexes"): lambda: _index_table(_sqlite_indexes()),
    ("QUEUE_ARCHITECTURE.md", "postgres-indexes"): lambda: _index_table(_postgres_indexes()),
    ("QUEUE_CHANGELOG.md", "sqlite-migrations"): lambda: _migrations("sqlite"),
    ("QUEUE_CHANGELOG.md", "postgres-migrations"): lambda: _migrations("postgres"),
    ("QUEUE_API_REFERENCE.md", "error-tree"): lambda: "```text\n" + render_error_tree() + "\n```",
}
_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(\n?<!-- /generated: (?P=name) -->)", re.S
)


def render_page(page: str, text: str, missing: list[str]) -> str:
    """``text`` with every generated block of ``page`` rewritten from the code."""
    wanted = {name: render for (p, name), render in TABLES.items() if p == page}
    seen: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in wanted:
            missing.append(f"{page}: unknown generated block {name!r}")
            return match.group(0)
        seen.add(name)
        made = wanted[name]()
        body = made if isinstance(made, str) else made.render(match.group("body"), missing, f"{page} {name}")
        return match.group(1) + body + "\n" + match.group(4).lstrip("\n")

    result = _BLOCK.sub(replace, text)
    for name in sorted(set(wanted) - seen):
        missing.append(f"{page}: the markers of the generated block {name!r} are missing")
    return result


def render_errors_module(text: str) -> str:
    """The source of ``prismq/queue/errors.py`` with its docstring tree current."""
    return re.sub(
        r"(\n```\n)QueueError\n.*?(\n```\n)",
        lambda m: m.group(1) + render_error_tree(summaries=False) + m.group(2),
        text,
        count=1,
        flags=re.S,
    )


def outputs(missing: list[str]) -> dict[Path, str]:
    """Every generated file, with its wanted content."""
    result = {CLI_PAGE: render_cli_reference()}
    for page in sorted({p for p, _ in TABLES}):
        path = DOCS / page
        result[path] = render_page(page, path.read_text(encoding="utf-8"), missing)
    result[ERRORS_MODULE] = render_errors_module(ERRORS_MODULE.read_text(encoding="utf-8"))
    return result


def main(argv: list[str] | None = None) -> int:
    """Rewrite the stale parts, or with ``--check`` report them; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail (exit 1) when a generated part is stale")
    args = parser.parse_args(argv)
    missing: list[str] = []
    stale = 0
    for path, wanted in outputs(missing).items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == wanted:
            continue
        name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        if args.check:
            stale += 1
            print(f"{name} is out of date; run: {COMMAND}", file=sys.stderr)
            sys.stderr.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    wanted.splitlines(keepends=True),
                    fromfile=f"{name} (committed)",
                    tofile=f"{name} (generated)",
                )
            )
        else:
            path.write_text(wanted, encoding="utf-8", newline="\n")
            print(f"wrote {name}")
    for problem in missing:
        print(problem, file=sys.stderr)
    return 1 if stale or missing else 0


if __name__ == "__main__":
    sys.exit(main())
