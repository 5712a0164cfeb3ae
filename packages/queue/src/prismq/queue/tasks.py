"""Task functions: a decorator that turns a handler into something you enqueue by calling.

```python
from prismq.queue.tasks import TaskRegistry

tasks = TaskRegistry()


@tasks.task(priority=10)
def send_email(to: str, subject: str = "Hello") -> None: ...


tasks.bind(client)  # a QueueClient (and/or an AsyncQueueClient)
send_email.enqueue(to="a@example.com")  # checked against the hints, then enqueued
send_email.options(delay=60, idempotency_key="welcome-7").enqueue(to="b@example.com")
```

The arguments are checked against the function's signature and type hints before
anything is written (:class:`~prismq.queue.errors.PayloadError` names the faulty one),
and stored as a JSON object of named values. A worker runs ``tasks.handlers`` (a
:class:`~prismq.queue.runtime.HandlerRegistry`): it checks the stored payload again,
rebuilds tuples, dataclasses and enums, and calls the function with the values as
keyword arguments. Inside it, :func:`current_context` gives the running task's
:class:`~prismq.queue.runtime.TaskContext` (progress, cancellation, logger).

The explicit ``client.enqueue(task_type, payload)`` API stays: a task function's task
type is its name (``send_email``, or the ``name`` given to the decorator), so either way
reaches the same handler.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from .client import QueueClient, TaskSpec
from .errors import ConfigError, PayloadError
from .models import DEFAULT_PRIORITY
from .payloads import PayloadSchema
from .retry import RetryPolicy
from .runtime.context import TaskContext, TaskFailed
from .runtime.registry import HandlerRegistry
from .validation import validate_priority, validate_task_type

if TYPE_CHECKING:
    from .aio import AsyncQueueClient

P = ParamSpec("P")

__all__ = ["TaskFunction", "TaskOptions", "TaskRegistry", "current_context"]

R = TypeVar("R")

_CONTEXT: contextvars.ContextVar[TaskContext] = contextvars.ContextVar("prismq_task_context")


def current_context() -> TaskContext:
    """The :class:`~prismq.queue.runtime.TaskContext` of the task function running now.

    Raises:
        ConfigError: Called outside a task function run by a worker (or by
            :mod:`prismq.queue.testing`).
    """
    try:
        return _CONTEXT.get()
    except LookupError:
        raise ConfigError("current_context() is only available while a worker runs a task function") from None


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """How a task function's calls are enqueued; the fields mirror ``QueueClient.enqueue``."""

    priority: int = DEFAULT_PRIORITY
    delay: float | None = None
    run_after: datetime | float | None = None
    max_attempts: int | None = None
    retry_policy: RetryPolicy | None = None
    idempotency_key: str | None = None


