"""PayloadSchema: arguments checked against type hints, both ways, and unsupported hints refused."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from typing import Any, Literal, Optional, TypedDict, Union

import pytest

from prismq.queue import ConfigError, PayloadError
from prismq.queue.payloads import PayloadSchema, check_hint


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(TypedDict, total=False):
    city: str
    zip: int


class Recipient(TypedDict):
    email: str
    address: Address


@dataclasses.dataclass(frozen=True)
class Size:
    width: int
    height: int = 1
    tags: tuple[str, ...] = ()


def everything(
    name: str,
    count: int,
    ratio: float,
    flag: bool,
    nothing: None,
    anything: Any,
    maybe: Optional[int],  # noqa: UP045 - the typing spelling is supported too
    either: Union[int, str],  # noqa: UP007
    pipe: int | None,
    mode: Literal["fast", "slow", 3],
    items: list[int],
    table: dict[str, float],
    pair: tuple[int, str],
    many: tuple[int, ...],
    color: Color,
    recipient: Recipient,
    size: Size,
    nested: list[dict[str, list[Size]]],
    plain_list: list = [],  # noqa: B006 - unparametrised list: any JSON items
) -> None: ...


GOOD: dict[str, Any] = {
    "name": "n",
    "count": 3,
    "ratio": 2,  # an int is a float
    "flag": False,
    "nothing": None,
    "anything": {"x": [1, None]},
    "maybe": None,
    "either": "s",
    "pipe": 4,
    "mode": 3,
    "items": [1, 2],
    "table": {"a": 1.5},
    "pair": (1, "x"),
    "many": (1, 2, 3),
    "color": Color.BLUE,
    "recipient": {"email": "a@b", "address": {"city": "Brno"}},
    "size": Size(2, tags=("a",)),
    "nested": [{"k": [Size(1)]}],
}


def test_round_trip_through_json_restores_tuples_enums_and_dataclasses() -> None:
    schema = PayloadSchema(everything, "everything")
    payload = schema.dump((), GOOD)
    stored = json.loads(json.dumps(payload))
    assert stored["color"] == "blue"
    assert stored["size"] == {"width": 2, "height": 1, "tags": ["a"]}
    assert stored["pair"] == [1, "x"]
    loaded = schema.load(stored)
    assert loaded["pair"] == (1, "x")
    assert loaded["many"] == (1, 2, 3)
    assert loaded["color"] is Color.BLUE
    assert loaded["size"] == Size(2, 1, ("a",))
    assert loaded["nested"] == [{"k": [Size(1)]}]
    assert loaded["recipient"] == {"email": "a@b", "address": {"city": "Brno"}}
    assert "plain_list" not in loaded  # defaults stay the function's


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", 3, "task 'everything': name must be a string, got int 3"),
        ("count", True, "must be an integer, got bool"),
        ("count", 1.5, "must be an integer"),
        ("ratio", float("nan"), "a finite number"),
        ("ratio", "1", "must be a number"),
        ("flag", 1, "must be a boolean"),
        ("nothing", 0, "must be null"),
        ("maybe", "x", "an integer or null"),
        ("either", 1.5, "an integer or a string"),
        ("mode", "medium", "one of 'fast', 'slow', 3"),
        ("mode", True, "one of"),
        ("items", [1, "2"], r"items\[1\] must be an integer"),
        ("items", (1, 2), "must be a list of an integer"),
        ("table", {"a": "x"}, r"\['a'\] must be a number"),
        ("table", {1: 1.0}, "JSON object keys are strings"),
        ("pair", (1, 2), r"\[1\] must be a string"),
        ("pair", (1,), "a tuple of 2 items"),
        ("color", "green", "must be Color \\(one of 'red', 'blue'\\)"),
        ("recipient", {"email": "a@b"}, r"missing the field\(s\) \['address'\]"),
        ("recipient", {"email": "a@b", "address": {}, "x": 1}, r"unknown field\(s\) \['x'\]"),
        ("recipient", {"email": "a@b", "address": {"zip": "6"}}, r"address.zip must be an integer"),
        ("size", {"height": 2}, r"missing the field\(s\) \['width'\]"),
        ("size", Size("wide"), r"size.width must be an integer"),  # type: ignore[arg-type]
        ("nested", [{"k": [{"width": "1"}]}], r"\['k'\]\[0\].width must be an integer"),
    ],
)
def test_a_mistyped_argument_is_named_in_the_error(field: str, value: Any, message: str) -> None:
    schema = PayloadSchema(everything, "everything")
    with pytest.raises(PayloadError, match=message):
        schema.dump((), {**GOOD, field: value})


def test_missing_and_unknown_arguments() -> None:
    schema = PayloadSchema(everything, "everything")
    with pytest.raises(PayloadError, match="missing a required argument: 'name'"):
        schema.dump((), {k: v for k, v in GOOD.items() if k != "name"})
    with pytest.raises(PayloadError, match="unexpected keyword argument 'extra'"):
        schema.dump((), {**GOOD, "extra": 1})


def test_load_checks_stored_payloads_too() -> None:
    def send(to: str, retries: int = 3) -> None: ...

    schema = PayloadSchema(send, "send")
    assert schema.load({"to": "a"}) == {"to": "a"}
    with pytest.raises(PayloadError, match="unknown field 'cc'"):
        schema.load({"to": "a", "cc": "b"})
    with pytest.raises(PayloadError, match="does not fit: missing a required argument: 'to'"):
        schema.load({})
    with pytest.raises(PayloadError, match="must be a JSON object, got list"):
        schema.load([1])
    with pytest.raises(PayloadError, match="task 'send': retries must be an integer"):
        schema.load({"to": "a", "retries": "3"})


def test_keyword_arguments_collect_extra_fields() -> None:
    def log(event: str, **fields: int) -> None: ...

    schema = PayloadSchema(log, "log")
    assert schema.dump(("start",), {"a": 1, "b": 2}) == {"event": "start", "a": 1, "b": 2}
    assert schema.load({"event": "e", "z": 5}) == {"event": "e", "z": 5}
    with pytest.raises(PayloadError, match="task 'log': b must be an integer"):
        schema.dump(("start",), {"b": "x"})


@pytest.mark.parametrize(
    ("hint", "message"),
    [
        (datetime.datetime, "datetime has no JSON form"),
        (set[int], "has no JSON form"),
        (dict[int, str], "dict keys must be str"),
        (list[bytes], "bytes has no JSON form"),
        (Literal[1.5], "Literal values must be str, int, bool or None"),
        (Optional[complex], "complex has no JSON form"),  # noqa: UP045
    ],
)
def test_unsupported_hints_are_refused_up_front(hint: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_hint(hint, "parameter 'x' of task 't'")


def test_unsupported_parameters_are_refused_at_schema_time() -> None:
    def positional(a: int, /) -> None: ...

    def star(*values: int) -> None: ...

    def when(at: datetime.date) -> None: ...

    with pytest.raises(ConfigError, match="no positional-only parameters or \\*args"):
        PayloadSchema(positional, "p")
    with pytest.raises(ConfigError, match="no positional-only parameters or \\*args"):
        PayloadSchema(star, "s")
    with pytest.raises(ConfigError, match="parameter 'at' of task 'w': the type hint date"):
        PayloadSchema(when, "w")


class Ratio(enum.Enum):
    HALF = 0.5


def test_float_enum_and_unresolvable_hints_are_refused() -> None:
    def bad(r: Ratio) -> None: ...

    def ghost(x: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigError, match="Ratio values must be str or int"):
        PayloadSchema(bad, "bad")
    with pytest.raises(ConfigError, match="cannot resolve the type hints"):
        PayloadSchema(ghost, "ghost")
