"""Clock skew between workers: on PostgreSQL every lease is timed by the server's clock.

A worker whose host clock runs 90 s ahead used to see a lease another worker had just
renewed as expired, reclaim it and run the task a second time (fencing kept the first
worker from writing, but the handler ran twice). The database's clock is now the default
on PostgreSQL; an explicit ``clock=`` still overrides it (tests rely on that).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from reliability_support import SPAWN, kill_all
from skewed_child import skewed_claim

from prismq.queue import LeaseLostError, QueueClient, QueueDatabase, QueueWorker
from prismq.queue.backends.serverclock import ServerClock


class Stepper:
    """A settable clock for the ServerClock's stand-ins."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_server_clock_follows_the_server_not_the_host() -> None:
    wall, mono = Stepper(1_000.0), Stepper(50.0)
    reads = 0

    def server() -> float:  # the server's clock is 90 s ahead of this host's, and steady
        nonlocal reads
        reads += 1
        return 1_040.0 + mono.now

    clock = ServerClock(server, resync_every=30.0, wall=wall, monotonic=mono)
    assert clock() == 1_090.0
    assert clock.offset == 90.0
    wall.now += 10.0
    mono.now += 10.0
    assert clock() == 1_100.0
    assert reads == 1  # advanced by the monotonic clock alone
    wall.now += 500.0  # the host's wall clock is stepped: the server is read again at once
    assert clock() == 1_100.0
    assert reads == 2
    assert clock.offset == 90.0 - 500.0
    assert clock() == 1_100.0
    assert reads == 2
    mono.now += 31.0  # the resync interval passed
    wall.now += 31.0
    assert clock() == 1_131.0
    assert reads == 3


def test_server_clock_keeps_its_reading_when_a_re_read_fails() -> None:
    wall, mono = Stepper(1_000.0), Stepper(0.0)
    answers: list[float | Exception] = [RuntimeError("first read fails")]

    def server() -> float:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = ServerClock(server, resync_every=5.0, wall=wall, monotonic=mono)
    with pytest.raises(RuntimeError):  # nothing to fall back on yet
        clock()
    answers.append(2_000.0)
    assert clock() == 2_000.0
    mono.now += 6.0
    wall.now += 6.0
    answers.append(RuntimeError("server gone"))
    assert clock() == 2_006.0  # the previous reading, advanced
    answers.append(3_000.0)
    mono.now += 0.5
    wall.now += 0.5
    assert clock() == 2_006.5  # a failed read is retried a second later, not at every call
    mono.now += 1.0
    wall.now += 1.0
    assert clock() == 3_000.0


def test_default_clock_per_backend(tmp_path: Path, postgres_schema: tuple[str, str]) -> None:
    with QueueDatabase(tmp_path / "queue.db") as sqlite_db:
        assert sqlite_db.clock is time.time
    url, schema = postgres_schema
    with QueueDatabase(f"{url}?schema={schema}") as pg:
        assert pg.clock is pg.backend.server_clock  # type: ignore[attr-defined]
        assert abs(pg.now() - pg.backend.server_time()) < 1.0  # type: ignore[attr-defined]
    with QueueDatabase(f"{url}?schema={schema}", clock=lambda: 42.0) as pinned:
        assert pinned.now() == 42.0


def run_skewed(url: str, use_host_clock: bool) -> tuple[int, int | None, float]:
    out = SPAWN.Queue()
    child = SPAWN.Process(target=skewed_claim, args=(url, 90.0, use_host_clock, out), daemon=True)
    child.start()
    try:
        deadline = time.monotonic() + 120
        while out.empty():
            assert child.exitcode is None, f"the skewed worker died (exit code {child.exitcode})"
            assert time.monotonic() < deadline, "the skewed worker never answered"
            time.sleep(0.05)
        result = out.get(timeout=10)
        child.join(30)
        assert child.exitcode == 0
    finally:
        kill_all([child])
    return result


@pytest.mark.postgres
def test_worker_with_a_skewed_clock_cannot_take_a_live_lease_on_postgresql(
    postgres_schema: tuple[str, str],
) -> None:
    url, schema = postgres_schema
    target = f"{url}?schema={schema}"
    with QueueDatabase(target) as db:
        db.initialize_schema()
        client = QueueClient(db)
        worker = QueueWorker(db, "on-time-worker", lease_duration=60)
        first = client.enqueue("report", {"n": 1})
        held = worker.claim_next_task()
        assert held is not None
        assert held.id == first
        worker.renew_lease(held)

        reclaimed, claimed, offset = run_skewed(target, use_host_clock=False)
        assert (reclaimed, claimed) == (0, None)
        assert abs(offset) < 1.0  # the skewed host still told the server's time
        worker.renew_lease(held)  # the lease is still this worker's
        worker.complete_task(held, {"ok": True})
        assert client.get(first).attempts == 1

        # The same host timing leases by its own clock takes the lease over: the skew is real.
        second = client.enqueue("report", {"n": 2})
        held = worker.claim_next_task()
        assert held is not None
        assert held.id == second
        reclaimed, claimed, offset = run_skewed(target, use_host_clock=True)
        assert (reclaimed, claimed) == (1, second)
        assert offset == pytest.approx(90.0, abs=1.0)
        with pytest.raises(LeaseLostError):
            worker.renew_lease(held)
