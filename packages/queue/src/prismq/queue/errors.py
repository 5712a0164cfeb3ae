"""The exception hierarchy of PrismQ Queue.

Every error the library raises on purpose derives from :class:`QueueError`, so one
``except QueueError`` catches them all. Each subclass names one kind of failure, and its
message says what was wrong and how to fix it.

```
QueueError
├── ValidationError
│   ├── PayloadError
│   ├── TaskTypeError
│   ├── PriorityError
│   ├── ScheduleError
│   └── PeriodicScheduleError
│       ├── CronExpressionError
│       ├── TimeZoneError
│       └── MisfirePolicyError
├── ConfigError
│   └── ExtraNotInstalledError
├── QueueBusyError
├── LeaseLostError
├── TaskNotFoundError
├── ScheduleNotFoundError
├── TaskStateError
├── DuplicateTaskError
├── QueueTimeoutError
├── StorageError
│   ├── SchemaVersionError
│   ├── NotAQueueDatabaseError
│   ├── StorageFullError
│   ├── ReadOnlyStorageError
│   ├── BackupError
│   ├── BackendUnavailableError
│   └── MigrationError          in prismq.queue.migrate
├── RunNotFoundError            in prismq.queue.integrations.runs
├── TaskCancelled               in prismq.queue.runtime.context
├── TaskFailed                  in prismq.queue.runtime.context
├── TaskTimeoutError            in prismq.queue.runtime.runner
└── HandlerError                in prismq.queue.testing
```
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "BackupError",
    "ConfigError",
    "CronExpressionError",
    "DuplicateTaskError",
    "ExtraNotInstalledError",
    "LeaseLostError",
    "MisfirePolicyError",
    "NotAQueueDatabaseError",
    "PayloadError",
    "PeriodicScheduleError",
    "PriorityError",
    "QueueBusyError",
    "QueueError",
    "QueueTimeoutError",
    "ReadOnlyStorageError",
    "ScheduleError",
    "ScheduleNotFoundError",
    "SchemaVersionError",
    "StorageError",
    "StorageFullError",
    "TaskNotFoundError",
    "TaskStateError",
    "TaskTypeError",
    "TimeZoneError",
    "ValidationError",
]


class QueueError(Exception):
    """Root of every error PrismQ Queue raises on purpose."""


class ValidationError(QueueError, ValueError):
    """An argument was rejected before anything was written."""


class PayloadError(ValidationError):
    """A payload or result is not JSON-serialisable, or is larger than the limit."""


class TaskTypeError(ValidationError):
    """A task type is empty, too long, or not a string."""


class PriorityError(ValidationError):
    """A priority is not an integer inside the documented range."""


class ScheduleError(ValidationError):
    """A delay, ``run_after``, lease or attempt count is out of range or contradictory."""


class PeriodicScheduleError(ValidationError):
    """A periodic schedule's definition (cron, time zone, misfire policy, name) was refused."""


class CronExpressionError(PeriodicScheduleError):
    """A cron expression does not parse (wrong field count, a value out of range)."""


class TimeZoneError(PeriodicScheduleError):
    """A time zone is not a known IANA name (such as ``Europe/Prague`` or ``UTC``)."""


class MisfirePolicyError(PeriodicScheduleError):
    """A misfire policy is unknown, or its backfill count or grace period is out of range."""


class ConfigError(QueueError):
    """A setting (argument, environment variable or config file) is malformed."""


class ExtraNotInstalledError(ConfigError, ImportError):
    """An optional feature was asked for without its extra (``pip install "prismq-queue[...]"``).

    Raised when a module that needs the extra is imported; also an ``ImportError``, so code
    that guards an optional import with ``except ImportError`` handles it as usual.
    """


class QueueBusyError(QueueError):
    """The database stayed locked by other writers past the bounded retry."""


class LeaseLostError(QueueError):
    """This worker no longer holds the lease on the task, so it may not change it.

    Raised when the lease expired and the task was reclaimed (and perhaps claimed by
    another worker), or when the task was never claimed by this worker.
    """


class TaskNotFoundError(QueueError, LookupError):
    """No task has the given id."""


class ScheduleNotFoundError(QueueError, LookupError):
    """No periodic schedule has the given name."""


class TaskStateError(QueueError):
    """The task exists but its status does not allow the requested operation."""


class DuplicateTaskError(QueueError):
    """An enqueue made unique (``on_duplicate="raise"``) found an equal pending task.

    Attributes:
        existing_id: The id of the equal task.
    """

    def __init__(self, message: str, existing_id: int) -> None:
        super().__init__(message)
        self.existing_id = existing_id


class QueueTimeoutError(QueueError, TimeoutError):
    """Waiting for a task ran out of time."""


class StorageError(QueueError):
    """The storage layer refused an operation."""


class SchemaVersionError(StorageError):
    """The database was written by a newer version of PrismQ Queue."""


class NotAQueueDatabaseError(StorageError):
    """The file is not SQLite, or is an SQLite database that holds something else."""


class StorageFullError(StorageError):
    """The disk is full or the database reached its configured maximum size."""


class ReadOnlyStorageError(StorageError):
    """The database file or its directory cannot be written."""


class BackupError(StorageError):
    """A backup or a restore could not be made safely; nothing was replaced."""


class BackendUnavailableError(StorageError):
    """The backend's driver is not installed or its server cannot be reached."""
