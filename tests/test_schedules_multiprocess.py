"""Exactly one task per tick with four worker processes on each backend.

Four real processes (``schedule_child.py``) run the worker runtime on one database, each
with its scheduler loop, on a compressed clock (ten database seconds per real second)
for about 25 real seconds: two schedules, one ticking every second and one every seven
seconds, pass about 280 ticks. Each tick must have exactly one task (counted by task type
and ``run_after``, not only by key), no tick may be missing from the schedule's first tick
to its last, and more than one process must have enqueued ticks (so they really raced).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from prismq.queue import QueueClient, QueueDatabase, ScheduleDefinition

CHILD = Path(__file__).with_name("schedule_child.py")
PROCESSES = 4
SPEED = 10.0
RUN_SECONDS = 25.0
BASE = 1_800_000_000.0
SCHEDULES = {"every_second": "* * * * * *", "every_7s": "*/7 * * * * *"}


def run_children(target: str, tmp_path: Path) -> list[dict[str, object]]:
    stop = tmp_path / "stop"
    start = time.time()
    procs = []
    try:
        for n in range(PROCESSES):
            out = tmp_path / f"child-{n}.json"
            args = [target, f"sched-{n}", BASE, start, SPEED, stop, out]
            procs.append(
                (subprocess.Popen([sys.executable, str(CHILD), *map(str, args)], stderr=subprocess.PIPE), out)
            )
        time.sleep(RUN_SECONDS)
        stop.touch()
        reports = []
        for proc, out in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
            reports.append(json.loads(out.read_text(encoding="utf-8")))
        return reports
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def check_ticks(db: QueueDatabase, reports: list[dict[str, object]]) -> int:
    client = QueueClient(db)
    tasks = client.list(limit=10_000, newest_first=False)
    per_tick = Counter((t.task_type, t.run_after.timestamp()) for t in tasks)
    duplicates = {tick: n for tick, n in per_tick.items() if n > 1}
    assert duplicates == {}
    total = 0
    for stored in client.schedules.list():
        definition: ScheduleDefinition = stored.definition
        got = sorted(tick for (kind, tick) in per_tick if kind == definition.task_type)
        expected = []
        tick = definition.next_tick(stored.created_at.timestamp())
        while stored.last_run is not None and tick <= stored.last_run.timestamp():
            expected.append(tick)
            tick = definition.next_tick(tick)
        assert got == expected, f"{definition.name}: missing {sorted(set(expected) - set(got))[:10]}"
        total += len(got)
    assert {s.name for s in client.schedules.list()} == set(SCHEDULES)
    fired = [int(r["fired"]) for r in reports]  # type: ignore[call-overload]
    assert sum(fired) == total  # every task was enqueued by one of the four scheduler loops
    assert sum(1 for n in fired if n > 0) >= 2, f"only one process enqueued ticks: {fired}"
    assert total >= 150  # about 280 at full speed; a loaded machine still passes many
    print(f"{db.backend_name}: {total} ticks, 0 duplicates, 0 missing; enqueued per process: {fired}")
    return total


def test_four_sqlite_processes_enqueue_each_tick_once(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with QueueDatabase(path) as db:
        db.initialize_schema()
    reports = run_children(str(path), tmp_path)
    with QueueDatabase(path) as db:
        check_ticks(db, reports)


@pytest.mark.postgres
def test_four_postgres_processes_enqueue_each_tick_once(
    tmp_path: Path, postgres_schema: tuple[str, str]
) -> None:
    url, schema = postgres_schema
    target = f"{url}?schema={schema}"
    with QueueDatabase(target) as db:
        db.initialize_schema()
    reports = run_children(target, tmp_path)
    with QueueDatabase(target) as db:
        check_ticks(db, reports)
