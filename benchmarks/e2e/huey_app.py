"""huey: ``huey_consumer huey_app.huey`` on a SqliteHuey file."""

from __future__ import annotations

import os

from huey import SqliteHuey
from record import record

huey = SqliteHuey(filename=os.environ["PRISMQ_E2E_HUEY_DB"], results=False)


@huey.task(name="noop")
def noop(n: int) -> None:
    record("huey", n)
