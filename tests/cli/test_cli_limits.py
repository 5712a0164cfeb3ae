"""``prismq-queue limits`` and ``enqueue --concurrency-key`` through the CLI's entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prismq.queue import FIFOStrategy, FlowLimit, QueueClient, QueueDatabase
from prismq.queue.cli.app import main


def run(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--db", str(db), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_set_list_and_remove_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "q.db"
    assert run(capsys, db, "limits", "set-concurrency", "2", "--type", "email")[0] == 0
    code, out, _ = run(capsys, db, "limits", "set-rate", "10", "1m", "--key", "api")
    assert code == 0
    assert "At most 10 started per 60s" in out
    assert run(capsys, db, "enqueue", "email", "{}", "--concurrency-key", "api")[0] == 0
    with QueueDatabase(db) as opened:
        assert QueueClient(opened).list_limits() == [
            FlowLimit("", "api", None, 10, 60.0),
            FlowLimit("email", "", 2, None, None),
        ]
        assert len(opened.backend.claim("w", None, FIFOStrategy(), 5, 60, opened.now())) == 1
    code, out, _ = run(capsys, db, "limits", "list", "--json")
    assert code == 0
    assert json.loads(out) == [
        {
            "task_type": None,
            "key": "api",
            "max_leased": None,
            "leased": None,
            "max_starts": 10,
            "period": 60.0,
            "started_in_period": 1,
        },
        {
            "task_type": "email",
            "key": None,
            "max_leased": 2,
            "leased": 1,
            "max_starts": None,
            "period": None,
            "started_in_period": None,
        },
    ]
    code, out, _ = run(capsys, db, "limits", "list")
    assert "1 / 2 leased" in out
    assert "1 / 10 per 60s" in out
    code, out, _ = run(capsys, db, "limits", "remove", "rate", "--key", "api")
    assert code == 0
    assert "Removed the rate limit" in out
    code, out, _ = run(capsys, db, "limits", "remove", "rate", "--key", "api")
    assert code == 0
    assert "No rate limit was set" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("limits", "set-concurrency", "0", "--type", "t"), "limit must be an integer"),
        (("limits", "set-concurrency", "2"), "needs a task_type, a key, or both"),
        (("limits", "set-rate", "2", "0s", "--key", "k"), "period"),
    ],
)
def test_bad_limits_exit_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, _, err = run(capsys, tmp_path / "q.db", *args)
    assert code == 2
    assert message in err
