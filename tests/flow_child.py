"""Child process for tests/test_flow_multiprocess.py: a worker process under flow limits.

Run as ``python flow_child.py <target> <schema or -> <out file> <go file> <worker id>``.
It claims in batches until nothing is queued or leased, and writes one JSON line per task:
its id, type, concurrency key, the claim time, and the handler's start and end times.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from prismq.queue import QueueClient, QueueDatabase, QueueWorker


def open_db(target: str, schema: str) -> QueueDatabase:
    if schema == "-":
        return QueueDatabase(target)
    from prismq.queue.backends.postgres import PostgresBackend

    return QueueDatabase(backend=PostgresBackend(target, schema=schema, max_size=2))


def main(target: str, schema: str, out_file: str, go_file: str, worker_id: str) -> None:
    with open_db(target, schema) as db:
        client = QueueClient(db)
        worker = QueueWorker(db, worker_id, lease_duration=120)
        print("ready", flush=True)
        deadline = time.monotonic() + 60
        while not Path(go_file).exists():
            if time.monotonic() > deadline:
                raise SystemExit("the go signal never came")
            time.sleep(0.005)
        with open(out_file, "w", encoding="utf-8") as out:
            while True:
                tasks = worker.claim_batch(2)
                if not tasks:
                    counts = client.count_by_status()
                    if counts["queued"] == 0 and counts["leased"] == 0:
                        break
                    time.sleep(0.002)
                    continue
                for task in tasks:
                    start = time.time()
                    time.sleep(0.004)
                    end = time.time()
                    worker.complete_task(task, None)
                    record = {
                        "id": task.id,
                        "type": task.task_type,
                        "key": task.payload["key"],
                        "claimed": task.started_at.timestamp() if task.started_at else None,
                        "start": start,
                        "end": end,
                    }
                    out.write(json.dumps(record) + "\n")
                    out.flush()


if __name__ == "__main__":
    main(*sys.argv[1:6])
