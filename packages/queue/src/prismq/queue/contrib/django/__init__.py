"""A thin Django entry: the queue's database from the settings, and a worker command.

Install with ``pip install "prismq-queue[django]"``, then in ``settings.py``::

    INSTALLED_APPS = [..., "prismq.queue.contrib.django"]
    PRISMQ_QUEUE_DATABASE = BASE_DIR / "queue.db"  # or "postgresql://..."
    PRISMQ_QUEUE_HANDLERS = "shop.tasks:tasks"  # a TaskRegistry or a HandlerRegistry

Application code enqueues through :func:`get_client` (one database per process), and
``python manage.py prismq_worker`` runs a worker with the handlers named in the settings.
Everything else (strategies, retries, the ``prismq-queue`` command) is the queue's own.
"""

from __future__ import annotations

from .conf import get_client, get_database, handlers_reference

__all__ = ["get_client", "get_database", "handlers_reference"]
