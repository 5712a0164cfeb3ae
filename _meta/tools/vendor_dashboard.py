"""Copy the dashboard's browser libraries from node_modules into the package, reproducibly.

The dashboard serves htmx and uPlot from its own static folder (never from a CDN). The
versions are pinned in package.json/package-lock.json; ``npm ci`` installs them and this
script copies the built files and writes ``VENDORED.json`` (package, version, SHA-256 per
file). A test checks the committed files against that manifest and the lock file.

Usage: python _meta/tools/vendor_dashboard.py [--check]
    --check: change nothing; exit 1 when the package's files differ from node_modules.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "packages" / "queue" / "src" / "prismq" / "queue" / "dashboard" / "static"
MANIFEST = STATIC / "VENDORED.json"
# file in the static folder -> (npm package, file inside that package)
FILES = {
    "htmx.min.js": ("htmx.org", "dist/htmx.min.js"),
    "uPlot.iife.min.js": ("uplot", "dist/uPlot.iife.min.js"),
    "uPlot.min.css": ("uplot", "dist/uPlot.min.css"),
}


def locked_version(package: str) -> str:
    """The version package-lock.json pins for an npm package."""
    lock = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    return str(lock["packages"][f"node_modules/{package}"]["version"])


def expected() -> dict[str, dict[str, str]]:
    """The manifest the files in node_modules give (raises when one is missing)."""
    out = {}
    for name, (package, inner) in FILES.items():
        source = ROOT / "node_modules" / package / inner
        installed = json.loads((ROOT / "node_modules" / package / "package.json").read_text(encoding="utf-8"))
        if installed["version"] != locked_version(package):
            raise SystemExit(
                f"node_modules/{package} is {installed['version']}, the lock says "
                f"{locked_version(package)}: run npm ci"
            )
        out[name] = {
            "package": package,
            "version": installed["version"],
            "source": inner,
            "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only")
    args = parser.parse_args(argv)
    wanted = expected()
    if args.check:
        current = json.loads(MANIFEST.read_text(encoding="utf-8")) if MANIFEST.exists() else {}
        stale = [
            name
            for name, entry in wanted.items()
            if current.get(name) != entry
            or hashlib.sha256((STATIC / name).read_bytes()).hexdigest() != entry["sha256"]
        ]
        if stale:
            print(f"stale vendored files: {', '.join(stale)} (run {Path(__file__).name})")
            return 1
        print("vendored dashboard files match node_modules")
        return 0
    for name, (package, inner) in FILES.items():
        (STATIC / name).write_bytes((ROOT / "node_modules" / package / inner).read_bytes())
    MANIFEST.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"copied {len(FILES)} files into {STATIC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
