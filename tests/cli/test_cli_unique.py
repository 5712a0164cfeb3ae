"""``prismq-queue enqueue --unique`` and its options, through the CLI's entry point."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from prismq.queue import FIFOStrategy, QueueClient, QueueDatabase
from prismq.queue.cli.app import main


def run(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> tuple[int, str, str]:
    code = main(["--db", db, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def enqueue_json(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> dict[str, object]:
    code, out, err = run(capsys, db, "enqueue", *args, "--json")
    assert code == 0, err
    result: dict[str, object] = json.loads(out)
    return result


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "q.db")


def test_unique_returns_the_equal_task_and_says_so(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "enqueue", "reindex", '{"shop": 7}', "--unique")
    assert code == 0
    assert out.strip() == "Enqueued task 1 (reindex)"
    # Equal: same type, and the same payload whatever its key order or spacing.
    code, out, _ = run(capsys, db, "enqueue", "reindex", '{ "shop" : 7 }', "--unique")
    assert code == 0
    assert out.strip() == "Existing task 1 (reindex) returned; no new task was enqueued"
    assert enqueue_json(capsys, db, "reindex", '{"shop": 7}', "--unique") == {"id": 1, "created": False}
    # Another payload, or another type, is another task.
    assert enqueue_json(capsys, db, "reindex", '{"shop": 8}', "--unique") == {"id": 2, "created": True}
    assert enqueue_json(capsys, db, "export", '{"shop": 7}', "--unique") == {"id": 3, "created": True}
    # Without --unique an equal task is added again.
    assert enqueue_json(capsys, db, "reindex", '{"shop": 7}') == {"id": 4, "created": True}


def test_unique_key_merges_other_payloads_and_types(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    first = enqueue_json(capsys, db, "reindex", '{"shop": 7}', "--unique-key", "shop-7")
    assert first == {"id": 1, "created": True}
    assert enqueue_json(capsys, db, "reindex", '{"shop": 7, "full": true}', "--unique-key", "shop-7") == {
        "id": 1,
        "created": False,
    }
    assert enqueue_json(capsys, db, "export", "null", "--unique-key", "shop-7") == {"id": 1, "created": False}
    assert enqueue_json(capsys, db, "reindex", '{"shop": 7}', "--unique-key", "shop-8") == {
        "id": 2,
        "created": True,
    }


def test_unique_period_counts_only_recent_tasks(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enqueue_json(capsys, db, "ping", "--unique") == {"id": 1, "created": True}
    assert enqueue_json(capsys, db, "ping", "--unique", "--unique-period", "1h") == {
        "id": 1,
        "created": False,
    }
    time.sleep(0.02)
    # Task 1 is older than 10 ms: it no longer counts, so a new task is added.
    assert enqueue_json(capsys, db, "ping", "--unique", "--unique-period", "10ms") == {
        "id": 2,
        "created": True,
    }


def test_unique_states_active_counts_running_tasks(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enqueue_json(capsys, db, "sync", "--unique") == {"id": 1, "created": True}
    with QueueDatabase(db) as opened:
        (leased,) = opened.backend.claim("w", None, FIFOStrategy(), 1, 60.0, opened.now())
    assert leased.id == 1
    assert enqueue_json(capsys, db, "sync", "--unique", "--unique-states", "active") == {
        "id": 1,
        "created": False,
    }
    # "queued" (the default) counts only waiting tasks: the running one does not.
    assert enqueue_json(capsys, db, "sync", "--unique", "--unique-states", "queued") == {
        "id": 2,
        "created": True,
    }


def test_on_duplicate_raise_exits_1_naming_the_task(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enqueue_json(capsys, db, "mail", '{"to": 1}', "--unique", "--on-duplicate", "raise") == {
        "id": 1,
        "created": True,
    }
    code, out, err = run(
        capsys, db, "enqueue", "mail", '{"to": 1}', "--unique", "--on-duplicate", "raise", "--json"
    )
    assert code == 1
    assert out == ""
    assert err.strip() == (
        "error: DuplicateTaskError: an equal 'mail' task is already pending (task 1); "
        "it was not enqueued again"
    )
    code, out, _ = run(capsys, db, "enqueue", "mail", '{"to": 1}', "--unique", "--on-duplicate", "return")
    assert code == 0
    assert "Existing task 1 (mail)" in out
    with QueueDatabase(db) as opened:
        assert QueueClient(opened).count_by_status()["queued"] == 1


def test_idempotency_key_also_says_whether_it_was_new(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enqueue_json(capsys, db, "report", "--idempotency-key", "r-1") == {"id": 1, "created": True}
    assert enqueue_json(capsys, db, "report", "--idempotency-key", "r-1") == {"id": 1, "created": False}


def test_concurrency_key_with_unique(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enqueue_json(capsys, db, "call", "--unique", "--concurrency-key", "api") == {
        "id": 1,
        "created": True,
    }
    assert enqueue_json(capsys, db, "call", "--unique", "--concurrency-key", "api") == {
        "id": 1,
        "created": False,
    }
    with QueueDatabase(db) as opened:
        QueueClient(opened).set_concurrency_limit(1, key="api")
        assert enqueue_json(capsys, db, "other", "--concurrency-key", "api") == {"id": 2, "created": True}
        claimed = opened.backend.claim("w", None, FIFOStrategy(), 5, 60.0, opened.now())
    assert [task.id for task in claimed] == [1]  # the key's limit holds task 2 back


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--unique-period", "5m"), "prismq-queue enqueue: --unique-period needs --unique or --unique-key"),
        (
            ("--unique-states", "active"),
            "prismq-queue enqueue: --unique-states needs --unique or --unique-key",
        ),
        (("--on-duplicate", "raise"), "prismq-queue enqueue: --on-duplicate needs --unique or --unique-key"),
        (("--unique", "--unique-period", "0s"), "argument --unique-period: '0s' must be from 1ms to 366d"),
        (
            ("--unique", "--unique-period", "367d"),
            "argument --unique-period: '367d' must be from 1ms to 366d",
        ),
        (("--unique", "--unique-period", "soon"), "argument --unique-period: 'soon' is not a duration"),
        (("--unique", "--unique-states", "done"), "argument --unique-states: invalid choice: 'done'"),
        (("--unique", "--on-duplicate", "skip"), "argument --on-duplicate: invalid choice: 'skip'"),
        (("--unique-key", "k", "--idempotency-key", "i"), "give either --idempotency-key or --unique"),
        (("--unique-key", "k" * 501), "Unique key must be a string of 1-500 characters"),
    ],
)
def test_bad_unique_options_exit_2_with_one_line(
    db: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, db, "enqueue", "t", *args)
    assert code == 2
    assert out == ""
    assert message in err
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    assert not Path(db).exists() or QueueClient(QueueDatabase(db)).count_by_status().get("queued", 0) == 0


@pytest.mark.postgres
def test_unique_on_postgresql(postgres_schema: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url, schema = postgres_schema
    db = f"{url}?schema={schema}"
    first = enqueue_json(capsys, db, "reindex", '{"shop": 7}', "--unique", "--unique-period", "1h")
    assert first["created"] is True
    again = enqueue_json(capsys, db, "reindex", '{"shop": 7}', "--unique", "--unique-states", "active")
    assert again == {"id": first["id"], "created": False}
    keyed = enqueue_json(capsys, db, "export", "null", "--unique-key", "nightly")
    assert keyed["created"] is True
    assert keyed["id"] != first["id"]
    code, _, err = run(
        capsys, db, "enqueue", "export", "[1]", "--unique-key", "nightly", "--on-duplicate", "raise"
    )
    assert code == 1
    assert f"(task {keyed['id']})" in err
