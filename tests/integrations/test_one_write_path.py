"""Runs change their tasks only through the queue's fenced operations.

A run's task is inserted leased (``Backend.insert_leased``), leased again for a takeover or
a re-run (``Backend.lease_again``), and renewed, updated and finished by its manager's
``QueueWorker``; ``runs.sql`` writes ``runs`` rows only. Generic workers never claim it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from prismq.queue import LeaseLostError, QueueClient, QueueDatabase, QueueWorker, TaskStatus
from prismq.queue.backends.base import NewTask, TaskUpdate
from prismq.queue.backends.runstore import RUN_TASK_PREFIX
from prismq.queue.integrations import RunRegistry

from .conftest import Mode, run_async

PACKAGE = Path(__import__("prismq.queue", fromlist=["_"]).__file__).parent
_WRITES_TASKS = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+tasks\b", re.IGNORECASE)
# What the run store may call on its backend: fenced task operations and reads.
_STORE_BACKEND_CALLS = {
    "insert_leased",
    "lease_again",
    "update_progress",
    "complete_tasks",
    "finish_attempt",
    "reclaim_expired",
    "cancel_task",
    "change_tasks",
    "get_task",
}


@pytest.mark.parametrize("package", ["sqlite", "postgres"])
def test_runs_sql_has_no_statement_writing_tasks(package: str) -> None:
    from prismq.queue.backends.sqlfile import load_queries

    queries = load_queries(f"prismq.queue.backends.{package}", "runs.sql", run_columns="run_id")
    assert {"insert_run", "save_run", "claim_run"} <= set(queries)
    writing = sorted(name for name, sql in queries.items() if _WRITES_TASKS.search(sql))
    assert writing == []
    # The pattern does catch a task write.
    assert _WRITES_TASKS.search("UPDATE tasks SET status = 'dead'")


def _calls_on(tree: ast.AST, owner: str) -> set[str]:
    """Names of the methods called on ``self.<owner>`` in a module."""
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == owner
        ):
            found.add(node.func.attr)
    return found


def test_integrations_write_tasks_only_through_the_worker_and_fenced_backend_operations() -> None:
    for path in (PACKAGE / "integrations").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not _WRITES_TASKS.search(text), path.name
        # The only backend call: building the run store.
        assert _calls_on(ast.parse(text), "backend") <= {"run_store"}, path.name
    store = ast.parse((PACKAGE / "backends" / "runstore.py").read_text(encoding="utf-8"))
    assert _calls_on(store, "backend") <= _STORE_BACKEND_CALLS
    assert not _WRITES_TASKS.search((PACKAGE / "backends" / "runstore.py").read_text(encoding="utf-8"))
    manager = ast.parse((PACKAGE / "integrations" / "manager.py").read_text(encoding="utf-8"))
    assert _calls_on(manager, "_worker") <= {
        "update_progress",
        "complete_task",
        "fail_task",
        "acknowledge_cancel",
        "heartbeat",
        "held_tasks",
        "forget_task",
        "_hold",
    }


@pytest.fixture
def queue_db(durable: Mode) -> QueueDatabase:
    db = durable.database()
    db.initialize_schema()
    return db


def _new(task_type: str = RUN_TASK_PREFIX + "ingest") -> NewTask:
    return NewTask(task_type, '{"n": 1}', 100, 0.0, 5, "{}")


def test_insert_leased_is_fenced_by_a_fresh_token(queue_db: QueueDatabase) -> None:
    backend, now = queue_db.backend, queue_db.now()
    task = backend.insert_leased(_new(), "manager-a", now + 30, now)
    assert (task.status, task.attempts, task.max_attempts) == (TaskStatus.LEASED, 1, 1)
    assert task.locked_by == "manager-a"
    assert task.lease_token
    other = backend.insert_leased(_new(), "manager-a", now + 30, now)
    assert other.lease_token != task.lease_token
    with pytest.raises(LeaseLostError):
        backend.renew_lease(TaskUpdate(task.id, "manager-a", "not-the-token"), now + 60, now)
    renewed = backend.renew_lease(TaskUpdate(task.id, "manager-a", task.lease_token or ""), now + 60, now)
    assert renewed.lease_until is not None
    assert renewed.lease_until.timestamp() == pytest.approx(now + 60)


def test_lease_again_hands_over_revives_and_refuses(queue_db: QueueDatabase) -> None:
    backend, now = queue_db.backend, queue_db.now()
    task = backend.insert_leased(_new(), "manager-a", now + 30, now)
    old = TaskUpdate(task.id, "manager-a", task.lease_token or "")
    # Held by a live lease of another worker: refused without the holder's token.
    assert backend.lease_again(task.id, "manager-b", now + 30, now) is None
    taken = backend.lease_again(task.id, "manager-b", now + 30, now, handover=task.lease_token)
    assert taken is not None
    assert (taken.locked_by, taken.attempts) == ("manager-b", 1)
    assert taken.lease_token not in (None, task.lease_token)
    assert backend.complete_tasks([old], [None], now) == [False]  # the previous holder is fenced off
    with pytest.raises(LeaseLostError):
        backend.renew_lease(old, now + 60, now)
    # Dead (a re-run): one more attempt, still the last one allowed.
    dead = backend.finish_attempt(
        TaskUpdate(task.id, "manager-b", taken.lease_token or ""),
        TaskStatus.DEAD,
        None,
        "gone",
        None,
        True,
        now,
    )
    assert dead.status is TaskStatus.DEAD
    again = backend.lease_again(task.id, "manager-c", now + 30, now)
    assert again is not None
    assert (again.status, again.locked_by, again.attempts, again.max_attempts) == (
        TaskStatus.LEASED,
        "manager-c",
        2,
        2,
    )
    assert again.finished_at is None
    assert backend.complete_tasks(
        [TaskUpdate(task.id, "manager-c", again.lease_token or "")], [None], now
    ) == [True]
    assert backend.lease_again(task.id, "manager-c", now + 30, now) is None  # completed stays completed
    assert backend.lease_again(10**9, "manager-c", now + 30, now) is None


def test_generic_workers_never_claim_a_run_task(queue_db: QueueDatabase) -> None:
    client = QueueClient(queue_db)
    run_type = RUN_TASK_PREFIX + "ingest"
    run_task = client.enqueue(run_type, {"n": 1})  # e.g. a dead run task retried by hand
    plain = client.enqueue("email", {"to": "x"})
    for strategy in ("fifo", "lifo", "priority", "weighted_random"):
        generic = QueueWorker(queue_db, worker_id=f"generic-{strategy}", strategy=strategy, register=False)
        assert [t.id for t in generic.claim_batch(10)] in ([plain], [])
        for held in list(generic.held_tasks):
            generic.release_task(held)
    named = QueueWorker(queue_db, worker_id="runs", task_types=[run_type, "email"], register=False)
    assert sorted(t.id for t in named.claim_batch(10)) == sorted([run_task, plain])


def test_a_finish_recorded_elsewhere_is_applied_by_the_lease_holder(durable: Mode) -> None:
    """RunRegistry.update_run writes the run row; the manager holding the task finishes it."""
    import asyncio

    from prismq.queue.integrations import Run, RunStatus

    async def scenario() -> None:
        manager = durable.manager(lease_duration=0.6)
        release = asyncio.Event()

        async def work() -> int:
            await release.wait()
            return 0

        manager.start_task(Run(run_id="elsewhere", module_id="ingest"), work())
        await manager.flush()
        other = RunRegistry(queue=durable.database())
        run = await asyncio.to_thread(other.get_run, "elsewhere")
        assert run is not None
        assert run.task_id is not None
        run.status = RunStatus.COMPLETED
        run.exit_code = 0
        await asyncio.to_thread(other.update_run, run)
        client = QueueClient(durable.database())
        task = await asyncio.to_thread(client.get, run.task_id)
        assert task.status is TaskStatus.LEASED  # the registry did not touch the task
        for _ in range(100):
            task = await asyncio.to_thread(client.get, run.task_id)
            if task.status is not TaskStatus.LEASED:
                break
            await asyncio.sleep(0.05)
        assert task.status is TaskStatus.COMPLETED
        assert manager.get_active_task_count() == 0  # stopped here: no longer held
        release.set()
        await manager.shutdown()
        final = await asyncio.to_thread(other.get_run, "elsewhere")
        assert final is not None
        assert final.status is RunStatus.COMPLETED

    run_async(scenario())
