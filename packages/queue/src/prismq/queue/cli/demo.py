"""``prismq-queue demo``: a mixed workload on a fresh database, run by real worker processes.

The handlers below are what the demo's worker processes run. They sleep a little to stand
in for real work, report progress, fail once and retry, or always fail and go dead.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..client import QueueClient, TaskSpec
from ..config import default_db_path
from ..database import QueueDatabase
from ..errors import ConfigError
from ..retry import RetryPolicy
from ..runtime import HandlerRegistry, TaskContext, TaskFailed
from ..runtime.settings import WorkerSettings
from ..runtime.supervisor import Supervisor
from . import output

__all__ = ["registry", "run_demo"]

registry = HandlerRegistry()


@registry.handler("demo.resize_image")
def resize_image(ctx: TaskContext) -> dict[str, int]:
    """Pretend to resize an image."""
    time.sleep(0.004)
    width = int(ctx.payload["width"])
    return {"width": width // 2, "height": width // 4}


@registry.handler("demo.send_email")
async def send_email(ctx: TaskContext) -> dict[str, str]:
    """Pretend to send an email (an async handler)."""
    await asyncio.sleep(0.003)
    return {"sent_to": ctx.payload["to"]}


@registry.handler("demo.generate_report")
def generate_report(ctx: TaskContext) -> dict[str, int]:
    """Pretend to build a report, reporting progress on the way."""
    pages = int(ctx.payload["pages"])
    for page in range(1, pages + 1):
        time.sleep(0.002)
        ctx.report_progress(100 * page / pages, f"page {page} of {pages}")
    return {"pages": pages}


@registry.handler("demo.flaky_upload")
def flaky_upload(ctx: TaskContext) -> str:
    """Fail on the first attempt, succeed on the retry."""
    if ctx.attempt == 1:
        raise ConnectionError("upload endpoint reset the connection")
    return "uploaded"


@registry.handler("demo.broken_import")
def broken_import(ctx: TaskContext) -> None:
    """Always fail, so the task goes dead after its attempts."""
    raise TaskFailed(f"row {ctx.payload['row']} has no id column")


def _workload(count: int, seed: int = 7) -> list[TaskSpec]:
    rng = random.Random(seed)
    fast_retry = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=1.0, jitter=0.2)
    specs: list[TaskSpec] = []
    for index in range(count):
        roll = rng.random()
        if roll < 0.35:
            specs.append(
                TaskSpec(
                    "demo.resize_image",
                    {"width": rng.choice([640, 1280, 1920])},
                    priority=rng.choice([50, 100]),
                )
            )
        elif roll < 0.65:
            specs.append(TaskSpec("demo.send_email", {"to": f"user{index}@example.com"}, priority=10))
        elif roll < 0.8:
            specs.append(
                TaskSpec(
                    "demo.generate_report",
                    {"pages": rng.randint(2, 6)},
                    priority=200,
                    delay=rng.uniform(0.2, 0.8),
                )
            )
        elif roll < 0.95:
            specs.append(TaskSpec("demo.flaky_upload", {"file": f"f{index}.bin"}, retry_policy=fast_retry))
        else:
            specs.append(
                TaskSpec(
                    "demo.broken_import",
                    {"row": index},
                    retry_policy=RetryPolicy(max_attempts=2, base_delay=0.2, jitter=0.0),
                )
            )
    return specs


def _prepare_database(target: str | None) -> QueueDatabase:
    if target is None:
        path = default_db_path().with_name("demo.db")
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        db = QueueDatabase(path)
    else:
        db = QueueDatabase(target)
    db.initialize_schema()
    if sum(QueueClient(db).count_by_status().values()):
        db.close()
        raise ConfigError(
            f"the demo needs an empty database and {target} already holds tasks; pass a new --db path"
        )
    return db


def run_demo(target: str | None, *, tasks: int = 600, processes: int = 2, concurrency: int = 4) -> int:
    """Enqueue a mixed workload, drain it with worker processes, print the results.

    Returns:
        0 when every task reached a final status.
    """
    db = _prepare_database(target)
    client = QueueClient(db)
    output.console.print(f"[bold]PrismQ Queue demo[/] on {db.location}")
    specs = _workload(tasks)
    started = time.perf_counter()
    client.enqueue_many(specs)
    enqueue_seconds = time.perf_counter() - started
    output.console.print(
        f"Enqueued {tasks} tasks in {enqueue_seconds * 1000:.1f} ms "
        f"(5 types, priorities 10-200, some delayed, some failing)"
    )
    settings = WorkerSettings(
        database=str(db.location),
        registry=f"{__name__}:registry",
        strategy="priority",
        concurrency=concurrency,
        lease_duration=10.0,
        idle_timeout=0.2,
        grace_period=5.0,
    )
    supervisor = Supervisor(settings, processes)
    import threading

    finished = threading.Event()
    exit_code: list[int] = []

    def supervise() -> None:
        exit_code.append(supervisor.run(install_signal_handlers=False))
        finished.set()

    thread = threading.Thread(target=supervise, name="prismq-demo-supervisor", daemon=True)
    run_started = time.perf_counter()
    thread.start()
    done = 0
    try:
        with Progress(
            TextColumn("[bold]Running"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=output.console,
            transient=False,
        ) as progress:
            bar = progress.add_task("tasks", total=tasks, detail="")
            while not finished.is_set():
                counts = client.count_by_status()
                done = counts["completed"] + counts["dead"] + counts["cancelled"]
                progress.update(
                    bar,
                    completed=done,
                    detail=f"{counts['leased']} running, {counts['queued']} waiting, {counts['dead']} dead",
                )
                if done >= tasks:
                    break
                if time.perf_counter() - run_started > 50:
                    output.console.print("[yellow]The demo took too long; stopping the workers.[/]")
                    break
                time.sleep(0.1)
    except KeyboardInterrupt:
        output.console.print("Interrupted; stopping the workers.")
    finally:
        supervisor.stop_event.set()
        thread.join(timeout=30)
    elapsed = time.perf_counter() - run_started
    stats = client.stats()
    for table in output.stats_tables(stats, datetime.now(timezone.utc)):
        if table.title != "Workers":
            output.console.print(table)
    completed = stats.by_status["completed"]
    retried = sum(
        1
        for t in client.list(status="completed", task_type="demo.flaky_upload", limit=10_000)
        if t.attempts > 1
    )
    output.console.print(
        f"[bold]{completed}[/] completed, [bold]{stats.by_status['dead']}[/] dead (after retries), "
        f"{retried} succeeded on a retry, in {elapsed:.2f} s with {processes} worker processes "
        f"× {concurrency}: [bold]{(completed + stats.by_status['dead']) / elapsed:.0f} tasks/s[/]"
    )
    output.console.print(
        "Next: 'prismq-queue --db " + str(db.location) + " list --status dead' shows the failures; "
        "see the quick start to run your own handlers."
    )
    db.close()
    return 0 if done >= tasks else 1