class TaskFunction(Generic[P, R]):
    """A function registered as a task: call it directly, or ``.enqueue(...)`` it.

    Made by :meth:`TaskRegistry.task`; its parameters (``P``) are the payload's fields,
    so an IDE completes ``.enqueue(...)`` as it completes the function.

    Attributes:
        name: The task type.
        func: The decorated function.
        default_options: The options given to the decorator.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        name: str,
        func: Callable[P, R],
        schema: PayloadSchema,
        options: TaskOptions,
        client: QueueClient | AsyncQueueClient | None = None,
    ) -> None:
        self.name = name
        self.func = func
        self.default_options = options
        self._registry = registry
        self._schema = schema
        self._client = client
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as a plain call (nothing is enqueued)."""
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<TaskFunction {self.name!r}>"

    # -- options ---------------------------------------------------------------
    def options(
        self,
        *,
        priority: int | None = None,
        delay: float | None = None,
        run_after: datetime | float | None = None,
        max_attempts: int | None = None,
        retry_policy: RetryPolicy | None = None,
        idempotency_key: str | None = None,
        client: QueueClient | AsyncQueueClient | None = None,
    ) -> TaskFunction[P, R]:
        """A copy whose enqueues use these options (the others keep their defaults).

        Args:
            priority: 0 (most urgent) to 1000.
            delay: Seconds before the task may run (replaces a default ``run_after``).
            run_after: An aware ``datetime`` or epoch seconds (replaces a default ``delay``).
            max_attempts: Claims allowed.
            retry_policy: Backoff for these tasks.
            idempotency_key: Enqueueing the same key again returns the existing task's id.
            client: Enqueue through this client instead of the registry's.

        Raises:
            PriorityError: The priority is outside 0..1000.
        """
        changes: dict[str, Any] = {}
        if priority is not None:
            changes["priority"] = validate_priority(priority)
        if delay is not None:
            changes.update(delay=delay, run_after=None)
        if run_after is not None:
            changes.update(run_after=run_after, delay=None)
        if max_attempts is not None:
            changes["max_attempts"] = max_attempts
        if retry_policy is not None:
            changes["retry_policy"] = retry_policy
        if idempotency_key is not None:
            changes["idempotency_key"] = idempotency_key
        return TaskFunction(
            self._registry,
            self.name,
            self.func,
            self._schema,
            dataclasses.replace(self.default_options, **changes),
            client if client is not None else self._client,
        )

    # -- enqueue ---------------------------------------------------------------
    def payload(self, *args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        """The JSON payload these arguments are stored as (checked, nothing written).

        Raises:
            PayloadError: A missing, unknown or mistyped argument.
        """
        return self._schema.dump(args, kwargs)

    def spec(self, *args: P.args, **kwargs: P.kwargs) -> TaskSpec:
        """A :class:`~prismq.queue.TaskSpec` for ``client.enqueue_many``, checked now.

        Lets one batch mix task functions: ``client.enqueue_many([a.spec(...), b.spec(...)])``.
        """
        return self._spec(self._schema.dump(args, kwargs))

    def _spec(self, payload: dict[str, Any]) -> TaskSpec:
        options = self.default_options
        return TaskSpec(
            task_type=self.name,
            payload=payload,
            priority=options.priority,
            delay=options.delay,
            run_after=options.run_after,
            max_attempts=options.max_attempts,
            retry_policy=options.retry_policy,
            idempotency_key=options.idempotency_key,
        )

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Check the arguments against the function's hints, then enqueue one task.

        Returns:
            The task id.

        Raises:
            PayloadError: A missing, unknown or mistyped argument; nothing was written.
            ConfigError: No synchronous client was bound (:meth:`TaskRegistry.bind`).
        """
        payload = self._schema.dump(args, kwargs)
        client = self._sync_client()
        task_id = client.enqueue(self.name, payload, **self._enqueue_options())
        self._registry._after_enqueue(client, [task_id])
        return task_id

    def enqueue_many(self, calls: Iterable[Mapping[str, Any]]) -> list[int]:
        """Enqueue one task per mapping of keyword arguments, in one transaction.

        Every call is checked before anything is written; the error names the faulty
        call's index.

        Raises:
            PayloadError: A call's arguments do not fit the function.
            ConfigError: No synchronous client was bound.
        """
        specs = self._specs(calls)
        client = self._sync_client()
        ids = client.enqueue_many(specs)
        self._registry._after_enqueue(client, ids)
        return ids

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """:meth:`enqueue` through the bound :class:`~prismq.queue.aio.AsyncQueueClient`.

        Raises:
            PayloadError: A missing, unknown or mistyped argument; nothing was written.
            ConfigError: No asynchronous client was bound.
        """
        payload = self._schema.dump(args, kwargs)
        client = self._async_client()
        task_id = await client.enqueue(self.name, payload, **self._enqueue_options())
        self._registry._after_enqueue(client.sync_client, [task_id])
        return task_id

    async def aenqueue_many(self, calls: Iterable[Mapping[str, Any]]) -> list[int]:
        """:meth:`enqueue_many` through the bound asynchronous client."""
        specs = self._specs(calls)
        client = self._async_client()
        ids = await client.enqueue_many(specs)
        self._registry._after_enqueue(client.sync_client, ids)
        return ids

    def _enqueue_options(self) -> dict[str, Any]:
        options = self.default_options
        return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}

    def _specs(self, calls: Iterable[Mapping[str, Any]]) -> list[TaskSpec]:
        specs = []
        for index, call in enumerate(calls):
            if not isinstance(call, Mapping):
                raise PayloadError(
                    f"call #{index} of {self.name!r}: expected a mapping of keyword arguments, "
                    f"got {type(call).__name__}"
                )
            try:
                specs.append(self._spec(self._schema.dump((), dict(call))))
            except PayloadError as exc:
                raise PayloadError(f"call #{index}: {exc}") from None
        return specs

    def _sync_client(self) -> QueueClient:
        client = self._client or self._registry.client
        if isinstance(client, QueueClient):
            return client
        from .aio import AsyncQueueClient

        if isinstance(client, AsyncQueueClient):
            return client.sync_client
        raise ConfigError(
            f"task {self.name!r} has no client to enqueue with; call TaskRegistry.bind(client) "
            "first (or .options(client=...))"
        )

    def _async_client(self) -> AsyncQueueClient:
        from .aio import AsyncQueueClient

        client = self._client if isinstance(self._client, AsyncQueueClient) else self._registry.async_client
        if client is None:
            raise ConfigError(
                f"task {self.name!r} has no AsyncQueueClient to enqueue with; call "
                "TaskRegistry.bind(async_client) first"
            )
        return client

    # -- the worker side -------------------------------------------------------
    def _handler(self) -> Callable[[TaskContext], Any]:
        """The function a worker calls: check the stored payload, then call with keywords."""
        schema = self._schema
        func: Callable[..., Any] = self.func

        def arguments(ctx: TaskContext) -> dict[str, Any]:
            try:
                return schema.load(ctx.payload)
            except PayloadError as exc:  # a retry cannot fix the payload
                raise TaskFailed(str(exc), retry=False) from None

        if inspect.iscoroutinefunction(func):

            async def run_async(ctx: TaskContext) -> Any:
                kwargs = arguments(ctx)
                token = _CONTEXT.set(ctx)
                try:
                    return await func(**kwargs)
                finally:
                    _CONTEXT.reset(token)

            return run_async

        def run(ctx: TaskContext) -> Any:
            kwargs = arguments(ctx)
            token = _CONTEXT.set(ctx)
            try:
                return func(**kwargs)
            finally:
                _CONTEXT.reset(token)

        return run


class TaskRegistry:
    """Task functions and the handlers a worker runs for them.

    Args:
        client: The :class:`~prismq.queue.QueueClient` (or
            :class:`~prismq.queue.aio.AsyncQueueClient`) task functions enqueue through;
            it can also be given later with :meth:`bind`.
        handlers: Register the handlers in this registry (a new one by default), so task
            functions and plain ``ctx`` handlers can share one worker.

    Example:
        >>> tasks = TaskRegistry()
        >>> @tasks.task
        ... def add(a: int, b: int = 0) -> int:
        ...     return a + b
        >>> add(2, 3)
        5
        >>> add.payload(2, b=3)
        {'a': 2, 'b': 3}
        >>> tasks.handlers.task_types
        ('add',)
    """

    def __init__(
        self,
        client: QueueClient | AsyncQueueClient | None = None,
        *,
        handlers: HandlerRegistry | None = None,
    ) -> None:
        self.handlers = handlers if handlers is not None else HandlerRegistry()
        self.client: QueueClient | None = None
        self.async_client: AsyncQueueClient | None = None
        self._functions: dict[str, TaskFunction[Any, Any]] = {}
        self._enqueue_hooks: list[Callable[[QueueClient, list[int]], None]] = []
        if client is not None:
            self.bind(client)

    def bind(self, client: QueueClient | AsyncQueueClient) -> None:
        """Enqueue through ``client`` from now on (a sync and an async client can both be bound)."""
        from .aio import AsyncQueueClient

        if isinstance(client, AsyncQueueClient):
            self.async_client = client
            if self.client is None or self.client.db is not client.db:
                self.client = client.sync_client
        elif isinstance(client, QueueClient):
            self.client = client
        else:
            raise ConfigError(
                f"bind() takes a QueueClient or an AsyncQueueClient, got {type(client).__name__}"
            )

    @overload
    def task(self, name: Callable[P, R], /) -> TaskFunction[P, R]: ...

    @overload
    def task(
        self,
        name: str | None = None,
        /,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: float | None = None,
        max_attempts: int | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...

    def task(
        self,
        name: str | Callable[P, R] | None = None,
        /,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: float | None = None,
        max_attempts: int | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
        """Decorator: register a function as a task (``@tasks.task`` or ``@tasks.task(...)``).

        Args:
            name: The task type (default: the function's name).
            priority: Default priority of its tasks.
            delay: Default delay in seconds.
            max_attempts: Default claims allowed.
            retry_policy: Default backoff.
            timeout: Seconds a worker lets one run take.

        Raises:
            ConfigError: A parameter cannot be part of a JSON payload (its hint, ``*args``
                or positional-only), the name is taken, or the timeout is not positive.
            PriorityError: The priority is outside 0..1000.
        """
        if callable(name):
            return self._register(name, None, TaskOptions(), None)
        options = TaskOptions(
            priority=validate_priority(priority),
            delay=delay,
            max_attempts=max_attempts,
            retry_policy=retry_policy,
        )

        def decorate(func: Callable[P, R]) -> TaskFunction[P, R]:
            return self._register(func, name, options, timeout)

        return decorate

    def _register(
        self, func: Callable[P, R], name: str | None, options: TaskOptions, timeout: float | None
    ) -> TaskFunction[P, R]:
        if not callable(func):
            raise ConfigError(f"@task decorates a function, got {type(func).__name__}")
        task_type = validate_task_type(name if name is not None else getattr(func, "__name__", ""))
        schema = PayloadSchema(func, task_type)
        function = TaskFunction(self, task_type, func, schema, options)
        self.handlers.register(task_type, function._handler(), timeout=timeout)
        self._functions[task_type] = function
        return function

    def __getitem__(self, name: str) -> TaskFunction[Any, Any]:
        """The task function registered under ``name``.

        Raises:
            KeyError: No task function has that name.
        """
        return self._functions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def __iter__(self) -> Iterator[TaskFunction[Any, Any]]:
        return iter(self._functions.values())

    def __len__(self) -> int:
        return len(self._functions)

    # -- hooks for prismq.queue.testing ----------------------------------------------
    def _after_enqueue(self, client: QueueClient, ids: list[int]) -> None:
        for hook in list(self._enqueue_hooks):
            hook(client, ids)
