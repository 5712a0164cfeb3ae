"""Idle cost and wake-up latency of a worker, per wake-up mode.

A worker process runs ``QueueWorker.run`` with a no-op handler. First it idles on an empty
queue while it measures its own CPU time (all threads, ``time.process_time``) over a wall
interval; then the parent enqueues tasks one at a time with random gaps of 20-60 ms, so
the queue is empty before each one, and every handler records how long its task waited
between the enqueue and the handler starting. Modes: ``poll`` (portable: a ``stat`` of the
``-wal`` file every 8 ms for a second after the worker ran a task, every 30 ms otherwise)
and ``inotify`` (Linux: the kernel reports writes to the database folder).

Targets: idle worker below 1% of a core; enqueue-to-start p50 below 10 ms, p99 below 50 ms.
The poll mode looks less often once it has run nothing for a second, so a few tasks are
also enqueued after gaps of more than a second; their wait is reported without a target.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import statistics
import sys
import threading
import time
from typing import Any

from common import Settings, scratch_dir, target_row

NAME = "wakeup"
TITLE = "Idle worker CPU and enqueue-to-start latency"


def _handler(ctx: Any) -> dict[str, float]:
    return {"waited": time.time() - float(ctx.payload["t"])}


def _worker(db_path: str, mode: str, idle_seconds: float, stop: Any, cpu_out: Any) -> None:
    """Child: run a worker; a side thread reports the worker's CPU share while idle."""
    from prismq.queue import QueueDatabase, QueueWorker
    from prismq.queue.runtime import HandlerRegistry

    registry = HandlerRegistry()
    registry.register("wake", _handler)
    db = QueueDatabase(db_path)

    def measure() -> None:
        time.sleep(0.5)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(idle_seconds)
        cpu_out.put((time.process_time() - cpu0) / (time.perf_counter() - wall0))

    threading.Thread(target=measure, daemon=True).start()
    worker = QueueWorker(db, worker_id=f"wake-{mode}")
    worker.run(registry, wake_mode=mode, stop_flag=stop, idle_timeout=1.0)
    db.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _measure(mode: str, idle_seconds: float, samples: int, lull_samples: int) -> dict[str, Any]:
    from prismq.queue import QueueClient, QueueDatabase

    ctx = mp.get_context("spawn")
    with scratch_dir() as folder:
        path = folder / "wake.db"
        db = QueueDatabase(path)
        db.initialize_schema()
        client = QueueClient(db)
        stop, cpu_out = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=_worker, args=(str(path), mode, idle_seconds, stop, cpu_out))
        proc.start()
        try:
            idle_share = cpu_out.get(timeout=idle_seconds + 60)
            rng = random.Random(11)
            lull_ids = []
            for _ in range(lull_samples):  # each after more than a second without work
                time.sleep(rng.uniform(1.2, 1.6))
                lull_ids.append(client.enqueue("wake", {"t": time.time()}))
            ids = []
            for _ in range(samples):
                time.sleep(rng.uniform(0.02, 0.06))
                ids.append(client.enqueue("wake", {"t": time.time()}))
            total = lull_samples + samples
            deadline = time.monotonic() + 60
            while client.count_by_status()["completed"] < total and time.monotonic() < deadline:
                time.sleep(0.05)
            waited = [client.get(i).result["waited"] for i in ids if client.get(i).result is not None]
            after_lull = [
                client.get(i).result["waited"] for i in lull_ids if client.get(i).result is not None
            ]
            completed = client.count_by_status()["completed"]
        finally:
            stop.set()
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        db.close()
    return {
        "idle_cpu_share": idle_share,
        "p50_ms": 1000 * statistics.median(waited) if waited else float("nan"),
        "p99_ms": 1000 * _percentile(waited, 0.99) if waited else float("nan"),
        "lull_p50_ms": 1000 * statistics.median(after_lull) if after_lull else float("nan"),
        "lull_max_ms": 1000 * max(after_lull) if after_lull else float("nan"),
        "completed": completed,
        "samples": samples + lull_samples,
    }


def run(settings: Settings) -> dict[str, Any]:
    """Measure each wake-up mode available on this platform."""
    idle_seconds, samples, lull_samples = (1.0, 20, 2) if settings.smoke else (10.0, 200, 12)
    modes = ["poll"] + (["inotify"] if sys.platform.startswith("linux") else [])
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    for mode in modes:
        result = _measure(mode, idle_seconds, samples, lull_samples)
        raw[mode] = result
        checks.append(
            {
                "name": f"{mode}: every wake-up task completed once",
                "ok": result["completed"] == samples + lull_samples,
            }
        )
        rows.append(
            target_row(
                f"idle worker CPU ({mode})",
                unit="% of a core",
                prismq=100 * result["idle_cpu_share"],
                value=100 * result["idle_cpu_share"],
                target="< 1% of a core",
                met=result["idle_cpu_share"] < 0.01,
            )
        )
        rows.append(
            target_row(
                f"enqueue-to-start p50 ({mode})",
                unit="ms",
                prismq=result["p50_ms"],
                value=result["p50_ms"],
                target="< 10 ms",
                met=result["p50_ms"] < 10,
            )
        )
        rows.append(
            target_row(
                f"enqueue-to-start p99 ({mode})",
                unit="ms",
                prismq=result["p99_ms"],
                value=result["p99_ms"],
                target="< 50 ms",
                met=result["p99_ms"] < 50,
            )
        )
        for stat, key in (("p50", "lull_p50_ms"), ("max", "lull_max_ms")):
            rows.append(
                target_row(
                    f"enqueue-to-start after >1 s without work, {stat} ({mode}, {lull_samples} tasks)",
                    unit="ms",
                    prismq=result[key],
                )
            )
    return {
        "title": TITLE,
        "rows": rows,
        "checks": checks,
        "samples": raw,
        "params": {"idle_seconds": idle_seconds, "samples": samples, "lull_samples": lull_samples},
    }
