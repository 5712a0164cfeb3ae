"""The FastAPI example app starts, lists and cancels runs through the manager."""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from prismq.queue import QueueClient, QueueDatabase

# The example's own dependencies (FastAPI, and httpx for its TestClient) are not the
# library's; the test session installs them.
pytest.importorskip("fastapi", reason="the FastAPI example needs fastapi (test extra)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (test extra)")
with warnings.catch_warnings():
    # Newer Starlette releases warn that their test client will move off httpx.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
    from fastapi.testclient import TestClient

EXAMPLE = Path(__file__).resolve().parents[2] / "_meta" / "docs" / "queue" / "examples" / "fastapi_app.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prismq_fastapi_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="queue-sqlite"),
        pytest.param("postgresql", id="queue-postgresql", marks=pytest.mark.postgres),
    ]
)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What the app is given to open: an SQLite path, or a PostgreSQL URL with its schema."""
    if request.param == "sqlite":
        return str(tmp_path / "api.db")
    url, schema = request.getfixturevalue("postgres_schema")
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


@pytest.fixture
def api(database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, str]]:
    monkeypatch.chdir(tmp_path)  # the module-level app would default to ./queue.db
    example = load_example()
    with TestClient(example.create_app(database)) as client:
        yield client, database


def wait_for(client: TestClient, run_id: str, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/runs/{run_id}")
        assert response.status_code == 200, response.text  # recorded before POST replied
        body = response.json()
        if predicate(body):
            return body
        assert time.monotonic() < deadline, f"run never reached the expected state: {body}"
        time.sleep(0.02)


def test_example_does_not_leak_fastapi_into_the_library() -> None:
    import prismq.queue.integrations as integrations

    source = Path(integrations.__file__).parent
    for module in source.glob("*.py"):
        assert "fastapi" not in module.read_text(encoding="utf-8").lower(), module.name


def test_start_list_and_complete_a_run(api: tuple[TestClient, str]) -> None:
    client, database = api
    response = client.post(
        "/runs", json={"module_id": "countdown", "parameters": {"steps": 3, "delay": 0.01}}
    )
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    done = wait_for(client, run_id, lambda b: b["status"] == "completed")
    assert done["progress_percent"] == 100.0
    assert (done["items_processed"], done["items_total"]) == (3, 3)
    assert done["started_at"]
    assert done["completed_at"]
    assert done["duration"] is not None

    listed = client.get("/runs").json()
    assert [r["run_id"] for r in listed] == [run_id]
    assert client.get("/runs", params={"status": "completed"}).json()[0]["run_id"] == run_id
    assert client.get("/runs", params={"module_id": "nothing"}).json() == []
    with QueueDatabase(database) as db:
        assert QueueClient(db).count_by_type()["prismq.run:countdown"] == {"completed": 1}


def test_cancel_a_running_run(api: tuple[TestClient, str]) -> None:
    client, _ = api
    run_id = client.post(
        "/runs", json={"module_id": "countdown", "parameters": {"steps": 1000, "delay": 0.05}}
    ).json()["run_id"]
    wait_for(client, run_id, lambda b: b["status"] == "running" and b["items_processed"])
    assert client.get("/tasks/active").json() == {"count": 1, "tasks": [run_id]}
    assert client.delete(f"/runs/{run_id}").json() == {"run_id": run_id, "cancelled": True}
    cancelled = client.get(f"/runs/{run_id}").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["completed_at"] is not None
    assert client.get("/tasks/active").json() == {"count": 0, "tasks": []}
    assert client.delete(f"/runs/{run_id}").json()["cancelled"] is False


def test_unknown_module_and_run_are_404(api: tuple[TestClient, str]) -> None:
    client, _ = api
    assert client.post("/runs", json={"module_id": "nope"}).status_code == 404
    assert client.get("/runs/missing").status_code == 404


def test_restart_reruns_an_interrupted_rerunnable_run(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    example = load_example()
    with TestClient(example.create_app(database)) as client:
        run_id = client.post(
            "/runs", json={"module_id": "countdown", "parameters": {"steps": 4, "delay": 0.2}}
        ).json()["run_id"]
        wait_for(client, run_id, lambda b: b["status"] == "running")
    # Leaving the block shut the server down mid-run: the run was interrupted.
    with TestClient(example.create_app(database)) as client:
        done = wait_for(client, run_id, lambda b: b["status"] == "completed")
        assert done["attempts"] == 2


def test_jobs_go_through_the_async_client(api: tuple[TestClient, str]) -> None:
    client, database = api
    response = client.post("/jobs", json={"task_type": "thumbnail", "payload": {"image": 7}, "priority": 5})
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert client.get(f"/jobs/{task_id}").json() == {
        "task_id": task_id,
        "task_type": "thumbnail",
        "status": "queued",
        "result": None,
    }
    with QueueDatabase(database) as db:
        task = QueueClient(db).get(task_id)
        assert (task.priority, task.payload) == (5, {"image": 7})
    assert client.post("/jobs", json={"task_type": "", "payload": {}}).status_code == 422
    assert client.post("/jobs", json={"task_type": "x", "priority": 5000}).status_code == 422
    assert client.delete(f"/jobs/{task_id}").json() == {
        "task_id": task_id,
        "status": "cancelled",
        "cancel_requested": False,
    }
    assert client.delete(f"/jobs/{task_id}").status_code == 409
    assert client.get(f"/jobs/{task_id + 1000}").status_code == 404
    assert client.delete(f"/jobs/{task_id + 1000}").status_code == 404
