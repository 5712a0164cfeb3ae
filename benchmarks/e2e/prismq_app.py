"""PrismQ Queue: ``prismq-queue worker --handlers prismq_app``."""

from __future__ import annotations

from record import record

from prismq.queue.runtime import HandlerRegistry, TaskContext

registry = HandlerRegistry()


@registry.handler("noop")
def noop(ctx: TaskContext) -> None:
    record("prismq", ctx.payload["n"])
