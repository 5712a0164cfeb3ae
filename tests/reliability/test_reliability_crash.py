"""Crashes: workers and producers killed with SIGKILL lose nothing and complete nothing twice."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from pathlib import Path

import pytest
from reliability_support import (
    POSIX,
    SOAK,
    SOAK_ONLY,
    SPAWN,
    batch_producer,
    chaos_worker,
    kill_all,
    read_lines,
    sized,
)

from prismq.queue import QueueClient, QueueDatabase

pytestmark = pytest.mark.skipif(not POSIX, reason="SIGKILL of a chosen process is POSIX-only")


def run_chaos(tmp_path: Path, total: int, kills: int, workers: int = 4, handler_sleep: float = 0.004) -> None:
    db_path = tmp_path / "chaos.db"
    with QueueDatabase(db_path) as db:
        db.initialize_schema()
        ids = QueueClient(db).enqueue_many(
            {"task_type": "chaos", "payload": {"n": n}, "max_attempts": 100} for n in range(total)
        )
    logs = tmp_path / "logs"
    logs.mkdir()
    generation = 0
    live: dict[int, tuple[object, Path]] = {}
    started: list = []

    def spawn(slot: int) -> None:
        nonlocal generation
        generation += 1
        log = logs / f"w{slot}-g{generation}.log"
        proc = SPAWN.Process(
            target=chaos_worker,
            args=(str(db_path), str(log), f"w{slot}-g{generation}", handler_sleep),
            daemon=True,
        )
        proc.start()
        started.append(proc)
        live[slot] = (proc, log)

    rng = random.Random(20261128)
    killed_logs: list[Path] = []
    interrupted: list[tuple[int, int]] = []  # (task id, attempt) whose handler a kill cut short
    deadline = time.monotonic() + (1800 if SOAK else 150)
    try:
        for slot in range(workers):
            spawn(slot)
        while len(interrupted) < kills:
            assert time.monotonic() < deadline, f"only {len(interrupted)} useful kills before the deadline"
            time.sleep(rng.uniform(0.02, 0.2))
            # Kill a worker in the middle of a handler (its last line is "start").
            victim = None
            for _ in range(200):
                busy = [
                    s
                    for s, (p, log) in live.items()
                    if p.is_alive() and (lines := read_lines(log)) and lines[-1][0] == "start"  # type: ignore[attr-defined]
                ]
                if busy:
                    victim = rng.choice(busy)
                    break
                time.sleep(0.001)
            if victim is None:
                continue
            proc, log = live[victim]
            proc.kill()  # type: ignore[attr-defined]
            proc.join(10)  # type: ignore[attr-defined]
            killed_logs.append(log)
            lines = read_lines(log)
            if lines and lines[-1][0] == "start":
                interrupted.append((int(lines[-1][1]), int(lines[-1][2])))
            spawn(victim)
        for proc, _log in list(live.values()):
            proc.join(max(deadline - time.monotonic(), 1))  # type: ignore[attr-defined]
            assert not proc.is_alive(), "a worker did not finish draining the queue in time"  # type: ignore[attr-defined]
            assert proc.exitcode == 0, f"a worker failed with exit code {proc.exitcode}"  # type: ignore[attr-defined]
    finally:
        kill_all(started)

    with QueueDatabase(db_path) as db:
        assert db.integrity_check() == ["ok"]
        client = QueueClient(db)
        tasks = {}
        offset = 0
        while True:
            page = client.list(limit=10_000, offset=offset, newest_first=False)
            tasks.update((t.id, t) for t in page)
            if len(page) < 10_000:
                break
            offset += len(page)
        counts = client.count_by_status()

    # Nothing lost: every task exists and completed.
    assert set(tasks) == set(ids)
    assert counts["completed"] == total, counts
    assert all(t.status.value == "completed" for t in tasks.values())

    starts: dict[int, list[tuple[int, str]]] = defaultdict(list)
    done: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for log in logs.iterdir():
        for kind, tid, attempt, token in read_lines(log):
            entry = (int(attempt), token)
            if kind == "start":
                starts[int(tid)].append(entry)
            elif kind == "done":
                done[int(tid)].append(entry)

    # Nothing completed twice: exactly one fenced complete succeeded per task, and it was
    # the task's last attempt (the attempt count and result the database holds).
    for tid, task in tasks.items():
        if tid in done:
            assert len(done[tid]) == 1, f"task {tid} completed by two leases: {done[tid]}"
            attempt, _token = done[tid][0]
            assert attempt == task.attempts, (
                f"task {tid}: completed attempt {attempt}, stored {task.attempts}"
            )
            assert task.result == {"by": task.result["by"], "attempt": attempt}
        assert starts[tid], f"task {tid} completed but no handler ran it"
        assert max(a for a, _ in starts[tid]) == task.attempts
        # Each attempt number was handed out to exactly one lease.
        tokens_by_attempt: dict[int, set[str]] = defaultdict(set)
        for attempt, token in starts[tid]:
            tokens_by_attempt[attempt].add(token)
        assert all(len(tokens) == 1 for tokens in tokens_by_attempt.values()), starts[tid]
    missing_done = [tid for tid in tasks if tid not in done]
    # A task with no "done" line was completed by a worker killed after its commit and
    # before it wrote the line: at most one such task per kill.
    assert len(missing_done) <= len(killed_logs), missing_done

    # Every task whose worker was killed inside the handler ran again after its lease.
    assert len(interrupted) >= kills
    for tid, attempt in interrupted:
        task = tasks[tid]
        assert task.attempts > attempt, f"task {tid} was not run again after its worker was killed"
        assert task.attempts > 1
        assert any(a > attempt for a, _ in starts[tid]), f"task {tid}: no handler ran after the kill"


def test_chaos_sigkill_workers_lose_nothing(tmp_path: Path) -> None:
    run_chaos(tmp_path, total=sized(3000, 20_000), kills=sized(5, 25))


@pytest.mark.soak
@SOAK_ONLY
def test_chaos_soak_many_kills(tmp_path: Path) -> None:
    run_chaos(tmp_path, total=20_000, kills=40, handler_sleep=0.002)


def test_producer_killed_during_enqueue_many_is_all_or_nothing(tmp_path: Path) -> None:
    db_path = tmp_path / "producer.db"
    batch = sized(20_000, 100_000)
    with QueueDatabase(db_path) as db:
        db.initialize_schema()
        client = QueueClient(db)
        seeded = client.enqueue_many({"task_type": "seed", "payload": {"n": n}} for n in range(50))

    def run_once(kill_after: float | None) -> tuple[bool, float]:
        """Run a producer; kill it ``kill_after`` s into its insert. Returns (marker seen, insert time)."""
        marker = tmp_path / f"marker-{time.monotonic_ns()}"
        proc = SPAWN.Process(target=batch_producer, args=(str(db_path), str(marker), batch), daemon=True)
        proc.start()
        try:
            if kill_after is None:
                proc.join(120)
                assert proc.exitcode == 0
            else:
                deadline = time.monotonic() + 120
                while not read_lines(marker) and proc.is_alive():
                    assert time.monotonic() < deadline
                    time.sleep(0.0005)
                time.sleep(kill_after)
                proc.kill()
                proc.join(10)
        finally:
            kill_all([proc])
        lines = read_lines(marker)
        elapsed = float(lines[1][1]) - float(lines[0][1]) if len(lines) == 2 else 0.0
        return bool(lines), elapsed

    def bulk_count() -> int:
        with QueueDatabase(db_path) as db:
            assert db.integrity_check() == ["ok"]
            client = QueueClient(db)
            by_type = client.count_by_type()
            # The seeded tasks are untouched.
            assert [client.get(i).payload for i in seeded[:3]] == [{"n": 0}, {"n": 1}, {"n": 2}]
            assert sum(by_type["seed"].values()) == 50
            return sum(by_type.get("bulk", {}).values())

    # A producer that is not killed writes the whole batch; time its insert.
    seen, insert_time = run_once(None)
    assert seen
    assert insert_time > 0
    expected = batch
    assert bulk_count() == expected

    outcomes = []
    rng = random.Random(7)
    rounds = sized(4, 12)
    for index in range(rounds):
        kill_after = insert_time * (0.1 + 0.7 * index / max(rounds - 1, 1)) * rng.uniform(0.8, 1.0)
        seen, _ = run_once(kill_after)
        assert seen
        count = bulk_count()
        assert count in (expected, expected + batch), f"partial batch: {count - expected} of {batch} tasks"
        outcomes.append(count - expected)
        expected = count
    # At least one kill landed inside the insert transaction and left nothing behind.
    assert 0 in outcomes, f"no kill interrupted the insert (added per round: {outcomes})"

    # The database still takes writes.
    with QueueDatabase(db_path) as db:
        task_id = QueueClient(db).enqueue("after", {"ok": True})
        assert QueueClient(db).get(task_id).payload == {"ok": True}
        assert db.integrity_check() == ["ok"]
