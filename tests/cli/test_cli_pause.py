"""``prismq-queue pause | resume | paused``."""

from __future__ import annotations

import json
from pathlib import Path

from prismq.queue import QueueClient, QueueDatabase
from prismq.queue.cli.app import main


def test_pause_resume_and_list(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "queue.db")
    assert main(["--db", db, "pause", "email"]) == 0
    assert "email paused" in capsys.readouterr().out
    assert main(["--db", db, "pause", "email"]) == 0
    assert "already paused" in capsys.readouterr().out
    assert main(["--db", db, "paused", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["task_type"] for row in listed] == ["email"]
    with QueueDatabase(db) as database:
        assert set(QueueClient(database).paused()) == {"email"}
    assert main(["--db", db, "resume", "email", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"task_type": "email", "paused": False, "changed": True}
    assert main(["--db", db, "paused"]) == 0
    assert "No task type is paused" in capsys.readouterr().out
    assert main(["--db", db, "pause", ""]) == 2
    assert "must not be empty" in capsys.readouterr().err
