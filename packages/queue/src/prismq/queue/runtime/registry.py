"""``HandlerRegistry``: which function runs which task type."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError
from ..models import DEFAULT_PRIORITY
from ..schedules import ScheduleDefinition
from ..validation import is_number, validate_task_type
from .context import TaskContext
from .runner import RunSummary, WorkerRunner, run_worker

if TYPE_CHECKING:
    from ..worker import QueueWorker

__all__ = ["Handler", "HandlerRegistry", "import_object"]

HandlerFunc = Callable[[TaskContext], Any | Awaitable[Any]]
F = TypeVar("F", bound=HandlerFunc)


@dataclass(frozen=True)
class Handler:
    """A registered handler.

    Attributes:
        task_type: The task type it runs.
        func: The function; it receives a :class:`TaskContext`.
        is_async: True for ``async def`` handlers (awaited on the worker's event loop).
        timeout: Seconds before a running task is failed as hung (``None``: the worker's
            default).
    """

    task_type: str
    func: HandlerFunc
    is_async: bool
    timeout: float | None = None


class HandlerRegistry:
    """Maps task types to handler functions.

    Register with the decorator or with :meth:`register`; sync (``def``) and async
    (``async def``) handlers are both supported. A worker running this registry claims only
    the registered task types, so tasks it cannot run stay queued for other workers.

    Example:
        >>> registry = HandlerRegistry()
        >>> @registry.handler("send_email")
        ... def send_email(ctx):
        ...     return {"sent_to": ctx.payload["to"]}
        >>> registry.task_types
        ('send_email',)
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._schedules: dict[str, ScheduleDefinition] = {}

    def handler(self, task_type: str, *, timeout: float | None = None) -> Callable[[F], F]:
        """Decorator form of :meth:`register`."""

        def decorate(func: F) -> F:
            self.register(task_type, func, timeout=timeout)
            return func

        return decorate

    def register(self, task_type: str, func: HandlerFunc, *, timeout: float | None = None) -> Handler:
        """Register ``func`` for ``task_type``.

        Args:
            task_type: The task type.
            func: A callable taking one :class:`TaskContext` argument.
            timeout: Per-task timeout in seconds for this type.

        Raises:
            ConfigError: The type already has a handler, ``func`` is not callable, or the
                timeout is not positive.
        """
        task_type = validate_task_type(task_type)
        if not callable(func):
            raise ConfigError(f"handler for {task_type!r} must be callable, got {type(func).__name__}")
        if task_type in self._handlers:
            raise ConfigError(
                f"task type {task_type!r} already has a handler ({self._handlers[task_type].func!r})"
            )
        if timeout is not None and (not is_number(timeout) or timeout <= 0):
            raise ConfigError(
                f"timeout for {task_type!r} must be a positive number of seconds, got {timeout!r}"
            )
        handler = Handler(task_type, func, _is_async(func), None if timeout is None else float(timeout))
        self._handlers[task_type] = handler
        return handler

    def periodic(
        self,
        cron: str,
        *,
        task_type: str | None = None,
        name: str | None = None,
        payload: Any = None,
        timezone: str = "UTC",
        misfire: str = "run_once",
        max_backfill: int = 10,
        grace: float = 60.0,
        priority: int = DEFAULT_PRIORITY,
        max_attempts: int = 3,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Decorator: register a handler and a schedule that enqueues its task at each tick.

        Workers running this registry store the schedule when they start and enqueue
        one task per tick between them (see :mod:`prismq.queue.schedules`).

        Args:
            cron: Cron expression (five fields, or six with seconds first).
            task_type: The task type (default: the function's name).
            name: The schedule's name (default: the task type).
            payload: The JSON payload of every tick's task.
            timezone: IANA time zone of the expression.
            misfire: ``skip``, ``run_once`` or ``backfill``.
            max_backfill: With ``backfill``, the most missed ticks enqueued after a gap.
            grace: With ``skip``, seconds a tick may be late and still run.
            priority: Priority of the enqueued tasks.
            max_attempts: Claims allowed per task.
            timeout: Per-task timeout of the handler.

        Raises:
            PeriodicScheduleError: A bad cron expression, time zone or misfire setting.
            ConfigError: The schedule name is taken, or the task type has another handler.

        Example:
            >>> registry = HandlerRegistry()
            >>> @registry.periodic("0 3 * * *", timezone="Europe/Prague")
            ... def nightly_cleanup(ctx):
            ...     return "done"
            >>> [s.name for s in registry.schedules], registry.task_types
            (['nightly_cleanup'], ('nightly_cleanup',))
        """

        def decorate(func: F) -> F:
            kind = task_type or getattr(func, "__name__", None)
            if not isinstance(kind, str):
                raise ConfigError(f"periodic handler {func!r} has no name; pass task_type=")
            definition = ScheduleDefinition(
                name or kind,
                cron,
                kind,
                payload,
                timezone=timezone,
                misfire=misfire,
                max_backfill=max_backfill,
                grace=grace,
                priority=priority,
                max_attempts=max_attempts,
                source="code",
            )
            existing = self._handlers.get(definition.task_type)
            if existing is None or existing.func is not func:
                self.register(definition.task_type, func, timeout=timeout)
            self.add_schedule(definition)
            return func

        return decorate

    def add_schedule(self, definition: ScheduleDefinition) -> None:
        """Add a schedule for workers of this registry to store at start.

        The task type needs a handler somewhere, not necessarily in this registry.

        Raises:
            ConfigError: A schedule of the same name is already registered.
        """
        if definition.name in self._schedules:
            raise ConfigError(f"a schedule named {definition.name!r} is already registered")
        self._schedules[definition.name] = definition

    @property
    def schedules(self) -> tuple[ScheduleDefinition, ...]:
        """Schedules registered with :meth:`periodic` or :meth:`add_schedule`."""
        return tuple(self._schedules.values())

    def get(self, task_type: str) -> Handler | None:
        """The handler for ``task_type``, or ``None``."""
        return self._handlers.get(task_type)

    @property
    def task_types(self) -> tuple[str, ...]:
        """Registered task types, in registration order."""
        return tuple(self._handlers)

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._handlers

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())

    def __len__(self) -> int:
        return len(self._handlers)

    def update(self, other: HandlerRegistry) -> None:
        """Add every handler and schedule of ``other`` (a clash raises ConfigError)."""
        for handler in other:
            self.register(handler.task_type, handler.func, timeout=handler.timeout)
        for definition in other.schedules:
            self.add_schedule(definition)

    @classmethod
    def from_mapping(cls, handlers: Mapping[str, str]) -> HandlerRegistry:
        """Build a registry from ``{task_type: "package.module:function"}``.

        Every reference is imported now, so a typo fails at start-up, not at the first task.

        Raises:
            ConfigError: A reference cannot be imported or is not callable.
        """
        registry = cls()
        for task_type, reference in handlers.items():
            if not isinstance(reference, str):
                raise ConfigError(
                    f"handler for {task_type!r} must be a 'module:function' string, got {reference!r}"
                )
            registry.register(task_type, import_object(reference, f"handler for {task_type!r}"))
        return registry

    def run_worker(self, worker: QueueWorker, **options: Any) -> RunSummary:
        """Run ``worker`` with these handlers on a fresh event loop until it stops.

        What :meth:`QueueWorker.run <prismq.queue.worker.QueueWorker.run>` calls;
        ``options`` are :class:`~prismq.queue.runtime.WorkerRunner`'s keyword arguments.
        """
        return run_worker(worker, self, **options)

    async def run_worker_async(self, worker: QueueWorker, **options: Any) -> RunSummary:
        """:meth:`run_worker` on the caller's running event loop."""
        return await WorkerRunner(worker, self, **options).run()

    @classmethod
    def load(cls, reference: str) -> HandlerRegistry:
        """Import a registry from ``"package.module:attribute"`` or ``"package.module"``.

        With only a module, its attribute ``registry`` is used. An object with a
        ``handlers`` registry (a :class:`~prismq.queue.tasks.TaskRegistry`) gives that one.

        Raises:
            ConfigError: The module or attribute is missing, or is not a HandlerRegistry.
        """
        if ":" not in reference:
            reference = f"{reference}:registry"
        obj = import_object(reference, "handlers")
        if not isinstance(obj, HandlerRegistry):
            handlers = getattr(obj, "handlers", None)
            if isinstance(handlers, HandlerRegistry):
                return handlers
            raise ConfigError(f"{reference} is a {type(obj).__name__}, not a HandlerRegistry")
        return obj


def _is_async(func: Callable[..., Any]) -> bool:
    target = getattr(func, "__call__", None) if not inspect.isroutine(func) else func  # noqa: B004
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(target)


def import_object(reference: str, what: str) -> Any:
    """Import ``"package.module:attribute.path"``; only names, never evaluated code.

    Raises:
        ConfigError: Malformed reference, module not importable, or attribute missing.
    """
    module_name, sep, attr_path = reference.partition(":")
    parts = attr_path.split(".") if attr_path else []
    if (
        not sep
        or not module_name
        or not parts
        or not all(p.isidentifier() for p in parts)
        or not all(p.isidentifier() for p in module_name.split("."))
    ):
        raise ConfigError(
            f"{what}: {reference!r} is not a 'package.module:name' reference "
            "(dotted module, colon, attribute)"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{what}: cannot import module {module_name!r} ({exc}); check the name and sys.path"
        ) from None
    for part in parts:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what}: module {module_name!r} has no attribute {attr_path!r}") from None
    return obj
