"""RQ: ``rq worker --burst`` on Redis database 7."""

from __future__ import annotations

from record import record


def noop(n: int) -> None:
    record("rq", n)
