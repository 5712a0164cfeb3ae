"""Storage backends: one per database, each owning all of its SQL."""

from __future__ import annotations

from .base import Backend, NewTask, QueueStats, Settlement, TaskQuery, TaskUpdate

__all__ = ["Backend", "NewTask", "QueueStats", "Settlement", "TaskQuery", "TaskUpdate"]
