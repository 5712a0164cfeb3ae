"""The Django application of PrismQ Queue (``INSTALLED_APPS``)."""

from __future__ import annotations

from django.apps import AppConfig


class PrismQQueueConfig(AppConfig):
    """Adds the ``prismq_worker`` management command; the queue keeps its own tables."""

    name = "prismq.queue.contrib.django"
    label = "prismq_queue"
    verbose_name = "PrismQ Queue"
