"""Bad input is refused with the specific ValidationError subclass, and nothing is written."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prismq.queue import (
    PayloadError,
    PriorityError,
    QueueClient,
    QueueDatabase,
    RetryPolicy,
    ScheduleError,
    TaskSpec,
    TaskTypeError,
    ValidationError,
)
from prismq.queue.validation import (
    decode_json,
    encode_json,
    validate_delay,
    validate_idempotency_key,
    validate_priority,
    validate_task_id,
    validate_task_type,
)


def total_rows(client: QueueClient) -> int:
    return sum(client.count_by_status().values())


class _Opaque:
    pass


BAD_PAYLOADS = [
    pytest.param({1, 2, 3}, id="set"),
    pytest.param(b"raw bytes", id="bytes"),
    pytest.param(_Opaque(), id="object"),
    pytest.param({"nested": [1, {"deep": frozenset()}]}, id="nested-frozenset"),
    pytest.param(float("nan"), id="nan"),
    pytest.param({"x": float("inf")}, id="infinity"),
    pytest.param([-math.inf], id="minus-infinity"),
    pytest.param({"s": "\ud800"}, id="lone-surrogate"),
    pytest.param({(1, 2): "tuple key"}, id="tuple-key"),
]

# (enqueue keyword arguments, the exact error class expected)
BAD_ARGUMENTS: list[Any] = [
    pytest.param({"task_type": ""}, TaskTypeError, id="type-empty"),
    pytest.param({"task_type": "   "}, TaskTypeError, id="type-blank"),
    pytest.param({"task_type": "x" * 201}, TaskTypeError, id="type-too-long"),
    pytest.param({"task_type": "send\nmail"}, TaskTypeError, id="type-newline"),
    pytest.param({"task_type": "tab\there"}, TaskTypeError, id="type-tab"),
    pytest.param({"task_type": "nul\x00"}, TaskTypeError, id="type-nul"),
    pytest.param({"task_type": "del\x7f"}, TaskTypeError, id="type-del"),
    pytest.param({"task_type": 42}, TaskTypeError, id="type-not-str"),
    pytest.param({"task_type": None}, TaskTypeError, id="type-none"),
    pytest.param({"task_type": "bad\ud800"}, TaskTypeError, id="type-surrogate"),
    pytest.param({"priority": -1}, PriorityError, id="priority-negative"),
    pytest.param({"priority": 1001}, PriorityError, id="priority-too-big"),
    pytest.param({"priority": 5.0}, PriorityError, id="priority-float"),
    pytest.param({"priority": "5"}, PriorityError, id="priority-str"),
    pytest.param({"priority": True}, PriorityError, id="priority-bool-true"),
    pytest.param({"priority": False}, PriorityError, id="priority-bool-false"),
    pytest.param({"priority": None}, PriorityError, id="priority-none"),
    pytest.param({"delay": -1}, ScheduleError, id="delay-negative"),
    pytest.param({"delay": -0.001}, ScheduleError, id="delay-slightly-negative"),
    pytest.param({"delay": float("nan")}, ScheduleError, id="delay-nan"),
    pytest.param({"delay": float("inf")}, ScheduleError, id="delay-inf"),
    pytest.param({"delay": "10"}, ScheduleError, id="delay-str"),
    pytest.param({"delay": True}, ScheduleError, id="delay-bool"),
    pytest.param(
        {"delay": 5, "run_after": datetime.now(timezone.utc) + timedelta(hours=1)},
        ScheduleError,
        id="delay-and-run_after",
    ),
    pytest.param({"run_after": datetime(2030, 1, 1, 12, 0)}, ScheduleError, id="run_after-naive"),
    pytest.param({"run_after": float("nan")}, ScheduleError, id="run_after-nan"),
    pytest.param({"run_after": "tomorrow"}, ScheduleError, id="run_after-str"),
    pytest.param({"max_attempts": 0}, ScheduleError, id="max_attempts-zero"),
    pytest.param({"max_attempts": -3}, ScheduleError, id="max_attempts-negative"),
    pytest.param({"max_attempts": 1001}, ScheduleError, id="max_attempts-too-big"),
    pytest.param({"max_attempts": 2.5}, ScheduleError, id="max_attempts-float"),
    pytest.param({"max_attempts": True}, ScheduleError, id="max_attempts-bool"),
    pytest.param({"max_attempts": "3"}, ScheduleError, id="max_attempts-str"),
    pytest.param({"idempotency_key": ""}, ValidationError, id="idem-empty"),
    pytest.param({"idempotency_key": 12}, ValidationError, id="idem-int"),
    pytest.param({"idempotency_key": "k" * 501}, ValidationError, id="idem-too-long"),
    pytest.param({"retry_policy": {"max_attempts": 3}}, ValidationError, id="retry_policy-dict"),
]


@pytest.mark.parametrize("payload", BAD_PAYLOADS)
def test_enqueue_rejects_non_json_payload_and_writes_nothing(client: QueueClient, payload: Any) -> None:
    with pytest.raises(PayloadError):
        client.enqueue("job", payload)
    assert total_rows(client) == 0


@pytest.mark.parametrize(("kwargs", "error"), BAD_ARGUMENTS)
def test_enqueue_rejects_bad_argument_and_writes_nothing(
    client: QueueClient, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    args = {"task_type": "job", "payload": {"ok": 1}, **kwargs}
    task_type = args.pop("task_type")
    payload = args.pop("payload")
    with pytest.raises(error) as info:
        client.enqueue(task_type, payload, **args)
    # The exact class, not merely a parent of it.
    assert type(info.value) is error
    assert isinstance(info.value, ValidationError)
    assert isinstance(info.value, ValueError)
    assert total_rows(client) == 0


def test_oversized_payload_is_refused_with_configurable_limit(db: QueueDatabase) -> None:
    small = QueueClient(db, max_payload_bytes=100)
    # '"' + 98 chars + '"' == 100 bytes encoded: exactly at the limit.
    small.enqueue("job", "a" * 98)
    with pytest.raises(PayloadError, match="over the limit of 100 bytes"):
        small.enqueue("job", "a" * 99)
    # Multi-byte characters count in UTF-8 bytes, not in characters.
    with pytest.raises(PayloadError):
        small.enqueue("job", "é" * 50)
    assert total_rows(small) == 1


def test_default_payload_limit_is_one_mebibyte(client: QueueClient) -> None:
    with pytest.raises(PayloadError):
        client.enqueue("job", "a" * (1024 * 1024))
    assert total_rows(client) == 0
    task_id = client.enqueue("job", "a" * (1024 * 1024 - 2))
    assert len(client.get(task_id).payload) == 1024 * 1024 - 2


@pytest.mark.parametrize("limit", [0, 1, -5, 2.5, True, "100"])
def test_max_payload_bytes_must_be_a_sensible_integer(db: QueueDatabase, limit: Any) -> None:
    with pytest.raises(ValidationError):
        QueueClient(db, max_payload_bytes=limit)


def test_deeply_nested_payload_is_a_payload_error(client: QueueClient) -> None:
    payload: Any = []
    for _ in range(100_000):
        payload = [payload]
    with pytest.raises(PayloadError):
        client.enqueue("job", payload)
    assert total_rows(client) == 0


@pytest.mark.parametrize("shape", ["list", "dict"])
def test_circular_payload_is_a_payload_error(client: QueueClient, shape: str) -> None:
    payload: Any = [] if shape == "list" else {}
    if shape == "list":
        payload.append(payload)
    else:
        payload["self"] = payload
    with pytest.raises(PayloadError, match="Circular reference detected"):
        client.enqueue("job", payload)
    with pytest.raises(PayloadError, match="task #1: payload is not JSON-serialisable"):
        client.enqueue_many([TaskSpec("job"), TaskSpec("job", payload)])
    assert total_rows(client) == 0


def test_shared_but_acyclic_payload_is_fine() -> None:
    shared = [1, {"k": "v"}]
    assert encode_json([shared, shared, {"again": shared}], "payload", 1000) == (
        '[[1,{"k":"v"}],[1,{"k":"v"}],{"again":[1,{"k":"v"}]}]'
    )


@pytest.mark.parametrize("index", [0, 3, 7])
def test_enqueue_many_bad_item_rejects_whole_batch(client: QueueClient, index: int) -> None:
    specs: list[Any] = [TaskSpec("job", {"n": n}) for n in range(8)]
    specs[index] = TaskSpec("job", {"n": {1, 2}})
    with pytest.raises(PayloadError, match=f"task #{index}"):
        client.enqueue_many(specs)
    assert total_rows(client) == 0


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"task_type": ""}, TaskTypeError),
        ({"task_type": "job", "priority": 2000}, PriorityError),
        ({"task_type": "job", "delay": -1}, ScheduleError),
        ({"task_type": "job", "payload": float("nan")}, PayloadError),
        ({"task_type": "job", "unknown_field": 1}, ValidationError),
        ({"payload": {}}, ValidationError),
        ("not a spec", ValidationError),
    ],
)
def test_enqueue_many_reports_error_class_of_bad_item(client: QueueClient, bad: Any, error: type) -> None:
    batch = [{"task_type": "job"}, bad, {"task_type": "job"}]
    with pytest.raises(error, match="task #1"):
        client.enqueue_many(batch)
    assert total_rows(client) == 0


def test_bad_retry_policy_values_raise_schedule_error() -> None:
    with pytest.raises(ScheduleError):
        RetryPolicy(max_attempts=0)


# -- the validation helpers directly ---------------------------------------------------


def test_encode_json_is_compact_and_keeps_unicode() -> None:
    assert encode_json({"a": [1, 2], "b": "é"}, "payload", 100) == '{"a":[1,2],"b":"é"}'
    assert decode_json('{"a":[1,2]}') == {"a": [1, 2]}
    assert decode_json(None) is None


def test_validate_helpers_accept_good_values() -> None:
    assert validate_task_type("x" * 200) == "x" * 200
    assert validate_task_type("vidéo-処理") == "vidéo-処理"
    assert validate_priority(0) == 0
    assert validate_priority(1000) == 1000
    assert validate_delay(0) == 0.0
    assert isinstance(validate_delay(3), float)
    assert validate_idempotency_key(None) is None
    assert validate_idempotency_key("k" * 500) == "k" * 500
    assert validate_task_id(7) == 7


def test_validate_task_id_accepts_a_task_and_refuses_others(client: QueueClient) -> None:
    task = client.get(client.enqueue("job"))
    assert validate_task_id(task) == task.id
    for bad in ("7", 7.0, True, None):
        with pytest.raises(ValidationError):
            validate_task_id(bad)
    with pytest.raises(ValidationError):
        client.get("1")  # type: ignore[arg-type]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8), children, max_size=4
        )
    ),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=json_values)
def test_any_json_payload_round_trips(client: QueueClient, payload: Any) -> None:
    assert client.get(client.enqueue("prop", payload)).payload == payload


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(priority=st.one_of(st.integers(max_value=-1), st.integers(min_value=1001), st.booleans(), st.floats()))
def test_any_out_of_range_priority_is_refused(client: QueueClient, priority: Any) -> None:
    with pytest.raises(PriorityError):
        client.enqueue("prop", priority=priority)
    assert total_rows(client) == 0
