"""Claim cost against backlog size, for each scheduling strategy.

One queue file per backlog size is built with ``enqueue_many`` in batches of 10,000
(four task types, priorities drawn from 0..1000 with a fixed seed). All files stay open
together, and the measurement rotates between them in short blocks, so every size sees
the same machine load; after each block the claimed tasks are replaced (untimed), which
keeps every backlog at its size. Each sample is one ``claim_next_task`` and the
``complete_task`` of that task, timed separately.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from common import Settings, median, payload, percentile, ratio, scratch_dir, target_row

from prismq.queue import (
    FIFOStrategy,
    LIFOStrategy,
    PriorityStrategy,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    SchedulingStrategy,
    TaskSpec,
    WeightedRandomStrategy,
)

NAME = "backlog"
TITLE = "Claim cost against backlog size"

TARGET_FACTOR = 1.5
TASK_TYPES = ("email", "report", "resize", "webhook")
BUILD_BATCH = 10_000


def _strategies() -> dict[str, SchedulingStrategy]:
    return {
        "fifo": FIFOStrategy(),
        "lifo": LIFOStrategy(),
        "priority": PriorityStrategy(),
        "weighted_random": WeightedRandomStrategy(
            {"email": 4, "report": 1, "resize": 2, "webhook": 3}, seed=7
        ),
    }


class _Backlog:
    """One queue file holding ``size`` ready tasks, with a client to top it up."""

    def __init__(self, path: Path, size: int, settings: Settings, seed: int) -> None:
        self.size = size
        self.rng = random.Random(seed)
        self.counter = 0
        self.db = QueueDatabase(path, pragmas=settings.pragmas)
        self.db.initialize_schema()
        self.client = QueueClient(self.db)
        started = time.perf_counter()
        for offset in range(0, size, BUILD_BATCH):
            self.add(min(BUILD_BATCH, size - offset))
        self.build_seconds = time.perf_counter() - started

    def add(self, count: int) -> None:
        """Enqueue ``count`` more ready tasks (mixed types and priorities)."""
        rng, base = self.rng, self.counter
        specs = [
            TaskSpec(
                TASK_TYPES[(base + i) % len(TASK_TYPES)], payload(base + i), priority=rng.randint(0, 1000)
            )
            for i in range(count)
        ]
        self.client.enqueue_many(specs)
        self.counter += count

    def close(self) -> None:
        self.db.close()


def _sample_block(worker: QueueWorker, count: int, claims: list[float], totals: list[float]) -> int:
    """Time ``count`` claim + complete pairs; return how many tasks were claimed."""
    clock = time.perf_counter
    got = 0
    for _ in range(count):
        t0 = clock()
        task = worker.claim_next_task()
        t1 = clock()
        if task is None:
            break
        worker.complete_task(task)
        t2 = clock()
        claims.append(t1 - t0)
        totals.append(t2 - t0)
        got += 1
    return got


def run(settings: Settings) -> dict[str, Any]:
    """Median claim (+ complete) cost per strategy and backlog size."""
    sizes = sorted(settings.backlog_sizes)
    rows: list[dict[str, Any]] = []
    table: dict[str, dict[str, dict[str, float]]] = {}
    builds: dict[str, float] = {}
    block = settings.backlog_block
    rounds = max(1, settings.backlog_samples // block)
    with scratch_dir() as folder:
        backlogs = [_Backlog(folder / f"backlog-{size}.db", size, settings, seed=size) for size in sizes]
        builds = {str(b.size): b.build_seconds for b in backlogs}
        try:
            for name, strategy in _strategies().items():
                workers = [QueueWorker(b.db, worker_id=f"bench-{name}", strategy=strategy) for b in backlogs]
                claims: dict[int, list[float]] = {b.size: [] for b in backlogs}
                totals: dict[int, list[float]] = {b.size: [] for b in backlogs}
                for backlog, worker in zip(backlogs, workers, strict=True):  # warm-up, untimed
                    backlog.add(_sample_block(worker, 5, [], []))
                for rnd in range(rounds):
                    order = list(range(len(backlogs)))
                    if rnd % 2:
                        order.reverse()
                    for i in order:
                        backlog = backlogs[i]
                        got = _sample_block(workers[i], block, claims[backlog.size], totals[backlog.size])
                        backlog.add(got)
                for worker in workers:
                    worker.close()
                table[name] = {}
                for size in sizes:
                    table[name][str(size)] = {
                        "claim_median_us": median(claims[size]) * 1e6,
                        "claim_p90_us": percentile(claims[size], 90) * 1e6,
                        "claim_complete_median_us": median(totals[size]) * 1e6,
                        "claim_complete_p90_us": percentile(totals[size], 90) * 1e6,
                        "samples": len(totals[size]),
                    }
                small, large = str(sizes[0]), str(sizes[-1])
                base = table[name][small]["claim_complete_median_us"]
                top = table[name][large]["claim_complete_median_us"]
                factor = ratio(top, base)
                rows.append(
                    target_row(
                        f"{name}: claim + complete at {sizes[-1]:,} vs {sizes[0]:,} ready tasks",
                        unit="µs",
                        prismq=top,
                        baseline=base,
                        baseline_name=f"the same at {sizes[0]:,} ready tasks",
                        value=factor,
                        target=f"≤ {TARGET_FACTOR}× the cost at {sizes[0]:,}",
                        met=factor <= TARGET_FACTOR,
                        claim_only_factor=ratio(
                            table[name][large]["claim_median_us"], table[name][small]["claim_median_us"]
                        ),
                    )
                )
        finally:
            for backlog in backlogs:
                backlog.close()
    return {
        "title": TITLE,
        "rows": rows,
        "checks": [],
        "table": table,
        "params": {
            "sizes": sizes,
            "samples_per_cell": rounds * block,
            "block": block,
            "build_seconds": builds,
            "build_batch": BUILD_BATCH,
        },
    }
