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


def enqueue_json(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> tuple[object, object]:
    """``enqueue ARGS --json``: its ``(id, created)``, the only two fields it prints."""
    code, out, err = run(capsys, db, "enqueue", *args, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"id", "created"}
    return result["id"], result["created"]


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
    assert enqueue_json(capsys, db, "reindex", '{"shop": 7}', "--unique") == (1, False)
    # Another payload, or another type, is another task.
    assert enqueue_json(capsys, db, "reindex", '{"shop": 8}', "--unique") == (2, True)
    assert enqueue_json(capsys, db, "export", '{"shop": 7}', "--unique") == (3, True)
    # Without --unique an equal task is added again.
    assert enqueue_json(capsys, db, "reindex", '{"shop": 7}') == (4, True)


def test_unique_key_merges_other_payloads_and_types(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enqueue_json(capsys, db, "reindex", '{"shop": 7}', "--unique-key", "shop-7") == (1, True)
    assert enqueue_json(capsys, db, "reindex", '{"shop": 7, "full": true}', "--unique-key", "shop-7") == (
        1,
        False,
    )
    assert enqueue_json(capsys, db, "export", "null", "--unique-key", "shop-7") == (1, False)
    assert enqueue_json(capsys, db, "reindex", '{"shop": 7}', "--unique-key", "shop-8") == (2, True)


def test_unique_period_counts_only_recent_tasks(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enqueue_json(capsys, db, "ping", "--unique") == (1, True)
    assert enqueue_json(capsys, db, "ping", "--unique", "--unique-period", "1h") == (1, False)
    time.sleep(0.02)
    # Task 1 is older than 10 ms: it no longer counts, so a new task is added.
    assert enqueue_json(capsys, db, "ping", "--unique", "--unique-period", "10ms") == (2, True)


def test_unique_states_active_counts_running_tasks(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enqueue_json(capsys, db, "sync", "--unique") == (1, True)
    with QueueDatabase(db) as opened:
        (leased,) = opened.backend.claim("w", None, FIFOStrategy(), 1, 60.0, opened.now())
    assert leased.id == 1
    assert enqueue_json(capsys, db, "sync", "--unique", "--unique-states", "active") == (1, False)
    # "queued" (the default) counts only waiting tasks: the running one does not.
    assert enqueue_json(capsys, db, "sync", "--unique", "--unique-states", "queued") == (2, True)


def test_on_duplicate_raise_exits_1_naming_the_task(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enqueue_json(capsys, db, "mail", '{"to": 1}', "--unique", "--on-duplicate", "raise") == (1, True)
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
    assert enqueue_json(capsys, db, "report", "--idempotency-key", "r-1") == (1, True)
    assert enqueue_json(capsys, db, "report", "--idempotency-key", "r-1") == (1, False)


def test_concurrency_key_with_unique(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enqueue_json(capsys, db, "call", "--unique", "--concurrency-key", "api") == (1, True)
    assert enqueue_json(capsys, db, "call", "--unique", "--concurrency-key", "api") == (1, False)
    with QueueDatabase(db) as opened:
        QueueClient(opened).set_concurrency_limit(1, key="api")
        assert enqueue_json(capsys, db, "other", "--concurrency-key", "api") == (2, True)
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
    first, created = enqueue_json(capsys, db, "reindex", '{"shop": 7}', "--unique", "--unique-period", "1h")
    assert created is True
    again = enqueue_json(capsys, db, "reindex", '{"shop": 7}', "--unique", "--unique-states", "active")
    assert again == (first, False)
    keyed, created = enqueue_json(capsys, db, "export", "null", "--unique-key", "nightly")
    assert created is True
    assert keyed != first
    code, _, err = run(
        capsys, db, "enqueue", "export", "[1]", "--unique-key", "nightly", "--on-duplicate", "raise"
    )
    assert code == 1
    assert f"(task {keyed})" in err
