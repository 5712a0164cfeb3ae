"""Payloads checked against a function's type hints, in both directions.

:mod:`prismq.queue.tasks` builds one :class:`PayloadSchema` per task function. On the
way in (``.enqueue(...)``) every argument is checked against its parameter's hint and
turned into JSON values, before anything is written; on the way out (the worker) the
stored JSON is checked again and turned back into what the hints promise (a list back
into a ``tuple``, a dict back into a dataclass or an ``Enum`` member).

Supported hints: ``Any``/``object``, ``None``, ``bool``, ``int``, ``float`` (an ``int``
is accepted), ``str``, ``Literal[...]``, ``Optional[X]``/``X | Y``, ``list[X]``,
``dict[str, X]``, ``tuple[X, ...]``/``tuple[X, Y]``, ``TypedDict`` classes, dataclasses
and ``Enum`` classes, nested freely. Anything else (``datetime``, ``set``, arbitrary
classes) has no faithful JSON form and is refused when the schema is built, with a
:class:`~prismq.queue.errors.ConfigError` naming the parameter.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError, PayloadError
from .validation import is_number

__all__ = ["PayloadSchema", "check_hint"]

_Dump = Callable[[Any, str], Any]
_NONE = type(None)


class _Converter:
    """Checks one hint: ``dump`` (Python to JSON values) and ``load`` (JSON values to Python)."""

    def __init__(self, name: str, dump: _Dump, load: _Dump) -> None:
        self.name = name
        self.dump = dump
        self.load = load


def _fail(path: str, expected: str, value: Any) -> PayloadError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return PayloadError(f"{path} must be {expected}, got {type(value).__name__} {shown}")


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint).replace("typing.", "")


def check_hint(hint: Any, where: str) -> None:
    """Raise :class:`ConfigError` when ``hint`` cannot describe a JSON payload value.

    Args:
        hint: A type hint.
        where: What it annotates, for the message (e.g. ``"parameter 'to' of send_email"``).
    """
    _converter(hint, where)


def _scalar(kind: type, name: str) -> _Converter:
    def check(value: Any, path: str) -> Any:
        if kind is float:
            if not is_number(value):
                raise _fail(path, "a number", value)
            if not math.isfinite(value):
                raise _fail(path, "a finite number", value)
            return value
        if kind is int and isinstance(value, bool):
            raise _fail(path, "an integer", value)
        if not isinstance(value, kind):
            raise _fail(path, name, value)
        return value

    return _Converter(name, check, check)


def _converter(hint: Any, where: str) -> _Converter:
    if hint is Any or hint is object:
        return _Converter("any JSON value", lambda v, p: v, lambda v, p: v)
    if hint is None or hint is _NONE:
        return _scalar(_NONE, "null")
    if hint is bool:
        return _scalar(bool, "a boolean")
    if hint is int:
        return _scalar(int, "an integer")
    if hint is float:
        return _scalar(float, "a number")
    if hint is str:
        return _scalar(str, "a string")
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is typing.Annotated:
        return _converter(args[0], where)
    if origin is Literal:
        return _literal(args, where)
    if origin is Union or origin is types.UnionType:
        return _union([_converter(a, where) for a in args])
    if origin is list or hint is list:
        return _list(_converter(args[0] if args else Any, where))
    if origin is dict or hint is dict:
        if args and args[0] is not str:
            raise ConfigError(f"{where}: dict keys must be str in a JSON payload, got {_describe(args[0])}")
        return _dict(_converter(args[1] if args else Any, where))
    if origin is tuple or hint is tuple:
        return _tuple(args, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(hint, where)
    if typing.is_typeddict(hint):
        return _typeddict(hint, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass(hint, where)
    raise ConfigError(
        f"{where}: the type hint {_describe(hint)} has no JSON form, so it cannot be part of a task "
        "payload; use str, int, float, bool, None, list, dict[str, ...], tuple, Literal, Optional, "
        "a TypedDict, a dataclass or an Enum"
    )


def _literal(values: tuple[Any, ...], where: str) -> _Converter:
    for value in values:
        if not isinstance(value, (str, int, bool, _NONE)):
            raise ConfigError(f"{where}: Literal values must be str, int, bool or None, got {value!r}")
    expected = "one of " + ", ".join(repr(v) for v in values)

    def check(value: Any, path: str) -> Any:
        # Compare types too: True == 1, but a bool is not the literal 1.
        if not any(type(value) is type(v) and value == v for v in values):
            raise _fail(path, expected, value)
        return value

    return _Converter(expected, check, check)


def _union(options: list[_Converter]) -> _Converter:
    name = " or ".join(o.name for o in options)

    def pick(direction: str) -> _Dump:
        def convert(value: Any, path: str) -> Any:
            for option in options:
                try:
                    return getattr(option, direction)(value, path)
                except PayloadError:
                    continue
            raise _fail(path, name, value)

        return convert

    return _Converter(name, pick("dump"), pick("load"))


def _list(item: _Converter) -> _Converter:
    def convert(direction: str) -> _Dump:
        def run(value: Any, path: str) -> Any:
            if not isinstance(value, list):
                raise _fail(path, f"a list of {item.name}", value)
            each = getattr(item, direction)
            return [each(v, f"{path}[{i}]") for i, v in enumerate(value)]

        return run

    return _Converter(f"a list of {item.name}", convert("dump"), convert("load"))


def _dict(item: _Converter) -> _Converter:
    def convert(direction: str) -> _Dump:
        def run(value: Any, path: str) -> Any:
            if not isinstance(value, Mapping):
                raise _fail(path, "a dict", value)
            each = getattr(item, direction)
            out = {}
            for key, v in value.items():
                if not isinstance(key, str):
                    raise PayloadError(f"{path} has the key {key!r}; JSON object keys are strings")
                out[key] = each(v, f"{path}[{key!r}]")
            return out

        return run

    return _Converter(f"a dict of {item.name}", convert("dump"), convert("load"))


def _tuple(args: tuple[Any, ...], where: str) -> _Converter:
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item = _converter(args[0] if args else Any, where)
        name = f"a tuple of {item.name}"

        def items(value: Any, path: str) -> list[_Converter]:
            return [item] * len(value)

    else:
        fixed = [_converter(a, where) for a in args]
        name = f"a tuple of {len(fixed)} items"

        def items(value: Any, path: str) -> list[_Converter]:
            if len(value) != len(fixed):
                raise _fail(path, name, value)
            return fixed

    def dump(value: Any, path: str) -> Any:
        if not isinstance(value, (tuple, list)):
            raise _fail(path, name, value)
        return [
            c.dump(v, f"{path}[{i}]") for i, (c, v) in enumerate(zip(items(value, path), value, strict=True))
        ]

    def load(value: Any, path: str) -> Any:
        if not isinstance(value, (tuple, list)):
            raise _fail(path, name, value)
        return tuple(
            c.load(v, f"{path}[{i}]") for i, (c, v) in enumerate(zip(items(value, path), value, strict=True))
        )

    return _Converter(name, dump, load)


def _enum(kind: type[enum.Enum], where: str) -> _Converter:
    values = [member.value for member in kind]
    for value in values:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"{where}: {kind.__name__} values must be str or int to be stored as JSON")
    name = f"{kind.__name__} (one of {', '.join(repr(v) for v in values)})"

    def dump(value: Any, path: str) -> Any:
        if isinstance(value, kind):
            return value.value
        return load(value, path).value

    def load(value: Any, path: str) -> Any:
        for member in kind:
            if type(member.value) is type(value) and member.value == value:
                return member
        raise _fail(path, name, value)

    return _Converter(name, dump, load)


def _fields(
    name: str,
    fields: dict[str, _Converter],
    required: frozenset[str],
    build: Callable[[dict[str, Any]], Any] | None,
) -> _Converter:
    def convert(direction: str) -> _Dump:
        def run(value: Any, path: str) -> Any:
            if direction == "dump" and build is not None and dataclasses.is_dataclass(value):
                value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            if not isinstance(value, Mapping):
                raise _fail(path, f"{name} (a dict of its fields)", value)
            unknown = sorted(set(value) - set(fields), key=str)
            if unknown:
                raise PayloadError(f"{path} has unknown field(s) {unknown} for {name}")
            missing = sorted(required - set(value))
            if missing:
                raise PayloadError(f"{path} is missing the field(s) {missing} of {name}")
            out = {key: getattr(fields[key], direction)(v, f"{path}.{key}") for key, v in value.items()}
            return build(out) if direction == "load" and build is not None else out

        return run

    return _Converter(name, convert("dump"), convert("load"))


def _hints(kind: Any, where: str) -> dict[str, Any]:
    try:
        return get_type_hints(kind)
    except Exception as exc:  # a name the hints use is not importable where the class lives
        raise ConfigError(f"{where}: cannot resolve the type hints of {_describe(kind)} ({exc})") from None


def _typeddict(kind: Any, where: str) -> _Converter:
    hints = _hints(kind, where)
    fields = {key: _converter(hint, f"{where}, field {key!r}") for key, hint in hints.items()}
    return _fields(kind.__name__, fields, frozenset(kind.__required_keys__), None)


def _dataclass(kind: type[Any], where: str) -> _Converter:
    hints = _hints(kind, where)
    declared = [f for f in dataclasses.fields(kind) if f.init]
    fields = {f.name: _converter(hints[f.name], f"{where}, field {f.name!r}") for f in declared}
    required = frozenset(
        f.name
        for f in declared
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    return _fields(kind.__name__, fields, required, lambda values: kind(**values))


class PayloadSchema:
    """The payload a function accepts, from its signature and type hints.

    Args:
        func: The task function. A first parameter annotated ``TaskContext`` is not part
            of the payload (the worker passes the context there).
        name: The task's name, for messages.
        skip: How many leading parameters are not part of the payload.

    Raises:
        ConfigError: A parameter is positional-only or ``*args``, or its hint has no JSON
            form (see the module docstring), or the hints cannot be resolved.
    """

    def __init__(self, func: Callable[..., Any], name: str, skip: int = 0) -> None:
        self.name = name
        signature = inspect.signature(func)
        hints = _hints(func, f"task {name!r}")
        params = list(signature.parameters.values())[skip:]
        self.signature = signature.replace(parameters=params)
        self._fields: dict[str, _Converter] = {}
        self._extra: _Converter | None = None
        for param in params:
            where = f"parameter {param.name!r} of task {name!r}"
            if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
                raise ConfigError(
                    f"{where}: a payload is a JSON object of named values, so task parameters "
                    "must be nameable (no positional-only parameters or *args)"
                )
            converter = _converter(hints.get(param.name, Any), where)
            if param.kind is param.VAR_KEYWORD:
                self._extra = converter
            else:
                self._fields[param.name] = converter

    def dump(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Check call arguments against the signature and hints; return the JSON payload.

        Raises:
            PayloadError: A missing, unknown or mistyped argument (the message names it).
        """
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise PayloadError(f"task {self.name!r}: {exc}") from None
        payload: dict[str, Any] = {}
        try:
            for key, value in bound.arguments.items():
                if key in self._fields:
                    payload[key] = self._fields[key].dump(value, key)
                else:  # **kwargs: each extra value under its own name
                    assert self._extra is not None
                    for extra, item in value.items():
                        payload[extra] = self._extra.dump(item, extra)
        except PayloadError as exc:
            raise PayloadError(f"task {self.name!r}: {exc}") from None
        return payload

    def load(self, payload: Any) -> dict[str, Any]:
        """Check a stored payload and build the function's keyword arguments.

        Raises:
            PayloadError: The payload is not an object, or a value does not match the
                hints (for instance a task enqueued by name with the wrong fields).
        """
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise _fail(f"the payload of task {self.name!r}", "a JSON object", payload)
        kwargs: dict[str, Any] = {}
        for key, value in payload.items():
            converter = self._fields.get(key, self._extra)
            if converter is None:
                raise PayloadError(f"the payload of task {self.name!r} has an unknown field {key!r}")
            try:
                kwargs[key] = converter.load(value, key)
            except PayloadError as exc:
                raise PayloadError(f"the payload of task {self.name!r}: {exc}") from None
        try:
            self.signature.bind(**kwargs)
        except TypeError as exc:
            raise PayloadError(f"the payload of task {self.name!r} does not fit: {exc}") from None
        return kwargs
