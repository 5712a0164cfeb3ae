"""prismq.queue.testing: TestClock, drain (retries with time advanced), eager mode, the pytest plugin."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prismq.queue import ConfigError, QueueClient, QueueDatabase, RetryPolicy, TaskStatus
from prismq.queue.runtime import HandlerRegistry, TaskCancelled, TaskContext, TaskFailed
from prismq.queue.tasks import TaskRegistry
from prismq.queue.testing import HandlerError, TestClock, drain, eager, temporary_queue

FLAKY_POLICY = RetryPolicy(max_attempts=3, base_delay=10, max_delay=100, jitter=0)


def test_test_clock_moves_only_forward() -> None:
    clock = TestClock(start=100.0)
    assert clock() == 100.0
    clock.advance(5)
    clock.advance_to(50)  # earlier: no change
    assert clock() == 105.0
    clock.advance_to(200)
    assert clock() == 200.0
    with pytest.raises(ConfigError, match="only moves forward"):
        clock.advance(-1)


def test_drain_runs_retries_with_time_advanced(backend_name: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("postgres_url") if backend_name == "postgresql" else None
    handlers = HandlerRegistry()
    calls: list[int] = []

    @handlers.handler("flaky")
    def flaky(ctx: TaskContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        return "done"

    @handlers.handler("always_fails")
    def always_fails(ctx: TaskContext) -> None:
        raise TaskFailed("bad input", retry=False)

    @handlers.handler("cancels")
    def cancels(ctx: TaskContext) -> None:
        raise TaskCancelled("stop")

    clock = TestClock(start=1_800_000_000.0)
    with temporary_queue(backend_name, url=url, clock=clock) as db:
        client = QueueClient(db, retry_policies={"flaky": FLAKY_POLICY})
        flaky_id = client.enqueue("flaky")
        dead_id = client.enqueue("always_fails")
        cancelled_id = client.enqueue("cancels")
        later_id = client.enqueue("flaky", delay=3600, max_attempts=1)
        other = client.enqueue("not_handled_here")
        report = drain(db, handlers)
        assert calls == [1, 2, 3, 1]
        attempts = report.for_task(flaky_id)
        assert [(o.attempt, o.status) for o in attempts] == [
            (1, TaskStatus.QUEUED),
            (2, TaskStatus.QUEUED),
            (3, TaskStatus.COMPLETED),
        ]
        assert isinstance(attempts[0].exception, RuntimeError)
        assert attempts[0].error == "RuntimeError: attempt 1 failed"
        assert report.results[flaky_id] == "done"
        assert [o.task_id for o in report.dead] == [dead_id, later_id]
        assert report.for_task(cancelled_id)[0].status is TaskStatus.CANCELLED
        assert report.for_task(later_id)[0].status is TaskStatus.DEAD  # its delay was advanced over
        assert len(report.retried) == 2
        assert report.advanced >= 3600
        assert clock() >= 1_800_000_000.0 + 3600
        assert report.pending == []
        assert client.get(other).status is TaskStatus.QUEUED  # other types are left alone


def test_drain_with_the_real_clock_leaves_delayed_tasks_pending(tmp_path: Path) -> None:
    handlers = HandlerRegistry()
    handlers.register("job", lambda ctx: ctx.payload)
    with QueueDatabase(tmp_path / "q.db") as db:
        db.initialize_schema()
        client = QueueClient(db)
        now_id = client.enqueue("job", 1)
        later_id = client.enqueue("job", 2, delay=3600)
        report = drain(client, handlers)
        assert report.results == {now_id: 1}
        assert [t.id for t in report.pending] == [later_id]
        assert report.advanced == 0
        assert drain(db, HandlerRegistry()).outcomes == []


def test_drain_runs_async_handlers_and_stops_at_max_tasks() -> None:
    handlers = HandlerRegistry()

    @handlers.handler("again")
    async def again(ctx: TaskContext) -> int:
        await asyncio.sleep(0)
        QueueClient(ctx._worker.db).enqueue("again", ctx.payload + 1)
        return int(ctx.payload)

    with temporary_queue() as db:
        QueueClient(db).enqueue("again", 0)
        report = drain(db, handlers, max_tasks=5)
        assert [o.result for o in report.outcomes] == [0, 1, 2, 3, 4]
        assert [t.payload for t in report.pending] == [5]

        async def inside_a_loop() -> list[object]:  # an async test calling drain
            return [o.result for o in drain(db, handlers, max_tasks=1).outcomes]

        assert asyncio.run(inside_a_loop()) == [5]


def test_eager_runs_task_functions_on_enqueue_and_propagates_failures() -> None:
    tasks = TaskRegistry()
    sent: list[str] = []

    @tasks.task
    def send(to: str) -> str:
        if to == "nobody":
            raise ValueError("no such mailbox")
        sent.append(to)
        return to.upper()

    with temporary_queue() as db:
        client = QueueClient(db, retry_policies={"send": RetryPolicy(max_attempts=2, base_delay=5, jitter=0)})
        tasks.bind(client)
        queued = send.enqueue("before")
        assert sent == []  # not eager yet
        with eager(tasks) as outcomes:
            task_id = send.enqueue("a@x")
            assert sent == ["before", "a@x"]
            assert client.get_result(task_id) == "A@X"
            with pytest.raises(HandlerError, match="ValueError: no such mailbox") as caught:
                send.enqueue("nobody")
            assert isinstance(caught.value.__cause__, ValueError)
            assert caught.value.outcome.attempt == 2  # the retry ran too, time advanced
            send.enqueue_many([{"to": "b@x"}])
        assert [o.status for o in outcomes].count(TaskStatus.COMPLETED) == 3
        assert client.get_result(queued) == "BEFORE"
        send.enqueue("after")
        assert sent[-1] == "b@x"  # eager mode ended with the block
        with eager(tasks, propagate=False) as outcomes:
            failed = send.enqueue("nobody")
        assert client.get(failed).status is TaskStatus.DEAD
        assert outcomes[-1].status is TaskStatus.DEAD


def test_temporary_queue_cleans_up_and_refuses_unknown_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    with temporary_queue() as db:
        path = db.path
        assert path is not None
        assert path.exists()
    assert not path.exists()
    with pytest.raises(ConfigError, match="'sqlite' or 'postgresql'"), temporary_queue("mysql"):
        pass
    monkeypatch.delenv("PRISMQ_TEST_POSTGRES_URL", raising=False)
    with pytest.raises(ConfigError, match="PRISMQ_TEST_POSTGRES_URL"), temporary_queue("postgresql"):
        pass


@pytest.mark.postgres
def test_temporary_postgres_queue_drops_its_schema(postgres_url: str) -> None:
    import psycopg

    with temporary_queue("postgresql", url=postgres_url) as db:
        schema = db.backend.schema  # type: ignore[attr-defined]
        QueueClient(db).enqueue("x")
    with psycopg.connect(postgres_url) as conn:
        found = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    assert found == (0,)


def test_pytest_plugin_fixtures_are_registered_and_work(tmp_path: Path, postgres_url: str) -> None:
    """A separate pytest run picks the plugin up from the package's entry point."""
    (tmp_path / "test_user_code.py").write_text(
        textwrap.dedent(
            """
            from prismq.queue import QueueClient
            from prismq.queue.runtime import HandlerRegistry
            from prismq.queue.testing import drain

            def test_sqlite(prismq_client, prismq_db, prismq_clock):
                task_id = prismq_client.enqueue("job", {"n": 1}, delay=60)
                handlers = HandlerRegistry()
                handlers.register("job", lambda ctx: ctx.payload["n"] + 1)
                start = prismq_clock()
                assert drain(prismq_db, handlers).results == {task_id: 2}
                assert prismq_clock() - start >= 60

            def test_postgres(prismq_postgres_db):
                assert prismq_postgres_db.backend_name == "postgresql"
                assert QueueClient(prismq_postgres_db).enqueue("job") == 1

            def test_factory(prismq_queue):
                first, second = prismq_queue(), prismq_queue()
                assert first.path != second.path
            """
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "PRISMQ_TEST_POSTGRES_URL": postgres_url}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert "3 passed" in result.stdout, result.stdout + result.stderr


def test_eager_with_a_handler_registry_runs_the_clients_enqueues() -> None:
    handlers = HandlerRegistry()

    @handlers.handler("square")
    def square(ctx: TaskContext) -> int:
        if ctx.payload < 0:
            raise TaskFailed("negative", retry=False)
        return int(ctx.payload) ** 2

    with pytest.raises(ConfigError, match="needs the client"), eager(handlers):
        pass
    with temporary_queue() as db:
        client = QueueClient(db)
        other = QueueClient(db)
        with eager(handlers, client=client) as outcomes:
            task_id = client.enqueue("square", 7)
            assert client.get_result(task_id) == 49
            ids = client.enqueue_many([{"task_type": "square", "payload": n} for n in (2, 3)])
            assert [client.get_result(i) for i in ids] == [4, 9]
            with pytest.raises(HandlerError, match="TaskFailed: negative"):
                client.enqueue("square", -1)
            untouched = other.enqueue("square", 5)  # another client: only written
            assert other.get(untouched).status is TaskStatus.QUEUED
        assert [o.result for o in outcomes[:3]] == [49, 4, 9]
        later = client.enqueue("square", 4)  # the block ended: back to plain enqueues
        assert client.get(later).status is TaskStatus.QUEUED
        assert "enqueue" not in vars(client)
