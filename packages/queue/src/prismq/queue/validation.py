"""Checks and JSON encoding for what callers hand to the queue.

Everything here runs before a transaction starts, so bad input is refused with a
specific :class:`~prismq.queue.errors.ValidationError` and nothing is written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any, TypeGuard

from .errors import PayloadError, PriorityError, ScheduleError, TaskTypeError, ValidationError
from .models import MAX_PRIORITY, MIN_PRIORITY

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MAX_DELAY_SECONDS",
    "MAX_EPOCH_SECONDS",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_JSON_DEPTH",
    "MAX_TASK_ID",
    "MAX_TASK_TYPE_LENGTH",
    "decode_json",
    "encode_json",
    "finite_float",
    "is_int",
    "is_number",
    "show_number",
    "validate_delay",
    "validate_idempotency_key",
    "validate_number",
    "validate_priority",
    "validate_task_id",
    "validate_task_type",
]

DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576
"""Default limit of an encoded payload or result: 1 MiB."""

MAX_TASK_TYPE_LENGTH = 200

MAX_DELAY_SECONDS = 3_155_760_000.0
"""Longest delay, lease, age or timeout accepted: 100 years. Longer ones would put times
past what ``datetime`` can represent, making the stored task unreadable."""

MAX_EPOCH_SECONDS = 32_503_680_000.0
"""Latest ``run_after`` accepted: 3000-01-01 UTC (the limit of every platform's clock API)."""

MAX_TASK_ID = 2**63 - 1
"""Largest id SQLite (and PostgreSQL ``bigint``) can store."""
MAX_IDEMPOTENCY_KEY_LENGTH = 500

MAX_JSON_DEPTH = 128
"""Deepest nesting of lists and dicts accepted in a payload or result. Far deeper values
can be encoded but not decoded again (``json.loads`` runs out of recursion), which would
leave a stored task that no call can read."""


def is_int(value: object) -> TypeGuard[int]:
    """True for an ``int`` that is not a ``bool`` (``True`` is not a count of anything)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """True for an ``int`` or ``float`` that is not a ``bool`` (NaN and infinities included)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f]")
"""Characters a task type may not contain: C0 controls and DEL."""

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _make_encode() -> Callable[[Any], str]:
    """Build, once, the C encoder that ``_encoder.encode`` would build on every call.

    ``JSONEncoder.encode`` makes a new C encoder (and a Python closure) per call, about half
    the cost of encoding a small payload. This one has the same settings but no
    circular-reference markers, so it keeps no state between calls and one instance is safe
    to share between threads. Without markers a cycle ends in ``RecursionError`` rather than
    a clear message, so every failure is re-run through ``_encoder.encode``, which raises
    exactly the error it always raised; a successful encoding is the same text either way
    (markers only ever reject cycles).

    Returns:
        The encoding function (``_encoder.encode`` itself where the C accelerator is
        missing, as on PyPy).
    """
    try:
        from _json import make_encoder
    except ImportError:  # pragma: no cover - CPython always has it
        return _encoder.encode
    encoder = make_encoder(
        None,  # markers: none (see above)
        _encoder.default,
        encode_basestring,  # what ensure_ascii=False selects
        None,  # indent
        _encoder.key_separator,
        _encoder.item_separator,
        _encoder.sort_keys,
        _encoder.skipkeys,
        _encoder.allow_nan,
    )
    join = "".join

    def encode(value: Any) -> str:
        try:
            return join(encoder(value, 0))
        except Exception:
            return _encoder.encode(value)  # raises the precise error (or, at worst, succeeds)

    return encode


_encode = _make_encode()


