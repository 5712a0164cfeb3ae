"""Hostile and bad input: fuzzing the public API and the CLI.

Nothing may write partial data or raise anything but a QueueError subclass; accepted
payloads round-trip exactly; SQL-looking strings are data, never SQL.
"""

# ruff: noqa: PT017 - a fuzz example asserts on whichever outcome occurred, error or not

from __future__ import annotations

import contextlib
import io
import json
import math
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reliability_support import sized

from prismq.queue import (
    PayloadError,
    QueueClient,
    QueueDatabase,
    QueueError,
    QueueWorker,
    RetryPolicy,
    TaskSpec,
    TaskTypeError,
    ValidationError,
)
from prismq.queue.cli import main as cli_main
from prismq.queue.validation import DEFAULT_MAX_PAYLOAD_BYTES, MAX_JSON_DEPTH

INJECTIONS = [
    "'; DROP TABLE tasks; --",
    '"; DROP TABLE tasks; --',
    "x' OR '1'='1",
    "queued' OR 1=1 --",
    'completed"); DELETE FROM tasks; --',
    "%s",
    "%(task_type)s",
    "{task_columns}",
    ":now",
    "?",
    "Robert'); DROP TABLE tasks;--",
    "\\",
    "' UNION SELECT name FROM sqlite_master --",
    "[1]",
    "json_each('[1,2]')",
]

LONE_SURROGATES = ["\ud800", "a\udfffb", "\udc00x"]

json_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(INJECTIONS + LONE_SURROGATES + ["", "\x00", "é", "😀", "\u202e", "\ufeff"]),
)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    json_text,
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(json_text, inner, max_size=5),
    max_leaves=25,
)
# Keys JSON cannot hold: the encoder would turn them into strings (merging 1 and "1").
odd_keys = st.one_of(
    st.integers(-(2**70), 2**70), st.booleans(), st.none(), st.floats(allow_nan=False), st.tuples()
)
odd_keyed = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.one_of(json_text, odd_keys), inner, max_size=4)
    ),
    max_leaves=20,
)


