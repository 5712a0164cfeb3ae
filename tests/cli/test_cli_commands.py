"""``prismq-queue`` through its real entry points, in subprocesses: commands, JSON shapes,
exit codes and error lines."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prismq.queue import QueueClient, QueueDatabase
from prismq.queue.models import TaskStatus
from prismq.queue.worker import QueueWorker

SRC = Path(__file__).resolve().parents[2] / "packages" / "queue" / "src"
TASK_KEYS = {
    "id": int,
    "task_type": str,
    "status": str,
    "priority": int,
    "attempts": int,
    "max_attempts": int,
    "payload": object,
    "result": object,
    "progress": (float, type(None)),
    "progress_message": (str, type(None)),
    "last_error": (str, type(None)),
    "idempotency_key": (str, type(None)),
    "locked_by": (str, type(None)),
    "cancel_requested": bool,
    "run_after": str,
    "lease_until": (str, type(None)),
    "created_at": str,
    "started_at": (str, type(None)),
    "finished_at": (str, type(None)),
}


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in paths), str(SRC), env.get("PYTHONPATH", "")])
    env.pop("PRISMQ_QUEUE_DB_PATH", None)
    env.pop("PRISMQ_QUEUE_MAX_WORKERS", None)
    env["COLUMNS"] = "200"
    return env


def run_cli(
    *args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 60, env: Any = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m prismq.queue ARGS`` and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "prismq.queue", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env or _env(),
    )


def ok(*args: str, **kwargs: Any) -> str:
    proc = run_cli(*args, **kwargs)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def ok_json(*args: str, **kwargs: Any) -> Any:
    return json.loads(ok(*args, "--json", **kwargs))


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") or lines[0].startswith("prismq-queue"), lines[0]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_task_shape(data: dict[str, Any]) -> None:
    assert set(data) == set(TASK_KEYS)
    for key, kind in TASK_KEYS.items():
        assert isinstance(data[key], kind), (key, data[key])


@pytest.fixture
def db_arg(db_path: Path) -> list[str]:
    return ["--db", str(db_path)]


def test_version_through_both_entry_points() -> None:
    from prismq.queue import __version__

    assert ok("--version").strip() == f"prismq-queue {__version__}"
    script = shutil.which("prismq-queue", path=str(Path(sys.executable).parent))
    assert script is not None, "the prismq-queue console script is not installed next to python"
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"prismq-queue {__version__}"


def test_init_enqueue_list_show_stats(db_arg: list[str], db_path: Path) -> None:
    assert "schema version" in ok(*db_arg, "init")
    init = ok_json(*db_arg, "init")
    assert init == {"database": str(db_path), "schema_version": init["schema_version"]}
    assert isinstance(init["schema_version"], int)
    assert init["schema_version"] >= 1

    first = ok_json(*db_arg, "enqueue", "resize", '{"w": 640}', "--priority", "5", "--max-attempts", "7")
    assert first == {"id": first["id"], "created": True}
    assert isinstance(first["id"], int)
    from_stdin = ok_json(*db_arg, "enqueue", "email", "-", stdin='{"to": "a@example.com"}')
    delayed = ok_json(*db_arg, "enqueue", "report", "[1, 2]", "--delay", "1h", "--idempotency-key", "r-1")
    again = ok_json(*db_arg, "enqueue", "report", "[3]", "--idempotency-key", "r-1")
    assert again == {"id": delayed["id"], "created": False}  # same key, same task
    text = ok(*db_arg, "enqueue", "noop")
    match = re.fullmatch(r"Enqueued task (\d+) \(noop\)", text.strip())
    assert match is not None, text
    noop_id = int(match.group(1))
    assert noop_id > delayed["id"]

    with QueueDatabase(db_path) as db:
        client = QueueClient(db)
        resize = client.get(first["id"])
        assert (resize.payload, resize.priority, resize.max_attempts) == ({"w": 640}, 5, 7)
        assert client.get(from_stdin["id"]).payload == {"to": "a@example.com"}
        report = client.get(delayed["id"])
        assert report.payload == [1, 2]
        assert report.idempotency_key == "r-1"
        assert 3500 < (report.run_after - report.created_at).total_seconds() <= 3600
        assert client.get(noop_id).payload is None

    listed = ok_json(*db_arg, "list")
    assert isinstance(listed, list)
    assert [t["id"] for t in listed] == [noop_id, delayed["id"], from_stdin["id"], first["id"]]
    for item in listed:
        assert_task_shape(item)
    oldest = ok_json(*db_arg, "list", "--oldest-first", "--type", "report", "--type", "email")
    assert [t["task_type"] for t in oldest] == ["email", "report"]
    assert ok_json(*db_arg, "list", "--status", "dead") == []
    table = ok(*db_arg, "list")
    assert "4 task(s)" in table
    assert "resize" in table

    shown = ok_json(*db_arg, "show", str(first["id"]))
    assert_task_shape(shown)
    assert shown["payload"] == {"w": 640}
    assert shown["status"] == "queued"
    assert f"Task {first['id']}" in ok(*db_arg, "show", str(first["id"]))

    stats = ok_json(*db_arg, "stats")
    assert set(stats) == {
        "total",
        "by_status",
        "by_type",
        "ready",
        "delayed",
        "oldest_ready_age_seconds",
        "expired_leases",
        "finished_last_minute",
        "finished_last_5_minutes",
        "throughput_per_second_1m",
        "throughput_per_second_5m",
        "workers",
    }
    assert stats["total"] == 4
    assert stats["by_status"] == {s.value: 4 if s is TaskStatus.QUEUED else 0 for s in TaskStatus}
    assert stats["by_type"]["report"]["queued"] == 1
    assert (stats["ready"], stats["delayed"]) == (3, 1)
    assert isinstance(stats["oldest_ready_age_seconds"], float)
    assert isinstance(stats["throughput_per_second_1m"], float)
    assert stats["workers"] == []
    text = ok(*db_arg, "stats")
    assert "Queue" in text
    assert "By task type" in text
    assert "resize" in text


def test_retry_cancel_prune(db_arg: list[str], db_path: Path) -> None:
    ok(*db_arg, "init")
    with QueueDatabase(db_path) as db:
        client = QueueClient(db)
        dead_id = client.enqueue("fails", None, max_attempts=1)
        queued_id = client.enqueue("waits", None)
        running_id = client.enqueue("runs", None)
        worker = QueueWorker(db, "cli-test", task_types=["fails"])
        task = worker.claim_next_task()
        worker.fail_task(task.id, "broken")
        runner = QueueWorker(db, "cli-runner", task_types=["runs"])
        assert runner.claim_next_task().id == running_id

    retried = ok_json(*db_arg, "retry", str(dead_id))
    assert_task_shape(retried)
    assert (retried["status"], retried["attempts"]) == ("queued", 0)
    cancelled = ok_json(*db_arg, "cancel", str(queued_id))
    assert cancelled["status"] == "cancelled"
    flagged = ok(*db_arg, "cancel", str(running_id))
    assert f"Task {running_id} is now leased" in flagged
    assert "next heartbeat" in flagged
    # Cancelling again a finished task is a failure, exit 1.
    proc = run_cli(*db_arg, "cancel", str(queued_id))
    assert_one_line_error(proc, 1, "TaskStateError")

    pruned = ok_json(*db_arg, "prune", "--older-than", "0s")
    assert pruned == {"deleted": 1, "statuses": ["completed", "cancelled"], "older_than_seconds": 0.0}
    assert [t["id"] for t in ok_json(*db_arg, "list")] == [running_id, dead_id]  # the cancelled one went
    assert "Deleted 0 finished task(s)" in ok(*db_arg, "prune", "--older-than", "7d")


def test_backup_and_restore(db_arg: list[str], db_path: Path, tmp_path: Path) -> None:
    ok(*db_arg, "init")
    ok(*db_arg, "enqueue", "keep", '{"n": 1}')
    to_file = tmp_path / "copy.db"
    written = ok_json(*db_arg, "backup", str(to_file))
    assert written["backup"] == str(to_file)
    assert written["bytes"] == to_file.stat().st_size > 0
    folder = tmp_path / "backups"
    folder.mkdir()
    text = ok(*db_arg, "backup", str(folder))
    dated = list(folder.iterdir())
    assert len(dated) == 1
    assert dated[0].name.startswith("queue-")
    assert dated[0].suffix == ".db"
    assert f"Backup written: {dated[0]}" in text

    ok(*db_arg, "enqueue", "after_backup", "null")
    refused = run_cli(*db_arg, "restore", str(to_file), stdin="")
    assert_one_line_error(refused, 2, "--yes")
    restored = ok_json(*db_arg, "restore", str(to_file), "--yes")
    assert restored["restored_from"] == str(to_file)
    assert restored["by_status"]["queued"] == 1
    assert [t["task_type"] for t in ok_json(*db_arg, "list")] == ["keep"]
    assert "Restored from" in ok(*db_arg, "restore", str(dated[0]), "--yes")


def test_doctor_reports_shape_and_health(db_arg: list[str], db_path: Path, tmp_path: Path) -> None:
    fresh = run_cli(*db_arg, "doctor", "--json")
    assert fresh.returncode == 1  # not initialised is a failed check
    report = json.loads(fresh.stdout)
    assert report["healthy"] is False
    assert report["checks"][0] == {
        "check": "schema",
        "status": "fail",
        "detail": "not initialised; run 'prismq-queue init'",
    }
    ok(*db_arg, "init")
    report = ok_json(*db_arg, "doctor")
    assert set(report) == {"database", "healthy", "checks"}
    assert report["database"] == str(db_path)
    assert report["healthy"] is True
    names = [c["check"] for c in report["checks"]]
    assert names == [
        "schema",
        "integrity",
        "journal mode",
        "WAL size",
        "expired leases",
        "stale workers",
        "dead tasks",
        "schedules",
    ]
    for check in report["checks"]:
        assert set(check) == {"check", "status", "detail"}
        assert check["status"] in ("ok", "warn", "fail")
    assert "Doctor" in ok(*db_arg, "doctor")


def test_worker_burst_drains_the_queue(db_arg: list[str], db_path: Path, tmp_path: Path) -> None:
    (tmp_path / "cli_handlers.py").write_text(
        "from prismq.queue.runtime import HandlerRegistry\n"
        "registry = HandlerRegistry()\n"
        "@registry.handler('double')\n"
        "def double(ctx):\n"
        "    return ctx.payload * 2\n",
        encoding="utf-8",
    )
    ok(*db_arg, "init")
    for n in range(5):
        ok(*db_arg, "enqueue", "double", str(n))
    ok(*db_arg, "enqueue", "other", "null")
    # The handlers module is found from the working folder, as for a user's project.
    ok(*db_arg, "worker", "--handlers", "cli_handlers", "--burst", "--concurrency", "2", cwd=tmp_path)
    with QueueDatabase(db_path) as db:
        client = QueueClient(db)
        done = client.list(status="completed")
        assert sorted(t.result for t in done) == [0, 2, 4, 6, 8]
        assert [t.task_type for t in client.list(status="queued")] == ["other"]


def test_demo_runs_and_prints_stats(tmp_path: Path) -> None:
    proc = run_cli("--db", str(tmp_path / "demo.db"), "demo", "--tasks", "60", "--processes", "1", timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "Enqueued 60 tasks" in proc.stdout
    assert "Queue" in proc.stdout
    assert "By task type" in proc.stdout
    assert "completed" in proc.stdout
    assert "demo.resize_image" in proc.stdout
    with QueueDatabase(tmp_path / "demo.db") as db:
        counts = QueueClient(db).count_by_status()
    assert counts["completed"] + counts["dead"] == 60


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        (["enqueue", "x", "{not json"], ["payload is not valid JSON"]),
        (["enqueue", "x", "NaN"], ["NaN is not valid JSON"]),
        (["enqueue", "x", "null", "--priority", "5000"], ["priority"]),
        (["enqueue", "x", "null", "--delay=-5"], ["is not a duration"]),
        (["enqueue", "x", "null", "--max-attempts", "0"], ["must be at least 1"]),
        (["list", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["list", "--status", "sleeping"], ["unknown status 'sleeping'"]),
        ([], ["choose a command"]),
    ],
)
def test_bad_usage_exits_2_with_one_line(db_arg: list[str], args: list[str], fragments: list[str]) -> None:
    proc = run_cli(*db_arg, *args)
    assert_one_line_error(proc, 2, *fragments)


def test_failures_exit_1_and_debug_shows_the_traceback(db_arg: list[str], db_path: Path) -> None:
    ok(*db_arg, "init")
    missing = run_cli(*db_arg, "show", "424242")
    assert_one_line_error(missing, 1, "TaskNotFoundError", "424242")
    debug = run_cli(*db_arg, "--debug", "show", "424242")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "TaskNotFoundError" in debug.stderr

    corrupt = db_path.with_name("corrupt.db")
    corrupt.write_bytes(b"this is not a database file at all" * 200)
    proc = run_cli("--db", str(corrupt), "stats")
    assert_one_line_error(proc, 1)
    assert corrupt.read_bytes().startswith(b"this is not a database")  # left untouched
