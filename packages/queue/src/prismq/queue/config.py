"""Settings read from the environment, in one object.

| Variable | Meaning | Default |
| --- | --- | --- |
| ``PRISMQ_QUEUE_DB_PATH`` | Database file path or ``postgresql://`` URL | see :func:`default_db_path` |
| ``PRISMQ_QUEUE_WORKER_ID`` | This worker's id | ``<hostname>-<pid>`` |
| ``PRISMQ_QUEUE_LEASE_DURATION`` | Lease length in seconds | ``60`` |
| ``PRISMQ_QUEUE_MAX_WORKERS`` | Worker processes ``prismq-queue worker`` runs | ``1`` |

``PRISMQ_QUEUE_MAX_WORKERS`` is the default of ``worker --processes`` and of the supervisor;
the flag or a ``processes`` key in the worker config file wins over it.
"""

from __future__ import annotations

import math
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "DEFAULT_LEASE_DURATION",
    "ENV_DB_PATH",
    "ENV_LEASE_DURATION",
    "ENV_MAX_WORKERS",
    "ENV_WORKER_ID",
    "QueueConfig",
    "default_db_path",
    "default_worker_id",
    "env_max_workers",
    "settings_from_env",
]

ENV_DB_PATH = "PRISMQ_QUEUE_DB_PATH"
ENV_WORKER_ID = "PRISMQ_QUEUE_WORKER_ID"
ENV_LEASE_DURATION = "PRISMQ_QUEUE_LEASE_DURATION"
ENV_MAX_WORKERS = "PRISMQ_QUEUE_MAX_WORKERS"

DEFAULT_LEASE_DURATION = 60.0
"""Seconds a claim is leased for before another worker may take the task over."""

WINDOWS_DEFAULT_DB_PATH = r"C:\Data\PrismQ\queue\queue.db"


def default_db_path(platform: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    r"""Where the database lives when no path is given.

    ``PRISMQ_QUEUE_DB_PATH`` wins when set. Otherwise:

    - Windows: ``C:\Data\PrismQ\queue\queue.db``
    - macOS: ``~/Library/Application Support/PrismQ/queue/queue.db``
    - Linux and other POSIX systems: ``$XDG_DATA_HOME/prismq/queue/queue.db``, where
      ``XDG_DATA_HOME`` defaults to ``~/.local/share``.

    Args:
        platform: A ``sys.platform`` value (this machine's by default).
        environ: The environment to read (``os.environ`` by default).

    Returns:
        The path (not created by this function).
    """
    env = os.environ if environ is None else environ
    configured = env.get(ENV_DB_PATH, "").strip()
    if configured:
        return Path(configured).expanduser()
    plat = sys.platform if platform is None else platform
    if plat.startswith("win"):
        return Path(WINDOWS_DEFAULT_DB_PATH)
    home = Path(env.get("HOME") or Path.home())
    if plat == "darwin":
        return home / "Library" / "Application Support" / "PrismQ" / "queue" / "queue.db"
    data_home = env.get("XDG_DATA_HOME", "").strip()
    base = Path(data_home) if data_home else home / ".local" / "share"
    return base / "prismq" / "queue" / "queue.db"


def default_worker_id() -> str:
    """``<hostname>-<pid>``: unique per process on one machine."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a number; expected seconds as a positive number, e.g. {name}=60"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={raw!r} must be a positive number of seconds, e.g. {name}=60")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number; expected a positive integer, e.g. {name}=4"
        ) from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1, e.g. {name}=4")
    return value


def env_max_workers(environ: Mapping[str, str] | None = None) -> int:
    """The worker process count ``PRISMQ_QUEUE_MAX_WORKERS`` asks for (1 when unset).

    It is the default of ``prismq-queue worker --processes`` and so of the supervisor
    (:func:`prismq.queue.runtime.settings.resolve_settings`): a ``--processes`` flag or a
    ``processes`` key in the config file wins over it.

    Args:
        environ: The environment to read (``os.environ`` by default).

    Raises:
        ConfigError: The variable is not a whole number of at least 1.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_MAX_WORKERS, "").strip()
    return _positive_int(ENV_MAX_WORKERS, raw) if raw else 1


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings the environment sets, by worker setting name; unset variables are left out.

    ``PRISMQ_QUEUE_DB_PATH`` gives ``database``, ``PRISMQ_QUEUE_WORKER_ID`` ``worker_id``,
    ``PRISMQ_QUEUE_LEASE_DURATION`` ``lease_duration`` and ``PRISMQ_QUEUE_MAX_WORKERS``
    ``processes``. This is the environment's layer of the one configuration chain (flags
    over file over environment over defaults, see
    :func:`prismq.queue.runtime.settings.resolve_settings`); :class:`QueueConfig` reads the
    same values.

    Args:
        environ: The environment to read (``os.environ`` by default).

    Raises:
        ConfigError: A variable is set to a malformed value; the message names the
            variable and the expected form.
    """
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    db = env.get(ENV_DB_PATH, "").strip()
    if db:
        out["database"] = db if "://" in db else str(Path(db).expanduser())
    worker_id = env.get(ENV_WORKER_ID, "").strip()
    if worker_id:
        if len(worker_id) > 200:
            raise ConfigError(f"{ENV_WORKER_ID} is longer than 200 characters; use a shorter id")
        out["worker_id"] = worker_id
    lease_raw = env.get(ENV_LEASE_DURATION, "").strip()
    if lease_raw:
        out["lease_duration"] = _positive_float(ENV_LEASE_DURATION, lease_raw)
    workers_raw = env.get(ENV_MAX_WORKERS, "").strip()
    if workers_raw:
        out["processes"] = _positive_int(ENV_MAX_WORKERS, workers_raw)
    return out


@dataclass(frozen=True)
class QueueConfig:
    """The queue's environment-driven settings.

    Attributes:
        db_path: Database file path, or a ``postgresql://`` URL.
        worker_id: Id this process's worker registers under.
        lease_duration: Seconds a claim is leased for.
        max_workers: Worker processes ``prismq-queue worker`` runs by default.
    """

    db_path: str
    worker_id: str
    lease_duration: float = DEFAULT_LEASE_DURATION
    max_workers: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QueueConfig:
        """Read every ``PRISMQ_QUEUE_*`` variable, with defaults for the missing ones.

        Args:
            environ: The environment to read (``os.environ`` by default).

        Raises:
            ConfigError: A variable is set to a malformed value; the message names the
                variable and the expected form.
        """
        env = os.environ if environ is None else environ
        values = settings_from_env(env)
        return cls(
            db_path=values.get("database") or str(default_db_path(environ=env)),
            worker_id=values.get("worker_id") or default_worker_id(),
            lease_duration=values.get("lease_duration", DEFAULT_LEASE_DURATION),
            max_workers=values.get("processes", 1),
        )
