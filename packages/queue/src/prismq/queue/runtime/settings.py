"""Worker settings from keyword arguments or a TOML, JSON or YAML config file.

```toml
[worker]
database = "queue.db"        # relative paths are relative to this file's folder
strategy = "fifo"            # fifo | lifo | priority | weighted_random
concurrency = 4
processes = 2
lease_duration = 60
batch_size = 100             # outcomes written in one transaction at most
linger = 0.005               # longest wait of an outcome before it is written (seconds)
prefetch = 100               # most tasks leased ahead of the free slots

[handlers]
video_processing = "myapp.tasks:process_video"

[schedules.nightly_report]   # one table per periodic schedule
cron = "0 3 * * *"
task_type = "report"
timezone = "Europe/Prague"
payload = {kind = "daily"}
misfire = "run_once"         # skip | run_once | backfill
```

Every key is checked when the file is loaded, and every handler is imported, so a typo
fails at start-up with the file and key named, not at the first task.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..config import QueueConfig, settings_from_env
from ..database import QueueDatabase
from ..errors import ConfigError, ValidationError
from ..schedules import ScheduleDefinition
from ..strategies import SchedulingStrategy, WeightedRandomStrategy, resolve_strategy
from ..validation import finite_float, is_int
from ..worker import QueueWorker
from .acks import DEFAULT_BATCH_SIZE, DEFAULT_LINGER
from .observer import TaskObserver
from .registry import HandlerRegistry
from .runner import DEFAULT_PREFETCH

__all__ = ["WorkerSettings", "load_settings", "resolve_settings", "settings_from_mapping"]


@dataclass(frozen=True)
class WorkerSettings:
    """Everything needed to start workers, in a form that crosses process boundaries.

    Attributes:
        database: Database path or URL (``None``: ``PRISMQ_QUEUE_DB_PATH`` or the default).
        registry: A ``"module:attribute"`` reference to a :class:`HandlerRegistry`.
        handlers: ``(task_type, "module:function")`` pairs (from a config file).
        worker_id: Worker id, or prefix when several processes run (``-1``, ``-2``, ...).
        strategy: Scheduling strategy name.
        weights: Weighted Random weights per task type.
        default_weight: Weighted Random weight of unlisted types.
        task_types: Claim only these types (``None``: every type with a handler).
        concurrency: Tasks run at once per process.
        processes: Worker processes a supervisor runs (:func:`resolve_settings` takes
            ``PRISMQ_QUEUE_MAX_WORKERS`` when neither a flag nor the file gives it).
        lease_duration: Lease length in seconds (``None``: environment or 60).
        task_timeout: Default per-task timeout in seconds (``None``: ten leases).
        grace_period: Seconds running tasks get to finish at shutdown.
        idle_timeout: Longest idle sleep between claims.
        burst: Exit when the queue is drained.
        max_tasks: Exit after this many tasks (per process).
        wake_mode: ``auto``, ``notify``, ``inotify`` or ``poll``.
        metrics: Count Prometheus worker metrics in each worker process (needs the
            ``metrics`` extra; see :mod:`prismq.queue.observability.metrics`).
        tracing: Record an OpenTelemetry span for each execution (needs the ``otel``
            extra; see :mod:`prismq.queue.observability.tracing`).
        batch_size: Outcomes written in one transaction at most.
        linger: Longest wait, in seconds, of a finished task's outcome before it is written.
        prefetch: Most tasks leased ahead of the free slots (fewer when handlers are slow).
        scheduler: Run the periodic-schedule loop in each worker process.
        schedules: Periodic schedules from the config file (``[schedules.NAME]``).
    """

    database: str | None = None
    registry: str | None = None
    handlers: tuple[tuple[str, str], ...] = ()
    worker_id: str | None = None
    strategy: str = "fifo"
    weights: tuple[tuple[str, float], ...] = ()
    default_weight: float = 1.0
    task_types: tuple[str, ...] | None = None
    concurrency: int = 1
    processes: int = 1
    lease_duration: float | None = None
    task_timeout: float | None = None
    grace_period: float = 30.0
    idle_timeout: float = 1.0
    burst: bool = False
    max_tasks: int | None = None
    wake_mode: str = "auto"
    metrics: bool = False
    tracing: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    linger: float = DEFAULT_LINGER
    prefetch: int = DEFAULT_PREFETCH
    scheduler: bool = True
    schedules: tuple[ScheduleDefinition, ...] = ()

    def build_registry(self) -> HandlerRegistry:
        """Import the handlers now (fails fast with ConfigError)."""
        if not self.registry and not self.handlers:
            raise ConfigError(
                "no handlers: pass --handlers module:registry, or list [handlers] in the config file"
            )
        # A fresh registry each time: the imported one is left as it is, so building
        # twice (check at load, then run) never registers anything twice.
        registry = HandlerRegistry()
        if self.registry:
            registry.update(HandlerRegistry.load(self.registry))
        if self.handlers:
            registry.update(HandlerRegistry.from_mapping(dict(self.handlers)))
        for definition in self.schedules:
            registry.add_schedule(definition)
        return registry

    def build_strategy(self) -> SchedulingStrategy:
        """The configured strategy object."""
        strategy = resolve_strategy(self.strategy)
        if isinstance(strategy, WeightedRandomStrategy):
            return WeightedRandomStrategy(dict(self.weights), default_weight=self.default_weight)
        if self.weights:
            raise ConfigError(f"weights apply to the weighted_random strategy only, not {strategy.name!r}")
        return strategy

    def open_database(self) -> QueueDatabase:
        """Open (and initialise) the configured database."""
        db = QueueDatabase(self.database)
        db.initialize_schema()
        return db

    def make_worker(self, db: QueueDatabase, worker_id: str | None = None) -> QueueWorker:
        """A :class:`QueueWorker` with these settings."""
        return QueueWorker(
            db,
            worker_id=worker_id or self.worker_id,
            strategy=self.build_strategy(),
            lease_duration=self.lease_duration,
            task_types=self.task_types,
        )

    def runner_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~prismq.queue.runtime.WorkerRunner`."""
        return {
            "concurrency": self.concurrency,
            "burst": self.burst,
            "max_tasks": self.max_tasks,
            "task_timeout": self.task_timeout,
            "grace_period": self.grace_period,
            "idle_timeout": self.idle_timeout,
            "wake_mode": self.wake_mode,
            "observer": self.build_observers() or None,
            "batch_size": self.batch_size,
            "linger": self.linger,
            "prefetch": self.prefetch,
            "scheduler": self.scheduler,
        }

    def build_observers(self) -> list[TaskObserver]:
        """The task observers ``metrics`` and ``tracing`` ask for (imported only then)."""
        observers: list[TaskObserver] = []
        if self.metrics:
            from ..observability.metrics import MetricsObserver

            observers.append(MetricsObserver())
        if self.tracing:
            from ..observability.tracing import TracingObserver

            observers.append(TracingObserver())
        return observers


_WORKER_KEYS = {f.name for f in fields(WorkerSettings)} - {"handlers", "schedules"}
_SCHEDULE_KEYS = {
    "cron": "str", "task_type": "str", "payload": "any", "timezone": "str", "misfire": "str",
    "max_backfill": "int", "grace": "num", "priority": "int", "max_attempts": "int",
}  # fmt: skip


def _read(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - exercised on 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(
                    f"{path}: YAML config files need PyYAML; pip install 'prismq-queue[yaml]'"
                ) from None
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: unknown config format {suffix!r}; use .toml, .json, .yaml or .yml")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{path} is not valid {suffix.lstrip('.').upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/object with [worker] and [handlers]")
    return data


def _check_type(path: Path, key: str, value: Any, kind: str, prefix: str = "worker.") -> Any:
    ok = {
        "str": isinstance(value, str),
        "int": is_int(value),
        "num": finite_float(value) is not None,
        "bool": isinstance(value, bool),
        "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "table": isinstance(value, dict),
    }[kind]
    if not ok:
        expected = {
            "str": "a string",
            "int": "an integer",
            "num": "a number",
            "bool": "true or false",
            "list": "a list of strings",
            "table": "a table of task type = weight",
        }[kind]
        raise ConfigError(f"{path}: {prefix}{key} must be {expected}, got {value!r}")
    return value


_KINDS = {
    "database": "str", "registry": "str", "worker_id": "str", "strategy": "str", "weights": "table",
    "default_weight": "num", "task_types": "list", "concurrency": "int", "processes": "int",
    "lease_duration": "num", "task_timeout": "num", "grace_period": "num", "idle_timeout": "num",
    "burst": "bool", "max_tasks": "int", "wake_mode": "str", "batch_size": "int", "linger": "num",
    "prefetch": "int", "scheduler": "bool", "metrics": "bool", "tracing": "bool",
}  # fmt: skip


def _schedules(path: Path, tables: Any) -> tuple[ScheduleDefinition, ...]:
    """``[schedules.NAME]`` tables as schedule definitions (source ``config``)."""
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [schedules] must hold one table per schedule, [schedules.NAME]")
    out = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: schedules.{name} must be a table with cron and task_type")
        unknown = set(table) - set(_SCHEDULE_KEYS)
        if unknown:
            raise ConfigError(
                f"{path}: unknown key(s) {sorted(unknown)} in schedules.{name}; known keys: "
                f"{', '.join(sorted(_SCHEDULE_KEYS))}"
            )
        missing = [k for k in ("cron", "task_type") if k not in table]
        if missing:
            raise ConfigError(f"{path}: schedules.{name} needs {' and '.join(missing)}")
        for key, value in table.items():
            if _SCHEDULE_KEYS[key] != "any":
                _check_type(path, f"schedules.{name}.{key}", value, _SCHEDULE_KEYS[key], prefix="")
        try:
            out.append(ScheduleDefinition(name=name, source="config", **table))
        except ValidationError as exc:
            raise type(exc)(f"{path}: schedules.{name}: {exc}") from None
    return tuple(out)


def _known(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as a dict, if every key names a worker setting."""
    unknown = set(options) - _WORKER_KEYS - {"handlers", "schedules"}
    if unknown:
        raise ConfigError(f"unknown worker setting(s): {', '.join(sorted(unknown))}")
    return dict(options)


def _file_values(path: Path) -> dict[str, Any]:
    """The settings a config file gives, checked (handlers not imported yet)."""
    data = _read(path)
    unknown = set(data) - {"worker", "handlers", "schedules"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) {sorted(unknown)}; expected [worker], [handlers] and [schedules]"
        )
    worker = data.get("worker", {})
    handlers = data.get("handlers", {})
    if not isinstance(worker, dict) or not isinstance(handlers, dict):
        raise ConfigError(f"{path}: [worker] and [handlers] must be tables")
    values: dict[str, Any] = {}
    for key, value in worker.items():
        if key not in _WORKER_KEYS:
            raise ConfigError(
                f"{path}: unknown key worker.{key}; known keys: {', '.join(sorted(_WORKER_KEYS))}"
            )
        values[key] = _check_type(path, key, value, _KINDS[key])
    for task_type, reference in handlers.items():
        if not isinstance(reference, str):
            raise ConfigError(f"{path}: handlers.{task_type} must be a 'module:function' string")
    if "database" in values and "://" not in values["database"]:
        values["database"] = str((path.parent / values["database"]).resolve())
    if "weights" in values:
        weights = values["weights"]
        for name, weight in weights.items():
            _check_type(path, f"weights.{name}", weight, "num")
        values["weights"] = tuple(weights.items())
    if "task_types" in values:
        values["task_types"] = tuple(values["task_types"])
    if handlers:
        values["handlers"] = tuple(handlers.items())
    if "schedules" in data:
        values["schedules"] = _schedules(path, data["schedules"])
    return values


def _checked(values: dict[str, Any], path: Path | None) -> WorkerSettings:
    """Settings from merged values, with handlers imported and the strategy built."""
    settings = WorkerSettings(**values)
    try:
        settings.build_registry()
        settings.build_strategy()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None
    return settings


def resolve_settings(
    config_file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> WorkerSettings:
    """Worker settings from every source, in one chain: flags over file over environment over defaults.

    What ``prismq-queue worker`` runs with. Each layer sets only what it names:

    1. defaults: the :class:`WorkerSettings` field defaults, and for the database
       :attr:`QueueConfig.db_path <prismq.queue.config.QueueConfig.db_path>` (the
       platform's default path when ``PRISMQ_QUEUE_DB_PATH`` is unset);
    2. the environment (:func:`prismq.queue.config.settings_from_env`):
       ``PRISMQ_QUEUE_DB_PATH``, ``PRISMQ_QUEUE_WORKER_ID``,
       ``PRISMQ_QUEUE_LEASE_DURATION``, ``PRISMQ_QUEUE_MAX_WORKERS`` (as ``processes``);
    3. the config file's ``[worker]`` and ``[handlers]``;
    4. ``flags`` (command-line options; ``None`` values are not given).

    Args:
        config_file: A ``.toml``, ``.json``, ``.yaml`` or ``.yml`` file, or ``None``.
        flags: Settings by :class:`WorkerSettings` field name.
        environ: The environment to read (``os.environ`` by default).

    Raises:
        ConfigError: A malformed variable, file, key or value, an unknown setting, or a
            handler that cannot be imported (the message names where it came from).
    """
    given = _known({k: v for k, v in (flags or {}).items() if v is not None})
    values: dict[str, Any] = {"database": QueueConfig.from_env(environ).db_path}
    values.update(settings_from_env(environ))
    path = None if config_file is None else Path(config_file)
    if path is not None:
        values.update(_file_values(path))
    values.update(given)
    return _checked(values, path)


def load_settings(path: str | Path, **overrides: Any) -> WorkerSettings:
    """Load worker settings from a ``.toml``, ``.json``, ``.yaml`` or ``.yml`` file.

    Only the file and ``overrides`` (no environment: settings left unset are read from it
    by :class:`~prismq.queue.QueueDatabase` and :class:`~prismq.queue.QueueWorker` when
    they start); :func:`resolve_settings` is the whole chain.

    Args:
        path: The config file.
        **overrides: Settings that win over the file (``None`` values are ignored).

    Raises:
        ConfigError: The file is unreadable or malformed, has an unknown key, a value of
            the wrong type, or a handler that cannot be imported.
    """
    path = Path(path)
    values = _file_values(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _checked(values, path)


def settings_from_mapping(options: Mapping[str, Any]) -> WorkerSettings:
    """Settings from keyword options (``None`` values are left at their defaults)."""
    return WorkerSettings(**{k: v for k, v in _known(options).items() if v is not None})
