"""Run the PrismQ Queue benchmark suite and write the results as JSON (and Markdown).

Usage::

    python benchmarks/run.py                  # full suite -> benchmarks/results/latest.json/.md
    python benchmarks/run.py --smoke          # tiny sizes, checks exactly-once only, writes nothing
    python benchmarks/run.py --only drain     # one scenario
    python benchmarks/run.py --sizes 1000,100000 --only backlog

Every comparison is measured in the same run on the same machine (sides alternate,
medians of repetitions), so ratios hold even on a busy machine. The exit status is
non-zero only when an exactly-once check fails (a task completed twice, or never); slow
timings never fail the run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import Settings, load_average, machine_info  # noqa: E402

CORE_SCENARIOS = ("enqueue", "drain", "backlog", "memory", "writes")
# Scenarios that live beside the core ones and run when their module is present.
OPTIONAL_SCENARIOS = ("wakeup", "peers", "postgres", "flow")
# The end-to-end worker commands come first: that is the number users see.
SCENARIOS = (
    "endtoend",
    *CORE_SCENARIOS,
    *(name for name in OPTIONAL_SCENARIOS if (HERE / "scenarios" / f"{name}.py").is_file()),
)
DEFAULT_OUT = HERE / "results" / "latest.json"


def _parse_sizes(text: str) -> tuple[int, ...]:
    """Parse ``1000,10k,1M`` into backlog sizes."""
    sizes = []
    for part in text.split(","):
        word = part.strip().lower().replace("_", "")
        if not word:
            continue
        scale = 1
        if word.endswith("k"):
            scale, word = 1_000, word[:-1]
        elif word.endswith("m"):
            scale, word = 1_000_000, word[:-1]
        try:
            value = int(float(word) * scale)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a size: {part!r} (use e.g. 1000,10k,1M)") from None
        if value < 10:
            raise argparse.ArgumentTypeError(f"backlog size {value} is too small (at least 10)")
        sizes.append(value)
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size")
    return tuple(sorted(set(sizes)))


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CI sizes; assert exactly-once only")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON results file (default {DEFAULT_OUT.relative_to(HERE.parent)}; --smoke writes none)",
    )
    parser.add_argument(
        "--only", choices=SCENARIOS, action="append", help="run only this scenario (repeatable)"
    )
    parser.add_argument("--sizes", type=_parse_sizes, help="backlog sizes, e.g. 1000,10k,100k,1M")
    parser.add_argument("--repeat", type=int, help="repetitions of each timed measurement (median taken)")
    parser.add_argument("--drain-tasks", type=int, help="tasks per one-at-a-time drain")
    parser.add_argument("--processes", help="worker process counts for the drain, e.g. 1,2,4")
    return parser


def _finite(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) with ``None``, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios, write the results and return the exit status."""
    args = build_parser().parse_args(argv)
    settings = Settings.for_smoke() if args.smoke else Settings()
    if args.sizes:
        settings.backlog_sizes = args.sizes
    if args.repeat:
        settings.repeat = settings.e2e_repeat = max(1, args.repeat)
    if args.drain_tasks:
        settings.drain_tasks = args.drain_tasks
    if args.processes:
        settings.drain_processes = tuple(int(p) for p in args.processes.split(",") if p.strip())
    chosen = args.only or list(SCENARIOS)

    results: dict[str, Any] = {
        "suite": "prismq-queue benchmarks",
        "mode": "smoke" if args.smoke else "full",
        "machine": machine_info(HERE.parent),
        "settings": settings.to_json(),
        "scenarios": {},
    }
    failed_checks: list[str] = []
    started = time.perf_counter()
    for name in chosen:
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"scenarios.{name}")
            print(f"== {module.TITLE} ...", flush=True)
            outcome = module.run(settings)
        except Exception:  # a broken scenario is reported, and the others still run
            error = traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
            outcome = {
                "title": name,
                "rows": [],
                "checks": [{"name": f"scenario {name} ran to the end", "ok": False, "error": error}],
            }
        outcome["seconds"] = round(time.perf_counter() - t0, 2)
        results["scenarios"][name] = outcome
        for row in outcome["rows"]:
            verdict = "" if row["met"] is None else ("  [met]" if row["met"] else "  [MISSED]")
            base = "" if row["baseline"] is None else f"  baseline {row['baseline']:,.1f}"
            value = "" if row["value"] is None else f"  -> {row['value']:,.3f}"
            print(f"   {row['label']}: {row['prismq']:,.1f} {row['unit']}{base}{value}{verdict}", flush=True)
        for check in outcome["checks"]:
            # "enforce": False marks an observation (e.g. a peer library's losses), not a failure.
            if not check.get("ok", False) and check.get("enforce", True):
                failed_checks.append(f"{name}: {check['name']}: {check}")
    results["seconds"] = round(time.perf_counter() - started, 2)
    results["machine"]["load_average_at_end"] = load_average()
    results["failed_checks"] = failed_checks
    results = _finite(results)

    out = args.out if args.out is not None else (None if args.smoke else DEFAULT_OUT)
    if out is not None:
        from report import render

        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        markdown = out.with_suffix(".md")
        markdown.write_text(render(results), encoding="utf-8")
        print(f"wrote {out} and {markdown}")
    if failed_checks:
        print("CORRECTNESS CHECK FAILED:", file=sys.stderr)
        for line in failed_checks:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"all correctness checks passed ({results['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
