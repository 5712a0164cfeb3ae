"""A web dashboard for the queue: an ASGI app (Starlette and Jinja2, the ``dashboard`` extra).

Mount it inside a Starlette or FastAPI application, or run it alone with
``prismq-queue dashboard``::

    from prismq.queue.dashboard import create_app

    app = create_app(db, read_only=True)

Pages: an overview with live charts, task types (with pause and resume), tasks filtered
and paginated, one task's detail, and workers. Actions (retry, cancel, delete, bulk retry
and cancel of a filter) are confirmed in the browser, logged, protected against
cross-site requests, and absent in read-only mode.
"""

from __future__ import annotations

from .app import MaskHook, create_app, mask_fields

__all__ = ["MaskHook", "create_app", "mask_fields"]
