"""``row_to_task`` fills a Task without its ``__init__``: it must match one built normally."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from prismq.queue import QueueClient, QueueDatabase, QueueWorker, RetryPolicy
from prismq.queue.backends.common import row_to_task
from prismq.queue.models import Task, TaskStatus


def _utc(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


@pytest.mark.parametrize("finished", [False, True])
def test_row_to_task_equals_the_dataclass_built_normally(finished: bool) -> None:
    now = time.time()
    row = (
        7,
        "resize",
        '{"w": 640, "tags": ["a", "b"]}',
        "completed" if finished else "leased",
        5,
        2,
        4,
        '{"base_delay": 1.5, "max_delay": 60}',
        now - 10,
        None if finished else now + 60,
        None if finished else "worker-1",
        None if finished else "0123456789abcdef",
        1,
        42.5,
        "half way",
        '{"ok": true}' if finished else None,
        "ValueError: boom",
        "Traceback ...",
        "key-7",
        now - 20,
        now - 5,
        now if finished else None,
        '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}',
    )
    built = row_to_task(row)
    expected = Task(
        id=7,
        task_type="resize",
        payload={"w": 640, "tags": ["a", "b"]},
        status=TaskStatus.COMPLETED if finished else TaskStatus.LEASED,
        priority=5,
        attempts=2,
        max_attempts=4,
        run_after=_utc(now - 10),  # type: ignore[arg-type]
        created_at=_utc(now - 20),  # type: ignore[arg-type]
        lease_until=_utc(None if finished else now + 60),
        locked_by=None if finished else "worker-1",
        lease_token=None if finished else "0123456789abcdef",
        progress=42.5,
        progress_message="half way",
        result={"ok": True} if finished else None,
        last_error="ValueError: boom",
        last_traceback="Traceback ...",
        idempotency_key="key-7",
        cancel_requested=True,
        started_at=_utc(now - 5),
        finished_at=_utc(now if finished else None),
        retry_policy={"base_delay": 1.5, "max_delay": 60},
        trace_context='{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}',
    )
    assert built == expected
    assert repr(built) == repr(expected)
    # Every dataclass field is set, and nothing else: a field added to Task must be mapped.
    assert set(vars(built)) == {f.name for f in dataclasses.fields(Task)}
    assert dataclasses.replace(built, priority=9).priority == 9
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.priority = 1  # type: ignore[misc]


def test_retry_policies_are_not_shared_between_tasks(tmp_path: Path) -> None:
    with QueueDatabase(tmp_path / "queue.db") as db:
        db.initialize_schema()
        client = QueueClient(db)
        client.enqueue("a", {}, retry_policy=RetryPolicy(base_delay=2.0))
        client.enqueue("a", {}, retry_policy=RetryPolicy(base_delay=2.0))
        first, second = QueueWorker(db, "w").claim_batch(2)
        assert first.retry_policy == second.retry_policy
        assert first.retry_policy["base_delay"] == 2.0
        first.retry_policy["base_delay"] = 99.0
        assert second.retry_policy["base_delay"] == 2.0
