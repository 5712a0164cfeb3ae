"""Find the Python code fences in the project's Markdown, and write them out for ruff.

The documentation's Python examples are executed by pytest-markdown-docs (``nox -s doctest``)
and linted by ruff (``nox -s lint``). Ruff formats the code blocks of Markdown files but lints
only ``.py`` files, so ``lint`` uses this tool to copy every Python fence into a temporary
folder of ``.py`` files first::

    python _meta/tools/doc_fences.py extract OUTPUT_DIR [FILES...]
    python _meta/tools/doc_fences.py list [FILES...]

Each extracted file is named after its source and the line of its opening fence, such as
``README.md_L42.py``: ruff's ``README.md_L42.py:3:5`` is line 42 + 3 of ``README.md``.

The scanner here is also the reference count for ``tests/docs/test_fences_collected.py``:
unlike a CommonMark parser it also finds fences indented inside admonitions (``!!!``),
collapsible blocks (``???``) and content tabs (``===``).

Fence info strings understood (the pytest-markdown-docs conventions):

* ``python``, ``py``, ``python3`` or the superfences form ``{.python ...}``: an example.
* ``notest``: not executed. A reason is required, either after ``notest`` on the fence
  line or in an HTML comment on the line just above it: ``<!-- notest: why -->``.
* ``continuation``: runs after the previous example of the same page, sharing its names.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON_LANGS = frozenset({"python", "py", "python3"})
DEFAULT_SOURCES = ("README.md", "CONTRIBUTING.md", "packages/queue/README.md", "_meta/docs")

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_REASON_COMMENT = re.compile(r"^\s*<!--\s*notest\s*:\s*(?P<reason>\S.*?)\s*-->\s*$")


@dataclass
class Fence:
    """One fenced code block of a Markdown file.

    Attributes:
        path: The Markdown file.
        line: The 1-based line of the opening fence.
        indent: How far the fence is indented (inside an admonition, tab or list).
        lang: The language of the info string, lower-cased ("" when none).
        options: The other words of the info string.
        code: The block's content, dedented by ``indent``.
        end_line: The 1-based line of the closing fence (the last line when unclosed).
        reason: Why a ``notest`` fence is not run ("" when no reason was given).
    """

    path: Path
    line: int
    indent: int
    lang: str
    options: tuple[str, ...]
    code: str
    end_line: int
    reason: str = ""

    @property
    def is_python(self) -> bool:
        """True for a Python example (``python``, ``py`` or ``python3``)."""
        return self.lang in PYTHON_LANGS

    @property
    def notest(self) -> bool:
        """True when the fence is marked ``notest``."""
        return "notest" in self.options

    @property
    def continuation(self) -> bool:
        """True when the fence continues the previous example of its page."""
        return "continuation" in self.options


def parse_info(info: str) -> tuple[str, tuple[str, ...]]:
    """Split a fence info string into its language and options.

    Args:
        info: The text after the opening backticks, e.g. ``python notest needs a server``
            or ``{.python continuation}``.

    Returns:
        The lower-cased language ("" when none) and the remaining words.
    """
    text = info.strip()
    if text.startswith("{"):
        words = text.strip("{}").split()
        lang = next((w[1:] for w in words if w.startswith(".")), "")
        rest = tuple(w for w in words if w != f".{lang}")
        return lang.lower(), rest
    words = text.split()
    if not words:
        return "", ()
    return words[0].lower(), tuple(words[1:])


def scan(path: Path, text: str | None = None) -> list[Fence]:
    """Return every fenced code block of a Markdown file, in order.

    Fences nested in another fence (a Markdown example showing a fence) are part of the
    outer block and are not returned.

    Args:
        path: The Markdown file.
        text: Its content, when already read.

    Returns:
        The fences, each with its options and dedented code.
    """
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    fences: list[Fence] = []
    index = 0
    while index < len(lines):
        match = _OPEN.match(lines[index])
        if not match or (match["fence"][0] == "`" and "`" in match["info"]):
            index += 1
            continue
        indent = len(match["indent"].expandtabs(4))
        marker = match["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$")
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            body.append(lines[end])
            end += 1
        lang, options = parse_info(match["info"])
        fence = Fence(
            path=path,
            line=index + 1,
            indent=indent,
            lang=lang,
            options=options,
            code="\n".join(_dedent(line, indent) for line in body) + ("\n" if body else ""),
            end_line=min(end + 1, len(lines)),
        )
        if fence.notest:
            fence.reason = _notest_reason(options, lines, index)
        fences.append(fence)
        index = end + 1
    return fences


def _dedent(line: str, indent: int) -> str:
    expanded = line.expandtabs(4)
    removable = len(expanded) - len(expanded.lstrip(" "))
    return expanded[min(indent, removable) :]


def _notest_reason(options: tuple[str, ...], lines: list[str], index: int) -> str:
    after = options[options.index("notest") + 1 :]
    words = [w for w in after if w not in {"continuation"} and not w.startswith(("fixture:", "runner:"))]
    if words:
        return " ".join(words)
    previous = index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    if previous >= 0:
        comment = _REASON_COMMENT.match(lines[previous])
        if comment:
            return comment["reason"]
    return ""


def markdown_files(sources: Iterable[str | Path] = DEFAULT_SOURCES, root: Path = ROOT) -> list[Path]:
    """Expand files and folders into the sorted list of Markdown files they hold.

    Args:
        sources: Files or folders, relative to ``root`` unless absolute.
        root: The repository root.

    Returns:
        Every existing ``.md`` file, folders searched recursively.
    """
    found: set[Path] = set()
    for source in sources:
        path = Path(source)
        path = path if path.is_absolute() else root / path
        if path.is_dir():
            found.update(p for p in path.rglob("*.md") if "node_modules" not in p.parts)
        elif path.suffix == ".md" and path.exists():
            found.add(path)
    return sorted(found)


def python_fences(files: Iterable[Path]) -> Iterator[Fence]:
    """Yield the Python fences of the given Markdown files."""
    for path in files:
        yield from (fence for fence in scan(path) if fence.is_python)


def _relative(path: Path, root: Path = ROOT) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def extract(files: Iterable[Path], output: Path) -> list[Path]:
    """Write each Python fence to its own ``.py`` file for ruff.

    A fence that uses names from the previous example (``continuation``) gets a file-level
    ``# ruff: noqa: F821``; one whose names are used by the next example gets
    ``# ruff: noqa: F401, F841``; a ``notest`` fragment gets both. Every other rule applies
    as in the code.

    Args:
        files: The Markdown files.
        output: The folder to write into (created when missing).

    Returns:
        The files written.
    """
    output.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path in files:
        fences = [f for f in scan(path) if f.is_python]
        for position, fence in enumerate(fences):
            continued = position + 1 < len(fences) and fences[position + 1].continuation
            # A notest fence may be a fragment of a larger story, like a continuation.
            silenced = (["F821"] if fence.continuation or fence.notest else []) + (
                ["F401", "F841"] if continued or fence.notest else []
            )
            header = f"# ruff: noqa: {', '.join(silenced)}\n" if silenced else ""
            name = _relative(path).replace("/", "__") + f"_L{fence.line}.py"
            target = output / name
            target.write_text(header + fence.code, encoding="utf-8")
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Run the command line: ``extract`` or ``list``.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` by default).

    Returns:
        The exit status: 0, or 1 when ``list`` finds a ``notest`` fence with no reason.
    """
    parser = argparse.ArgumentParser(description="Python fences of the Markdown docs")
    commands = parser.add_subparsers(dest="command", required=True)
    extract_cmd = commands.add_parser("extract", help="write each Python fence to OUTPUT/*.py")
    extract_cmd.add_argument("output", type=Path)
    extract_cmd.add_argument("sources", nargs="*", default=list(DEFAULT_SOURCES))
    list_cmd = commands.add_parser("list", help="print each Python fence and whether it runs")
    list_cmd.add_argument("sources", nargs="*", default=list(DEFAULT_SOURCES))
    args = parser.parse_args(argv)

    files = markdown_files(args.sources)
    if args.command == "extract":
        written = extract(files, args.output)
        print(f"extracted {len(written)} Python fences from {len(files)} Markdown files into {args.output}")
        return 0
    missing_reason = 0
    for fence in python_fences(files):
        where = f"{_relative(fence.path)}:{fence.line}"
        if fence.notest:
            missing_reason += not fence.reason
            print(f"{where}: notest ({fence.reason or 'NO REASON GIVEN'})")
        else:
            print(f"{where}: runs{' (continuation)' if fence.continuation else ''}")
    return 1 if missing_reason else 0


if __name__ == "__main__":
    sys.exit(main())
