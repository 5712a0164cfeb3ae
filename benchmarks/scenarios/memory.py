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
    """Child process: drain ``n`` tasks one at a time; report peak RSS and live Python heap.

    The live heap (``tracemalloc``'s current size) is read at the same points as the peak
    RSS: unlike the RSS, which also counts SQLite's page cache and memory-mapped database
    pages as they are first touched, it grows only if Python objects pile up.
    """
    import tracemalloc

    tracemalloc.start()
    use_tracemalloc = peak_rss_bytes() is None

    def peak() -> int:
        if use_tracemalloc:
            return tracemalloc.get_traced_memory()[1]
        value = peak_rss_bytes()
        assert value is not None
        return value

    marks: dict[str, int] = {}
    heap: dict[str, int] = {}

    def mark(name: str) -> None:
        marks[name] = peak()
        heap[name] = tracemalloc.get_traced_memory()[0]

    done = 0
    if side == "prismq":
        from prismq.queue import QueueDatabase, QueueWorker

        db = QueueDatabase(db_path, pragmas=pragmas)
        worker = QueueWorker(db, worker_id="bench-memory")
        mark("ready")
        while True:
            task = worker.claim_next_task()
            if task is None:
                break
            worker.complete_task(task, result={"ok": True})
            done += 1
            if done == n // 4:
                mark("quarter")
        mark("end")
        worker.close()
        db.close()
    else:
        from raw_queue import RawQueue

        raw = RawQueue(db_path, pragmas)
        raw.conn.execute("SELECT count(*) FROM tasks").fetchone()
        mark("ready")
        while True:
            claimed = raw.claim("raw-memory", 1)
            if not claimed:
                break
            raw.complete([claimed[0][0]], "raw-memory")
            done += 1
            if done == n // 4:
                mark("quarter")
        mark("end")
        raw.close()
    method = "tracemalloc" if use_tracemalloc else peak_rss_method()
    results.put({"marks": marks, "heap": heap, "done": done, "method": method})


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
    mib, kib = 1024 * 1024, 1024
    p, r = out["prismq"]["marks"], out["raw"]["marks"]
    ph, rh = out["prismq"]["heap"], out["raw"]["heap"]
    grow = (p["end"] - p.get("quarter", p["end"])) / mib
    base_grow = (r["end"] - r.get("quarter", r["end"])) / mib
    heap_grow = (ph["end"] - ph.get("quarter", ph["end"])) / kib
    base_heap_grow = (rh["end"] - rh.get("quarter", rh["end"])) / kib
    rows = [
        target_row(
            f"peak memory of a worker draining {n:,} tasks ({out['prismq']['method']})",
            unit="MiB",
            prismq=p["end"] / mib,
            baseline=r["end"] / mib,
            baseline_name="raw queue worker",
            value=grow,
            value_text=(
                f"peak {grow:+.1f} MiB after the first quarter (raw {base_grow:+.1f}); "
                f"live Python heap {heap_grow:+.0f} KiB (raw {base_heap_grow:+.0f})"
            ),
            growth_after_first_quarter_mib=grow,
            baseline_growth_after_first_quarter_mib=base_grow,
            heap_growth_after_first_quarter_kib=heap_grow,
            baseline_heap_growth_after_first_quarter_kib=base_heap_grow,
            at_start_mib=p["ready"] / mib,
            baseline_at_start_mib=r["ready"] / mib,
        )
    ]
    return {"title": TITLE, "rows": rows, "checks": checks, "samples": out, "params": {"tasks": n}}
