"""Celery: ``celery -A celery_app worker`` on Redis database 7 (default settings: early ack)."""

from __future__ import annotations

import os

from celery import Celery
from record import record

app = Celery("bench", broker=os.environ["PRISMQ_E2E_REDIS"])
app.conf.task_default_queue = "bench"
app.conf.worker_hijack_root_logger = False


@app.task(name="noop", ignore_result=True)
def noop(n: int) -> None:
    record("celery", n)
