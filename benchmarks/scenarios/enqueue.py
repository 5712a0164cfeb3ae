"""Enqueue rates: one task per transaction, and ``enqueue_many`` in batches.

The single-task measurement runs three sides in alternating order, each on a fresh file:

- PrismQ Queue's ``QueueClient.enqueue``;
- the raw queue: ``BEGIN IMMEDIATE`` + ``INSERT`` + ``COMMIT`` on its one-index table;
- the same raw loop on PrismQ's own schema (informational), which separates what the
  schema costs (its indexes are written on every insert) from what the library adds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from common import Settings, median, payload, ratio, scratch_dir, target_row
from raw_queue import RawQueue

from prismq.queue import QueueClient, QueueDatabase, RetryPolicy, TaskSpec
from prismq.queue.backends.sqlite.backend import Q

NAME = "enqueue"
TITLE = "Enqueue rate"

SINGLE_TARGET = 0.70
MANY_TARGET = 200_000.0


def _prismq_single(folder: Path, n: int, settings: Settings) -> tuple[float, float]:
    with QueueDatabase(folder / "prismq.db", pragmas=settings.pragmas) as db:
        db.initialize_schema()
        client = QueueClient(db)
        client.enqueue("warmup", payload(-1))
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            client.enqueue("noop", payload(i))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return n / elapsed, cpu / n * 1e6


def _raw_single(folder: Path, n: int, settings: Settings) -> tuple[float, float]:
    raw = RawQueue(folder / "raw.db", settings.pragmas)
    try:
        raw.create_schema()
        raw.enqueue("warmup", payload(-1))
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            raw.enqueue("noop", payload(i))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        raw.close()
    return n / elapsed, cpu / n * 1e6


def _raw_on_prismq_schema(folder: Path, n: int, settings: Settings) -> tuple[float, float]:
    """The raw loop, inserting into a PrismQ Queue file with PrismQ's insert statement."""
    import json

    with QueueDatabase(folder / "schema.db", pragmas=settings.pragmas) as db:
        db.initialize_schema()
    raw = RawQueue(folder / "schema.db", settings.pragmas)
    policy = json.dumps(RetryPolicy().to_dict(), separators=(",", ":"))
    sql = Q["insert_task"]
    conn = raw.conn
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            text = json.dumps(payload(i), separators=(",", ":"))
            conn.execute(sql, ("noop", text, 100, now, 3, policy, None, None, now, now))
            conn.execute("COMMIT")
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        raw.close()
    return n / elapsed, cpu / n * 1e6


def _prismq_many(folder: Path, n: int, batch: int, settings: Settings) -> tuple[float, list[int]]:
    specs = [TaskSpec("noop", payload(i)) for i in range(n)]
    ids: list[int] = []
    with QueueDatabase(folder / "prismq-many.db", pragmas=settings.pragmas) as db:
        db.initialize_schema()
        client = QueueClient(db)
        client.enqueue_many(specs[:10])
        start = time.perf_counter()
        for offset in range(0, n, batch):
            ids.extend(client.enqueue_many(specs[offset : offset + batch]))
        elapsed = time.perf_counter() - start
    return n / elapsed, ids


def _raw_many(folder: Path, n: int, batch: int, settings: Settings) -> float:
    payloads = [payload(i) for i in range(n)]
    raw = RawQueue(folder / "raw-many.db", settings.pragmas)
    try:
        raw.create_schema()
        raw.enqueue_many("noop", payloads[:10])
        start = time.perf_counter()
        for offset in range(0, n, batch):
            raw.enqueue_many("noop", payloads[offset : offset + batch])
        elapsed = time.perf_counter() - start
    finally:
        raw.close()
    return n / elapsed


def run(settings: Settings) -> dict[str, Any]:
    """Measure both enqueue paths against the raw baseline; return the scenario's result."""
    n = settings.enqueue_tasks
    sides = {"prismq": _prismq_single, "raw": _raw_single, "raw_on_prismq_schema": _raw_on_prismq_schema}
    single: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    for rep in range(settings.repeat):
        order = list(sides)
        if rep % 2:
            order.reverse()
        for side in order:
            with scratch_dir() as folder:
                rate, cpu_us = sides[side](folder, n, settings)
            single[side].append(rate)
            cpu[side].append(cpu_us)

    m, batch = settings.enqueue_many_tasks, settings.enqueue_many_batch
    many: dict[str, list[float]] = {"prismq": [], "raw": []}
    ids_ok = True
    for rep in range(settings.repeat):
        with scratch_dir() as folder:
            if rep % 2:
                many["raw"].append(_raw_many(folder, m, batch, settings))
            rate, ids = _prismq_many(folder, m, batch, settings)
            many["prismq"].append(rate)
            ids_ok = ids_ok and len(ids) == m and len(set(ids)) == m
            if not rep % 2:
                many["raw"].append(_raw_many(folder, m, batch, settings))

    p, r, s = (median(single[k]) for k in ("prismq", "raw", "raw_on_prismq_schema"))
    pm, rm = median(many["prismq"]), median(many["raw"])
    rows = [
        target_row(
            "enqueue(), one task per transaction",
            unit="tasks/s",
            prismq=p,
            baseline=r,
            baseline_name="raw sqlite3 INSERT, one transaction each",
            value=ratio(p, r),
            target=f"≥ {SINGLE_TARGET:.0%} of raw",
            met=ratio(p, r) >= SINGLE_TARGET,
            cpu_us_per_task=median(cpu["prismq"]),
            baseline_cpu_us_per_task=median(cpu["raw"]),
        ),
        target_row(
            "enqueue(), vs the raw INSERT on PrismQ's own schema",
            unit="tasks/s",
            prismq=p,
            baseline=s,
            baseline_name="raw sqlite3 INSERT into PrismQ's table (same indexes)",
            value=ratio(p, s),
            cpu_us_per_task=median(cpu["prismq"]),
            baseline_cpu_us_per_task=median(cpu["raw_on_prismq_schema"]),
        ),
        target_row(
            f"enqueue_many(), batches of {batch:,}",
            unit="tasks/s",
            prismq=pm,
            baseline=rm,
            baseline_name=f"raw executemany, batches of {batch:,}",
            value=pm,
            target=f"≥ {MANY_TARGET:,.0f} tasks/s",
            met=pm >= MANY_TARGET,
        ),
    ]
    return {
        "title": TITLE,
        "rows": rows,
        "checks": [
            {
                "name": "enqueue_many returned one distinct id per task",
                "ok": ids_ok,
            }
        ],
        "samples": {"single": single, "single_cpu_us_per_task": cpu, "many": many},
        "params": {"tasks_single": n, "tasks_many": m, "batch": batch, "repeat": settings.repeat},
    }
