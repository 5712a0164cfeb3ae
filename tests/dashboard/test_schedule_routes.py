"""The dashboard's schedules page and its actions, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging

import pytest
from dashboard_support import csrf_of, open_client

from prismq.queue import QueueClient, QueueDatabase
from prismq.queue.dashboard import create_app


@pytest.fixture
def scheduled(db: QueueDatabase) -> QueueClient:
    """Two schedules: ``nightly`` (Prague, skip) and ``cleanup`` (UTC, paused)."""
    client = QueueClient(db)
    client.schedules.add(
        "nightly", "30 2 * * *", "report", {"kind": "daily"}, timezone="Europe/Prague", misfire="skip"
    )
    client.schedules.add("cleanup", "*/5 * * * *", "cleanup")
    client.schedules.pause("cleanup")
    return client


def test_schedules_page_lists_every_schedule(http, scheduled: QueueClient) -> None:
    task_id = scheduled.schedules.run_now("nightly")
    nightly = scheduled.schedules.get("nightly")
    response = http.get("/schedules")
    assert response.status_code == 200
    page = response.text
    assert 'href="/schedules" aria-current="page"' in page
    for text in ("nightly", "30 2 * * *", "Europe/Prague", "skip", "cleanup", "*/5 * * * *", "run_once"):
        assert text in page, text
    assert 'href="/tasks?type=report"' in page
    assert f'href="/tasks/{task_id}"' in page  # the last task it enqueued
    assert nightly.next_run.strftime("%Y-%m-%d %H:%M:%S") in page
    assert page.count(">paused<") == 1
    assert page.count(">Resume<") == 1  # cleanup
    assert page.count(">Pause<") == 1  # nightly
    assert page.count(">Run now<") == 2
    assert 'data-confirm="Run schedule nightly now?' in page


def test_schedules_page_without_schedules(http) -> None:
    page = http.get("/schedules").text
    assert "No schedule is defined." in page
    assert 'method="post"' not in page


def test_pause_resume_and_run_a_schedule(http, scheduled: QueueClient, caplog) -> None:
    token = csrf_of(http, "/schedules")
    with caplog.at_level(logging.INFO, logger="prismq.queue.dashboard"):
        paused = http.post(
            "/schedules/pause", data={"csrf": token, "name": "nightly"}, follow_redirects=False
        )
        assert paused.status_code == 303
        assert paused.headers["location"] == "/schedules?notice=nightly%3A+paused"
        assert scheduled.schedules.get("nightly").paused
        resumed = http.post(
            "/schedules/resume", data={"csrf": token, "name": "cleanup"}, follow_redirects=False
        )
        assert resumed.status_code == 303
        assert not scheduled.schedules.get("cleanup").paused
        ran = http.post("/schedules/run", data={"csrf": token, "name": "nightly"})
    assert ran.status_code == 200
    task_id = scheduled.schedules.get("nightly").last_task_id
    assert task_id is not None
    assert f"nightly: enqueued task {task_id}" in ran.text  # the notice, on the schedules page
    task = scheduled.get(task_id)
    assert (task.task_type, task.payload, task.status.value) == ("report", {"kind": "daily"}, "queued")
    assert "dashboard: pause schedule 'nightly' (from " in caplog.text
    assert "dashboard: resume schedule 'cleanup' (from " in caplog.text
    assert f"dashboard: run schedule 'nightly' now: task {task_id} (from " in caplog.text


def test_schedule_actions_refuse_bad_requests(http, scheduled: QueueClient) -> None:
    assert http.post("/schedules/pause", data={"name": "nightly"}).status_code == 403
    assert http.post("/schedules/run", data={"csrf": "forged", "name": "nightly"}).status_code == 403
    token = csrf_of(http, "/schedules")
    cross = http.post(
        "/schedules/pause", data={"csrf": token, "name": "nightly"}, headers={"Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    missing = http.post("/schedules/run", data={"csrf": token, "name": "nope"})
    assert missing.status_code == 404
    assert "no schedule named &#39;nope&#39;" in missing.text
    assert http.post("/schedules/remove", data={"csrf": token, "name": "nightly"}).status_code == 404
    assert http.get("/schedules/pause").status_code == 405
    assert not scheduled.schedules.get("nightly").paused
    assert scheduled.schedules.get("nightly").last_task_id is None
    assert scheduled.count_by_type() == {}


def test_read_only_shows_schedules_without_actions(db: QueueDatabase, scheduled: QueueClient) -> None:
    with open_client(create_app(db, read_only=True)) as http:
        page = http.get("/schedules").text
        assert "nightly" in page
        assert 'method="post"' not in page
        refused = http.post("/schedules/run", data={"csrf": "x", "name": "nightly"})
        assert refused.status_code == 403
        assert "read-only" in refused.text
        assert http.post("/schedules/resume", data={"name": "cleanup"}).status_code == 403
    assert scheduled.schedules.get("cleanup").paused
    assert scheduled.count_by_type() == {}


def test_schedules_page_under_a_prefix(db: QueueDatabase, scheduled: QueueClient) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/ops/queue", app=create_app(db))])
    with open_client(outer) as http:
        page = http.get("/ops/queue/schedules").text
        assert 'action="/ops/queue/schedules/pause"' in page
        token = csrf_of(http, "/ops/queue/schedules")
        response = http.post(
            "/ops/queue/schedules/pause", data={"csrf": token, "name": "nightly"}, follow_redirects=False
        )
        assert response.headers["location"].startswith("/ops/queue/schedules?")
    assert scheduled.schedules.get("nightly").paused
