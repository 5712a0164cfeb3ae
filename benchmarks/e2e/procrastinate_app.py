"""procrastinate: ``procrastinate --app procrastinate_app.app worker`` on its own database."""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector
from record import record

app = App(connector=PsycopgConnector(conninfo=os.environ["PRISMQ_E2E_PROCRASTINATE"]))


@app.task(name="noop", queue="bench")
async def noop(n: int) -> None:
    record("procrastinate", n)