def nest(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


payloads = st.one_of(
    json_values,
    st.sampled_from([1, 2, 50, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 400, 1_000, 5_000, 10_000]).map(nest),
    odd_keyed,
    st.sampled_from(["x" * (DEFAULT_MAX_PAYLOAD_BYTES - 2), "x" * (DEFAULT_MAX_PAYLOAD_BYTES + 1)]),
    st.sampled_from(
        [
            {"s": "é" * (DEFAULT_MAX_PAYLOAD_BYTES // 2)},
            {"tuple": (1, 2)},
            {1: "int key"},
            {1: "a", "1": "b"},
            [{"deep": nest(MAX_JSON_DEPTH - 1)}],
            {"k": "{" * 300 + "[" * 300},
        ]
    ),
    st.sampled_from([{1, 2}, b"bytes", object()]),
)
task_types = st.one_of(
    st.sampled_from([*INJECTIONS, *LONE_SURROGATES, "ok", " ", "a\nb", "t" * 201]), st.text(max_size=210)
)


def json_faithful(value: Any, depth: int = 1) -> bool:
    """True if JSON holds ``value`` unchanged in shape: string keys only, at most
    MAX_JSON_DEPTH lists and dicts deep (a deeper value could not be decoded again)."""
    if not isinstance(value, (dict, list, tuple)):
        return True
    if depth > MAX_JSON_DEPTH:
        return False
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            return False
        value = list(value.values())
    return all(json_faithful(item, depth + 1) for item in value)


def expected_payload(payload: Any) -> tuple[bool, Any]:
    """(accepted?, what comes back) by JSON's own rules, independently of the library."""
    try:
        text = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
        decoded = json.loads(text)
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
        return False, None
    return size <= DEFAULT_MAX_PAYLOAD_BYTES and json_faithful(payload), decoded


class Fuzzed:
    """One database for a fuzz test, with what the test believes is stored."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "fuzz.db"
        self.db = QueueDatabase(self.path)
        self.db.initialize_schema()
        self.client = QueueClient(self.db)
        self.by_type: Counter[str] = Counter()
        self.keys: dict[str, int] = {}

    def check(self) -> None:
        raw = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            total = raw.execute("SELECT count(*) FROM tasks").fetchone()[0]
        finally:
            raw.close()
        assert {"tasks", "workers"} <= tables, tables
        assert total == sum(self.by_type.values())
        assert sum(self.client.count_by_status().values()) == total


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    state = Fuzzed(tmp_path_factory.mktemp("fuzz"))
    yield state
    assert state.db.integrity_check() == ["ok"]
    state.db.close()


FUZZ = settings(
    max_examples=sized(150, 1500),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


@FUZZ
@given(task_type=task_types, payload=payloads)
def test_enqueue_any_payload_and_type(fuzzed: Fuzzed, task_type: Any, payload: Any) -> None:
    accepted, decoded = expected_payload(payload)
    try:
        task_id = fuzzed.client.enqueue(task_type, payload)
    except QueueError as exc:
        assert isinstance(exc, ValidationError), exc
        if isinstance(exc, PayloadError):
            assert not accepted, f"a valid payload was refused: {exc}"
        else:
            assert isinstance(exc, TaskTypeError)
    else:
        assert accepted, "an invalid payload was stored"
        task = fuzzed.client.get(task_id)
        assert task.payload == decoded
        assert task.task_type == task_type
        assert json.dumps(task.payload, sort_keys=True) == json.dumps(decoded, sort_keys=True)
        fuzzed.by_type[task_type] += 1
    fuzzed.check()


@FUZZ
@given(specs=st.lists(st.tuples(task_types, st.one_of(json_values, odd_keyed)), min_size=1, max_size=8))
def test_enqueue_many_is_all_or_nothing(fuzzed: Fuzzed, specs: list[tuple[Any, Any]]) -> None:
    try:
        ids = fuzzed.client.enqueue_many(TaskSpec(t, p) for t, p in specs)
    except QueueError as exc:
        assert isinstance(exc, ValidationError)
        assert "task #" in str(exc)
    else:
        assert len(ids) == len(specs) == len(set(ids))
        for task_id, (task_type, payload) in zip(ids, specs, strict=False):
            ok, decoded = expected_payload(payload)
            assert ok
            task = fuzzed.client.get(task_id)
            assert (task.task_type, task.payload) == (task_type, decoded)
            fuzzed.by_type[task_type] += 1
    fuzzed.check()


statuses = st.one_of(
    st.sampled_from(["queued", "leased", "completed", "dead", "cancelled", "QUEUED", "queued "]),
    st.sampled_from(INJECTIONS),
    st.text(max_size=20),
    st.lists(st.sampled_from(["queued", "completed", *INJECTIONS]), max_size=3),
)


@FUZZ
@given(
    status=st.one_of(st.none(), statuses),
    task_type=st.one_of(st.none(), task_types, st.lists(task_types, max_size=3)),
)
def test_list_filters_are_data_not_sql(fuzzed: Fuzzed, status: Any, task_type: Any) -> None:
    assume(status is not None or task_type is not None)
    if not fuzzed.by_type:
        fuzzed.client.enqueue("'; DROP TABLE tasks; --", {"seed": True})
        fuzzed.by_type["'; DROP TABLE tasks; --"] += 1
    try:
        tasks = fuzzed.client.list(status=status, task_type=task_type, limit=10_000)
    except QueueError as exc:
        assert isinstance(exc, ValidationError), exc
    else:
        wanted_types = (
            None if task_type is None else ({task_type} if isinstance(task_type, str) else set(task_type))
        )
        wanted_status = None if status is None else ({status} if isinstance(status, str) else set(status))
        for task in tasks:
            assert wanted_types is None or task.task_type in wanted_types
            assert wanted_status is None or task.status.value in wanted_status
        if wanted_status is None and wanted_types is not None:
            assert len(tasks) == sum(fuzzed.by_type[t] for t in wanted_types)
    fuzzed.check()


@FUZZ
@given(key=st.one_of(st.sampled_from(INJECTIONS + LONE_SURROGATES), st.text(max_size=600)))
def test_idempotency_keys_are_data(fuzzed: Fuzzed, key: str) -> None:
    try:
        first = fuzzed.client.enqueue("idem", {"k": 1}, idempotency_key=key)
    except QueueError as exc:
        assert isinstance(exc, ValidationError)
    else:
        if key in fuzzed.keys:
            assert first == fuzzed.keys[key]
        else:
            fuzzed.keys[key] = first
            fuzzed.by_type["idem"] += 1
        assert fuzzed.client.enqueue("idem", {"k": 2}, idempotency_key=key) == first
        assert fuzzed.client.get(first).idempotency_key == key
    fuzzed.check()


@FUZZ
@given(
    priority=st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.text(max_size=5)),
    delay=st.one_of(
        st.none(),
        st.floats(),
        st.integers(-5, 10**12),
        st.sampled_from([3.2e9, 251_606_473_247.0, 6.8e16, 9.2e18, 1e300, 10**400, -(10**400)]),
        st.integers(2**1023, 2**1100),
        st.text(max_size=5),
    ),
    max_attempts=st.one_of(st.none(), st.integers(-5, 2000), st.floats(), st.booleans()),
)
def test_numeric_arguments(fuzzed: Fuzzed, priority: Any, delay: Any, max_attempts: Any) -> None:
    try:
        task_id = fuzzed.client.enqueue(
            "numbers", None, priority=priority, delay=delay, max_attempts=max_attempts
        )
    except QueueError as exc:
        assert isinstance(exc, ValidationError), exc
    else:
        fuzzed.by_type["numbers"] += 1
        task = fuzzed.client.get(task_id)
        assert task.priority == priority
        assert 0 <= task.priority <= 1000
        assert math.isfinite(task.run_after.timestamp())
    fuzzed.check()


hostile_numbers = st.one_of(
    st.integers(-(2**1100), 2**1100),
    st.floats(),
    st.sampled_from([10**400, -(10**400), 2**1024, 2**63, -0.0, 1e308]),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)

NUMBER_ARGUMENTS: dict[str, Any] = {
    "delay": lambda c, w, t, v: c.enqueue("n", None, delay=v),
    "run_after": lambda c, w, t, v: c.enqueue("n", None, run_after=v),
    "retry_policy": lambda c, w, t, v: RetryPolicy(base_delay=v, multiplier=2, max_delay=v),
    "multiplier": lambda c, w, t, v: RetryPolicy(multiplier=v),
    "lease_duration": lambda c, w, t, v: QueueWorker(c.db, "n", lease_duration=v, register=False),
    "wait": lambda c, w, t, v: c.wait(t, timeout=v, poll_interval=0.001),
    "prune": lambda c, w, t, v: c.prune(older_than=v, statuses=["dead"]),
    "created_after": lambda c, w, t, v: c.list(created_after=v, limit=1),
    "created_before": lambda c, w, t, v: c.list(created_before=v, limit=1),
    "stale_after": lambda c, w, t, v: c.list_workers(stale_after=v),
    "release delay": lambda c, w, t, v: w.release_task(t, delay=v),
}


@pytest.fixture(scope="module")
def numbers_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueDatabase]:
    with QueueDatabase(tmp_path_factory.mktemp("numbers") / "n.db") as db:
        db.initialize_schema()
        yield db


@FUZZ
@given(which=st.sampled_from(sorted(NUMBER_ARGUMENTS)), value=hostile_numbers)
def test_every_numeric_argument_refuses_with_a_validation_error(
    numbers_db: QueueDatabase, which: str, value: Any
) -> None:
    """Huge integers, NaN, infinities and non-numbers: a ValidationError (never OverflowError
    or TypeError), or success; a released task stays readable either way."""
    client = QueueClient(numbers_db)
    task_id = client.enqueue("n", None)
    if which == "wait":
        client.cancel(task_id)  # finished: wait() returns at once when its timeout is valid
    worker = QueueWorker(numbers_db, "holder", register=False)
    if which == "release delay":
        assert [t.id for t in worker.claim_batch(1000) if t.id == task_id] == [task_id]
    try:
        NUMBER_ARGUMENTS[which](client, worker, task_id, value)
    except QueueError as exc:
        assert isinstance(exc, ValidationError), exc
        assert len(str(exc)) < 400
    finally:
        worker.close()
    assert math.isfinite(client.get(task_id).run_after.timestamp())


# -- the CLI ------------------------------------------------------------------------

COMMANDS = [
    "init",
    "enqueue",
    "stats",
    "list",
    "show",
    "retry",
    "cancel",
    "prune",
    "backup",
    "restore",
    "doctor",
]
OPTIONS = [
    "--json", "--priority", "--delay", "--max-attempts", "--idempotency-key", "--status", "--type",
    "--limit", "--offset", "--oldest-first", "--older-than", "--stale-after", "--yes", "--version",
    "--debug", "--bogus", "-", "--", "-x",
]  # fmt: skip
WORDS = [
    "1", "0", "-1", "999999999999999999999", "1.5", "nan", "inf", "30s", "7d", "2w", "-5m", "1e9",
    "{}", "[]", '{"a": 1}', "{bad json", "NaN", '{"x": Infinity}', "null", '"str"',
    "queued", "completed", "dead", "email", "x" * 300, "backup-out.db", "../escape.db", "sub/",
    *INJECTIONS[:6], "\ud800", "é", "a\nb", "",
]  # fmt: skip
argv_token = st.one_of(
    st.sampled_from(COMMANDS), st.sampled_from(OPTIONS), st.sampled_from(WORDS), st.text(max_size=12)
)


def run_cli(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    from prismq.queue.cli import output

    out, err = io.StringIO(), io.StringIO()
    saved = output.console.file, output.error_console.file, sys.stdin
    output.console.file, output.error_console.file, sys.stdin = out, err, io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli_main(argv)
            except SystemExit as exc:  # argparse's --help
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        output.console.file, output.error_console.file, sys.stdin = saved
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "sub").mkdir()
    return folder


@settings(
    max_examples=sized(300, 3000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(command=st.sampled_from(COMMANDS), rest=st.lists(argv_token, max_size=6), stdin=json_text)
def test_cli_exit_codes_and_one_line_errors(
    cli_folder: Path, monkeypatch: pytest.MonkeyPatch, command: str, rest: list[str], stdin: str
) -> None:
    monkeypatch.chdir(cli_folder)
    db = cli_folder / "cli.db"
    argv = ["--db", str(db), command, *rest]
    code, _out, err = run_cli(argv, stdin)
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err or "--debug" in rest, (argv, err)
    if code == 2 and "--debug" not in rest:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, (argv, err)
        assert lines[0].startswith("error:"), (argv, err)
    if code == 1 and "--debug" not in rest and command != "doctor":
        assert err.startswith("error:"), (argv, err)
    # Nothing the CLI did left the database damaged.
    if db.exists():
        with QueueDatabase(db) as check:
            assert check.integrity_check() == ["ok"]


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["enqueue", "email", "{bad json"], 2),
        (["enqueue", "email", '{"x": NaN}'], 2),
        (["enqueue", "'; DROP TABLE tasks; --", '{"a": 1}'], 0),
        (["enqueue", "a\nb"], 2),
        (["enqueue", "email", "--priority", "5000"], 2),
        (["enqueue", "email", "--delay", "-5m"], 2),
        (["list", "--status", "queued' OR 1=1 --"], 2),
        (["list", "--type", "'; DROP TABLE tasks; --", "--json"], 0),
        (["show", "999999"], 1),
        (["show", "abc"], 2),
        (["show", "999999999999999999999"], 2),
        (["cancel", "-999999999999999999999"], 2),
        (["list", "--offset", "999999999999999999999"], 2),
        (["enqueue", "email", "--delay", "99999999999w"], 2),
        (["prune", "--older-than", "banana"], 2),
        (["restore", "missing.db"], 2),
        (["restore", "missing.db", "--yes"], 1),
        (["restore", "x" * 300, "--yes"], 1),
        (["backup", "x" * 300], 1),
        (["backup", "x" * 300 + "/"], 1),
        (["frobnicate"], 2),
        ([], 2),
    ],
)
def test_cli_known_bad_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], code: int
) -> None:
    monkeypatch.chdir(tmp_path)
    with QueueDatabase(tmp_path / "q.db") as db:
        db.initialize_schema()
    got, out, err = run_cli(["--db", str(tmp_path / "q.db"), *argv])
    assert got == code, (argv, out, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1
        assert err.startswith("error:")
    if code == 1:
        assert err.startswith("error:")
        assert "Traceback" not in err
    if code == 0 and argv[0] == "list":
        assert json.loads(out) == []
    with QueueDatabase(tmp_path / "q.db") as db:
        assert db.integrity_check() == ["ok"]
        counts = QueueClient(db).count_by_status()
        assert sum(counts.values()) == (1 if argv[:2] == ["enqueue", "'; DROP TABLE tasks; --"] else 0)


def test_out_of_range_numbers_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Times past what ``datetime`` holds, and ids past 64 bits, would make stored tasks
    unreadable (or crash the driver); they are refused as ValidationError up front."""
    from prismq.queue import QueueWorker, RetryPolicy, ScheduleError

    with QueueDatabase(tmp_path / "q.db") as db:
        db.initialize_schema()
        client = QueueClient(db)
        for kwargs in (
            {"delay": 9.2e18},
            {"delay": 251_606_473_247.0},
            {"run_after": 1e15},
            {"run_after": -1.0},
        ):
            with pytest.raises(ScheduleError):
                client.enqueue("t", None, **kwargs)
        with pytest.raises(ScheduleError):
            RetryPolicy(max_delay=1e300)
        with pytest.raises(ScheduleError):
            QueueWorker(db, worker_id="w", lease_duration=1e15)
        for bad_id in (2**63, -(2**63) - 1, 10**30):
            with pytest.raises(ValidationError, match="out of range"):
                client.get(bad_id)
        with pytest.raises(ValidationError):
            client.list(offset=2**64)
        assert sum(client.count_by_status().values()) == 0
        # The longest delay accepted still gives a task every call can read.
        task_id = client.enqueue("t", None, delay=3_155_760_000)
        assert client.get(task_id).run_after.year > 2100
        assert [t.id for t in client.list()] == [task_id]
        worker = QueueWorker(db, worker_id="w", lease_duration=3_155_760_000)
        assert worker.claim_next_task() is None
