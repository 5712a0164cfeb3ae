"""Every executed example checks what it shows, so a wrong comment fails the doctest run.

Two rules over the Python fences of the Markdown docs (the ones ``nox -s doctest`` runs):

* an example that prints something also asserts something: the output in its comments
  is checked, not only shown;
* an example that catches an error fails when nothing is raised: the ``try`` has an
  ``else:`` that raises, or the handler stores something a later statement reads
  (a name first bound in the handler is a ``NameError`` when nothing was raised).
"""

from __future__ import annotations

import ast
from pathlib import Path

from meta_tools import load_tool

ROOT = Path(__file__).resolve().parents[2]


doc_fences = load_tool("doc_fences")


def _executed() -> list[tuple[str, ast.Module]]:
    found = []
    for fence in doc_fences.python_fences(doc_fences.markdown_files()):
        if fence.notest:
            continue
        where = f"{fence.path.relative_to(ROOT).as_posix()}:{fence.line}"
        found.append((where, ast.parse(fence.code)))
    return found


def _asserts(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Raise) and "AssertionError" in ast.unparse(node):
            return True
    return False


def _prints(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
        for node in ast.walk(tree)
    )


def _stored(handler: ast.ExceptHandler) -> set[str]:
    names = set()
    for node in ast.walk(handler):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _reraises(handler: ast.ExceptHandler) -> bool:
    return any(isinstance(node, ast.Raise) for node in ast.walk(handler))


def _silent_excepts(tree: ast.Module) -> list[int]:
    """Lines of ``try`` statements that pass quietly when the expected error is not raised."""
    problems = []
    parents: dict[ast.AST, ast.AST] = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parents[child] = parent
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try) or node.orelse:
            continue
        if any(isinstance(stmt, ast.Raise) for stmt in ast.walk(ast.Module(body=node.body, type_ignores=[]))):
            continue  # the body raises on purpose (a rollback demonstration)
        later: list[ast.stmt] = []
        owner = parents.get(node)
        body = getattr(owner, "body", [])
        if node in body:
            later = body[body.index(node) + 1 :]
        read_later = {
            n.id
            for stmt in later
            for n in ast.walk(stmt)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        for handler in node.handlers:
            if _reraises(handler):
                continue
            if _stored(handler) & read_later:
                continue
            # A try that cleans up or tolerates a failure on purpose says so with `pass`
            # only when it is not about the error the example demonstrates.
            if all(isinstance(stmt, ast.Pass) for stmt in handler.body) and node.finalbody:
                continue
            problems.append(handler.lineno)
    return problems


def test_examples_that_print_also_assert() -> None:
    silent = [where for where, tree in _executed() if _prints(tree) and not _asserts(tree)]
    assert silent == [], f"these examples print but assert nothing: {silent}"


def test_error_examples_fail_when_nothing_is_raised() -> None:
    quiet = [f"{where} (fence line {line})" for where, tree in _executed() for line in _silent_excepts(tree)]
    assert quiet == [], f"these except clauses pass when nothing is raised; add an else: raise: {quiet}"
