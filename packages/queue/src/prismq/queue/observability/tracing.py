"""OpenTelemetry spans for enqueue and execution (``pip install "prismq-queue[otel]"``).

:class:`TracingObserver` follows the OpenTelemetry messaging semantic conventions, with
``messaging.system = "prismq"`` and the task type as the destination:

- **Enqueue** (:class:`~prismq.queue.QueueClient` with ``observer=TracingObserver()``): a
  ``send <task_type>`` span of kind ``PRODUCER`` around the insert, a child of whatever
  span is current. Its context is injected (W3C ``traceparent``, through the global
  propagator) into the task's ``trace_context`` column, in the same insert.
- **Execution** (the worker's ``observer``, or ``prismq-queue worker --tracing``): a
  ``process <task_type>`` span of kind ``CONSUMER`` for each attempt, a child of the
  enqueue span and linked to it, so one trace shows the task from enqueue to its last
  attempt. The span is current while the handler runs (sync or async), so spans the
  handler starts are its children. A failed attempt records the exception and sets the
  status to error.
- **Retries**: every attempt, retries included, joins the enqueue's trace (attribute
  ``prismq.task.attempt`` tells them apart). ``QueueClient.retry`` of a dead or cancelled
  task records a ``retry <task_type>`` span in the caller's own trace, linked to the
  task's original trace.

The API alone records nothing: configure an SDK ``TracerProvider`` (or run under
``opentelemetry-instrument``) to export the spans.

The *Metrics and traces* page of the documentation has runnable examples.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ExtraNotInstalledError
from ..runtime.observer import (
    EnqueueObservation,
    EnqueueObserver,
    TaskObservation,
    TaskObserver,
    TaskOutcome,
)

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ExtraNotInstalledError(
        f"OpenTelemetry tracing needs opentelemetry-api ({exc.name or exc}); install it with "
        "pip install 'prismq-queue[otel]'"
    ) from None

if TYPE_CHECKING:
    from ..models import Task

__all__ = ["MESSAGING_SYSTEM", "TracingObserver", "extract_context"]

MESSAGING_SYSTEM = "prismq"
"""The ``messaging.system`` attribute of every span."""


def extract_context(trace_context: str | None) -> Any:
    """The OpenTelemetry context stored in a task's ``trace_context`` (empty when none).

    Args:
        trace_context: The column's text (a JSON object of propagation headers).

    Returns:
        An ``opentelemetry.context.Context``; an empty one for ``None`` or unreadable
        text (a damaged context never fails a task).
    """
    if not trace_context:
        return otel_context.Context()
    try:
        carrier = json.loads(trace_context)
    except ValueError:
        return otel_context.Context()
    if not isinstance(carrier, dict):
        return otel_context.Context()
    return propagate.extract({str(k): str(v) for k, v in carrier.items()}, context=otel_context.Context())


def _links(parent: Any) -> list[Link]:
    span_context = trace.get_current_span(parent).get_span_context()
    return [Link(span_context)] if span_context.is_valid else []


class _Enqueue(EnqueueObservation):
    def __init__(self, span: Any) -> None:
        self.span = span
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        self.trace_context = json.dumps(carrier, separators=(",", ":"), sort_keys=True) if carrier else None

    def finished(self, task_ids: Sequence[int], error: BaseException | None = None) -> None:
        span = self.span
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.set_attribute("error.type", type(error).__qualname__)
        elif len(task_ids) == 1:
            span.set_attribute("messaging.message.id", str(task_ids[0]))
        span.end()


class _Execution(TaskObservation):
    def __init__(self, span: Any) -> None:
        self.span = span

    def finished(self, outcome: TaskOutcome, error: BaseException | None = None) -> None:
        span = self.span
        span.set_attribute("prismq.task.outcome", outcome.value)
        if error is not None:
            span.record_exception(error)
            span.set_attribute("error.type", type(error).__qualname__)
        if outcome in (TaskOutcome.RETRIED, TaskOutcome.DEAD):
            detail = f"{type(error).__name__}: {error}" if error is not None else outcome.value
            span.set_status(Status(StatusCode.ERROR, detail))
        elif outcome in (TaskOutcome.LEASE_LOST, TaskOutcome.ABANDONED):
            span.set_status(Status(StatusCode.ERROR, outcome.value))
        span.end()


class TracingObserver(TaskObserver, EnqueueObserver):
    """Spans for enqueue (as a client's ``observer``) and execution (as a worker's).

    Args:
        tracer_provider: Where spans go (default: the global tracer provider).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("prismq.queue", tracer_provider=tracer_provider)

    # -- producer side ----------------------------------------------------------
    def enqueue_started(self, task_types: Sequence[str]) -> EnqueueObservation:
        """Start a ``send`` span; its context is what the tasks carry."""
        names = sorted(set(task_types))
        destination = names[0] if len(names) == 1 else "multiple"
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": destination,
        }
        if len(task_types) != 1:
            attributes["messaging.batch.message_count"] = len(task_types)
        span = self.tracer.start_span(f"send {destination}", kind=SpanKind.PRODUCER, attributes=attributes)
        return _Enqueue(span)

    def task_retried(self, task: Task) -> None:
        """Record a ``retry`` span in the current trace, linked to the task's original trace."""
        span = self.tracer.start_span(
            f"retry {task.task_type}",
            kind=SpanKind.PRODUCER,
            links=_links(extract_context(task.trace_context)),
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "send",
                "messaging.operation.name": "retry",
                "messaging.destination.name": task.task_type,
                "messaging.message.id": str(task.id),
            },
        )
        span.end()

    # -- consumer side ----------------------------------------------------------
    def task_started(self, task: Task, worker_id: str) -> TaskObservation:
        """Start a ``process`` span under the enqueue's context and make it current."""
        parent = extract_context(task.trace_context)
        span = self.tracer.start_span(
            f"process {task.task_type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=_links(parent),
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": task.task_type,
                "messaging.message.id": str(task.id),
                "messaging.client.id": worker_id,
                "prismq.task.attempt": task.attempts,
            },
        )
        # The runner calls this inside a context made for this task, which the handler
        # runs in: attaching here makes the span current for the handler only. That
        # context ends with the task, so nothing is detached.
        otel_context.attach(trace.set_span_in_context(span, parent))
        return _Execution(span)
