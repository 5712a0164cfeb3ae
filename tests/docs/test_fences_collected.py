"""Every Python example in the Markdown docs really runs in ``nox -s doctest``.

pytest-markdown-docs parses Markdown as CommonMark, so on its own it silently skips a fence
indented inside an admonition, a content tab or any indented block. The doctest session
loads ``_meta/tools/markdown_docs_fixtures.py``, which makes those fences visible; these
tests count the fences independently (``_meta/tools/doc_fences.py``) and fail when the
collection disagrees, or when a ``notest`` fence gives no reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from meta_tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "_meta" / "tools"
_ITEM = re.compile(r"^(?P<path>.+?)::\[CodeFence#\d+\]\[line:(?P<line>\d+)\]$")


doc_fences = load_tool("doc_fences")


def _pytest_markdown_docs(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run pytest with pytest-markdown-docs and the doctest session's plugin."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TOOLS), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--markdown-docs",
        "--markdown-docs-syntax=superfences",
        "-p",
        "markdown_docs_fixtures",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--rootdir",
        str(cwd),
        *args,
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def _collected(files: list[Path], root: Path) -> set[tuple[str, int]]:
    result = _pytest_markdown_docs(["--collect-only", "-q", *map(str, files)], root)
    assert result.returncode in (0, 5), result.stdout + result.stderr
    found = set()
    for line in result.stdout.splitlines():
        match = _ITEM.match(line.strip())
        if match:
            found.add((Path(match["path"]).as_posix(), int(match["line"])))
    return found


def _expected(files: list[Path], root: Path) -> set[tuple[str, int]]:
    return {
        (fence.path.relative_to(root).as_posix(), fence.line)
        for fence in doc_fences.python_fences(files)
        if not fence.notest
    }


def test_the_docs_have_executed_examples() -> None:
    files = doc_fences.markdown_files()
    assert files, "no Markdown found under README.md, CONTRIBUTING.md, packages/queue/README.md, _meta/docs"
    assert _expected(files, ROOT), "the Markdown docs have no executed ```python example"


def test_every_python_fence_of_the_docs_is_collected() -> None:
    files = doc_fences.markdown_files()
    expected = _expected(files, ROOT)
    collected = _collected(files, ROOT)
    skipped = sorted(expected - collected)
    assert not skipped, "pytest-markdown-docs would not run these fences (file, line): " + repr(skipped)
    unknown = sorted(collected - expected)
    assert not unknown, "collected fences that doc_fences.py does not count (file, line): " + repr(unknown)


def test_every_notest_fence_gives_a_reason() -> None:
    silent = [
        f"{fence.path.relative_to(ROOT).as_posix()}:{fence.line}"
        for fence in doc_fences.python_fences(doc_fences.markdown_files())
        if fence.notest and not fence.reason
    ]
    assert not silent, (
        "notest fences need a reason, after notest on the fence line or as "
        "<!-- notest: reason --> just above it: " + ", ".join(silent)
    )


SAMPLE = textwrap.dedent(
    """\
    # Sample

    ```python
    top = 1
    ```

    !!! note "An admonition"

        ```python
        inside_admonition = 2
        ```

    === "A tab"

        ```py
        inside_tab = 3
        ```

    ???+ tip "Collapsible"

        ```{.python continuation}
        assert inside_tab == 3
        ```

    ````markdown
    ```python
    shown_not_run = 4
    ```
    ````

    <!-- notest: talks to a server -->
    ```python notest
    connect()
    ```

    ```python notest
    no_reason()
    ```

    ```python notest needs the network
    fetch()
    ```
    """
)


def test_scanner_finds_nested_fences_and_reasons(tmp_path: Path) -> None:
    page = tmp_path / "sample.md"
    page.write_text(SAMPLE, encoding="utf-8")
    fences = list(doc_fences.python_fences([page]))
    assert [(f.line, f.notest, f.reason) for f in fences] == [
        (3, False, ""),
        (9, False, ""),
        (15, False, ""),
        (21, False, ""),
        (32, True, "talks to a server"),
        (36, True, ""),
        (40, True, "needs the network"),
    ]
    assert fences[1].code == "inside_admonition = 2\n"
    assert fences[3].continuation


def test_plugin_collects_fences_inside_admonitions_and_tabs(tmp_path: Path) -> None:
    page = tmp_path / "sample.md"
    page.write_text(SAMPLE, encoding="utf-8")
    assert _collected([page], tmp_path) == _expected([page], tmp_path)
    assert len(_expected([page], tmp_path)) == 4


def test_each_example_runs_in_its_own_folder_with_its_own_database(tmp_path: Path) -> None:
    page = tmp_path / "sandbox.md"
    page.write_text(
        textwrap.dedent(
            """\
            # Sandbox

            ```python
            import os
            from pathlib import Path

            assert Path(os.environ["PRISMQ_QUEUE_DB_PATH"]) == Path.cwd() / "queue.db"
            assert not any(Path.cwd().iterdir())
            Path("left-behind.txt").write_text("x")
            ```

            ```python
            from pathlib import Path

            assert not Path("left-behind.txt").exists()
            ```

            ```python
            raise RuntimeError("a failing example fails the run")
            ```
            """
        ),
        encoding="utf-8",
    )
    result = _pytest_markdown_docs(["-q", str(page)], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert "1 failed" in result.stdout
    assert "a failing example fails the run" in result.stdout


def test_extract_writes_each_fence_for_ruff(tmp_path: Path) -> None:
    page = tmp_path / "sample.md"
    page.write_text(SAMPLE, encoding="utf-8")
    out = tmp_path / "out"
    written = doc_fences.extract([page], out)
    names = sorted(path.name for path in written)
    assert len(names) == 7
    prefix = page.as_posix().replace("/", "__")
    assert f"{prefix}_L3.py" in names
    by_line = {int(path.stem.rsplit("_L", 1)[1]): path.read_text(encoding="utf-8") for path in written}
    assert by_line[3] == "top = 1\n"
    assert by_line[15] == "# ruff: noqa: F401, F841\ninside_tab = 3\n"
    assert by_line[21] == "# ruff: noqa: F821\nassert inside_tab == 3\n"
    assert by_line[32].startswith("# ruff: noqa: F821, F401, F841\n")
