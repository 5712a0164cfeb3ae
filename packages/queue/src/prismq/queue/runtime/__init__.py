"""The worker runtime: handler registry, worker loop, idle wake-up, supervisor.

```python
from prismq.queue.runtime import HandlerRegistry, TaskContext

registry = HandlerRegistry()

@registry.handler("video_processing")
def process_video(ctx: TaskContext) -> dict:
    ctx.report_progress(50, "half way")
    return {"video_id": ctx.payload["video_id"]}
```
"""

from __future__ import annotations

from .context import TaskCancelled, TaskContext, TaskFailed
from .observer import (
    EnqueueObservation,
    EnqueueObserver,
    MultiObserver,
    TaskObservation,
    TaskObserver,
    TaskOutcome,
)
from .registry import Handler, HandlerRegistry
from .runner import RunSummary, TaskTimeoutError, WorkerRunner, run_worker

__all__ = [
    "EnqueueObservation",
    "EnqueueObserver",
    "Handler",
    "HandlerRegistry",
    "MultiObserver",
    "RunSummary",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskObservation",
    "TaskObserver",
    "TaskOutcome",
    "TaskTimeoutError",
    "WorkerRunner",
    "run_worker",
]
