"""Fixtures of the dashboard's route tests (helpers in dashboard_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the dashboard tests need the dashboard extra")

from dashboard_support import Seeded, open_client, seed

from prismq.queue import QueueDatabase
from prismq.queue.dashboard import create_app


@pytest.fixture
def seeded(db: QueueDatabase) -> Seeded:
    """Tasks in every state: three queued emails, a running, a completed and a dead task."""
    return seed(db)


@pytest.fixture
def http(db: QueueDatabase) -> Iterator[Any]:
    """A test client of a dashboard over ``db``."""
    with open_client(create_app(db)) as client:
        yield client
