"""PrismQ Queue: a durable task queue on an embedded SQLite file, or on PostgreSQL.

The public API is importable from here::

    from prismq.queue import QueueDatabase, QueueClient, QueueWorker
"""

from __future__ import annotations

from .aio import AsyncQueueClient
from .backends.base import QueueStats
from .client import Enqueued, QueueClient, TaskSpec
from .config import QueueConfig, default_db_path
from .database import QueueDatabase
from .errors import (
    BackendUnavailableError,
    BackupError,
    ConfigError,
    CronExpressionError,
    DuplicateTaskError,
    ExtraNotInstalledError,
    LeaseLostError,
    MisfirePolicyError,
    NotAQueueDatabaseError,
    PayloadError,
    PeriodicScheduleError,
    PriorityError,
    QueueBusyError,
    QueueError,
    QueueTimeoutError,
    ReadOnlyStorageError,
    ScheduleError,
    ScheduleNotFoundError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
    TaskNotFoundError,
    TaskStateError,
    TaskTypeError,
    TimeZoneError,
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
from .schedules import Schedule, ScheduleDefinition, Schedules, Tick
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
    "CronExpressionError",
    "DuplicateTaskError",
    "Enqueued",
    "ExtraNotInstalledError",
    "FIFOStrategy",
    "FlowLimit",
    "LIFOStrategy",
    "LeaseLostError",
    "MisfirePolicyError",
    "NotAQueueDatabaseError",
    "PayloadError",
    "PeriodicScheduleError",
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
    "Schedule",
    "ScheduleDefinition",
    "ScheduleError",
    "ScheduleNotFoundError",
    "Schedules",
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
    "Tick",
    "TimeZoneError",
    "UndecodableValue",
    "Unique",
    "ValidationError",
    "WeightedRandomStrategy",
    "WorkerInfo",
    "__version__",
    "default_db_path",
]
