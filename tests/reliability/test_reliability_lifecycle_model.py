"""A hypothesis state machine drives the task lifecycle against a small in-memory model.

Time is a manual clock, so lease expiry happens exactly when the model says. After
every step the database and the model must agree: counts by status, each task's status,
attempts and lease, and LeaseLostError raised exactly when the model says the lease is gone.
"""

# ruff: noqa: PT017 - each rule checks whichever outcome the call had against the model

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fakes import FakeClock
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from reliability_support import sized

from prismq.queue import (
    LeaseLostError,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    RetryPolicy,
    TaskStateError,
)

LEASE = 10.0
RETRY_DELAY = 5.0
WORKERS = ("worker-a", "worker-b")


@dataclass
class ModelTask:
    status: str
    attempts: int
    max_attempts: int
    run_after: float
    lease_until: float | None = None
    locked_by: str | None = None
    token: str | None = None
    cancel_requested: bool = False
    finished_at: float | None = None


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="prismq-model-"))
        self.clock = FakeClock()
        self.db = QueueDatabase(self.folder / "model.db", clock=self.clock)
        self.db.initialize_schema()
        policy = RetryPolicy(max_attempts=3, base_delay=RETRY_DELAY, multiplier=1.0, jitter=0.0)
        self.client = QueueClient(self.db, default_retry_policy=policy)
        self.workers = {
            name: QueueWorker(
                self.db, worker_id=name, lease_duration=LEASE, reclaim_interval=0.0, register=False
            )
            for name in WORKERS
        }
        self.model: dict[int, ModelTask] = {}
        # What each worker believes it holds: task id -> lease token.
        self.held: dict[str, dict[int, str]] = {name: {} for name in WORKERS}

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------
    def _reclaim(self, now: float) -> None:
        for task in self.model.values():
            if task.status == "leased" and task.lease_until is not None and task.lease_until < now:
                if task.cancel_requested:
                    task.status, task.finished_at = "cancelled", now
                elif task.attempts >= task.max_attempts:
                    task.status, task.finished_at = "dead", now
                else:
                    task.status, task.finished_at = "queued", None
                task.run_after = now
                task.lease_until = task.locked_by = task.token = None

    def _lease_held(self, worker: str, task_id: int) -> bool:
        """Does the model say ``worker`` may change ``task_id``?"""
        token = self.held[worker].get(task_id)
        task = self.model.get(task_id)
        return (
            token is not None
            and task is not None
            and task.status == "leased"
            and task.locked_by == worker
            and task.token == token
        )

    def _task_ids(self) -> st.SearchStrategy[int]:
        return st.sampled_from(sorted(self.model)) if self.model else st.just(10**9)

    # -- rules -----------------------------------------------------------------
    @rule(max_attempts=st.integers(1, 3), delay=st.sampled_from([0.0, 0.0, 3.0]))
    def enqueue(self, max_attempts: int, delay: float) -> None:
        now = self.clock()
        task_id = self.client.enqueue("model", {"at": now}, max_attempts=max_attempts, delay=delay)
        assert task_id not in self.model
        self.model[task_id] = ModelTask("queued", 0, max_attempts, now + delay)

    @rule(worker=st.sampled_from(WORKERS))
    def claim(self, worker: str) -> None:
        now = self.clock()
        self._reclaim(now)
        ready = [
            (t.run_after, tid) for tid, t in self.model.items() if t.status == "queued" and t.run_after <= now
        ]
        task = self.workers[worker].claim_next_task()
        if not ready:
            assert task is None
            return
        expected = min(ready)[1]
        assert task is not None
        assert task.id == expected
        m = self.model[expected]
        m.status, m.attempts, m.locked_by, m.token = "leased", m.attempts + 1, worker, task.lease_token
        m.lease_until = now + LEASE
        assert task.attempts == m.attempts
        assert task.lease_token
        self.held[worker][expected] = task.lease_token  # type: ignore[assignment]

    @rule(worker=st.sampled_from(WORKERS), data=st.data())
    def renew(self, worker: str, data: st.DataObject) -> None:
        task_id = data.draw(self._task_ids())
        now = self.clock()
        if self._lease_held(worker, task_id):
            task = self.workers[worker].renew_lease(task_id)
            self.model[task_id].lease_until = now + LEASE
            assert task.lease_until is not None
            assert task.lease_until.timestamp() == now + LEASE
        else:
            try:
                self.workers[worker].renew_lease(task_id)
            except LeaseLostError:
                self.held[worker].pop(task_id, None)
            else:
                raise AssertionError(f"{worker} renewed task {task_id} without holding its lease")

    @rule(worker=st.sampled_from(WORKERS), data=st.data(), percent=st.integers(0, 100))
    def progress(self, worker: str, data: st.DataObject, percent: int) -> None:
        task_id = data.draw(self._task_ids())
        if self._lease_held(worker, task_id):
            task = self.workers[worker].update_progress(task_id, percent)
            assert task.progress == percent
            # Reporting progress renews the lease, like renew_lease().
            now = self.clock()
            self.model[task_id].lease_until = now + LEASE
            assert task.lease_until is not None
            assert task.lease_until.timestamp() == now + LEASE
        else:
            try:
                self.workers[worker].update_progress(task_id, percent)
            except LeaseLostError:
                self.held[worker].pop(task_id, None)
            else:
                raise AssertionError(f"{worker} reported progress on {task_id} without its lease")

    @rule(worker=st.sampled_from(WORKERS), data=st.data())
    def complete(self, worker: str, data: st.DataObject) -> None:
        task_id = data.draw(self._task_ids())
        held = self._lease_held(worker, task_id)
        try:
            self.workers[worker].complete_task(task_id, {"by": worker})
        except LeaseLostError:
            assert not held, f"{worker} lost a lease the model says it holds (task {task_id})"
        else:
            assert held, f"{worker} completed task {task_id} without holding its lease"
            m = self.model[task_id]
            m.status, m.finished_at = "completed", self.clock()
            m.lease_until = m.locked_by = m.token = None
        self.held[worker].pop(task_id, None)

    @rule(worker=st.sampled_from(WORKERS), data=st.data(), retry=st.booleans())
    def fail(self, worker: str, data: st.DataObject, retry: bool) -> None:
        task_id = data.draw(self._task_ids())
        held = self._lease_held(worker, task_id)
        now = self.clock()
        try:
            task = self.workers[worker].fail_task(task_id, "model failure", retry=retry)
        except LeaseLostError:
            assert not held, f"{worker} lost a lease the model says it holds (task {task_id})"
        else:
            assert held, f"{worker} failed task {task_id} without holding its lease"
            m = self.model[task_id]
            if retry and m.attempts < m.max_attempts:
                m.status, m.run_after, m.finished_at = "queued", now + RETRY_DELAY, None
            else:
                m.status, m.finished_at = "dead", now
            m.lease_until = m.locked_by = m.token = None
            assert task.status.value == m.status
            assert task.last_error == "model failure"
        self.held[worker].pop(task_id, None)

    @rule(seconds=st.sampled_from([0.5, 2.0, LEASE + 0.5, RETRY_DELAY]))
    def advance_clock(self, seconds: float) -> None:
        """Let time pass: beyond LEASE, every lease not renewed since has expired."""
        self.clock.advance(seconds)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(self._task_ids())
        m = self.model.get(task_id)
        try:
            task = self.client.cancel(task_id)
        except TaskStateError:
            assert m is not None
            assert m.status in ("completed", "dead", "cancelled")
            return
        except Exception as exc:
            assert m is None
            assert type(exc).__name__ == "TaskNotFoundError"
            return
        assert m is not None
        assert m.status in ("queued", "leased")
        if m.status == "queued":
            m.status, m.finished_at = "cancelled", self.clock()
        else:
            m.cancel_requested = True
            assert task.cancel_requested
        assert task.status.value == m.status

    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        task_id = data.draw(self._task_ids())
        m = self.model.get(task_id)
        try:
            task = self.client.retry(task_id)
        except TaskStateError:
            assert m is not None
            assert m.status not in ("dead", "cancelled")
            return
        except Exception as exc:
            assert m is None
            assert type(exc).__name__ == "TaskNotFoundError"
            return
        assert m is not None
        assert m.status in ("dead", "cancelled")
        m.status, m.attempts, m.run_after = "queued", 0, self.clock()
        m.finished_at, m.cancel_requested = None, False
        assert task.status.value == "queued"
        assert task.attempts == 0

    @precondition(lambda self: bool(self.model))
    @rule(older_than=st.sampled_from([0.0, 1.0, 100.0]))
    def prune(self, older_than: float) -> None:
        before = self.clock() - older_than
        newest = max(self.model)  # never pruned, so no task id is ever handed out twice
        doomed = [
            tid
            for tid, t in self.model.items()
            if t.status in ("completed", "cancelled")
            and t.finished_at is not None
            and t.finished_at < before
            and tid != newest
        ]
        assert self.client.prune(older_than) == len(doomed)
        for tid in doomed:
            del self.model[tid]

    # -- invariants ------------------------------------------------------------
    @invariant()
    def database_matches_model(self) -> None:
        counts = self.client.count_by_status()
        expected = {s: 0 for s in counts}
        for task in self.model.values():
            expected[task.status] += 1
        assert counts == expected
        stored = {t.id: t for t in self.client.list(limit=10_000)}
        assert set(stored) == set(self.model), "a task is missing or extra"
        for tid, task in stored.items():
            m = self.model[tid]
            assert task.status.value == m.status, (tid, task.status, m.status)
            assert task.attempts == m.attempts
            assert task.max_attempts == m.max_attempts
            assert task.cancel_requested == m.cancel_requested
            if m.status == "leased":
                assert task.lease_token
                assert task.lease_until is not None
                assert task.locked_by
                assert task.lease_token == m.token
                assert task.locked_by == m.locked_by
                assert task.lease_until.timestamp() == m.lease_until
            else:
                assert task.lease_token is None
                assert task.lease_until is None
                assert task.locked_by is None
            assert (task.finished_at is not None) == (m.status in ("completed", "dead", "cancelled"))
            assert task.run_after.timestamp() == m.run_after

    @invariant()
    def workers_hold_only_what_they_claimed(self) -> None:
        for name, worker in self.workers.items():
            assert set(worker.held_tasks) == set(self.held[name])


LifecycleMachine.TestCase.settings = settings(
    max_examples=sized(100, 1000),
    stateful_step_count=sized(40, 80),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycleModel = LifecycleMachine.TestCase
