"""The docs restate the code only where a generator or a test keeps them honest.

``_meta/tools/generate_docs.py`` writes the CLI reference and the tables between
``<!-- generated: ... -->`` markers; these tests fail when a committed copy is stale, and
check the claims the generator does not own (every command documented in prose, the lease
renewal interval).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from meta_tools import load_tool

from prismq.queue import QueueDatabase, QueueWorker
from prismq.queue.cli.parsing import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "_meta" / "docs"


generate = load_tool("generate_docs")


def test_generated_docs_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    code = generate.main(["--check"])
    assert code == 0, f"run: python _meta/tools/generate_docs.py\n{capsys.readouterr().err}"


def test_a_stale_table_is_rewritten_and_its_prose_kept() -> None:
    page = (DOCS / "queue" / "QUEUE_CONFIGURATION.md").read_text(encoding="utf-8")
    stale = page.replace("| `busy_timeout` | `5000` ms |", "| `busy_timeout` | `1` ms |")
    assert stale != page
    missing: list[str] = []
    assert generate.render_page("QUEUE_CONFIGURATION.md", stale, missing) == page
    assert missing == []


def test_a_row_without_prose_is_reported() -> None:
    page = (DOCS / "queue" / "QUEUE_CONFIGURATION.md").read_text(encoding="utf-8")
    row = next(line for line in page.splitlines() if line.startswith("| `foreign_keys` |"))
    missing: list[str] = []
    rendered = generate.render_page("QUEUE_CONFIGURATION.md", page.replace(row + "\n", ""), missing)
    assert "| `foreign_keys` | `ON` | | |" in rendered
    assert any("foreign_keys" in problem for problem in missing)


def test_check_fails_on_a_stale_page_and_a_run_fixes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "QUEUE_CLI_REFERENCE.md"
    page.write_text("# out of date\n", encoding="utf-8")
    monkeypatch.setattr(generate, "CLI_PAGE", page)
    assert generate.main(["--check"]) == 1
    assert "QUEUE_CLI_REFERENCE.md is out of date" in capsys.readouterr().err
    assert page.read_text(encoding="utf-8") == "# out of date\n"  # --check writes nothing
    assert generate.main([]) == 0
    assert "## worker" in page.read_text(encoding="utf-8")
    assert generate.main(["--check"]) == 0


def test_error_tree_holds_every_queue_error() -> None:
    from prismq.queue import errors
    from prismq.queue.migrate import MigrationError

    tree = generate.render_error_tree()
    for name in errors.__all__:
        assert re.search(rf"\b{name}\b", tree), name
    assert "MigrationError" in tree
    assert issubclass(MigrationError, errors.StorageError)
    assert "│   └── MigrationError" in tree or "│   ├── MigrationError" in tree


def _commands() -> dict[str, object]:
    for action in build_parser()._actions:
        if getattr(action, "choices", None) and action.dest == "command":
            return dict(action.choices)  # type: ignore[arg-type]
    raise AssertionError("the parser has no commands")


def _sections(parser: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every command and nested subcommand, with its parser."""
    found = []
    for action in parser._actions:  # type: ignore[attr-defined]
        if getattr(action, "choices", None) and action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                found.append(((*path, name), sub))
                found += _sections(sub, (*path, name))
    return found


