"""Peak memory of a worker process draining tasks, PrismQ Queue next to the raw queue.

Each side runs in its own spawned process, so each high-water mark is its own. The peak
resident set (``VmHWM`` on Linux, ``resource.getrusage``'s ``ru_maxrss`` elsewhere) is
read after imports and opening the queue, after a quarter of the tasks, and at the end:
the last two should be equal if memory stays flat while draining. Where neither exists
(Windows), the Python heap peak from ``tracemalloc`` is reported instead.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from common import Settings, peak_rss_bytes, peak_rss_method, scratch_dir, target_row

from scenarios.drain import _fill

NAME = "memory"
TITLE = "Peak memory of a draining worker"


def _measure(side: str, db_path: str, pragmas: dict[str, Any], n: int, results: Any) -> None:
    """Child process: drain ``n`` tasks one at a time and report the memory high-water marks."""
    import tracemalloc

    use_tracemalloc = peak_rss_bytes() is None
    if use_tracemalloc:
        tracemalloc.start()

    def peak() -> int:
        if use_tracemalloc:
            return tracemalloc.get_traced_memory()[1]
        value = peak_rss_bytes()
        assert value is not None
        return value

    marks: dict[str, int] = {}
    done = 0
    if side == "prismq":
        from prismq.queue import QueueDatabase, QueueWorker

        db = QueueDatabase(db_path, pragmas=pragmas)
        worker = QueueWorker(db, worker_id="bench-memory")
        marks["ready"] = peak()
        while True:
            task = worker.claim_next_task()
            if task is None:
                break
            worker.complete_task(task, result={"ok": True})
            done += 1
            if done == n // 4:
                marks["quarter"] = peak()
        worker.close()
        db.close()
    else:
        from raw_queue import RawQueue

        raw = RawQueue(db_path, pragmas)
        raw.conn.execute("SELECT count(*) FROM tasks").fetchone()
        marks["ready"] = peak()
        while True:
            claimed = raw.claim("raw-memory", 1)
            if not claimed:
                break
            raw.complete([claimed[0][0]], "raw-memory")
            done += 1
            if done == n // 4:
                marks["quarter"] = peak()
        raw.close()
    marks["end"] = peak()
    method = "tracemalloc" if use_tracemalloc else peak_rss_method()
    results.put({"marks": marks, "done": done, "method": method})


def run(settings: Settings) -> dict[str, Any]:
    """Measure each side's peak memory in a fresh spawned process."""
    ctx = mp.get_context("spawn")
    n = settings.memory_tasks
    out: dict[str, Any] = {}
    checks = []
    for side in ("prismq", "raw"):
        with scratch_dir() as folder:
            db_path = folder / f"{side}.db"
            _fill(side, db_path, n, settings)
            results = ctx.Queue()
            proc = ctx.Process(target=_measure, args=(side, str(db_path), settings.pragmas, n, results))
            proc.start()
            report = results.get(timeout=600)
            proc.join(timeout=60)
            out[side] = report
            checks.append({"name": f"{side} memory worker drained every task", "ok": report["done"] == n})
    mib = 1024 * 1024
    p, r = out["prismq"]["marks"], out["raw"]["marks"]
    rows = [
        target_row(
            f"peak memory of a worker draining {n:,} tasks ({out['prismq']['method']})",
            unit="MiB",
            prismq=p["end"] / mib,
            baseline=r["end"] / mib,
            baseline_name="raw queue worker",
            value=(p["end"] - p.get("quarter", p["end"])) / mib,
            value_text=(
                f"{(p['end'] - p.get('quarter', p['end'])) / mib:+.1f} MiB after the first quarter "
                f"(raw {(r['end'] - r.get('quarter', r['end'])) / mib:+.1f} MiB)"
            ),
            growth_after_first_quarter_mib=(p["end"] - p.get("quarter", p["end"])) / mib,
            baseline_growth_after_first_quarter_mib=(r["end"] - r.get("quarter", r["end"])) / mib,
            at_start_mib=p["ready"] / mib,
            baseline_at_start_mib=r["ready"] / mib,
        )
    ]
    return {"title": TITLE, "rows": rows, "checks": checks, "samples": out, "params": {"tasks": n}}
