"""Helpers for the runtime tests: run a worker in a thread, write handler modules, child envs."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prismq.queue.runtime import HandlerRegistry, RunSummary
from prismq.queue.worker import QueueWorker

SRC = Path(__file__).resolve().parents[2] / "packages" / "queue" / "src"


class ThreadedWorker:
    """A WorkerRunner on a background thread, stopped through its stop flag."""

    def __init__(self, worker: QueueWorker, registry: HandlerRegistry, **options: Any) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        options.setdefault("stop_flag", self.stop)
        self._thread = threading.Thread(target=self._run, args=(registry, options), daemon=True)

    def _run(self, registry: HandlerRegistry, options: dict[str, Any]) -> None:
        try:
            self.summary = self.worker.run(registry, **options)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def start(self) -> ThreadedWorker:
        self._thread.start()
        return self

    def join(self, timeout: float = 15.0) -> RunSummary:
        self.stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the worker thread did not stop"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy (liveness bound ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def write_module(folder: Path, name: str, source: str) -> Path:
    """Write an importable module ``name`` into ``folder``."""
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def child_env(*paths: Path) -> dict[str, str]:
    """The environment for a child Python process that imports modules from ``paths``."""
    env = dict(os.environ)
    extra = [str(p) for p in paths] + [str(SRC)]
    env["PYTHONPATH"] = os.pathsep.join([*extra, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PRISMQ_QUEUE_WORKER_ID", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable
