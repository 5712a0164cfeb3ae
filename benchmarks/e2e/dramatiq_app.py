"""Dramatiq: ``dramatiq dramatiq_app`` on Redis database 7."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from record import record

dramatiq.set_broker(RedisBroker(url=os.environ["PRISMQ_E2E_REDIS"]))


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop(n: int) -> None:
    record("dramatiq", n)
