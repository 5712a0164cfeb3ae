"""The dashboard's pages and actions through its ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest
from dashboard_support import Seeded, csrf_of, open_client

from prismq.queue import ConfigError, QueueClient, QueueDatabase, QueueWorker
from prismq.queue.dashboard import create_app, mask_fields

PAGES = ["/", "/types", "/tasks", "/workers", "/tasks?status=dead", "/tasks?status=queued&type=email"]


def test_every_page_renders_the_queue(http, seeded: Seeded) -> None:
    for path in PAGES:
        response = http.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "report" in http.get("/types").text
    tasks = http.get("/tasks").text
    assert all(f'href="/tasks/{i}"' in tasks for i in [*seeded.queued, seeded.dead])
    dead_page = http.get("/tasks?status=dead").text
    assert f'href="/tasks/{seeded.dead}"' in dead_page
    assert f'href="/tasks/{seeded.queued[0]}"' not in dead_page
    workers = http.get("/workers").text
    assert "worker-1" in workers
    assert "alive" in workers
    assert f'href="/tasks/{seeded.running}"' in workers  # its current task


def test_task_detail_shows_everything_about_a_task(http, seeded: Seeded) -> None:
    dead = http.get(f"/tasks/{seeded.dead}").text
    assert "image decoder crashed" in dead
    assert "Traceback" in dead
    assert "RuntimeError" in dead
    assert "cat.png" in dead
    running = http.get(f"/tasks/{seeded.running}").text
    assert "worker-1 until" in running  # the lease holder
    completed = http.get(f"/tasks/{seeded.completed}").text
    assert "&#34;rows&#34;: 42" in completed or '"rows": 42' in completed
    assert http.get("/tasks/999999").status_code == 404


def test_text_and_time_filters(http, seeded: Seeded) -> None:
    found = http.get("/tasks", params={"q": "decoder"}).text
    assert f'href="/tasks/{seeded.dead}"' in found
    assert f'href="/tasks/{seeded.queued[0]}"' not in found
    future = http.get("/tasks", params={"since": "2999-01-01T00:00"}).text
    assert "No task matches." in future
    assert http.get("/tasks", params={"since": "yesterday"}).status_code == 400
    assert http.get("/tasks", params={"status": "sleeping"}).status_code == 400
    assert http.get("/tasks", params={"cursor": "[1, 2, 3, 4]"}).status_code == 400


def test_pages_follow_the_keyset_cursor(db: QueueDatabase) -> None:
    ids = QueueClient(db).enqueue_many([{"task_type": "bulk", "payload": {"n": n}} for n in range(120)])
    seen: list[int] = []
    with open_client(create_app(db)) as http:
        path = "/tasks?status=queued"
        while path:
            text = http.get(path).text
            seen += [i for i in ids if f'href="/tasks/{i}"' in text]
            marker = 'rel="next"'
            if marker not in text:
                break
            href = text[: text.index(marker)].rsplit('href="', 1)[1].split('"', 1)[0]
            path = href.replace("&amp;", "&")
    assert sorted(seen) == ids


def test_retry_a_dead_task_from_its_page(db: QueueDatabase, http, seeded: Seeded, caplog) -> None:
    token = csrf_of(http, f"/tasks/{seeded.dead}")
    with caplog.at_level(logging.INFO, logger="prismq.queue.dashboard"):
        response = http.post(f"/tasks/{seeded.dead}/retry", data={"csrf": token}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith(f"/tasks/{seeded.dead}?notice=")
    assert QueueClient(db).get(seeded.dead).status.value == "queued"
    assert f"dashboard: retry task {seeded.dead}" in caplog.text
    # Retrying again is refused with the reason (it is queued now).
    again = http.post(f"/tasks/{seeded.dead}/retry", data={"csrf": token})
    assert again.status_code == 409
    assert "only dead or cancelled" in again.text


def test_cancel_and_delete(db: QueueDatabase, http, seeded: Seeded) -> None:
    client = QueueClient(db)
    token = csrf_of(http)
    assert http.post(f"/tasks/{seeded.queued[0]}/cancel", data={"csrf": token}).status_code == 200
    assert client.get(seeded.queued[0]).status.value == "cancelled"
    assert http.post(f"/tasks/{seeded.queued[0]}/delete", data={"csrf": token}).status_code == 200
    assert client.list(task_type="email", limit=10)[-1].id == seeded.queued[1]
    refused = http.post(f"/tasks/{seeded.running}/delete", data={"csrf": token})
    assert refused.status_code == 409
    assert "cancel it first" in refused.text
    assert http.post(f"/tasks/{seeded.queued[1]}/explode", data={"csrf": token}).status_code == 404


def test_actions_need_the_csrf_token_and_the_same_origin(db: QueueDatabase, http, seeded: Seeded) -> None:
    url = f"/tasks/{seeded.dead}/retry"
    assert http.post(url, data={}).status_code == 403
    assert http.post(url, data={"csrf": "forged"}).status_code == 403
    token = csrf_of(http)
    cross = http.post(url, data={"csrf": token}, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    assert http.get(url).status_code == 405
    assert QueueClient(db).get(seeded.dead).status.value == "dead"


def test_bulk_retry_and_cancel_of_a_filter(db: QueueDatabase, http, seeded: Seeded) -> None:
    client = QueueClient(db)
    worker = QueueWorker(db, "w2", task_types=["email"])
    for task in worker.claim_batch(3):
        worker.fail_task(task, "smtp down", retry=False)
    token = csrf_of(http)
    form = {"csrf": token, "status": "dead", "q": "smtp"}
    response = http.post("/tasks/bulk/retry", data=form, follow_redirects=False)
    assert response.status_code == 303
    assert "3+tasks" in response.headers["location"]
    assert client.count_by_type()["email"] == {"queued": 3}
    assert client.get(seeded.dead).status.value == "dead"  # not matched by the text
    response = http.post("/tasks/bulk/cancel", data={"csrf": token, "type": "email"}, follow_redirects=False)
    assert response.status_code == 303
    assert client.count_by_type()["email"] == {"cancelled": 3}
    bad = http.post("/tasks/bulk/retry", data={"csrf": token, "status": "queued"})
    assert bad.status_code == 400
    assert "retry applies to dead, cancelled" in bad.text


def test_pause_and_resume_a_task_type(db: QueueDatabase, http, seeded: Seeded) -> None:
    client = QueueClient(db)
    token = csrf_of(http, "/types")
    http.post("/types/pause", data={"csrf": token, "task_type": "email"})
    assert set(client.paused()) == {"email"}
    page = http.get("/types").text
    assert "paused" in page
    assert "Resume" in page
    assert QueueWorker(db, "w", task_types=["email"]).claim_batch(5) == []
    http.post("/types/resume", data={"csrf": token, "task_type": "email"})
    assert client.paused() == {}
    assert http.post("/types/pause", data={"csrf": token, "task_type": ""}).status_code == 400


def test_read_only_hides_and_refuses_every_action(db: QueueDatabase, seeded: Seeded) -> None:
    with open_client(create_app(db, read_only=True)) as http:
        for path in [*PAGES, f"/tasks/{seeded.dead}"]:
            text = http.get(path).text
            assert 'method="post"' not in text, path
        assert "read-only" in http.get("/").text
        refused = http.post(f"/tasks/{seeded.dead}/retry", data={"csrf": "x"})
        assert refused.status_code == 403
        assert "read-only" in refused.text
        assert http.post("/types/pause", data={"task_type": "email"}).status_code == 403
    assert QueueClient(db).get(seeded.dead).status.value == "dead"
    assert QueueClient(db).paused() == {}


def test_token_guards_every_page(db: QueueDatabase, seeded: Seeded) -> None:
    app = create_app(db, token="s3cret-token")
    with open_client(app) as http:
        assert http.get("/").status_code == 401
        assert http.get("/tasks", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert http.get("/tasks", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert http.get("/static/dashboard.css").status_code == 200  # assets carry no data
        login = http.get("/tasks?status=dead&token=s3cret-token", follow_redirects=False)
        assert login.status_code == 303
        assert login.headers["location"] == "/tasks?status=dead"
        assert http.get("/tasks?status=dead").status_code == 200  # the cookie now
    with pytest.raises(ConfigError):
        create_app(db, token="short")
    with pytest.raises(ConfigError):
        create_app(db, token="long-enough", basic_auth=("a", "b"))


def test_basic_auth_guards_every_page(db: QueueDatabase, seeded: Seeded) -> None:
    with open_client(create_app(db, basic_auth=("ops", "pa55word"))) as http:
        denied = http.get("/")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith("Basic")
        good = base64.b64encode(b"ops:pa55word").decode()
        bad = base64.b64encode(b"ops:nope").decode()
        assert http.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 401
        assert http.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
        assert http.get("/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    with pytest.raises(ConfigError):
        create_app(db, basic_auth=("a:b", "c"))


def test_mask_hides_sensitive_fields(db: QueueDatabase, seeded: Seeded) -> None:
    with open_client(create_app(db, mask=mask_fields(["password", "token"]))) as http:
        detail = http.get(f"/tasks/{seeded.queued[0]}").text
        assert "hunter2" not in detail
        assert "***" in detail
        assert "u0@example.com" in detail
        assert "hunter2" not in http.get("/tasks").text
        assert "abc" not in http.get(f"/tasks/{seeded.completed}").text.split("<h2>Result</h2>")[1]
    with open_client(create_app(db)) as http:
        assert "hunter2" in http.get(f"/tasks/{seeded.queued[0]}").text


def test_overview_data_feeds_the_charts(http, seeded: Seeded) -> None:
    data = http.get("/api/overview.json").json()
    assert len(data["times"]) == len(data["completed"]) == len(data["failed"]) == 60
    assert sum(data["completed"]) == 1
    assert sum(data["failed"]) == 1
    assert data["depth"] == {"queued": 3, "leased": 1}
    counts = http.get("/fragments/counts").text
    assert 'id="counts"' in counts
    assert "<html" not in counts


def test_metrics_route(http) -> None:
    response = http.get("/metrics")
    try:
        import prismq.queue.observability.metrics  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        assert response.status_code == 404
        assert "not available" in response.text
    else:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")


def test_stale_workers_are_marked(db: QueueDatabase, seeded: Seeded) -> None:
    with open_client(create_app(db, stale_after=0.000001)) as http:
        assert "stale" in http.get("/workers").text.split("<tbody>")[1]
    with pytest.raises(ConfigError):
        create_app(db, stale_after=0)


def test_mounted_under_a_prefix(db: QueueDatabase, seeded: Seeded) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/queue", app=create_app(db))])
    with open_client(outer) as http:
        page = http.get("/queue/tasks").text
        assert 'href="/queue/static/dashboard.css"' in page
        assert f'href="/queue/tasks/{seeded.dead}"' in page
        token = csrf_of(http, "/queue/tasks")
        response = http.post(
            f"/queue/tasks/{seeded.dead}/retry", data={"csrf": token}, follow_redirects=False
        )
        assert response.headers["location"].startswith(f"/queue/tasks/{seeded.dead}")
    assert json.loads(json.dumps(QueueClient(db).get(seeded.dead).status.value)) == "queued"


def test_overview_statistics_are_reused_while_young(db: QueueDatabase, monkeypatch) -> None:
    """A costly statistics read is reused for ten times its cost, then read again."""
    calls: list[float] = []
    real = QueueClient.stats

    def slow_stats(self: QueueClient):
        started = time.monotonic()
        time.sleep(0.05)  # as if the table were large
        stats = real(self)
        calls.append(time.monotonic() - started)
        return stats

    monkeypatch.setattr(QueueClient, "stats", slow_stats)
    with open_client(create_app(db)) as http:
        for _ in range(3):
            assert http.get("/fragments/counts").status_code == 200
        assert len(calls) == 1
        # Past ten times the cost (as measured here: a loaded machine makes it longer).
        time.sleep(10 * calls[0] + 0.1)
        http.get("/")
        assert len(calls) == 2


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "https://evil.example/"])
def test_actions_redirect_only_within_the_dashboard(
    db: QueueDatabase, http, seeded: Seeded, target: str
) -> None:
    token = csrf_of(http)
    response = http.post(
        f"/tasks/{seeded.dead}/retry", params={"next": target}, data={"csrf": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith(f"/tasks/{seeded.dead}?")
