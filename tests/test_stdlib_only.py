"""The core, async client, task functions and testing helpers import with the standard library alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_new_modules_need_no_third_party_package() -> None:
    script = textwrap.dedent(
        """
        import asyncio, importlib.abc, sys, tempfile, pathlib

        BLOCKED = ("psycopg", "psycopg_pool", "yaml", "rich", "pytest", "django", "typing_extensions")

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Block())
        import prismq.queue
        import prismq.queue.aio
        import prismq.queue.payloads
        import prismq.queue.tasks
        import prismq.queue.testing
        from prismq.queue import AsyncQueueClient
        from prismq.queue.tasks import TaskRegistry
        from prismq.queue.testing import drain, temporary_queue

        tasks = TaskRegistry()

        @tasks.task
        def double(n: int) -> int:
            return 2 * n

        async def main(db):
            async with AsyncQueueClient(db) as client:
                tasks.bind(client)
                return await double.aenqueue(21)

        with temporary_queue() as db:
            task_id = asyncio.run(main(db))
            assert drain(db, tasks).results == {task_id: 42}
        loaded = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr
