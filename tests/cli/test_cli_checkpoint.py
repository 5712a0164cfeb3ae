"""``prismq-queue checkpoint``, and the commands ``doctor`` advises, which the CLI must accept."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from prismq.queue import QueueClient, QueueDatabase
from prismq.queue.cli import doctor
from prismq.queue.cli.parsing import build_parser


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prismq.queue", *args], capture_output=True, text=True, timeout=60
    )


def open_with_a_grown_wal(path: Path) -> QueueDatabase:
    """A database kept open (so its -wal file stays) with automatic checkpoints off."""
    db = QueueDatabase(path, pragmas={"wal_autocheckpoint": 0})
    db.initialize_schema()
    QueueClient(db).enqueue_many([{"task_type": "x", "payload": {"pad": "p" * 500}} for _ in range(300)])
    assert Path(f"{path}-wal").stat().st_size > 100_000
    return db


@pytest.mark.parametrize("mode", ["TRUNCATE", "truncate"])
def test_checkpoint_truncate_copies_the_log_and_empties_the_wal_file(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "queue.db"
    with open_with_a_grown_wal(path):
        proc = run_cli("--db", str(path), "checkpoint", "--mode", mode, "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["applies"] is True
        assert report["mode"] == "TRUNCATE"
        assert report["busy"] is False
        # After TRUNCATE, SQLite reports the new (empty) log: 0 frames, all of them copied.
        assert report["checkpointed_frames"] == report["log_frames"] == 0
        assert report["wal_bytes_before"] > 100_000
        assert report["wal_bytes_after"] == 0
        assert Path(f"{path}-wal").stat().st_size == 0


def test_checkpoint_passive_is_the_default_and_prints_a_summary(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with open_with_a_grown_wal(path) as db:
        proc = run_cli("--db", str(path), "checkpoint")
        assert proc.returncode == 0, proc.stderr
        copied = re.search(r"Checkpoint PASSIVE: (\d+) of \1 WAL frame\(s\) copied", proc.stdout)
        assert copied, proc.stdout
        assert int(copied.group(1)) > 20, proc.stdout
        assert QueueClient(db).count_by_status()["queued"] == 300


def test_checkpoint_refuses_an_unknown_mode(tmp_path: Path) -> None:
    proc = run_cli("--db", str(tmp_path / "queue.db"), "checkpoint", "--mode", "sometimes")
    assert proc.returncode == 2
    assert "invalid choice: 'SOMETIMES'" in proc.stderr
    assert "TRUNCATE" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.postgres
def test_checkpoint_on_postgresql_says_it_does_not_apply(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    proc = run_cli("--db", f"{url}?schema={schema}", "checkpoint", "--mode", "FULL", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["applies"] is False
    assert report["backend"] == "postgresql"
    assert "checkpoints its write-ahead log by itself" in report["detail"]


def test_doctor_wal_advice_names_a_command_that_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "queue.db"
    with open_with_a_grown_wal(path) as db:
        monkeypatch.setattr(doctor, "WAL_WARN_BYTES", 1)
        check = next(c for c in doctor.run_doctor(db)["checks"] if c["check"] == "WAL size")
        assert check["status"] == "warn"
        advised = re.findall(r"'(prismq-queue [^']*)'", check["detail"])
        assert advised, check["detail"]
        argv = shlex.split(advised[0])[1:]
        assert build_parser().parse_args(argv).command == "checkpoint"
        proc = run_cli("--db", str(path), *argv)
        assert proc.returncode == 0, proc.stderr
        assert Path(f"{path}-wal").stat().st_size == 0


def test_every_command_doctor_advises_is_accepted_by_the_parser() -> None:
    source = inspect.getsource(doctor)
    advised = set(re.findall(r"prismq-queue (?:[a-z][a-z-]*)(?: --?[a-z-]+(?: [A-Za-z]+)?)*", source))
    assert {"prismq-queue init", "prismq-queue checkpoint --mode TRUNCATE"} <= advised
    for command in advised:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.command, command
