"""The Django entry: the database from the settings, and ``manage.py prismq_worker``."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

django = pytest.importorskip("django", reason="the Django entry needs the django extra")

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.management.base import CommandError  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from prismq.queue import ConfigError, QueueClient, TaskStatus  # noqa: E402
from prismq.queue.contrib.django import conf, get_client, get_database  # noqa: E402

if not settings.configured:
    settings.configure(INSTALLED_APPS=["prismq.queue.contrib.django"], USE_TZ=True)
    django.setup()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A handlers module on sys.path and a queue file, as a Django project would have them."""
    package = tmp_path / "shop_tasks_module.py"
    package.write_text(
        textwrap.dedent(
            """
            from prismq.queue.tasks import TaskRegistry

            tasks = TaskRegistry()

            @tasks.task
            def total(prices: list[float]) -> float:
                return sum(prices)
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    conf.close_all()
    sys.modules.pop("shop_tasks_module", None)


def test_the_worker_command_runs_the_settings_handlers(project: Path) -> None:
    db_path = project / "queue.db"
    with override_settings(PRISMQ_QUEUE_DATABASE=db_path, PRISMQ_QUEUE_HANDLERS="shop_tasks_module:tasks"):
        client = get_client()
        assert get_database() is client.db  # one database per process
        assert client.db.path == db_path
        from shop_tasks_module import tasks  # type: ignore[import-not-found]

        tasks.bind(client)
        task_id = tasks["total"].enqueue([1.5, 2.5])
        out = _run_worker("--burst")
        assert "1 completed" in out
        assert QueueClient(client.db).get(task_id).status is TaskStatus.COMPLETED
        assert QueueClient(client.db).get_result(task_id) == 4.0


def test_missing_or_bad_settings_are_clear_errors(project: Path) -> None:
    with override_settings(PRISMQ_QUEUE_DATABASE=project / "q.db"):
        with pytest.raises(CommandError, match="set PRISMQ_QUEUE_HANDLERS"):
            _run_worker("--burst")
        with pytest.raises(CommandError, match="cannot import module 'nowhere'"):
            _run_worker("--burst", "--handlers", "nowhere:tasks")
    with (
        override_settings(PRISMQ_QUEUE_DATABASE=42),
        pytest.raises(ConfigError, match="PRISMQ_QUEUE_DATABASE"),
    ):
        get_database()


def _run_worker(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("prismq_worker", *args, stdout=out)
    return out.getvalue()
