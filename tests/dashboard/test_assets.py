"""The dashboard's browser files: vendored from the pinned npm packages, nothing off-site."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from prismq.queue.cli.app import main
from prismq.queue.cli.dashboard import is_loopback

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "packages" / "queue" / "src" / "prismq" / "queue" / "dashboard"
STATIC = PACKAGE / "static"


def test_vendored_files_match_the_manifest_and_the_lock_file() -> None:
    manifest = json.loads((STATIC / "VENDORED.json").read_text(encoding="utf-8"))
    lock = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))["packages"]
    declared = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))["devDependencies"]
    assert set(manifest) == {"htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css"}
    for name, entry in manifest.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == entry["sha256"], name
        assert lock[f"node_modules/{entry['package']}"]["version"] == entry["version"], name
        assert declared[entry["package"]] == entry["version"], f"{entry['package']} is not pinned exactly"
    if (ROOT / "node_modules" / "uplot").is_dir():  # after npm ci: the copy step is current
        for name, entry in manifest.items():
            source = ROOT / "node_modules" / entry["package"] / entry["source"]
            assert source.read_bytes() == (STATIC / name).read_bytes(), name


def test_pages_load_nothing_from_another_host() -> None:
    offsite = re.compile(r"""(src|href)\s*=\s*["'](https?:)?//""", re.IGNORECASE)
    for path in [
        *PACKAGE.joinpath("templates").glob("*.html"),
        STATIC / "dashboard.js",
        STATIC / "dashboard.css",
    ]:
        text = path.read_text(encoding="utf-8")
        assert not offsite.search(text), path.name
        assert "http://" not in text, path.name
        assert "https://" not in text, path.name


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.8.0.1", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("example.com", False),
    ],
)
def test_loopback_detection(host: str, local: bool) -> None:
    assert is_loopback(host) is local


def test_cli_refuses_to_serve_beyond_loopback_without_a_secret(tmp_path: Path, capsys, monkeypatch) -> None:
    db = str(tmp_path / "queue.db")
    assert main(["--db", db, "dashboard", "--host", "0.0.0.0"]) == 2
    assert "without authentication" in capsys.readouterr().err
    monkeypatch.delenv("PRISMQ_DASHBOARD_TOKEN", raising=False)
    assert main(["--db", db, "dashboard", "--host", "0.0.0.0", "--token-env"]) == 2
    assert "PRISMQ_DASHBOARD_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("PRISMQ_DASHBOARD_BASIC_AUTH", "no-colon")
    assert main(["--db", db, "dashboard", "--host", "0.0.0.0", "--basic-auth-env"]) == 2
    assert "user:password" in capsys.readouterr().err