def encode_json(value: Any, what: str, limit: int) -> str:
    """Encode ``value`` as compact JSON, refusing what JSON cannot faithfully hold.

    Args:
        value: The payload or result.
        what: ``"payload"`` or ``"result"``, for the message.
        limit: Largest encoded size in bytes (UTF-8).

    Raises:
        PayloadError: Not JSON-serialisable (sets, bytes, objects, NaN/Infinity, lone
            surrogates, dict keys that are not strings, nesting deeper than
            :data:`MAX_JSON_DEPTH`) or larger than ``limit``.
    """
    try:
        text = _encode(value)
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise PayloadError(
                f"{what} contains NaN or Infinity, which JSON cannot represent; use null or a string"
            ) from None
        raise PayloadError(f"{what} is not JSON-serialisable: {exc}") from None
    except TypeError as exc:
        raise PayloadError(
            f"{what} is not JSON-serialisable ({exc}); use dicts, lists, strings, numbers, "
            "booleans and None only"
        ) from None
    except RecursionError:
        raise PayloadError(
            f"{what} is nested more than {MAX_JSON_DEPTH} levels deep (lists and dicts inside "
            "each other); flatten it"
        ) from None
    if text.isascii():  # the common case: one byte per character, no surrogates possible
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise PayloadError(
                f"{what} contains a string that is not valid Unicode (a lone surrogate); "
                "decode bytes before enqueueing"
            ) from None
    if size > limit:
        raise PayloadError(
            f"{what} is {size} bytes encoded, over the limit of {limit} bytes; store large "
            "data elsewhere and pass a reference, or raise max_payload_bytes"
        )
    # JSON cannot hold non-string keys (the encoder turns 1, True, None and 2.5 into strings,
    # so {1: "a", "1": "b"} would silently lose an entry) nor very deep nesting (it could not
    # be decoded again). The text bounds both cheaply: every dict adds a "{" and every
    # container a "{" or "[" (strings may add more, never fewer), so the value is only walked
    # when it could hold a nested dict or be too deep.
    # Nesting N deep takes 2 * N brackets, so short texts need no depth check at all.
    dicts = text.count("{")
    if dicts == 1 and type(value) is dict:
        if len(text) > _SHALLOW_TEXT and text.count("[") >= MAX_JSON_DEPTH:
            _check_tree(value, what, 1)
        else:  # the top-level dict is the only one: check its keys, at C speed
            try:
                "".join(value)  # a TypeError exactly when some key is not a str
            except TypeError:
                _check_keys(value, what)
    elif dicts or (len(text) > _SHALLOW_TEXT and text.count("[") > MAX_JSON_DEPTH):
        _check_tree(value, what, 1)
    return text


_SHALLOW_TEXT = 2 * MAX_JSON_DEPTH
"""Encoded length up to which a value cannot be nested more than MAX_JSON_DEPTH deep."""


_CONTAINERS = (dict, list, tuple)


def _check_keys(value: dict[Any, Any], what: str) -> None:
    """Refuse a dict with a key that is not a string.

    Raises:
        PayloadError: Naming the first such key and its type.
    """
    for key in value:
        if not isinstance(key, str):
            raise PayloadError(
                f"{what} has a dict key {key!r} of type {type(key).__name__}; JSON object keys "
                "must be strings (JSON would turn it into a string, which can silently merge "
                "keys), so convert keys with str() before enqueueing"
            )


def _check_tree(value: Any, what: str, depth: int) -> None:
    """Walk the lists and dicts of an encodable ``value``: string keys, bounded depth.

    Raises:
        PayloadError: A non-string key, or nesting deeper than :data:`MAX_JSON_DEPTH`.
    """
    if depth > MAX_JSON_DEPTH:
        raise PayloadError(
            f"{what} is nested more than {MAX_JSON_DEPTH} levels deep (lists and dicts inside "
            "each other); flatten it"
        )
    if type(value) is dict or isinstance(value, dict):
        _check_keys(value, what)
        items: Any = value.values()
    else:
        items = value
    for item in items:
        if isinstance(item, _CONTAINERS):
            _check_tree(item, what, depth + 1)


def decode_json(text: str | None) -> Any:
    """Decode stored JSON (``None`` stays ``None``)."""
    if text is None:
        return None
    return json.loads(text)


def validate_task_type(task_type: object) -> str:
    """Return ``task_type`` if it is a usable task type name.

    Raises:
        TaskTypeError: Not a string, empty or only spaces, longer than 200 characters, or
            containing control characters.
    """
    if not isinstance(task_type, str):
        raise TaskTypeError(f"task_type must be a string, got {type(task_type).__name__}")
    if not task_type.strip():
        raise TaskTypeError("task_type must not be empty; name the kind of work, e.g. 'send_email'")
    if len(task_type) > MAX_TASK_TYPE_LENGTH:
        raise TaskTypeError(
            f"task_type is {len(task_type)} characters long; the limit is {MAX_TASK_TYPE_LENGTH}"
        )
    if _CONTROL_CHARS.search(task_type):
        raise TaskTypeError("task_type must not contain control characters (newlines, tabs, NUL)")
    if not task_type.isascii():
        try:
            task_type.encode("utf-8")
        except UnicodeEncodeError:
            raise TaskTypeError("task_type is not valid Unicode (it contains a lone surrogate)") from None
    return task_type


