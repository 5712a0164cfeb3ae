"""The package's modules import in layer order, with no import cycle.

Imports are read from the source (module level and inside functions alike: a lazy import
is still a dependency); those under ``if TYPE_CHECKING:`` are for type checkers only and
are left out. A module imports from its own layer or lower ones, never from a higher one:
the runtime sits above the worker, the integrations above the runtime, the CLI on top.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from prismq.queue.validation import is_int, is_number

PACKAGE = Path(__file__).resolve().parents[1] / "packages" / "queue" / "src" / "prismq" / "queue"
ROOT = "prismq.queue"

LAYERS = (
    ("errors", "models", "validation", "payloads", "retry", "strategies", "config", "flow"),
    ("backends",),
    ("database",),
    ("client", "aio", "worker", "migrate", "schedules"),
    ("runtime", "observability"),
    ("tasks", "integrations", "dashboard", "testing"),
    ("pytest_plugin", "contrib", "cli", "__main__", ""),
)
"""Lowest first; a module's layer is that of its first name under ``prismq.queue``."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([ROOT, *parts])


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports at run time."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while stack:
        for node in ast.iter_child_nodes(stack.pop()):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join(package + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    found.add(target if target in modules else base)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            stack.append(node)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(name, path, set(paths)) for name, path in paths.items()}


def _layer(module: str) -> int:
    first = module[len(ROOT) + 1 :].split(".")[0] if module != ROOT else ""
    for rank, names in enumerate(LAYERS):
        if first in names:
            return rank
    raise AssertionError(f"{module} is in no layer; add its name to LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_there_is_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_worker_never_reaches_the_runtime() -> None:
    graph = _graph()
    assert not {t for t in graph[f"{ROOT}.worker"] if t.startswith(f"{ROOT}.runtime")}
    assert f"{ROOT}.worker" in graph[f"{ROOT}.runtime.runner"]


def test_int_checks_exclude_bool() -> None:
    assert is_int(3)
    assert is_int(-(2**70))
    assert not is_int(True)
    assert not is_int(3.0)
    assert not is_int("3")
    assert is_number(2.5)
    assert is_number(float("nan"))
    assert is_number(7)
    assert not is_number(False)
    assert not is_number("1")


BOOL_EXCLUDING_CHECK = re.compile(
    r"isinstance\(([\w.]+), bool\)\s+or\s+not\s+isinstance\(\1,"
    r"|isinstance\(([\w.]+), \(?int[^)]*\)?\)\s+and\s+not\s+isinstance\(\2, bool\)"
)


def test_the_int_check_is_written_once() -> None:
    """``is_int``/``is_number`` in validation.py are the only hand-written copies."""
    copies = {
        str(path.relative_to(PACKAGE)): len(BOOL_EXCLUDING_CHECK.findall(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert {name: n for name, n in copies.items() if n} == {"validation.py": 2}
