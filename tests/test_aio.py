"""AsyncQueueClient: the client's calls as coroutines, on both backends, off the event loop."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from prismq.queue import (
    AsyncQueueClient,
    PayloadError,
    PriorityError,
    QueueClient,
    QueueDatabase,
    QueueTimeoutError,
    QueueWorker,
    StorageError,
    TaskNotFoundError,
    TaskSpec,
    TaskStateError,
    TaskStatus,
    ValidationError,
)

if TYPE_CHECKING:
    from conftest import FakeClock

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())  # type: ignore[arg-type]


def test_enqueue_get_list_and_counts_match_the_sync_client(db: QueueDatabase) -> None:
    sync = QueueClient(db)

    async def scenario() -> None:
        async with AsyncQueueClient(db) as client:
            first = await client.enqueue("mail", {"to": "a@example.com"}, priority=7, max_attempts=3)
            batch = await client.enqueue_many(
                [TaskSpec("resize", {"w": 10}), {"task_type": "mail", "payload": [1, 2], "delay": 60}]
            )
            assert batch == [first + 1, first + 2]
            task = await client.get(first)
            assert task == sync.get(first)
            assert (task.task_type, task.payload, task.priority, task.max_attempts) == (
                "mail",
                {"to": "a@example.com"},
                7,
                3,
            )
            listed = await client.list(task_type="mail", newest_first=False)
            assert [t.id for t in listed] == [first, first + 2]
            assert [t.id for t in await client.list(limit=1)] == [first + 2]
            assert await client.count_by_status() == sync.count_by_status()
            assert (await client.count_by_status())["queued"] == 3
            assert await client.count_by_type() == {"mail": {"queued": 2}, "resize": {"queued": 1}}
            stats = await client.stats()
            assert (stats.total, stats.ready, stats.delayed) == (3, 2, 1)
            assert await client.list_workers() == []
            assert await client.enqueue_many([]) == []

    run(scenario)


def test_idempotency_key_returns_the_existing_task(db: QueueDatabase) -> None:
    async def scenario() -> None:
        async with AsyncQueueClient(db) as client:
            first = await client.enqueue("mail", idempotency_key="order-1")
            assert await client.enqueue("mail", idempotency_key="order-1") == first
            assert await client.enqueue_many([{"task_type": "mail", "idempotency_key": "order-1"}]) == [first]
            assert len(await client.list()) == 1

    run(scenario)


def test_bad_input_raises_before_anything_is_written(db: QueueDatabase) -> None:
    async def scenario() -> None:
        async with AsyncQueueClient(db) as client:
            with pytest.raises(PriorityError):
                await client.enqueue("mail", priority=5000)
            with pytest.raises(PayloadError):
                await client.enqueue("mail", {"when": object()})
            with pytest.raises(PriorityError, match="task #1"):
                await client.enqueue_many([{"task_type": "a"}, {"task_type": "b", "priority": -1}])
            with pytest.raises(ValidationError, match="limit"):
                await client.list(limit=0)
            with pytest.raises(ValidationError, match="not a finished status"):
                await client.prune(0, statuses=["queued"])
            assert await client.count_by_status() == dict.fromkeys([s.value for s in TaskStatus], 0)

    run(scenario)
    with pytest.raises(ValidationError, match="max_threads"):
        AsyncQueueClient(db, max_threads=0)


def test_cancel_retry_prune_and_their_errors(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    async def scenario() -> None:
        async with AsyncQueueClient(clocked_db) as client:
            task_id = await client.enqueue("mail")
            assert (await client.cancel(task_id)).status is TaskStatus.CANCELLED
            with pytest.raises(TaskStateError, match="already cancelled"):
                await client.cancel(task_id)
            retried = await client.retry(task_id)
            assert (retried.status, retried.attempts) == (TaskStatus.QUEUED, 0)
            with pytest.raises(TaskStateError, match="only dead or cancelled"):
                await client.retry(task_id)
            with pytest.raises(TaskNotFoundError):
                await client.get(task_id + 100)
            with pytest.raises(TaskNotFoundError):
                await client.cancel(task_id + 100)
            with pytest.raises(TaskStateError, match="not completed"):
                await client.get_result(task_id)
            await client.cancel(task_id)
            clock.advance(3600)
            assert await client.prune(60) == 0  # the newest task is never deleted
            assert [t.id for t in await client.list()] == [task_id]

    run(scenario)


def test_prune_deletes_old_finished_tasks(clocked_db: QueueDatabase, clock: FakeClock) -> None:
    async def scenario() -> None:
        async with AsyncQueueClient(clocked_db) as client:
            old = await client.enqueue("mail")
            await client.cancel(old)
            clock.advance(3600)
            newest = await client.enqueue("mail")
            assert await client.prune(60) == 1
            assert [t.id for t in await client.list()] == [newest]

    run(scenario)


def test_wait_returns_when_a_worker_finishes_and_times_out_otherwise(db: QueueDatabase) -> None:
    worker = QueueWorker(db, worker_id="w1")

    def finish_soon() -> None:
        time.sleep(0.2)
        task = worker.claim_next_task()
        assert task is not None
        worker.complete_task(task.id, result={"ok": True})

    async def scenario() -> None:
        async with AsyncQueueClient(db) as client:
            task_id = await client.enqueue("mail")
            with pytest.raises(QueueTimeoutError, match="still queued"):
                await client.wait(task_id, timeout=0.05)
            thread = threading.Thread(target=finish_soon)
            thread.start()
            try:
                done = await client.wait(task_id, timeout=10)
            finally:
                thread.join()
            assert done.status is TaskStatus.COMPLETED
            assert await client.get_result(task_id) == {"ok": True}
            with pytest.raises(TaskNotFoundError):
                await client.wait(task_id + 1, timeout=1)

    run(scenario)


def test_a_closed_client_refuses_work(db: QueueDatabase) -> None:
    async def scenario() -> None:
        client = AsyncQueueClient(db)
        await client.enqueue("mail")
        await client.aclose()
        with pytest.raises(StorageError, match="closed"):
            await client.enqueue("mail")

    run(scenario)
    assert len(QueueClient(db).list()) == 1  # the database itself stays open


@pytest.mark.postgres
def test_postgresql_uses_the_async_driver_not_threads(postgres_schema: tuple[str, str]) -> None:
    from prismq.queue.backends.postgres import PostgresBackend
    from prismq.queue.backends.postgres.aio import AsyncPostgresStore

    url, schema = postgres_schema
    db = QueueDatabase(backend=PostgresBackend(url, schema=schema))
    db.initialize_schema()

    async def scenario() -> None:
        async with AsyncQueueClient(db) as client:
            assert isinstance(client._store, AsyncPostgresStore)
            ids = await asyncio.gather(*(client.enqueue("mail", {"n": n}) for n in range(50)))
            assert len(set(ids)) == 50
            assert sorted(t.payload["n"] for t in await client.list()) == list(range(50))
            # No thread of the client's own: the calls awaited the network.
            assert not [t.name for t in threading.enumerate() if t.name.startswith("prismq-aio")]

    try:
        run(scenario)
    finally:
        db.close()


# -- the event loop stays responsive ---------------------------------------------------------


class Ticker:
    """Wakes every 2 ms and records the longest gap between two wake-ups."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = False

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            last = now

    def stop(self) -> None:
        self._stop = True


