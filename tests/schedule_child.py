"""A worker process for tests/test_schedules_multiprocess.py.

``python schedule_child.py TARGET WORKER_ID BASE START SPEED STOP_FILE OUT_FILE``

Runs the real worker runtime (``QueueWorker.run``) with two periodic schedules in its
registry, on a compressed clock: database time is ``BASE + (time.time() - START) * SPEED``,
so every process reads the same time and many ticks pass in a few seconds. It stops when
STOP_FILE exists and writes how many ticks its own scheduler loop enqueued to OUT_FILE.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from prismq.queue import QueueDatabase, QueueWorker
from prismq.queue.runtime import HandlerRegistry

SCHEDULES = {"every_second": "* * * * * *", "every_7s": "*/7 * * * * *"}


class FileFlag:
    """A stop flag: set once the file exists."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def is_set(self) -> bool:
        return self.path.exists()


class CountTicks(logging.Handler):
    """Counts the scheduler loop's 'schedule NAME: enqueued task ID for TICK' log lines."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("schedule %s: enqueued task"):
            self.count += 1


def main() -> None:
    target, worker_id, base, start, speed, stop_file, out_file = sys.argv[1:]
    origin, began, factor = float(base), float(start), float(speed)
    counter = CountTicks()
    logging.getLogger("prismq.queue").addHandler(counter)
    logging.getLogger("prismq.queue").setLevel(logging.INFO)
    registry = HandlerRegistry()

    def unused(ctx: object) -> None:  # the ticks' tasks stay queued, to be counted
        raise AssertionError("not claimed in this test")

    registry.register("other", unused)
    for name, cron in SCHEDULES.items():
        registry.periodic(cron, task_type=name, misfire="backfill", max_backfill=1000)(unused)
    with QueueDatabase(target, clock=lambda: origin + (time.time() - began) * factor) as db:
        db.initialize_schema()
        worker = QueueWorker(db, worker_id, task_types=["other"])
        worker.run(registry, stop_flag=FileFlag(Path(stop_file)), idle_timeout=0.02)
    Path(out_file).write_text(json.dumps({"worker": worker_id, "fired": counter.count}), encoding="utf-8")


if __name__ == "__main__":
    main()
