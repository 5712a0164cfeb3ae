"""Log records that always say which worker, task, type and attempt they are about."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from ..models import Task

__all__ = ["TASK_LOG_FORMAT", "configure_logging", "task_logger", "worker_logger"]

logger = logging.getLogger("prismq.queue.runtime")

TASK_LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [worker=%(worker_id)s task=%(task_id)s "
    "type=%(task_type)s attempt=%(attempt)s] %(message)s"
)
"""A format string that shows the fields every runtime record carries."""


class _ContextAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def worker_logger(worker_id: str) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger for records about the worker itself (task fields are ``-``)."""
    return _ContextAdapter(logger, {"worker_id": worker_id, "task_id": "-", "task_type": "-", "attempt": "-"})


def task_logger(worker_id: str, task: Task) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger for records about one task attempt."""
    return _ContextAdapter(
        logger,
        {"worker_id": worker_id, "task_id": task.id, "task_type": task.task_type, "attempt": task.attempts},
    )


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr with :data:`TASK_LOG_FORMAT` (records without task fields show ``-``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter(
            TASK_LOG_FORMAT, defaults={"worker_id": "-", "task_id": "-", "task_type": "-", "attempt": "-"}
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
