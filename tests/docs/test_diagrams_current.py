"""The generated diagrams in the docs match what diagrams/generate.py produces now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "prismq_diagrams_generate", ROOT / "diagrams" / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


@pytest.mark.parametrize("name", sorted(generate.GENERATED))
def test_committed_diagram_is_current(name: str) -> None:
    committed = generate.OUTPUT_DIR / name
    assert committed.exists(), f"{committed} is missing; run: python diagrams/generate.py"
    assert committed.read_text(encoding="utf-8") == generate.GENERATED[name](), (
        f"{committed.relative_to(ROOT)} is out of date; run: python diagrams/generate.py"
    )


def test_check_mode_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--output-dir", str(tmp_path)]) == 0
    assert generate.main(["--check", "--output-dir", str(tmp_path)]) == 0
    (tmp_path / "state-machine.mmd").write_text("stateDiagram-v2\n", encoding="utf-8")
    assert generate.main(["--check", "--output-dir", str(tmp_path)]) == 1
    assert "state-machine.mmd is out of date" in capsys.readouterr().err


def test_state_machine_has_every_transition() -> None:
    from prismq.queue.models import TASK_TRANSITIONS

    text = generate.render_state_machine()
    for (source, target), event in TASK_TRANSITIONS.items():
        assert f"    {source.value} --> {target.value} : {event}" in text.splitlines()


def test_schema_lists_every_table_and_index(db_path: Path) -> None:
    import sqlite3

    from prismq.queue import QueueDatabase

    database = QueueDatabase(db_path)
    database.initialize_schema()
    database.close()
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT type, name FROM sqlite_master"
            " WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    finally:
        conn.close()
    text = generate.render_schema()
    assert text.startswith("erDiagram\n")
    for kind, name in rows:
        if kind == "table":
            assert f"    {name} {{" in text
        else:
            assert f"INDEX {name} ON" in text
