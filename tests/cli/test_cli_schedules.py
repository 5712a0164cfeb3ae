"""``prismq-queue schedules``: list, add, pause, resume, remove, run-now, through the real
entry point in subprocesses: output, JSON shapes, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prismq.queue import QueueClient, QueueDatabase

SRC = Path(__file__).resolve().parents[2] / "packages" / "queue" / "src"
SCHEDULE_KEYS = {
    "name", "cron", "timezone", "task_type", "payload", "priority", "max_attempts", "misfire",
    "max_backfill", "grace", "source", "paused", "next_run", "last_run", "last_task_id",
    "created_at", "updated_at",
}  # fmt: skip


def run(db_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "prismq.queue", "--db", str(db_path), "schedules", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def ok(db_path: Path, *args: str) -> str:
    proc = run(db_path, *args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def ok_json(db_path: Path, *args: str) -> Any:
    return json.loads(ok(db_path, *args, "--json"))


def test_add_list_pause_resume_run_now_remove(db_path: Path) -> None:
    out = ok(
        db_path, "add", "nightly", "0 3 * * *", "report", '{"kind": "daily"}', "--timezone", "Europe/Prague"
    )
    assert out.startswith("Added schedule nightly; next run ")
    added = ok_json(
        db_path, "add", "five", "*/5 * * * *", "cleanup", "--misfire", "backfill", "--max-backfill", "4"
    )
    assert set(added) == SCHEDULE_KEYS
    assert (added["misfire"], added["max_backfill"], added["source"], added["paused"]) == (
        "backfill",
        4,
        "api",
        False,
    )
    listed = ok_json(db_path, "list")
    assert [s["name"] for s in listed] == ["five", "nightly"]
    assert listed[1]["payload"] == {"kind": "daily"}
    assert listed[1]["timezone"] == "Europe/Prague"
    table = ok(db_path, "list")
    for text in ("nightly", "0 3 * * *", "Europe/Prague", "backfill 4", "running", "api"):
        assert text in table
    assert ok_json(db_path, "pause", "five")["paused"] is True
    assert "paused" in ok(db_path, "list").split("five", 1)[1].splitlines()[0]
    assert ok(db_path, "resume", "five").startswith("Resumed schedule five; next run ")
    task_id = ok_json(db_path, "run-now", "nightly")["task_id"]
    with QueueDatabase(db_path) as db:
        task = QueueClient(db).get(task_id)
        assert (task.task_type, task.payload) == ("report", {"kind": "daily"})
    assert ok(db_path, "remove", "five").strip() == "Removed schedule five"
    assert [s["name"] for s in ok_json(db_path, "list")] == ["nightly"]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["add", "x", "61 * * * *", "t"], 2, "is not a cron expression (Bad minute)"),
        (["add", "x", "* * * * *", "t", "--timezone", "Mars/Base"], 2, "unknown time zone 'Mars/Base'"),
        (["add", "x", "* * * * *", "t", "--misfire", "backfill", "--max-backfill", "0"], 2, "max_backfill"),
        (["add", "x", "* * * * *", "t", "--misfire", "often"], 2, "invalid choice: 'often'"),
        (["add", "x", "* * * * *", "t", "{not json"], 2, "payload is not valid JSON"),
        (["pause", "nope"], 1, "ScheduleNotFoundError: no schedule named 'nope'"),
        (["run-now", "nope"], 1, "no schedule named 'nope'"),
        (["remove", "nope"], 1, "no schedule named 'nope'"),
        ([], 2, "choose an action"),
    ],
)
def test_errors_are_one_line_with_the_right_exit_code(
    db_path: Path, args: list[str], code: int, fragment: str
) -> None:
    proc = run(db_path, *args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr


def test_adding_a_taken_name_needs_replace(db_path: Path) -> None:
    ok(db_path, "add", "job", "* * * * *", "t")
    proc = run(db_path, "add", "job", "0 * * * *", "t")
    assert proc.returncode == 2
    assert "a schedule named 'job' exists" in proc.stderr
    assert ok_json(db_path, "add", "job", "0 * * * *", "t", "--replace")["cron"] == "0 * * * *"
    assert ok(db_path, "list", "--json").count('"name"') == 1
    empty = ok(db_path.with_name("other.db"), "list")
    assert empty.strip() == "No schedules."


def test_worker_command_stores_the_config_file_schedules(db_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(
        f'[worker]\ndatabase = "{db_path.name}"\n\n[handlers]\nreport = "json:dumps"\n\n'
        '[schedules.nightly]\ncron = "0 3 * * *"\ntask_type = "report"\ntimezone = "Europe/Prague"\n',
        encoding="utf-8",
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "prismq.queue", "worker", "--config", str(config), "--burst"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "schedules stored: nightly" in proc.stderr
    (stored,) = ok_json(db_path, "list")
    assert (stored["name"], stored["source"], stored["timezone"]) == ("nightly", "config", "Europe/Prague")
    bad = config.with_name("bad.toml")
    bad.write_text(config.read_text(encoding="utf-8").replace("0 3 * * *", "0 25 * * *"), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "prismq.queue", "worker", "--config", str(bad), "--burst"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert f"{bad}: schedules.nightly: '0 25 * * *' is not a cron expression (Bad hour)" in proc.stderr