def validate_priority(priority: object) -> int:
    """Return ``priority`` if it is an integer from 0 (most urgent) to 1000.

    Raises:
        PriorityError: Not an integer, or outside 0..1000.
    """
    if not is_int(priority):
        raise PriorityError(
            f"priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, got {priority!r}"
        )
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise PriorityError(
            f"priority {priority} is outside {MIN_PRIORITY}..{MAX_PRIORITY}; lower numbers run first "
            f"(default 100)"
        )
    return priority


def finite_float(value: object) -> float | None:
    """``value`` as a finite ``float``, or ``None`` when it is not one.

    ``None`` for anything but an ``int`` or ``float`` (``bool`` included), for NaN and
    infinities, and for an ``int`` too large for a ``float`` (where ``float()`` and
    ``math.isfinite()`` would raise ``OverflowError``).
    """
    if not is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def validate_number(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    error: type[ValidationError] = ScheduleError,
) -> float:
    """Return ``value`` as a ``float`` if it is a finite number within the bounds.

    Args:
        value: The argument.
        name: Its name, for the message.
        minimum: Smallest value accepted (``None``: no bound).
        maximum: Largest value accepted (``None``: no bound).
        error: The error class to raise.

    Raises:
        ValidationError: ``error``: not a number, NaN, infinite, too large for a float, or
            outside the bounds (never ``OverflowError``).
    """
    number = finite_float(value)
    if number is None:
        if is_int(value):
            raise error(f"{name} is too large, got {show_number(value)}")
        raise error(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and number < minimum:
        raise error(f"{name} must be >= {minimum:g}, got {show_number(value)}")
    if maximum is not None and number > maximum:
        raise error(f"{name} must be at most {maximum:g}, got {show_number(value)}")
    return number


def show_number(value: object) -> str:
    """``repr(value)``, but a huge integer as its size (its digits could run to pages)."""
    if is_int(value) and abs(value) >= 10**30:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    return repr(value)


def validate_delay(delay: object, name: str = "delay") -> float:
    """Return ``delay`` in seconds if it is a finite number >= 0.

    Raises:
        ScheduleError: Not a number, negative, NaN, infinite or over 100 years.
    """
    if not is_number(delay):
        raise ScheduleError(f"{name} must be a number of seconds, got {delay!r}")
    if isinstance(delay, float) and not math.isfinite(delay):
        raise ScheduleError(f"{name} must be finite, got {delay!r}")
    if delay < 0:
        raise ScheduleError(f"{name} must be >= 0 seconds, got {show_number(delay)}; use 0 to run now")
    if delay > MAX_DELAY_SECONDS:  # exact for any int: no conversion to float yet
        raise ScheduleError(
            f"{name} must be at most {MAX_DELAY_SECONDS:.0f} seconds (100 years), got {show_number(delay)}"
        )
    return float(delay)


def validate_idempotency_key(key: object) -> str | None:
    """Return ``key`` (or ``None``) if it is a usable idempotency key.

    Raises:
        ValidationError: Not a string, empty, too long or not valid Unicode.
    """
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise ValidationError(f"idempotency_key must be a non-empty string, got {key!r}")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValidationError(
            f"idempotency_key is {len(key)} characters; the limit is {MAX_IDEMPOTENCY_KEY_LENGTH}"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("idempotency_key is not valid Unicode (it contains a lone surrogate)") from None
    return key


def validate_task_id(task_id: object) -> int:
    """Return the id of ``task_id`` (an ``int``, or a ``Task``, whose ``id`` is used).

    Raises:
        ValidationError: Anything else.
    """
    inner = getattr(task_id, "id", task_id) if not isinstance(task_id, int) else task_id
    if not is_int(inner):
        raise ValidationError(f"task id must be an integer or a Task, got {task_id!r}")
    if not -MAX_TASK_ID - 1 <= inner <= MAX_TASK_ID:
        raise ValidationError(f"task id {inner} is out of range; ids are 64-bit integers")
    return inner
