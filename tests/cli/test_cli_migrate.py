"""``prismq-queue migrate``: SQLite to PostgreSQL and back, verified, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from prismq.queue import QueueClient, QueueDatabase, QueueWorker
from prismq.queue.models import TaskStatus


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prismq.queue", *args], capture_output=True, text=True, timeout=120
    )


def _fill(path: Path) -> dict[int, TaskStatus]:
    with QueueDatabase(path) as db:
        db.initialize_schema()
        client = QueueClient(db)
        ids = client.enqueue_many([{"task_type": "copy", "payload": {"n": n}} for n in range(25)])
        client.enqueue("later", {"n": 99}, delay=3600)
        worker = QueueWorker(db, worker_id="w")
        done = worker.claim_next_task()
        assert done is not None
        worker.complete_task(done, result={"ok": True})
        running = worker.claim_next_task()
        assert running is not None
        client.cancel(ids[-1])
        return {t.id: t.status for t in client.list(limit=1000)}


def test_migrate_sqlite_to_postgres_and_back_keeps_ids_statuses_and_checksum(
    tmp_path: Path, postgres_schema: tuple[str, str]
) -> None:
    url, schema = postgres_schema
    target = f"{url}?schema={schema}"
    source = tmp_path / "source.db"
    before = _fill(source)

    forward = _cli("migrate", "--from", str(source), "--to", target, "--json", "--batch-size", "7")
    assert forward.returncode == 0, forward.stderr
    report = json.loads(forward.stdout)
    assert report["verified"] is True
    assert report["tasks_copied"] == len(before) == 26
    assert report["leases_requeued"] == 1
    assert (report["runs_copied"], report["runs_active"]) == (0, 0)  # no runs here
    assert report["limits_copied"] == 0

    with QueueDatabase(target) as pg:
        copied = {t.id: t.status for t in QueueClient(pg).list(limit=1000)}
    expected = {i: (TaskStatus.QUEUED if s is TaskStatus.LEASED else s) for i, s in before.items()}
    assert copied == expected

    back = _cli("migrate", "--from", target, "--to", str(tmp_path / "back.db"), "--json")
    assert back.returncode == 0, back.stderr
    round_trip = json.loads(back.stdout)
    assert round_trip["verified"] is True
    assert round_trip["checksum"] == report["checksum"]

    # Safe to run again: an upsert by id, same tasks and statuses (the requeued lease gets a
    # fresh updated_at, so only the row set is compared, not the checksum).
    again = _cli("migrate", "--from", str(source), "--to", target, "--json")
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["verified"] is True
    assert rerun["tasks_copied"] == report["tasks_copied"]
    with QueueDatabase(target) as pg:
        assert {t.id: t.status for t in QueueClient(pg).list(limit=1000)} == expected


def test_migrate_human_output_and_refusals(tmp_path: Path) -> None:
    source = tmp_path / "a.db"
    _fill(source)
    proc = _cli("--db", str(source), "migrate", "--to", str(tmp_path / "b.db"))
    assert proc.returncode == 0, proc.stderr
    assert "copied 26 tasks" in proc.stdout
    assert "verified" in proc.stdout

    same = _cli("migrate", "--from", str(source), "--to", str(source))
    assert same.returncode == 1
    assert "Traceback" not in same.stderr
    assert same.stderr.strip().startswith("error: ")

    missing = _cli("migrate", "--from", str(source))
    assert missing.returncode == 2
    assert "--to" in missing.stderr
