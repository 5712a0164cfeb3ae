"""PrismQ Queue next to the SQLite queues Python developers already use.

Every library gets the same work in the same run: enqueue N no-op tasks one call at a
time, then drain them with 1, 2 and 4 worker **processes** (spawn), each execution
recording its task id. Afterwards the ids are counted: a duplicate is a task that ran
twice, a loss is a task that never ran. Some peers are not made for several processes
on one file; their duplicates and losses are results, not benchmark errors.

Libraries (each skipped with a note when it is not installed; ``nox -s bench`` installs
them): PrismQ Queue (a ``complete_and_claim`` engine loop: each completion claims the next
task in the same transaction; the worker command itself is timed in ``endtoend``), the minimal raw sqlite3
queue, huey (``SqliteHuey`` run by its own consumer with process workers and default
settings), persist-queue (``SQLiteAckQueue``: ``get`` + ``ack``) and litequeue
(``LiteQueue``: ``pop`` + ``done``).

What each guarantees when a worker dies mid-task is in the report: a queue that deletes
a task when it hands it out (huey) loses that task with the worker; acknowledging queues
keep it, and only PrismQ Queue (leases) hands it to another worker without an operator.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import Settings, scratch_dir, target_row

NAME = "peers"
TITLE = "Peer queues: enqueue and multi-process drain, exactly-once checked"

GUARANTEES = {
    "prismq": "lease + fencing token: a crashed worker's task runs again after its lease",
    "raw": "lease column only (the practical speed limit, no retries or fencing)",
    "huey": "task removed from the queue when a worker takes it: lost if that worker dies",
    "persist-queue": "ack queue: an unacknowledged task stays until resumed (auto_resume on restart)",
    "litequeue": "message locked when popped; a crashed worker's message stays locked until retried by hand",
}


def _available(name: str) -> bool:
    module = {"huey": "huey", "persist-queue": "persistqueue", "litequeue": "litequeue"}.get(name)
    return module is None or importlib.util.find_spec(module) is not None


# -- per-library adapters (run inside spawned children) ---------------------------------
def _huey(path: str) -> tuple[Any, Any]:
    from huey import SqliteHuey

    huey = SqliteHuey(filename=path, results=False)
    out_dir = os.environ.get("PRISMQ_BENCH_OUT", "")

    @huey.task(name="noop")
    def noop(n: int) -> None:
        with open(os.path.join(out_dir, f"huey-{os.getpid()}.ids"), "a", encoding="utf-8") as handle:
            handle.write(f"{n}\n")

    return huey, noop


def _fill(name: str, path: str, n: int) -> float:
    """Enqueue ``n`` tasks one call at a time; return the rate (tasks/s)."""
    started = time.perf_counter()
    if name == "prismq":
        from prismq.queue import QueueClient, QueueDatabase

        db = QueueDatabase(path)
        db.initialize_schema()
        client = QueueClient(db)
        started = time.perf_counter()
        for i in range(n):
            client.enqueue("noop", {"n": i})
        elapsed = time.perf_counter() - started
        db.close()
    elif name == "raw":
        from common import Settings as _S
        from raw_queue import RawQueue

        raw = RawQueue(path, _S().pragmas)
        raw.create_schema()
        started = time.perf_counter()
        for i in range(n):
            raw.enqueue("noop", {"n": i})
        elapsed = time.perf_counter() - started
        raw.close()
    elif name == "huey":
        _, noop = _huey(path)
        started = time.perf_counter()
        for i in range(n):
            noop(i)
        elapsed = time.perf_counter() - started
    elif name == "persist-queue":
        from persistqueue import SQLiteAckQueue

        queue = SQLiteAckQueue(path, multithreading=True, auto_commit=True)
        started = time.perf_counter()
        for i in range(n):
            queue.put({"n": i})
        elapsed = time.perf_counter() - started
    else:
        from litequeue import LiteQueue

        queue = LiteQueue(path)
        started = time.perf_counter()
        for i in range(n):
            queue.put(str(i))
        elapsed = time.perf_counter() - started
        queue.close()
    return n / elapsed


def _drain_child(name: str, path: str, out: str, go: Any) -> None:
    """Child: drain until the queue looks empty, writing each executed id to ``out``."""
    ids: list[int] = []
    if name == "prismq":
        from prismq.queue import QueueDatabase, QueueWorker

        db = QueueDatabase(path)
        worker = QueueWorker(db, worker_id=f"bench-{os.getpid()}")
        go.wait()
        task = worker.claim_next_task()
        while task is not None:
            ids.append(task.payload["n"])
            task = worker.complete_and_claim(task)
        worker.close()
        db.close()
    elif name == "raw":
        from common import Settings as _S
        from raw_queue import RawQueue

        raw = RawQueue(path, _S().pragmas)
        go.wait()
        while claimed := raw.claim(f"raw-{os.getpid()}", 1):
            task_id, payload = claimed[0]
            ids.append(payload["n"])
            raw.complete([task_id], f"raw-{os.getpid()}")
        raw.close()
    elif name == "persist-queue":
        from persistqueue import SQLiteAckQueue
        from persistqueue.exceptions import Empty

        queue = SQLiteAckQueue(path, multithreading=True, auto_commit=True, auto_resume=False)
        go.wait()
        while True:
            try:
                item = queue.get(block=False, raw=True)
            except Empty:
                break
            ids.append(item["data"]["n"])
            queue.ack(id=item["pqid"])
    else:
        from litequeue import LiteQueue

        queue = LiteQueue(path)
        go.wait()
        while (message := queue.pop()) is not None:
            ids.append(int(message.data))
            queue.done(message.message_id)
        queue.close()
    Path(out).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def _huey_consumer(path: str, out_dir: str, workers: int, go: Any) -> None:
    """Child: run huey's own consumer with process workers and its default settings."""
    os.environ["PRISMQ_BENCH_OUT"] = out_dir
    huey, _ = _huey(path)
    consumer = huey.create_consumer(workers=workers, worker_type="process")
    go.wait()
    consumer.run()


