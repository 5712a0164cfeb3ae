"""Integrations: the ``BackgroundTaskManager`` of web backends, on durable runs.

Move an application's in-memory background runs onto the queue database without
changing its calls::

    from prismq.queue import QueueDatabase
    from prismq.queue.integrations import BackgroundTaskManager, Run, RunRegistry

    registry = RunRegistry()
    queue = QueueDatabase("queue.db")
    task_manager = BackgroundTaskManager(registry, queue=queue)
    task_manager.start_task(run, coroutine)  # same API as the in-memory manager

See :mod:`prismq.queue.integrations.manager` for what the queue adds (durability,
visibility across processes, interrupted-run detection and re-runs), and
:mod:`prismq.queue.integrations.runs` for the run model and registry. Nothing here
imports a web framework.
"""

from __future__ import annotations

from .manager import BackgroundTaskManager, ModuleFactory
from .runs import Run, RunNotFoundError, RunRegistry, RunStatus, RunStore

__all__ = [
    "BackgroundTaskManager",
    "ModuleFactory",
    "Run",
    "RunNotFoundError",
    "RunRegistry",
    "RunStatus",
    "RunStore",
]
