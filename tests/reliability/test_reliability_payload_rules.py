"""What JSON can hold, what a stored row may hold, and numbers past what a float holds.

On both backends: payloads and results nested too deep or with non-string dict keys are
refused at the door; a row that cannot be decoded (written by other software) is read as
an ``UndecodableValue`` and buried on claim without stopping the rest of its batch; every
numeric argument refuses a huge integer with the library's own error.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable
from typing import Any

import pytest

from prismq.queue import (
    ConfigError,
    PayloadError,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    RetryPolicy,
    TaskSpec,
    UndecodableValue,
    ValidationError,
)
from prismq.queue.cli import main as cli_main
from prismq.queue.models import TaskStatus
from prismq.queue.runtime import HandlerRegistry, TaskContext
from prismq.queue.validation import MAX_JSON_DEPTH


def nest(depth: int) -> Any:
    """``depth`` lists and dicts inside each other."""
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def deep_text(depth: int) -> str:
    """Valid JSON nested ``depth`` deep: the databases accept it, Python cannot decode it."""
    return "[" * depth + "1" + "]" * depth


def write_column(db: QueueDatabase, backend_name: str, task_id: int, column: str, text: str) -> None:
    """Change a stored column by hand, as other software (or an older version) might."""
    assert column in ("payload", "result")
    mark = "?" if backend_name == "sqlite" else "%s"
    with db.backend.transaction() as conn:
        conn.execute(f"UPDATE tasks SET {column} = {mark} WHERE id = {mark}", (text, task_id))


# -- item 1: depth --------------------------------------------------------------------


def test_payloads_and_results_deeper_than_the_limit_are_refused(db: QueueDatabase) -> None:
    client = QueueClient(db)
    at_limit = client.enqueue("deep", nest(MAX_JSON_DEPTH))
    assert client.get(at_limit).payload == nest(MAX_JSON_DEPTH)
    for depth in (MAX_JSON_DEPTH + 1, 1000, 5000):
        with pytest.raises(PayloadError, match=f"more than {MAX_JSON_DEPTH} levels deep"):
            client.enqueue("deep", nest(depth))
    with pytest.raises(PayloadError, match="task #1"):
        client.enqueue_many([TaskSpec("deep", 1), TaskSpec("deep", nest(1000))])
    assert client.count_by_status()["queued"] == 1
    worker = QueueWorker(db, "w")
    task = worker.claim_next_task()
    assert task is not None
    with pytest.raises(PayloadError, match="result is nested more than"):
        worker.complete_task(task.id, nest(1000))
    assert task.id in worker.held_tasks  # still held: fail it or complete it otherwise
    worker.complete_task(task.id, nest(MAX_JSON_DEPTH))
    assert client.get(task.id).result == nest(MAX_JSON_DEPTH)


def test_handler_returning_a_too_deep_result_fails_only_its_task(db: QueueDatabase) -> None:
    client = QueueClient(db)
    deep_id = client.enqueue("job", {"deep": True}, max_attempts=1)
    fine_id = client.enqueue("job", {"deep": False})
    registry = HandlerRegistry()
    registry.register("job", lambda ctx: nest(1000) if ctx.payload["deep"] else "fine")
    summary = QueueWorker(db, "w").run(registry, burst=True, concurrency=2)
    deep = client.get(deep_id)
    assert deep.status is TaskStatus.DEAD
    assert deep.last_error.startswith("PayloadError: result is nested more than")
    assert client.get(fine_id).result == "fine"
    assert summary.completed == 1
    assert summary.dead == 1


# -- item 7: dict keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "key_type"),
    [
        ({1: "a", "1": "b"}, "int"),
        ({True: 1}, "bool"),
        ({None: 1}, "NoneType"),
        ({2.5: 1}, "float"),
        ({"outer": [{"inner": {3: "x"}}]}, "int"),
        ([{"a": 1}, {"b": {False: 0}}], "bool"),
    ],
)
def test_non_string_dict_keys_are_refused_not_changed(db: QueueDatabase, payload: Any, key_type: str) -> None:
    client = QueueClient(db)
    with pytest.raises(PayloadError, match=f"dict key .* of type {key_type}; JSON object keys must"):
        client.enqueue("keys", payload)
    assert sum(client.count_by_status().values()) == 0
    task_id = client.enqueue("keys", None)
    worker = QueueWorker(db, "w")
    assert worker.claim_next_task() is not None
    with pytest.raises(PayloadError, match="result has a dict key"):
        worker.complete_task(task_id, payload)
    assert client.get(task_id).status is TaskStatus.LEASED


def test_string_keys_of_every_kind_still_round_trip(db: QueueDatabase) -> None:
    class Name(str):
        pass

    client = QueueClient(db)
    payload = {"": 0, "1": 1, "é": [{"{": "}"}], Name("sub"): {"[": []}}
    assert client.get(client.enqueue("keys", payload)).payload == payload


# -- item 1: rows that cannot be decoded ----------------------------------------------


def test_undecodable_stored_payload_is_read_as_a_marker(db: QueueDatabase, backend_name: str) -> None:
    client = QueueClient(db)
    ids = client.enqueue_many([TaskSpec("job", {"n": n}) for n in range(3)])
    write_column(db, backend_name, ids[1], "payload", deep_text(1500))
    task = client.get(ids[1])
    assert isinstance(task.payload, UndecodableValue)
    assert "nested too deeply" in task.payload.reason
    assert task.payload.text.startswith("[[[")
    assert len(task.payload.text) == 200
    assert [t.id for t in client.list(newest_first=False)] == ids
    assert client.get(ids[0]).payload == {"n": 0}


def test_claim_buries_an_undecodable_task_and_returns_the_rest_of_the_batch(
    db: QueueDatabase, backend_name: str
) -> None:
    client = QueueClient(db)
    ids = client.enqueue_many([TaskSpec("job", {"n": n}) for n in range(5)])
    write_column(db, backend_name, ids[2], "payload", deep_text(1500))
    worker = QueueWorker(db, "w")
    claimed = worker.claim_batch(10)
    assert [t.id for t in claimed] == [ids[0], ids[1], ids[3], ids[4]]
    assert sorted(worker.held_tasks) == sorted(t.id for t in claimed)
    bad = client.get(ids[2])
    assert bad.status is TaskStatus.DEAD
    assert bad.attempts == 1
    assert bad.last_error.startswith("the stored payload cannot be decoded: it is nested too deeply")
    assert bad.locked_by is None


def test_worker_run_survives_an_undecodable_task(db: QueueDatabase, backend_name: str) -> None:
    client = QueueClient(db)
    ids = client.enqueue_many([TaskSpec("job", {"n": n}) for n in range(6)])
    write_column(db, backend_name, ids[0], "payload", deep_text(1500))
    registry = HandlerRegistry()
    seen: list[int] = []

    @registry.handler("job")
    def job(ctx: TaskContext) -> int:
        seen.append(ctx.payload["n"])
        return ctx.payload["n"]

    summary = QueueWorker(db, "w").run(registry, burst=True, concurrency=3)
    assert sorted(seen) == [1, 2, 3, 4, 5]
    assert summary.completed == 5
    counts = client.count_by_status()
    assert (counts["completed"], counts["dead"], counts["leased"]) == (5, 1, 0)


def test_undecodable_stored_result_is_read_as_a_marker(db: QueueDatabase, backend_name: str) -> None:
    client = QueueClient(db)
    task_id = client.enqueue("job", None)
    worker = QueueWorker(db, "w")
    assert worker.claim_next_task() is not None
    worker.complete_task(task_id, {"ok": True})
    write_column(db, backend_name, task_id, "result", deep_text(1500))
    task = client.get(task_id)
    assert isinstance(task.result, UndecodableValue)
    assert task.status is TaskStatus.COMPLETED
    assert client.wait(task_id, timeout=1).id == task_id


# -- item 8: numbers past a float, malformed URLs --------------------------------------

HUGE = 10**400

NUMERIC_CALLS: dict[str, Callable[[QueueClient, QueueDatabase, int], Any]] = {
    "delay": lambda c, db, t: c.enqueue("n", None, delay=HUGE),
    "run_after": lambda c, db, t: c.enqueue("n", None, run_after=HUGE),
    "negative run_after": lambda c, db, t: c.enqueue("n", None, run_after=-HUGE),
    "retry base_delay": lambda c, db, t: RetryPolicy(base_delay=HUGE),
    "retry multiplier": lambda c, db, t: RetryPolicy(multiplier=HUGE),
    "retry max_delay": lambda c, db, t: RetryPolicy(max_delay=HUGE),
    "retry_policy at enqueue": lambda c, db, t: c.enqueue("n", None, retry_policy={"base_delay": HUGE}),
    "lease_duration": lambda c, db, t: QueueWorker(db, "w", lease_duration=HUGE),
    "wait timeout": lambda c, db, t: c.wait(t, timeout=HUGE),
    "prune older_than": lambda c, db, t: c.prune(older_than=HUGE),
    "list created_after": lambda c, db, t: c.list(created_after=HUGE),
    "list created_before": lambda c, db, t: c.list(created_before=-HUGE),
    "list_workers stale_after": lambda c, db, t: c.list_workers(stale_after=HUGE),
    "release delay": lambda c, db, t: held(db, t).release_task(t, delay=HUGE),
    "renew extend_by": lambda c, db, t: held(db, t).renew_lease(t, extend_by=HUGE),
    "progress percent": lambda c, db, t: held(db, t).update_progress(t, HUGE),
}


def held(db: QueueDatabase, task_id: int) -> QueueWorker:
    worker = QueueWorker(db, "holder")
    assert [t.id for t in worker.claim_batch(1)] == [task_id]
    return worker


@pytest.mark.parametrize("call", list(NUMERIC_CALLS))
def test_a_huge_integer_gives_a_validation_error_not_overflow(db: QueueDatabase, call: str) -> None:
    client = QueueClient(db)
    task_id = client.enqueue("n", None)
    with pytest.raises(ValidationError) as raised:
        NUMERIC_CALLS[call](client, db, task_id)
    message = str(raised.value)
    assert len(message) < 300  # the number's size, never its 400 digits
    assert sum(client.count_by_status().values()) == 1


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    from prismq.queue.cli import output

    out, err = io.StringIO(), io.StringIO()
    saved = output.console.file, output.error_console.file
    output.console.file, output.error_console.file = out, err
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(argv)
    finally:
        output.console.file, output.error_console.file = saved
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cret@[::1:5432/db",
        "postgresql://u:s3cret@host]/db",
        "postgresql://u:s3cret@host/db?no_such_option=1",
        "postgres://u:pw@with@at:s3cret@[::1/db",
    ],
)
def test_malformed_postgres_url_is_a_one_line_config_error_without_the_password(url: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigError) as raised:
        QueueDatabase(url)
    assert "s3cret" not in str(raised.value)
    code, out, err = run_cli(["--db", url, "stats"])
    assert code == 2, (out, err)
    assert err.startswith("error: malformed PostgreSQL URL")
    assert len(err.strip().splitlines()) == 1
    assert "s3cret" not in err + out
    assert "Traceback" not in err
    assert "***" in err or "u@" in err
    assert sys.exc_info() == (None, None, None)
