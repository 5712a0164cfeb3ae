"""HandlerRegistry: registration forms, clashes, references from mappings and modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from runtime_helpers import write_module

from prismq.queue.errors import ConfigError
from prismq.queue.runtime import HandlerRegistry, TaskContext


def test_decorator_and_call_forms_register_sync_and_async_handlers() -> None:
    registry = HandlerRegistry()

    @registry.handler("resize", timeout=5)
    def resize(ctx: TaskContext) -> int:
        return 1

    async def send(ctx: TaskContext) -> int:
        return 2

    handler = registry.register("send", send)

    assert resize(None) == 1  # type: ignore[arg-type]  # the decorator returns the function itself
    assert registry.task_types == ("resize", "send")
    assert "resize" in registry
    assert "other" not in registry
    assert len(registry) == 2
    assert registry.get("resize").func is resize
    assert registry.get("resize").is_async is False
    assert registry.get("resize").timeout == 5.0
    assert handler.is_async is True
    assert registry.get("send") is handler
    assert registry.get("missing") is None
    assert [h.task_type for h in registry] == ["resize", "send"]


def test_async_callable_object_is_detected_as_async() -> None:
    class Sender:
        async def __call__(self, ctx: TaskContext) -> None:
            return None

    registry = HandlerRegistry()
    assert registry.register("send", Sender()).is_async is True


def test_duplicate_task_type_is_a_config_error() -> None:
    registry = HandlerRegistry()
    registry.register("resize", lambda ctx: None)
    with pytest.raises(ConfigError, match="'resize' already has a handler"):
        registry.register("resize", lambda ctx: None)
    other = HandlerRegistry()
    other.register("resize", lambda ctx: None)
    with pytest.raises(ConfigError, match="already has a handler"):
        registry.update(other)


@pytest.mark.parametrize("func", [None, 42, "os.path:join"])
def test_non_callable_handler_is_a_config_error(func: object) -> None:
    with pytest.raises(ConfigError, match="must be callable"):
        HandlerRegistry().register("resize", func)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, True, "5"])
def test_bad_timeout_is_a_config_error(timeout: object) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        HandlerRegistry().register("resize", lambda ctx: None, timeout=timeout)  # type: ignore[arg-type]


def test_from_mapping_imports_references() -> None:
    import os.path

    registry = HandlerRegistry.from_mapping(
        {"join": "os.path:join", "resize": "prismq.queue.cli.demo:resize_image"}
    )
    assert registry.get("join").func is os.path.join
    assert registry.get("resize").func.__name__ == "resize_image"
    assert registry.task_types == ("join", "resize")


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("nope.mod:x", "cannot import module 'nope.mod'"),
        ("os:nope", "module 'os' has no attribute 'nope'"),
        ("not a ref", "is not a 'package.module:name' reference"),
        ("os.path:join; import os", "is not a 'package.module:name' reference"),
        ("os.path", "is not a 'package.module:name' reference"),
        (":join", "is not a 'package.module:name' reference"),
        ("os:", "is not a 'package.module:name' reference"),
        ("os.path:join()", "is not a 'package.module:name' reference"),
        ("os:sep", "must be callable"),
    ],
)
def test_from_mapping_bad_reference_names_the_problem(reference: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="handler for 'job'") as info:
        HandlerRegistry.from_mapping({"job": reference})
    assert problem in str(info.value)


def test_from_mapping_rejects_a_non_string_reference() -> None:
    with pytest.raises(ConfigError, match="'module:function' string"):
        HandlerRegistry.from_mapping({"job": len})  # type: ignore[dict-item]


def test_references_are_never_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "evaluated"
    write_module(
        tmp_path,
        "refs_probe_mod",
        f"""
        def handler(ctx):
            return None

        def side_effect():
            open({str(marker)!r}, "w").close()
            return handler
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for reference in (
        "refs_probe_mod:side_effect()",
        "refs_probe_mod:handler;refs_probe_mod.side_effect()",
        "__import__('refs_probe_mod').side_effect",
    ):
        with pytest.raises(ConfigError, match=r"not a 'package\.module:name' reference"):
            HandlerRegistry.from_mapping({"job": reference})
    assert not marker.exists()
    # A plain reference to the same module works and still runs nothing.
    registry = HandlerRegistry.from_mapping({"job": "refs_probe_mod:handler"})
    assert registry.get("job").func.__name__ == "handler"
    assert not marker.exists()


def test_load_defaults_to_the_registry_attribute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(
        tmp_path,
        "load_probe_handlers",
        """
        from prismq.queue.runtime import HandlerRegistry

        registry = HandlerRegistry()
        other = HandlerRegistry()
        not_a_registry = {"a": 1}

        @registry.handler("a")
        def a(ctx):
            return "a"

        @other.handler("b")
        def b(ctx):
            return "b"
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert HandlerRegistry.load("load_probe_handlers").task_types == ("a",)
        assert HandlerRegistry.load("load_probe_handlers:other").task_types == ("b",)
        with pytest.raises(ConfigError, match="is a dict, not a HandlerRegistry"):
            HandlerRegistry.load("load_probe_handlers:not_a_registry")
        with pytest.raises(ConfigError, match="no attribute 'missing'"):
            HandlerRegistry.load("load_probe_handlers:missing")
        with pytest.raises(ConfigError, match="cannot import module 'no_such_handlers_module'"):
            HandlerRegistry.load("no_such_handlers_module")
    finally:
        sys.modules.pop("load_probe_handlers", None)


def test_demo_registry_loads_by_module_name() -> None:
    registry = HandlerRegistry.load("prismq.queue.cli.demo")
    assert "demo.resize_image" in registry
    assert registry.get("demo.send_email").is_async is True
