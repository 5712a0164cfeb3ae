"""``PRISMQ_QUEUE_MAX_WORKERS`` is the default process count of ``prismq-queue worker``.

Each test runs the real CLI in a subprocess; the handler returns its process id, so the
completed tasks tell how many worker processes took part.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prismq.queue import QueueClient, QueueDatabase
from prismq.queue.runtime.settings import resolve_settings

SRC = Path(__file__).resolve().parents[2] / "packages" / "queue" / "src"
HANDLERS = (
    "import os, time\n"
    "from prismq.queue.runtime import HandlerRegistry\n"
    "registry = HandlerRegistry()\n"
    "@registry.handler('pid')\n"
    "def pid(ctx):\n"
    "    time.sleep(0.2)\n"
    "    return os.getpid()\n"
)


def _run(tmp_path: Path, *args: str, max_workers: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISMQ_QUEUE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(SRC), os.environ.get("PYTHONPATH", "")])
    if max_workers is not None:
        env["PRISMQ_QUEUE_MAX_WORKERS"] = max_workers
    return subprocess.run(
        [sys.executable, "-m", "prismq.queue", "--db", str(tmp_path / "q.db"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )


def _drain(tmp_path: Path, *args: str, max_workers: str | None) -> set[int]:
    """Enqueue 8 slow tasks, drain them with ``worker --burst ARGS``; the worker pids."""
    (tmp_path / "pid_handlers.py").write_text(HANDLERS, encoding="utf-8")
    with QueueDatabase(tmp_path / "q.db") as db:
        db.initialize_schema()
        client = QueueClient(db)
        for _ in range(8):
            client.enqueue("pid")
    proc = _run(tmp_path, "worker", "--handlers", "pid_handlers", "--burst", *args, max_workers=max_workers)
    assert proc.returncode == 0, proc.stderr
    with QueueDatabase(tmp_path / "q.db") as db:
        done = QueueClient(db).list(status="completed")
    assert len(done) == 8
    return {t.result for t in done}


def test_variable_sets_the_worker_process_count(tmp_path: Path) -> None:
    assert len(_drain(tmp_path, max_workers="2")) == 2


def test_processes_flag_wins_over_the_variable(tmp_path: Path) -> None:
    assert len(_drain(tmp_path, "--processes", "1", max_workers="2")) == 1


def test_unset_variable_means_one_process(tmp_path: Path) -> None:
    assert len(_drain(tmp_path, max_workers=None)) == 1


def test_config_file_processes_wins_over_the_variable(tmp_path: Path) -> None:
    (tmp_path / "worker.toml").write_text(
        '[worker]\nprocesses = 1\nregistry = "pid_handlers"\n', encoding="utf-8"
    )
    pids = _drain(tmp_path, "--config", str(tmp_path / "worker.toml"), max_workers="2")
    assert len(pids) == 1


def test_malformed_variable_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "pid_handlers.py").write_text(HANDLERS, encoding="utf-8")
    proc = _run(tmp_path, "worker", "--handlers", "pid_handlers", "--burst", max_workers="two")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: PRISMQ_QUEUE_MAX_WORKERS='two' is not a whole number; expected a positive integer, "
        "e.g. PRISMQ_QUEUE_MAX_WORKERS=4"
    ]


def test_resolved_settings_read_the_variable(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The chain the CLI uses: flag over file over PRISMQ_QUEUE_MAX_WORKERS over 1."""
    (tmp_path / "pid_handlers.py").write_text(HANDLERS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    flags = {"registry": "pid_handlers"}
    env = {"PRISMQ_QUEUE_MAX_WORKERS": "3"}
    assert resolve_settings(None, {**flags, "processes": None}, environ=env).processes == 3
    assert resolve_settings(None, {**flags, "processes": 1}, environ=env).processes == 1
    assert resolve_settings(None, flags, environ={}).processes == 1
