"""Flow limits across real processes: 4 workers per backend never exceed a limit.

Each child (``flow_child.py``) is a separate interpreter with its own database handle.
Handlers record when they start and end; a handler runs inside its lease, so the most
handlers overlapping at any instant is at most the most tasks leased at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from prismq.queue import QueueClient, QueueDatabase, TaskStatus

CHILD = Path(__file__).with_name("flow_child.py")
PROCESSES = 4


def most_overlapping(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at equal times)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


def most_in_window(times: list[float], period: float) -> int:
    """The most times falling in any window (t - period, t]."""
    times = sorted(times)
    peak = first = 0
    for last, t in enumerate(times):
        while times[first] <= t - period:
            first += 1
        peak = max(peak, last - first + 1)
    return peak


@pytest.fixture
def run_children(
    backend_name: str, db_path: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    if backend_name == "postgresql":
        url, schema = request.getfixturevalue("postgres_schema")
        target = [url, schema]
    else:
        target = [str(db_path), "-"]
    procs: list[subprocess.Popen[str]] = []

    def run() -> list[dict[str, Any]]:
        go = tmp_path / "go"
        outs = [tmp_path / f"out{n}.jsonl" for n in range(PROCESSES)]
        for n, out in enumerate(outs):
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(CHILD), *target, str(out), str(go), f"w{n}"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                pytest.fail(f"child failed: {proc.stderr.read() if proc.stderr else ''}")
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
        return [json.loads(line) for out in outs for line in out.read_text().splitlines()]

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def enqueue_mix(client: QueueClient, count: int) -> list[int]:
    keys = ["hot", "cold", None]
    ids = []
    for n in range(count):
        key = keys[n % 3]
        task_type = "limited" if n % 4 else "free"
        ids.append(client.enqueue(task_type, {"key": key}, concurrency_key=key))
    return ids


def test_concurrency_limits_hold_across_processes(db: QueueDatabase, run_children) -> None:
    client = QueueClient(db)
    client.set_concurrency_limit(3, task_type="limited")
    client.set_concurrency_limit(1, key="hot")
    ids = enqueue_mix(client, 240)
    records = run_children()

    # Nothing lost, nothing run twice.
    assert Counter(r["id"] for r in records) == Counter(ids)
    assert client.count_by_status()[TaskStatus.COMPLETED.value] == len(ids)
    limited = [(r["start"], r["end"]) for r in records if r["type"] == "limited"]
    hot = [(r["start"], r["end"]) for r in records if r["key"] == "hot"]
    everything = [(r["start"], r["end"]) for r in records]
    assert most_overlapping(limited) <= 3
    assert most_overlapping(hot) <= 1
    # The limits bound, and the processes still ran side by side.
    assert most_overlapping(everything) >= 2
    assert len({r["id"] for r in records if r["key"] == "hot"}) == 80


def test_rate_limit_holds_across_processes(db: QueueDatabase, run_children) -> None:
    client = QueueClient(db)
    client.set_rate_limit(5, 0.5, key="api")
    ids = [client.enqueue("call", {"key": "api"}, concurrency_key="api") for _ in range(30)]
    records = run_children()

    assert Counter(r["id"] for r in records) == Counter(ids)
    claimed = [r["claimed"] for r in records]
    assert most_in_window(claimed, 0.5) <= 5
    # 30 starts at 5 per half second take at least 2.5 s from first to last.
    assert max(claimed) - min(claimed) >= 2.5


UNIQUE_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
from flow_child import open_db
from prismq.queue import QueueClient, Unique

target, schema, go = sys.argv[1:4]
with open_db(target, schema) as db:
    client = QueueClient(db)
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.002)
    ids = [client.enqueue("sync", {{"n": n}}, unique=Unique()) for n in range(40)]
    print(" ".join(map(str, ids)), flush=True)
"""


def test_unique_enqueues_race_to_one_task_per_key(
    db: QueueDatabase, backend_name: str, db_path: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # On PostgreSQL the fixture is the schema `db` was opened on (one per test).
    pg = backend_name == "postgresql"
    target = list(request.getfixturevalue("postgres_schema")) if pg else [str(db_path), "-"]
    go = tmp_path / "go-unique"
    code = UNIQUE_CHILD.format(here=str(CHILD.parent))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *target, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        go.touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append([int(x) for x in out.split()])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    # Every process got the same id for each payload, and only 40 tasks exist.
    assert all(ids == results[0] for ids in results)
    assert len(set(results[0])) == 40
    assert QueueClient(db).count_by_status()["queued"] == 40