async def _measure(load: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(worst loop gap, seconds the load took) while ``load`` runs beside a ticker."""
    ticker = Ticker()
    ticking = asyncio.create_task(ticker.run())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await load()
    took = time.perf_counter() - started
    ticker.stop()
    await ticking
    return ticker.worst, took


def test_the_loop_stays_responsive_under_load(db: QueueDatabase) -> None:
    """Many concurrent calls through AsyncQueueClient versus the same work done on the loop.

    Compared with a baseline measured in the same run (the same calls made with the
    synchronous client, which blocks the loop), so the check holds on a loaded machine.
    """
    sync = QueueClient(db)
    rounds = 400  # long enough that a stall from a busy machine is small beside the baseline
    batch = [TaskSpec("mail", {"n": n}) for n in range(20)]

    async def blocking() -> None:
        for _ in range(rounds):
            task_id = sync.enqueue("mail")
            sync.enqueue_many(batch)
            sync.get(task_id)
            sync.list(limit=200)
            sync.stats()

    async def scenario() -> tuple[tuple[float, float], tuple[float, float]]:
        async with AsyncQueueClient(db) as client:

            async def one() -> None:
                task_id = await client.enqueue("mail")
                await client.enqueue_many(batch)
                await client.get(task_id)
                await client.list(limit=200)
                await client.stats()

            async def concurrent() -> None:
                await asyncio.gather(*(one() for _ in range(rounds)))

            await client.count_by_status()  # open the pool or threads first
            baseline = await _measure(blocking)
            offloaded = await _measure(concurrent)
            return baseline, offloaded

    (blocked_gap, blocked_took), (async_gap, async_took) = run(scenario)
    print(f"on the loop: gap {blocked_gap:.3f} s in {blocked_took:.3f} s")
    print(f"async client: gap {async_gap:.3f} s in {async_took:.3f} s")
    # Done on the loop, the work stalls it for about as long as it takes.
    assert blocked_gap >= blocked_took * 0.9
    # Through the async client, the loop keeps ticking: its worst gap is a fraction of that.
    assert async_gap < blocked_gap / 3, (async_gap, blocked_gap)
    assert sync.count_by_status()["queued"] == 2 * rounds * (1 + len(batch))


def test_the_server_clock_is_read_off_the_loop_only_when_due() -> None:
    from prismq.queue.backends.serverclock import ServerClock, read_clock

    mono = [100.0]
    reads: list[str] = []

    def read_server() -> float:
        reads.append(threading.current_thread().name)
        return 5_000.0

    clock = ServerClock(read_server, resync_every=30, monotonic=lambda: mono[0], wall=lambda: mono[0])
    assert clock.peek() is None  # never read yet

    async def now() -> float:
        return await read_clock(clock)

    assert asyncio.run(now()) == 5_000.0
    assert len(reads) == 1
    assert reads[0] != threading.main_thread().name  # the read ran on a thread
    mono[0] += 10
    assert clock.peek() == 5_010.0
    assert asyncio.run(now()) == 5_010.0
    assert len(reads) == 1  # answered from the last reading
    mono[0] += 30
    assert clock.peek() is None  # a read is due again
    assert asyncio.run(now()) == 5_000.0
    assert len(reads) == 2


CHILD = """
import asyncio, json, sys
from prismq.queue import AsyncQueueClient, QueueDatabase

async def main() -> None:
    with QueueDatabase(sys.argv[1]) as db:
        async with AsyncQueueClient(db) as client:
            ids = await asyncio.gather(
                *(client.enqueue("mail", {"n": n}, idempotency_key=f"key-{n}") for n in range(20))
            )
            extra = await client.enqueue_many([{"task_type": "mail"} for _ in range(5)])
    print(json.dumps({"ids": ids, "extra": extra}))

asyncio.run(main())
"""


def test_idempotent_enqueues_from_several_processes_make_one_task_per_key(
    backend_name: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    import json
    import subprocess
    import sys

    if backend_name == "postgresql":
        url, schema = request.getfixturevalue("postgres_schema")
        target = f"{url}{'&' if '?' in url else '?'}schema={schema}"
    else:
        target = str(tmp_path / "queue.db")
    with QueueDatabase(target) as db:
        db.initialize_schema()
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, target], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [json.loads(child.communicate(timeout=120)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    # Every process got the same id for each key: the four raced, one task per key won.
    assert all(r["ids"] == results[0]["ids"] for r in results)
    assert len(set(results[0]["ids"])) == 20
    with QueueDatabase(target) as db:
        assert QueueClient(db).count_by_status()["queued"] == 20 + 4 * 5
    extras = [i for r in results for i in r["extra"]]
    assert len(set(extras)) == 20


def test_a_closed_database_is_a_storage_error(make_db: Callable[..., QueueDatabase]) -> None:
    db = make_db()

    async def scenario() -> None:
        async with AsyncQueueClient(db) as client:
            task_id = await client.enqueue("mail")
            db.close()
            with pytest.raises(StorageError, match="closed"):
                await client.get(task_id)

    run(scenario)


def test_the_async_client_mirrors_every_client_method_but_the_dashboards() -> None:
    """The docstring's promise: every QueueClient method, less the dashboard's operations."""
    dashboard_only = {
        "page",
        "delete",
        "delete_many",
        "retry_many",
        "cancel_many",
        "pause",
        "resume",
        "paused",
        "finished_histogram",
        "schedules",
    }
    sync = {name for name in dir(QueueClient) if not name.startswith("_")}
    mirrored = {name for name in dir(AsyncQueueClient) if not name.startswith("_")}
    assert sync - mirrored == dashboard_only
    for name in sync - dashboard_only:
        assert inspect.iscoroutinefunction(getattr(AsyncQueueClient, name)), name
    for name in dashboard_only:
        assert name in (AsyncQueueClient.__doc__ or "")
