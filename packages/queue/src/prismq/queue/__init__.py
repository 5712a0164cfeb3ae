"""PrismQ Queue: a durable task queue on an embedded SQLite file, or on PostgreSQL.

The public API is importable from here::

    from prismq.queue import QueueDatabase, QueueClient, QueueWorker
"""

from __future__ import annotations

from .aio import AsyncQueueClient
from .backends.base import QueueStats
from .client import QueueClient, TaskSpec
from .config import QueueConfig, default_db_path
from .database import QueueDatabase
from .errors import (
    BackendUnavailableError,
    BackupError,
    ConfigError,
    DuplicateTaskError,
    LeaseLostError,
    NotAQueueDatabaseError,
    PayloadError,
    PriorityError,
    QueueBusyError,
    QueueError,
    QueueTimeoutError,
    ReadOnlyStorageError,
    ScheduleError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
    TaskNotFoundError,
    TaskStateError,
    TaskTypeError,
    ValidationError,
)
from .flow import FlowLimit, Unique
from .models import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Task,
    TaskStatus,
    UndecodableValue,
    WorkerInfo,
)
from .retry import RetryPolicy
from .strategies import (
    FIFOStrategy,
    LIFOStrategy,
    PriorityStrategy,
    SchedulingStrategy,
    WeightedRandomStrategy,
)
from .worker import Ack, AckKind, AckResult, QueueWorker

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PRIORITY",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "Ack",
    "AckKind",
    "AckResult",
    "AsyncQueueClient",
    "BackendUnavailableError",
    "BackupError",
    "ConfigError",
    "DuplicateTaskError",
    "FIFOStrategy",
    "FlowLimit",
    "LIFOStrategy",
    "LeaseLostError",
    "NotAQueueDatabaseError",
    "PayloadError",
    "PriorityError",
    "PriorityStrategy",
    "QueueBusyError",
    "QueueClient",
    "QueueConfig",
    "QueueDatabase",
    "QueueError",
    "QueueStats",
    "QueueTimeoutError",
    "QueueWorker",
    "ReadOnlyStorageError",
    "RetryPolicy",
    "ScheduleError",
    "SchedulingStrategy",
    "SchemaVersionError",
    "StorageError",
    "StorageFullError",
    "Task",
    "TaskNotFoundError",
    "TaskSpec",
    "TaskStateError",
    "TaskStatus",
    "TaskTypeError",
    "UndecodableValue",
    "Unique",
    "ValidationError",
    "WeightedRandomStrategy",
    "WorkerInfo",
    "__version__",
    "default_db_path",
]
