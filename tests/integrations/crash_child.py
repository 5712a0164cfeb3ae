"""Child process for the crash test: starts a run, reports it is running, then waits.

Usage: ``python crash_child.py <database> <marker-file> <rerunnable: 0|1>``. The parent
kills this process with SIGKILL once the marker file exists.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prismq.queue import QueueDatabase
from prismq.queue.integrations import BackgroundTaskManager, Run, RunRegistry


async def main(database: str, marker: str, rerunnable: bool) -> None:
    manager = BackgroundTaskManager(RunRegistry(), queue=QueueDatabase(database), lease_duration=1.0)
    await manager.start()

    async def work() -> None:
        manager.report_progress("crash-run", 40, items_processed=4, items_total=10)
        await manager.flush()
        Path(marker).write_text("running", encoding="utf-8")
        await asyncio.sleep(3600)

    run = Run(run_id="crash-run", module_id="ingest", rerunnable=rerunnable, parameters={"n": 10})
    manager.start_task(run, work())
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "1"))
