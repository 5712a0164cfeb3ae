"""Draining a queue with worker processes (``spawn``), PrismQ Queue next to the raw queue.

Each worker process opens its own connection, reports that it is ready, waits for the
start signal, then claims and completes no-op tasks until a claim comes back empty. The
clock runs from the start signal to the last worker's finish, so process start-up and
imports are not timed. Every worker reports the ids it completed; the parent checks that
each enqueued id was completed exactly once (no duplicates, no losses) on both sides.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import time
import traceback
from pathlib import Path
from typing import Any

from common import Settings, exactly_once, median, payload, ratio, scratch_dir, target_row

NAME = "drain"
TITLE = "Draining with worker processes"

FOLDED = "prismq-complete-and-claim"
"""The side that drains with ``complete_and_claim``: each completion claims the next task."""
SINGLE_TARGET = 0.85
SINGLE_TARGET_PROCESSES = 4
BATCH_TARGET = 0.60
WORKER_TIMEOUT = 600.0


def _prismq_loop(
    db_path: str, pragmas: dict[str, Any], index: int, batch: int, ready: Any, start: Any
) -> tuple[list[int], float, float]:
    from prismq.queue import QueueDatabase, QueueWorker

    done: list[int] = []
    with QueueDatabase(db_path, pragmas=pragmas) as db:
        worker = QueueWorker(db, worker_id=f"bench-{index}")
        ready.put(("ready", index, None))
        start.wait()
        cpu = time.process_time()
        if batch == 0:  # complete_and_claim: one transaction per task
            task = worker.claim_next_task()
            while task is not None:
                done.append(task.id)
                task = worker.complete_and_claim(task)
        elif batch == 1:
            while True:
                task = worker.claim_next_task()
                if task is None:
                    break
                worker.complete_task(task)
                done.append(task.id)
        else:
            while True:
                tasks = worker.claim_batch(batch)
                if not tasks:
                    break
                done.extend(worker.complete_many(tasks))
        finished = time.time()
        cpu = time.process_time() - cpu
        worker.close()
    return done, finished, cpu


def _raw_loop(
    db_path: str, pragmas: dict[str, Any], index: int, batch: int, ready: Any, start: Any
) -> tuple[list[int], float, float]:
    from raw_queue import RawQueue

    done: list[int] = []
    raw = RawQueue(db_path, pragmas)
    name = f"raw-{index}"
    raw.conn.execute("SELECT count(*) FROM tasks").fetchone()
    ready.put(("ready", index, None))
    start.wait()
    cpu = time.process_time()
    try:
        while True:
            claimed = raw.claim(name, batch)
            if not claimed:
                break
            ids = [task_id for task_id, _payload in claimed]
            if raw.complete(ids, name) != len(ids):
                raise RuntimeError(f"raw worker {name} lost a lease it held")
            done.extend(ids)
        finished = time.time()
        cpu = time.process_time() - cpu
    finally:
        raw.close()
    return done, finished, cpu


def worker_main(
    side: str, db_path: str, pragmas: dict[str, Any], index: int, batch: int, results: Any, start: Any
) -> None:
    """Entry point of one worker process: drain, then report ``(finish_time, ids)``."""
    loop = _raw_loop if side == "raw" else _prismq_loop
    if side == FOLDED:
        batch = 0
    try:
        done, finished, cpu = loop(db_path, pragmas, index, batch, results, start)
        results.put(("done", index, (finished, done, None, cpu)))
    except BaseException:
        results.put(("done", index, (time.time(), [], traceback.format_exc(), 0.0)))


def _fill(side: str, db_path: Path, n: int, settings: Settings) -> list[int]:
    """Enqueue ``n`` no-op tasks (untimed); return their ids."""
    if side != "raw":
        from prismq.queue import QueueClient, QueueDatabase, TaskSpec

        ids: list[int] = []
        with QueueDatabase(db_path, pragmas=settings.pragmas) as db:
            db.initialize_schema()
            client = QueueClient(db)
            for offset in range(0, n, 10_000):
                specs = [TaskSpec("noop", payload(i)) for i in range(offset, min(n, offset + 10_000))]
                ids.extend(client.enqueue_many(specs))
        return ids
    from raw_queue import RawQueue

    raw = RawQueue(db_path, settings.pragmas)
    try:
        raw.create_schema()
        for offset in range(0, n, 10_000):
            raw.enqueue_many("noop", [payload(i) for i in range(offset, min(n, offset + 10_000))])
        return raw.all_ids()
    finally:
        raw.close()


def _leftover(side: str, db_path: Path, settings: Settings) -> dict[str, int]:
    """Task count per status after the drain (everything should be completed)."""
    if side != "raw":
        from prismq.queue import QueueClient, QueueDatabase

        with QueueDatabase(db_path, pragmas=settings.pragmas) as db:
            return {k: v for k, v in QueueClient(db).count_by_status().items() if v}
    from raw_queue import RawQueue

    raw = RawQueue(db_path, settings.pragmas)
    try:
        return raw.count_by_status()
    finally:
        raw.close()


def drain_once(side: str, processes: int, n: int, batch: int, settings: Settings) -> dict[str, Any]:
    """Fill a fresh queue with ``n`` tasks and drain it with ``processes`` spawned workers.

    Returns:
        ``rate`` (tasks/s), ``seconds``, the exactly-once ``check``, per-worker counts and
        any worker errors.
    """
    ctx = mp.get_context("spawn")
    with scratch_dir() as folder:
        db_path = folder / f"{side}.db"
        expected = _fill(side, db_path, n, settings)
        results = ctx.Queue()
        start = ctx.Event()
        procs = [
            ctx.Process(
                target=worker_main,
                args=(side, str(db_path), settings.pragmas, i, batch, results, start),
                daemon=True,
            )
            for i in range(processes)
        ]
        for proc in procs:
            proc.start()
        finished: dict[int, tuple[float, list[int], str | None, float]] = {}
        ready = 0
        t0 = 0.0
        deadline = time.monotonic() + WORKER_TIMEOUT
        try:
            while len(finished) < processes:
                try:
                    kind, index, data = results.get(timeout=max(deadline - time.monotonic(), 0.1))
                except queue_module.Empty:
                    raise RuntimeError(
                        f"{side} workers did not finish within {WORKER_TIMEOUT:.0f} s"
                    ) from None
                if kind == "ready":
                    ready += 1
                    if ready == processes:
                        t0 = time.time()
                        start.set()
                else:
                    finished[index] = data
                    if not start.is_set():  # a worker died before the start
                        start.set()
        finally:
            for proc in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.terminate()
                    proc.join()
        end = max(item[0] for item in finished.values())
        seconds = max(end - t0, 1e-9)
        completed = [tid for item in finished.values() for tid in item[1]]
        errors = [item[2] for item in finished.values() if item[2]]
        check = exactly_once(expected, completed)
        leftover = _leftover(side, db_path, settings)
        check["not_completed_in_db"] = sum(v for k, v in leftover.items() if k != "completed")
        check["worker_errors"] = len(errors)
        check["ok"] = check["ok"] and not errors and check["not_completed_in_db"] == 0
        return {
            "rate": n / seconds,
            "seconds": seconds,
            "cpu_us_per_task": sum(item[3] for item in finished.values()) / n * 1e6,
            "check": check,
            "per_worker": [len(finished[i][1]) for i in sorted(finished)],
            "errors": errors,
        }


def _compare(
    processes: tuple[int, ...],
    n: int,
    batch: int,
    settings: Settings,
    sides: tuple[str, ...] = ("prismq", "raw"),
) -> tuple[dict[int, dict[str, list[dict[str, Any]]]], list[dict[str, Any]]]:
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {}
    checks: list[dict[str, Any]] = []
    for count in processes:
        runs[count] = {side: [] for side in sides}
        for rep in range(settings.repeat):
            order = list(sides) if rep % 2 == 0 else list(reversed(sides))
            for side in order:
                outcome = drain_once(side, count, n, batch, settings)
                runs[count][side].append(outcome)
                checks.append(
                    {
                        "name": f"{side}, {count} process(es), batch {batch}, run {rep + 1}",
                        **outcome["check"],
                        "errors": outcome["errors"][:2],
                    }
                )
    return runs, checks


def _cpu(sides: dict[str, list[dict[str, Any]]], side: str = "prismq") -> dict[str, float]:
    """Median CPU time per task (all worker processes together), PrismQ side and raw."""
    return {
        "cpu_us_per_task": median([x["cpu_us_per_task"] for x in sides[side]]),
        "baseline_cpu_us_per_task": median([x["cpu_us_per_task"] for x in sides["raw"]]),
    }


def run(settings: Settings) -> dict[str, Any]:
    """One-at-a-time and batched drains, PrismQ Queue vs the raw queue."""
    rows: list[dict[str, Any]] = []
    samples: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []

    single, single_checks = _compare(
        settings.drain_processes, settings.drain_tasks, 1, settings, ("prismq", FOLDED, "raw")
    )
    checks += single_checks
    for side, label in (
        ("prismq", "claim_next_task + complete_task"),
        (FOLDED, "complete_and_claim loop (engine only, not the worker)"),
    ):
        for count, sides in single.items():
            p = median([r["rate"] for r in sides[side]])
            r = median([r["rate"] for r in sides["raw"]])
            has_target = count == SINGLE_TARGET_PROCESSES
            rows.append(
                target_row(
                    f"{label}, {count} process{'es' if count > 1 else ''}",
                    unit="tasks/s",
                    prismq=p,
                    baseline=r,
                    baseline_name="raw: claim and complete, one transaction each",
                    value=ratio(p, r),
                    target=f"≥ {SINGLE_TARGET:.0%} of raw" if has_target else None,
                    met=(ratio(p, r) >= SINGLE_TARGET) if has_target else None,
                    tasks=settings.drain_tasks,
                    **_cpu(sides, side),
                )
            )
    for count, sides in single.items():
        samples[f"single_{count}"] = {side: [x["rate"] for x in v] for side, v in sides.items()}

    size = settings.batch_size
    batched, batch_checks = _compare(settings.batch_processes, settings.batch_drain_tasks, size, settings)
    checks += batch_checks
    for count, sides in batched.items():
        p = median([r["rate"] for r in sides["prismq"]])
        r = median([r["rate"] for r in sides["raw"]])
        rows.append(
            target_row(
                f"claim_batch({size}) + complete_many, {count} process{'es' if count > 1 else ''}",
                unit="tasks/s",
                prismq=p,
                baseline=r,
                baseline_name=f"raw: {size} claims, then {size} completions, per transaction",
                value=ratio(p, r),
                target=f"≥ {BATCH_TARGET:.0%} of raw",
                met=ratio(p, r) >= BATCH_TARGET,
                tasks=settings.batch_drain_tasks,
                **_cpu(sides),
            )
        )
        samples[f"batch_{count}"] = {side: [x["rate"] for x in v] for side, v in batched[count].items()}

    return {
        "title": TITLE,
        "rows": rows,
        "checks": checks,
        "samples": samples,
        "params": {
            "drain_tasks": settings.drain_tasks,
            "batch_drain_tasks": settings.batch_drain_tasks,
            "batch_size": size,
            "repeat": settings.repeat,
            "start_method": "spawn",
        },
    }
