"""Serve the dashboard over a seeded queue on 127.0.0.1 and check it in headless Chromium.

Usage: python _meta/tools/browser/check_dashboard.py [--screenshots DIR] [--requests FILE]

The queue (a temporary SQLite file) gets an hour of history (tasks completed and failed
minute by minute, for the charts), tasks waiting in several types, a paused type, a
running task held by a live worker, a stale worker, a dead task with a traceback, and
three schedules (one paused, one run once).
``check_dashboard.mjs`` then loads every page and clicks Retry on the dead task; this
script finally checks, in the database itself, that the task is queued again. Exit code 0
when everything passed. Needs the ``dashboard`` extra, Node.js with the npm packages
installed (``npm ci``) and Chromium.
"""

from __future__ import annotations

import argparse
import math
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from prismq.queue import QueueClient, QueueDatabase, QueueWorker
from prismq.queue.dashboard import create_app, mask_fields

HERE = Path(__file__).resolve().parent


TRACEBACK = """Traceback (most recent call last):
  File "app/tasks.py", line 31, in resize
    check_width(image, payload["width"])
  File "app/images.py", line 12, in check_width
    raise ValueError(f"width {width} exceeds the source image ({image.width} px)")
ValueError: width 640 exceeds the source image (320 px)
"""


class _Clock:
    """A clock set by hand, for writing an hour of history in a moment."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def seed(path: Path) -> int:
    """Fill a queue with an hour of history and work in every state; return the dead task's id."""
    now = time.time()
    clock = _Clock(now - 3600)
    with QueueDatabase(path, clock=clock) as db:
        db.initialize_schema()
        client = QueueClient(db)
        history = QueueWorker(db, "worker-history", register=False)
        for minute in range(60):
            clock.now = now - 3600 + minute * 60 + 5
            done = 20 + int(15 * math.sin(minute / 6))
            failed = 2 if minute % 11 == 3 else 0
            client.enqueue_many(
                [{"task_type": ("email", "report")[i % 2], "payload": {"n": i}} for i in range(done)]
            )
            client.enqueue_many(
                [
                    {
                        "task_type": "thumbnail",
                        "payload": {"image": f"img-{minute}-{i}.png"},
                        "max_attempts": 1,
                    }
                    for i in range(failed)
                ]
            )
            clock.now += 20
            tasks = history.claim_batch(done + failed)
            ok = [t for t in tasks if t.task_type != "thumbnail"]
            history.complete_many(ok, [{"sent": True}] * len(ok))
            for task in tasks:
                if task.task_type == "thumbnail":
                    history.fail_task(task, "decoder error: truncated PNG", retry=False)
        clock.now = now - 600
        QueueWorker(db, "worker-old", task_types=["report"])  # registers, then stays silent
        clock.now = now - 30
        client.enqueue_many(
            [
                {"task_type": "email", "payload": {"to": f"user{i}@example.com", "password": "hunter2"}}
                for i in range(25)
            ]
        )
        client.enqueue_many([{"task_type": "billing", "payload": {"invoice": 1000 + i}} for i in range(8)])
        client.pause("billing")
        dead_id = client.enqueue("resize", {"image": "cat.png", "width": 640}, max_attempts=1)
        resizer = QueueWorker(db, "worker-1", task_types=["resize", "report"])
        task = resizer.claim_next_task()
        if task is None or task.id != dead_id:
            raise SystemExit(f"seeding went wrong: claimed {task} instead of task {dead_id}")
        resizer.fail_task(
            task,
            "ValueError: width 640 exceeds the source image (320 px)",
            retry=False,
            traceback=TRACEBACK,
        )
        client.enqueue("report", {"month": "2026-11"})
        clock.now = now - 2
        resizer.claim_next_task()  # running now, held by worker-1
        resizer.heartbeat()
        client.schedules.add("hourly-report", "0 * * * *", "report", {"month": "current"})
        client.schedules.add("email-digest", "30 7 * * MON-FRI", "email", {"digest": True}, misfire="skip")
        client.schedules.add("nightly-cleanup", "15 3 * * *", "cleanup", misfire="backfill")
        client.schedules.pause("nightly-cleanup")
        client.schedules.run_now("hourly-report")
        return dead_id


def serve(path: Path) -> tuple[uvicorn.Server, threading.Thread, QueueDatabase, str]:
    """Start the dashboard on a free port of 127.0.0.1 in a thread."""
    db = QueueDatabase(path)
    app = create_app(db, mask=mask_fields(["password"]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise SystemExit("the dashboard server did not start")
        time.sleep(0.05)
    return server, thread, db, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshots", help="folder for one PNG per page")
    parser.add_argument("--requests", help="file for every request URL the browser made")
    parser.add_argument("--node", default="node", help="the node executable")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prismq-dashboard-") as folder:
        path = Path(folder) / "queue.db"
        dead_id = seed(path)
        server, thread, db, base = serve(path)
        try:
            command = [args.node, str(HERE / "check_dashboard.mjs"), base, "--dead-task", str(dead_id)]
            if args.screenshots:
                command += ["--screenshots", args.screenshots]
            if args.requests:
                command += ["--requests", args.requests]
            code = subprocess.run(command, check=False).returncode
            status = QueueClient(db).get(dead_id).status.value
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            db.close()
    if code == 0 and status != "queued":
        print(
            f"the browser reported success, but task {dead_id} is {status} in the database", file=sys.stderr
        )
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
