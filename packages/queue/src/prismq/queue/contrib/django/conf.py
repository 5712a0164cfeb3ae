"""The queue's settings, read from ``django.conf.settings``.

``PRISMQ_QUEUE_DATABASE``: a path or a ``postgresql://`` URL (default: the queue's own
default, ``PRISMQ_QUEUE_DB_PATH`` or the platform's data folder).
``PRISMQ_QUEUE_HANDLERS``: ``"module:attribute"`` of a ``TaskRegistry`` or
``HandlerRegistry``, for ``manage.py prismq_worker``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ...client import QueueClient
from ...database import QueueDatabase
from ...errors import ConfigError

__all__ = ["database_target", "get_client", "get_database", "handlers_reference"]

_lock = threading.Lock()
_opened: dict[str, QueueDatabase] = {}


def _setting(name: str) -> Any:
    # Read at call time: the settings object is only usable once Django is configured.
    from django.conf import settings

    return getattr(settings, name, None)


def database_target() -> str | None:
    """``PRISMQ_QUEUE_DATABASE`` as a string, or ``None`` when it is not set.

    Raises:
        ConfigError: The setting is neither a path nor a string.
    """
    value = _setting("PRISMQ_QUEUE_DATABASE")
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(
            f"PRISMQ_QUEUE_DATABASE must be a path or a postgresql:// URL, got {type(value).__name__}"
        )
    return os.fspath(value)


def handlers_reference() -> str:
    """``PRISMQ_QUEUE_HANDLERS``: where the worker finds its handlers.

    Raises:
        ConfigError: The setting is missing or not a ``"module:attribute"`` string.
    """
    value = _setting("PRISMQ_QUEUE_HANDLERS")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            "set PRISMQ_QUEUE_HANDLERS in the Django settings to the 'module:attribute' of a "
            "TaskRegistry or HandlerRegistry, e.g. 'shop.tasks:tasks'"
        )
    return value.strip()


def get_database() -> QueueDatabase:
    """The process's queue database from the settings, opened (and its schema created) once."""
    target = database_target()
    key = target or ""
    with _lock:
        db = _opened.get(key)
        if db is None:
            db = QueueDatabase(target)
            db.initialize_schema()
            _opened[key] = db
        return db


def get_client(**options: Any) -> QueueClient:
    """A :class:`~prismq.queue.QueueClient` of :func:`get_database`; options go to its constructor."""
    return QueueClient(get_database(), **options)


def close_all() -> None:
    """Close the databases :func:`get_database` opened (tests and shutdown)."""
    with _lock:
        for db in _opened.values():
            db.close()
        _opened.clear()
