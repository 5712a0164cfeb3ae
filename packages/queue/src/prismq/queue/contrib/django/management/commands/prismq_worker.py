"""``python manage.py prismq_worker``: run a queue worker with the Django settings' handlers."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from .....errors import QueueError
from .....runtime.settings import settings_from_mapping
from ...conf import database_target, handlers_reference


class Command(BaseCommand):
    """Run one worker process until stopped (Ctrl+C lets running tasks finish first).

    The database is ``PRISMQ_QUEUE_DATABASE``, the handlers ``PRISMQ_QUEUE_HANDLERS``
    (``--handlers`` overrides it). For several processes, run the command several times
    (under systemd, supervisord, ...): each process is a worker of its own.
    """

    help = "Run a PrismQ Queue worker with the handlers named in the Django settings."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """The worker options the command takes (the rest come from the settings)."""
        parser.add_argument("--handlers", help="module:attribute of the registry (default: the settings')")
        parser.add_argument("--concurrency", type=int, default=1, help="tasks at once (default 1)")
        parser.add_argument("--task-types", help="claim only these types, comma-separated")
        parser.add_argument("--strategy", default="fifo", help="fifo, lifo, priority or weighted_random")
        parser.add_argument("--burst", action="store_true", help="exit when no task is ready")
        parser.add_argument("--max-tasks", type=int, help="exit after this many tasks")
        parser.add_argument("--worker-id", help="the worker's id (default: host and process id)")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the worker until it is stopped (or, with ``--burst``, until the queue is empty)."""
        types = options["task_types"]
        try:
            settings = settings_from_mapping(
                {
                    "database": database_target(),
                    "registry": options["handlers"] or handlers_reference(),
                    "concurrency": options["concurrency"],
                    "task_types": tuple(t.strip() for t in types.split(",") if t.strip()) if types else None,
                    "strategy": options["strategy"],
                    "burst": options["burst"],
                    "max_tasks": options["max_tasks"],
                    "worker_id": options["worker_id"],
                }
            )
            registry = settings.build_registry()
            db = settings.open_database()
        except QueueError as exc:
            raise CommandError(str(exc)) from None
        try:
            worker = settings.make_worker(db)
            summary = worker.run(registry, install_signal_handlers=True, **settings.runner_options())
        except QueueError as exc:
            raise CommandError(str(exc)) from None
        finally:
            db.close()
        self.stdout.write(
            f"worker {worker.worker_id} stopped: {summary.completed} completed, {summary.dead} dead, "
            f"{summary.retried} retried"
        )
