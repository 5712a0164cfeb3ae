"""A FastAPI backend that starts, lists and cancels durable runs.

Run it with ``uvicorn fastapi_app:app`` (``pip install fastapi uvicorn``). Runs are
kept in the queue database (``PRISMQ_QUEUE_DB_PATH`` or ``queue.db`` here): restart the
server mid-run and the run shows up ``interrupted``, then starts again because its
module is registered and the run was marked re-runnable.

Endpoints:

- ``POST /runs`` ``{"module_id": "countdown", "parameters": {"steps": 5}}`` starts a run.
- ``GET /runs`` lists runs (filters: ``status``, ``module_id``, ``limit``).
- ``GET /runs/{run_id}`` shows one run.
- ``DELETE /runs/{run_id}`` cancels it.
- ``GET /tasks/active`` shows what this process is running.
- ``POST /jobs`` ``{"task_type": "thumbnail", "payload": {...}}`` enqueues a task for the
  queue's workers; ``GET /jobs/{task_id}`` shows it; ``DELETE /jobs/{task_id}`` cancels it.

Registry reads touch the database, so those endpoints are plain ``def``: FastAPI runs
them in its thread pool, off the event loop. Starting and cancelling go through the
manager, which never blocks the loop. The ``/jobs`` endpoints are ``async def`` and use
:class:`~prismq.queue.AsyncQueueClient`, whose calls never block the loop either.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from prismq.queue import AsyncQueueClient, QueueDatabase, TaskNotFoundError, TaskStateError, ValidationError
from prismq.queue.integrations import BackgroundTaskManager, Run, RunRegistry, RunStatus


class EnqueueJob(BaseModel):
    """The body of ``POST /jobs``."""

    task_type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int = 100
    delay: float | None = None


class StartRun(BaseModel):
    """The body of ``POST /runs``."""

    module_id: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    rerunnable: bool = True


def countdown(manager: BackgroundTaskManager) -> Callable[[Run], Awaitable[int]]:
    """A demo module: counts ``steps`` items, ``delay`` seconds each, reporting progress."""

    async def run_module(run: Run) -> int:
        steps = int(run.parameters.get("steps", 5))
        delay = float(run.parameters.get("delay", 0.1))
        for done in range(1, steps + 1):
            await asyncio.sleep(delay)
            manager.report_progress(run.run_id, done * 100 / steps, items_processed=done, items_total=steps)
        return 0

    return run_module


def create_app(db_path: str | None = None) -> FastAPI:
    """Build the app; ``db_path`` selects the queue database (a file, or a PostgreSQL URL)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue = QueueDatabase(db_path or os.environ.get("PRISMQ_QUEUE_DB_PATH") or "queue.db")
        registry = RunRegistry()
        manager = BackgroundTaskManager(registry, queue=queue)
        modules = {"countdown": countdown(manager)}
        for module_id, factory in modules.items():
            manager.register_module(module_id, factory)  # re-runs interrupted runs
        await manager.start()
        app.state.queue = AsyncQueueClient(queue)
        app.state.registry = registry
        app.state.manager = manager
        app.state.modules = modules
        try:
            yield
        finally:
            await app.state.queue.aclose()
            await manager.shutdown()
            queue.close()

    app = FastAPI(title="PrismQ runs", lifespan=lifespan)

    @app.post("/runs", status_code=202)
    async def start_run(body: StartRun, request: Request) -> dict[str, Any]:
        modules = request.app.state.modules
        if body.module_id not in modules:
            raise HTTPException(404, f"unknown module {body.module_id!r}; known: {sorted(modules)}")
        manager: BackgroundTaskManager = request.app.state.manager
        run = Run(
            run_id=str(uuid.uuid4()),
            module_id=body.module_id,
            module_name=body.module_id.title(),
            parameters=body.parameters,
            rerunnable=body.rerunnable,
        )
        manager.start_task(run, modules[body.module_id](run))
        await manager.flush()  # recorded before the reply: a GET right after finds it
        return run.to_dict()

    @app.get("/runs")
    def list_runs(
        request: Request, status: RunStatus | None = None, module_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        registry: RunRegistry = request.app.state.registry
        if status is not None:
            runs = registry.get_runs_by_status(status, limit=limit)
        elif module_id is not None:
            runs = registry.get_runs_by_module(module_id, limit=limit)
        else:
            runs = registry.get_recent_runs(limit)
        return [run.to_dict() for run in runs]

    @app.get("/runs/{run_id}")
    def get_run(run_id: str, request: Request) -> dict[str, Any]:
        # Any process sharing the database file answers the same, from the registry.
        run = request.app.state.registry.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return run.to_dict()

    @app.delete("/runs/{run_id}")
    async def cancel_run(run_id: str, request: Request) -> dict[str, Any]:
        cancelled = await request.app.state.manager.cancel_task(run_id)
        return {"run_id": run_id, "cancelled": cancelled}

    @app.get("/tasks/active")
    async def active(request: Request) -> dict[str, Any]:
        manager: BackgroundTaskManager = request.app.state.manager
        return {"count": manager.get_active_task_count(), "tasks": manager.get_active_task_ids()}

    @app.post("/jobs", status_code=202)
    async def enqueue_job(body: EnqueueJob, request: Request) -> dict[str, Any]:
        queue: AsyncQueueClient = request.app.state.queue
        try:
            task_id = await queue.enqueue(
                body.task_type, body.payload, priority=body.priority, delay=body.delay
            )
        except ValidationError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"task_id": task_id}

    @app.get("/jobs/{task_id}")
    async def get_job(task_id: int, request: Request) -> dict[str, Any]:
        try:
            task = await request.app.state.queue.get(task_id)
        except TaskNotFoundError:
            raise HTTPException(404, f"no task {task_id}") from None
        return {
            "task_id": task.id,
            "task_type": task.task_type,
            "status": task.status.value,
            "result": task.result,
        }

    @app.delete("/jobs/{task_id}")
    async def cancel_job(task_id: int, request: Request) -> dict[str, Any]:
        try:
            task = await request.app.state.queue.cancel(task_id)
        except TaskNotFoundError:
            raise HTTPException(404, f"no task {task_id}") from None
        except TaskStateError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"task_id": task.id, "status": task.status.value, "cancel_requested": task.cancel_requested}

    return app


app = create_app()