def _count_ids(folder: Path) -> Counter[int]:
    counts: Counter[int] = Counter()
    for file in folder.glob("*.ids"):
        counts.update(int(line) for line in file.read_text(encoding="utf-8").split())
    return counts


def _drain(name: str, path: Path, n: int, processes: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out_dir = path.parent / f"ids-{name}-{processes}"
    out_dir.mkdir()
    go = ctx.Event()
    if name == "huey":
        proc = ctx.Process(target=_huey_consumer, args=(str(path), str(out_dir), processes, go))
        proc.start()
        time.sleep(1.0)
        started = time.perf_counter()
        go.set()
        # Wait for every task, or until the consumer makes no progress for 15 s (huey's
        # consumer logs and drops tasks when SQLite reports "database is locked").
        done, last_change = 0, time.perf_counter()
        while done < n and time.perf_counter() - last_change < 15:
            time.sleep(0.05)
            now_done = sum(_count_ids(out_dir).values())
            if now_done != done:
                done, last_change = now_done, time.perf_counter()
        elapsed = (last_change if done < n else time.perf_counter()) - started
        os.kill(proc.pid, signal.SIGTERM) if hasattr(signal, "SIGTERM") else proc.terminate()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    else:
        children = [
            ctx.Process(target=_drain_child, args=(name, str(path), str(out_dir / f"{i}.ids"), go))
            for i in range(processes)
        ]
        for child in children:
            child.start()
        time.sleep(1.0)
        started = time.perf_counter()
        go.set()
        for child in children:
            child.join(timeout=600)
        elapsed = time.perf_counter() - started
    counts = _count_ids(out_dir)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    losses = n - len(set(counts) & set(range(n)))
    return {"rate": n / elapsed, "duplicates": duplicates, "losses": losses, "seconds": elapsed}


def run(settings: Settings) -> dict[str, Any]:
    """Enqueue and drain with every available library."""
    n = 300 if settings.smoke else settings.drain_tasks
    process_counts = (1, 2) if settings.smoke else (1, 2, 4)
    libraries = ["prismq", "raw", "huey", "persist-queue", "litequeue"]
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    samples: dict[str, Any] = {}
    for name in libraries:
        if not _available(name):
            samples[name] = {"skipped": "not installed (nox -s bench installs it)"}
            continue
        samples[name] = {"guarantee": GUARANTEES[name], "drain": {}}
        with scratch_dir() as folder:
            samples[name]["enqueue_rate"] = _fill(name, str(folder / "enqueue.db"), min(n, 5_000))
        for processes in process_counts:
            with scratch_dir() as folder:
                path = folder / "drain.db"
                _fill(name, str(path), n)
                samples[name]["drain"][processes] = _drain(name, path, n, processes)
        if name == "prismq":
            for processes, result in samples[name]["drain"].items():
                checks.append(
                    {
                        "name": f"PrismQ Queue drained {n} tasks exactly once with {processes} process(es)",
                        "ok": result["duplicates"] == 0 and result["losses"] == 0,
                        **result,
                    }
                )
    top = max(process_counts)
    prismq = samples.get("prismq", {})
    for name in libraries:
        sample = samples[name]
        if "skipped" in sample:
            rows.append(target_row(f"{name}: {sample['skipped']}", unit="", prismq=0.0))
            continue
        rows.append(target_row(f"{name}: single enqueue", unit="tasks/s", prismq=sample["enqueue_rate"]))
        for processes, result in sample["drain"].items():
            rows.append(
                target_row(
                    f"{name}: drain with {processes} process(es) "
                    f"(duplicates {result['duplicates']}, losses {result['losses']})",
                    unit="tasks/s",
                    prismq=result["rate"],
                    duplicates=result["duplicates"],
                    losses=result["losses"],
                )
            )
    if "huey" in samples and "skipped" not in samples["huey"] and prismq:
        ratio = prismq["drain"][top]["rate"] / samples["huey"]["drain"][top]["rate"]
        rows.append(
            target_row(
                f"PrismQ Queue drain vs huey defaults, {top} processes",
                unit="tasks/s",
                prismq=prismq["drain"][top]["rate"],
                baseline=samples["huey"]["drain"][top]["rate"],
                baseline_name="huey (SqliteHuey, own consumer, defaults)",
                value=ratio,
                target="≥ 3× huey",
                met=ratio >= 3,
            )
        )
    return {
        "title": TITLE,
        "rows": rows,
        "checks": checks,
        "samples": samples,
        "params": {"tasks": n, "processes": list(process_counts)},
        "guarantees": GUARANTEES,
    }
