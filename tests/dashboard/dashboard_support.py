"""Helpers for the dashboard's route tests: a queue with tasks in every state, a test client."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import pytest

pytest.importorskip("starlette", reason="the dashboard tests need the dashboard extra")

from prismq.queue import QueueClient, QueueDatabase, QueueWorker

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette suggests another HTTP client for its TestClient
    from starlette.testclient import TestClient


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Seeded:
    """Ids of the tasks the ``seeded`` fixture made, by state."""

    queued: list[int]
    running: int
    completed: int
    dead: int


def seed(db: QueueDatabase) -> Seeded:
    client = QueueClient(db)
    queued = client.enqueue_many(
        [
            {"task_type": "email", "payload": {"to": f"u{i}@example.com", "password": "hunter2"}}
            for i in range(3)
        ]
    )
    running_id, completed_id, dead_id = client.enqueue_many(
        [
            {"task_type": "report", "payload": {"month": 1}},
            {"task_type": "report", "payload": {"month": 2}},
            {"task_type": "thumbnail", "payload": {"image": "cat.png"}, "max_attempts": 1},
        ]
    )
    worker = QueueWorker(db, "worker-1", task_types=["report", "thumbnail"])
    for task in worker.claim_batch(3):
        if task.id == completed_id:
            worker.complete_task(task, {"rows": 42, "token": "abc"})
        elif task.id == dead_id:
            try:
                raise RuntimeError("image decoder crashed")
            except RuntimeError as exc:
                worker.fail_task(task, exc, retry=False)
    return Seeded(queued, running_id, completed_id, dead_id)


def open_client(app: object, **kwargs: object) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1:8765", **kwargs)  # type: ignore[arg-type]


def csrf_of(http: TestClient, path: str = "/tasks") -> str:
    """The CSRF token a page's forms carry (the page sets the matching cookie)."""
    match = CSRF.search(http.get(path).text)
    assert match, f"no action form on {path}"
    return match.group(1)
