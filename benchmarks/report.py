"""Render benchmark results (JSON from ``run.py``) as a Markdown fragment.

Usage::

    python benchmarks/report.py                           # results/latest.json -> results/latest.md
    python benchmarks/report.py results.json --out -      # print to stdout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_IN = HERE / "results" / "latest.json"


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit == "tasks/s":
        return f"{value:,.0f}"
    if unit in ("µs", "MiB"):
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def _value(row: dict[str, Any]) -> str:
    if row.get("value_text"):
        return str(row["value_text"])
    value = row.get("value")
    if value is None:
        return "–"
    unit = row["unit"]
    target = row.get("target") or ""
    if row.get("baseline") is None:  # an absolute number, held to an absolute target
        return f"{_num(value, unit)} {unit}"
    if "tasks/s" in target:
        return f"{value:,.0f} tasks/s"
    if "%" in target or (not target and unit == "tasks/s"):
        return f"{value:.0%} of baseline"
    if "×" in target:
        return f"{value:.2f}×"
    return f"{value:.2f}× baseline"


def _verdict(row: dict[str, Any]) -> str:
    if row.get("met") is None:
        return "(info)"
    return "met" if row["met"] else "**missed**"


def _rows_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| Measurement | PrismQ Queue | Baseline | Result | Target | Met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        unit = row["unit"]
        base = "–" if row.get("baseline") is None else f"{_num(row['baseline'], unit)} {unit}"
        if row.get("baseline_name"):
            base += f"<br><small>{row['baseline_name']}</small>"
        lines.append(
            f"| {row['label']} | {_num(row['prismq'], unit)} {unit} | {base} | {_value(row)} | "
            f"{row.get('target') or '–'} | {_verdict(row)} |"
        )
    return lines


def _backlog_table(scenario: dict[str, Any]) -> list[str]:
    sizes = [str(s) for s in scenario["params"]["sizes"]]
    lines = [
        "Median claim + complete (claim alone in brackets), µs per task:",
        "",
        "| Strategy | " + " | ".join(f"{int(s):,} ready" for s in sizes) + " |",
        "| --- |" + " ---: |" * len(sizes),
    ]
    for name, cells in scenario["table"].items():
        parts = []
        for size in sizes:
            cell = cells.get(size, {})
            total, claim = cell.get("claim_complete_median_us"), cell.get("claim_median_us")
            parts.append(f"{_num(total, 'µs')} ({_num(claim, 'µs')})")
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    builds = scenario["params"].get("build_seconds") or {}
    if builds:
        built = ", ".join(f"{int(k):,} in {v:.1f} s" for k, v in builds.items())
        lines += ["", f"Backlogs built with `enqueue_many` (batches of 10,000): {built}."]
    return lines


def _cpu_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "CPU time per task (all worker processes together; less sensitive to machine load than rates):",
        "",
        "| Measurement | PrismQ Queue | Baseline | Ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        p, r = row.get("cpu_us_per_task"), row.get("baseline_cpu_us_per_task")
        if p is None or r is None:
            continue
        lines.append(f"| {row['label']} | {p:,.1f} µs | {r:,.1f} µs | {p / r:.2f}× |")
    return lines if len(lines) > 4 else []


def _checks(results: dict[str, Any]) -> list[str]:
    lines = [
        "| Exactly-once check | Expected | Completed | Duplicates | Lost | OK |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    count = 0
    for scenario in results["scenarios"].values():
        for check in scenario.get("checks", []):
            if "duplicates" not in check:
                continue
            count += 1
            lost = check.get("lost", check.get("losses"))
            ok = "yes" if check.get("ok") else ("**NO**" if check.get("enforce", True) else "no (observed)")
            lines.append(
                f"| {check['name']} | {_count(check.get('expected'))} | {_count(check.get('completed'))} | "
                f"{_count(check['duplicates'])} | {_count(lost)} | {ok} |"
            )
    return lines if count else []


def _count(value: Any) -> str:
    return "–" if value is None else f"{value:,}"


def _chart(title: str, labels: list[str], values: list[float], unit: str) -> list[str]:
    """A Mermaid bar chart (rendered on the site from the local mermaid.min.js)."""
    if not values:
        return []
    top = max(values) * 1.1 or 1.0
    quoted = ", ".join('"' + label.replace('"', "") + '"' for label in labels)
    return [
        "```mermaid",
        "xychart-beta",
        f'    title "{title}"',
        f"    x-axis [{quoted}]",
        f'    y-axis "{unit}" 0 --> {top:.0f}',
        f"    bar [{', '.join(f'{v:.0f}' for v in values)}]",
        "```",
        "",
    ]


def _drain_chart(scenario: dict[str, Any]) -> list[str]:
    """Bars per process count: PrismQ's two loops, then raw (rows in the drain's order)."""
    by_count: dict[str, dict[str, float]] = {}
    for row in scenario["rows"]:
        if row["unit"] != "tasks/s" or row.get("baseline") is None or "batch" in row["label"]:
            continue
        processes = row["label"].rsplit(",", 1)[-1].strip().split(" ")[0]
        bars = by_count.setdefault(processes, {})
        loop = "fold" if row["label"].startswith("complete_and_claim") else "2 tx"
        bars[f"PrismQ {loop} {processes}p"] = row["prismq"]
        bars[f"raw {processes}p"] = row["baseline"]
    labels: list[str] = []
    values: list[float] = []
    for bars in by_count.values():
        raw = [key for key in bars if key.startswith("raw")]
        for key in [k for k in bars if k not in raw] + raw:
            labels.append(key)
            values.append(bars[key])
    return _chart("Claim + complete, one task at a time (tasks/s)", labels, values, "tasks/s")


def _peers_chart(scenario: dict[str, Any]) -> list[str]:
    counts = scenario.get("params", {}).get("processes") or []
    if not counts:
        return []
    top = max(counts)
    labels: list[str] = []
    values: list[float] = []
    for name, sample in scenario.get("samples", {}).items():
        drain = sample.get("drain") if isinstance(sample, dict) else None
        result = (drain or {}).get(top) or (drain or {}).get(str(top))
        if result:
            labels.append(name)
            values.append(result["rate"])
    return _chart(f"Drain with {top} worker processes (tasks/s)", labels, values, "tasks/s")


def _endtoend_table(scenario: dict[str, Any]) -> list[str]:
    """Every worker command measured end to end, fastest first, with its exactly-once count."""
    samples = scenario.get("samples", {})
    if not samples:
        return []
    params = scenario.get("params", {})
    lines = [
        f"{params.get('tasks', 0):,} no-op tasks per run (fewer for a peer too slow for that), median of "
        f"{params.get('repeat', 1)} runs (one for a side whose run takes over 30 s), start-up included:",
        "",
        "| Worker command | Store | tasks/s | Runs | Tasks | Duplicates | Lost |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, sample in sorted(samples.items(), key=lambda item: -item[1]["rate"]):
        runs = ", ".join(f"{r:,.0f}" for r in sample.get("rates", []))
        tasks = sample.get("tasks", params.get("tasks", 0))
        lines.append(
            f"| {name} | {sample['database']} | {sample['rate']:,.0f} | {runs} | "
            f"{tasks:,} | {sample['duplicates']:,} | {sample['lost']:,} |"
        )
    lines.append("")
    for note in scenario.get("notes", []):
        lines.append(f"- {note}")
    if scenario.get("notes"):
        lines.append("")
    top = sorted(samples.items(), key=lambda item: -item[1]["rate"])
    labels = [
        f"{s['library'].replace(' Queue', '')} {s['database']} {s['processes']}×{s['concurrency']}"
        for _, s in top
    ]
    lines += _chart("End to end (tasks/s)", labels, [s["rate"] for _, s in top], "tasks/s")
    return lines


def render(results: dict[str, Any]) -> str:
    """The Markdown fragment for a results document."""
    m = results["machine"]
    s = results["settings"]
    lines = [
        f"<!-- generated by benchmarks/report.py from the {results['mode']} run of {m['timestamp']} -->",
        "",
        f"Measured {m['timestamp']} on {m['cpu_model']} ({m['cpu_count']} cores), {m['os']}, "
        f"Python {m['python']}, SQLite {m['sqlite']}, prismq-queue {m['prismq_queue']}"
        + (f" (commit {m['git_commit']})" if m.get("git_commit") else "")
        + f". Load average {m.get('load_average_at_start')} at start, {m.get('load_average_at_end')} at end; "
        f"every comparison alternates the two sides in the same run and reports medians of "
        f"{s['repeat']} repetitions. PRAGMAs on both sides: "
        + ", ".join(f"`{k}={v}`" for k, v in s["pragmas"].items())
        + ".",
        "",
    ]
    if results["mode"] != "full":
        lines += ["> **Smoke run**: tiny sizes; timings are not meaningful.", ""]
    all_rows = [row for sc in results["scenarios"].values() for row in sc["rows"] if row.get("target")]
    if all_rows:
        met = sum(1 for row in all_rows if row["met"])
        lines += [f"**Targets met: {met} of {len(all_rows)}.**", ""]
    for name, scenario in results["scenarios"].items():
        lines += [f"### {scenario['title']}", ""]
        lines += _rows_table(scenario["rows"])
        lines.append("")
        if name == "flow":
            lines += [f"- {note}" for note in scenario.get("notes", [])] + [""]
        if name == "backlog":
            lines += _backlog_table(scenario)
            lines.append("")
        if name == "writes":
            lines += [
                "Every page a transaction changes is written to the WAL at commit and copied back at "
                "the next checkpoint (which syncs to disk), so with one task per transaction the rate "
                "follows pages per task: each index a row enters or leaves costs one more page.",
                "",
            ]
        if name in ("enqueue", "drain"):
            lines += _cpu_table(scenario["rows"])
            lines.append("")
        if name == "drain":
            lines += _drain_chart(scenario)
        if name == "peers":
            lines += _peers_chart(scenario)
        if name == "endtoend":
            lines += _endtoend_table(scenario)
        guarantees = scenario.get("guarantees", {})
        if isinstance(guarantees, dict) and guarantees:
            lines += ["| Library | What happens to a task whose worker dies |", "| --- | --- |"]
            lines += [f"| {name_} | {text} |" for name_, text in guarantees.items()]
            lines.append("")
    checks = _checks(results)
    if checks:
        lines += ["### Exactly-once checks", "", *checks, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Read a results file and write its Markdown fragment."""
    parser = argparse.ArgumentParser(description="Render benchmark results JSON as Markdown.")
    parser.add_argument("results", nargs="?", type=Path, default=DEFAULT_IN, help="results JSON")
    parser.add_argument(
        "--out", default=None, help="Markdown file (default: beside the JSON; '-' for stdout)"
    )
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text(encoding="utf-8"))
    text = render(results)
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out) if args.out else args.results.with_suffix(".md")
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