def test_every_command_and_flag_is_in_the_cli_reference() -> None:
    reference = (DOCS / "queue" / "QUEUE_CLI_REFERENCE.md").read_text(encoding="utf-8")
    sections = _sections(build_parser())
    assert {path[0] for path, _ in sections} == set(_commands())
    for path, parser in sections:
        heading = f"\n{'#' * (len(path) + 1)} {' '.join(path)}\n"
        assert heading in reference, path
        section = reference.split(heading, 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:  # type: ignore[attr-defined]
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in section, f"{' '.join(path)} {flag}"
    for flag in ("--db", "--debug", "--version"):
        assert f"`{flag}" in reference


def test_every_command_is_described_in_a_hand_written_page() -> None:
    """The reference lists every command; a guide must also say when to use it."""
    prose = "\n".join(
        path.read_text(encoding="utf-8")
        for path in sorted(DOCS.rglob("*.md"))
        if path.name != "QUEUE_CLI_REFERENCE.md"
    ) + (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in _commands() if f"prismq-queue {name}" not in prose]
    assert missing == [], f"commands no guide mentions as 'prismq-queue NAME': {missing}"


def test_renewal_interval_in_the_docs_matches_the_worker(tmp_path: Path) -> None:
    with QueueDatabase(tmp_path / "q.db") as db:
        db.initialize_schema()
        cap = QueueWorker(db, "w", lease_duration=3600, register=False).heartbeat_interval
        quarter = QueueWorker(db, "w2", lease_duration=8, register=False).heartbeat_interval
    assert quarter == 2.0
    configuration = (DOCS / "queue" / "QUEUE_CONFIGURATION.md").read_text(encoding="utf-8")
    assert f"renews leases every quarter of this, and at least every {cap:g} s" in configuration


def test_config_module_docstring_lists_every_variable_with_its_default() -> None:
    from prismq.queue import config

    table = config.__doc__ or ""
    for name in (getattr(config, n) for n in config.__all__ if n.startswith("ENV_")):
        assert f"``{name}``" in table, name
    row = next(line for line in table.splitlines() if "PRISMQ_QUEUE_MAX_WORKERS``" in line)
    assert row.rstrip().endswith(f"``{config.env_max_workers({})}`` |")
    row = next(line for line in table.splitlines() if "PRISMQ_QUEUE_LEASE_DURATION``" in line)
    assert row.rstrip().endswith(f"``{config.DEFAULT_LEASE_DURATION:g}`` |")


def test_documented_exit_codes_are_what_the_cli_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from prismq.queue.cli.app import main

    root = logging.getLogger()  # main() configures logging; leave it as it was
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(root, "level", root.level)

    codes = dict(generate.COMMON_EXIT_CODES)
    database = str(tmp_path / "q.db")
    assert set(codes) == {"0", "1", "2", "130"}
    assert main(["--db", database, "init"]) == 0
    assert main(["--db", database, "show", "999"]) == 1  # TaskNotFoundError
    assert main(["--db", database, "enqueue", "x", "{not json"]) == 2  # usage
    assert main(["--db", database, "enqueue", "x", "1", "--priority", "5000"]) == 2  # ValidationError
    assert main(["no-such-command"]) == 2
    # doctor's own code: 1 when a check fails (a database with no schema yet).
    assert "1" in dict(generate.COMMAND_EXIT_CODES["doctor"])
    assert main(["--db", str(tmp_path / "empty.db"), "doctor"]) == 1


def test_where_settings_come_from_states_the_code_defaults() -> None:
    """The overview table of QUEUE_CONFIGURATION is prose; its numbers are the code's."""
    import inspect

    from prismq.queue import QueueClient, RetryPolicy

    page = (DOCS / "queue" / "QUEUE_CONFIGURATION.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| ")}
    busy = inspect.signature(QueueDatabase).parameters["busy_retries"].default
    assert rows["Busy retries"].rstrip().endswith(f"| {busy} |")
    payload = inspect.signature(QueueClient).parameters["max_payload_bytes"].default
    assert payload == 1 << 20
    assert rows["Payload limit"].rstrip().endswith("| 1 MiB |")
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay, policy.multiplier, policy.max_delay) == (
        3,
        1.0,
        2.0,
        300.0,
    )
    assert rows["Retry policy"].rstrip().endswith("| 3 attempts, 1 s doubling, 5 min cap |")
    assert rows["Strategy"].rstrip().endswith("| `fifo` |")


def test_nested_subcommands_get_sections_of_their_own() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="prismq-queue")
    schedules = parser.add_subparsers(dest="command").add_parser("schedules", description="manage schedules")
    add = schedules.add_subparsers(dest="action").add_parser("add", description="add a schedule")
    add.add_argument("--every", default="1h", help="interval")
    text = "\n".join(generate._command_section(["schedules"], schedules, {}))
    assert "## schedules\n" in text
    assert "Subcommands: `add`, each below." in text
    assert "### schedules add\n" in text
    assert "| `--every EVERY` | | `1h` | interval |" in text
