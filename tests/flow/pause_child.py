"""A worker process for tests/flow/test_pause.py: ``python pause_child.py TARGET OUT STOP``.

TARGET is a SQLite file, or ``postgresql://...#schema``. The child claims and completes
batches until the STOP file appears, writing ``<task id> <task type>`` per completed task.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prismq.queue import QueueDatabase, QueueWorker


def open_db(target: str) -> QueueDatabase:
    if target.startswith("postgresql://"):
        from prismq.queue.backends.postgres import PostgresBackend

        url, schema = target.split("#")
        return QueueDatabase(backend=PostgresBackend(url, schema=schema, max_size=1))
    return QueueDatabase(target)


def main(target: str, out_file: str, stop_file: str) -> None:
    with open_db(target) as db, open(out_file, "w", encoding="utf-8") as out:
        worker = QueueWorker(db, f"pause-child-{Path(out_file).stem}", lease_duration=120)
        print("ready", flush=True)
        stop = Path(stop_file)
        while not stop.exists():
            tasks = worker.claim_batch(5)
            if not tasks:
                time.sleep(0.005)
                continue
            worker.complete_many(tasks)
            out.write("".join(f"{t.id} {t.task_type}\n" for t in tasks))
            out.flush()
            # Pace the drain (about 1,000 tasks/s for four children) so that the test's
            # pause lands mid-drain however loaded the machine is.
            time.sleep(0.02)


if __name__ == "__main__":
    main(*sys.argv[1:4])
