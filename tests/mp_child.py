"""Child processes for tests/test_multiprocess.py (run as ``python mp_child.py <mode> ...``).

Each mode opens its own QueueDatabase, as a separate worker process would.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from prismq.queue import QueueClient, QueueDatabase, QueueWorker


def wait_for(go_file: Path, timeout: float = 60.0) -> None:
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    while not go_file.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the go signal never came")
        time.sleep(0.005)


def drain(db_path: str, out_file: str, go_file: str, worker_id: str, batch: int) -> None:
    """Claim and complete until nothing is queued; record every completed id.

    ``batch`` 0 drains with ``complete_and_claim`` (each completion claims the next task in
    the same transaction), 1 with ``claim_next_task`` + ``complete_task``, more with
    ``claim_batch`` + ``complete_many``.
    """
    with QueueDatabase(db_path) as db:
        client = QueueClient(db)
        worker = QueueWorker(db, worker_id, lease_duration=120)
        wait_for(Path(go_file))
        with open(out_file, "w", encoding="utf-8") as out:
            held = None
            while True:
                if held is not None:
                    following = worker.complete_and_claim(held, {"by": worker_id})
                    out.write(f"{held.id}\n")
                    out.flush()
                    held = following
                    continue
                tasks = worker.claim_batch(max(batch, 1))
                if not tasks:
                    if client.count_by_status()["queued"] == 0:
                        break
                    time.sleep(0.002)
                    continue
                if batch == 0:
                    held = tasks[0]
                    continue
                if batch == 1:
                    worker.complete_task(tasks[0], {"by": worker_id})
                    done = [tasks[0].id]
                else:
                    done = worker.complete_many(tasks, [{"by": worker_id}] * len(tasks))
                out.write("".join(f"{task_id}\n" for task_id in done))
                out.flush()
        worker.close()


def claim_and_hang(db_path: str, worker_id: str, lease: float) -> None:
    """Claim one task with a short lease, report it, then hang until killed."""
    db = QueueDatabase(db_path)
    worker = QueueWorker(db, worker_id, lease_duration=lease)
    task = worker.claim_next_task()
    assert task is not None
    print(json.dumps({"id": task.id, "token": task.lease_token, "attempts": task.attempts}), flush=True)
    time.sleep(600)


def churn(db_path: str, worker_id: str, lease: float) -> None:
    """Claim and complete forever with a short lease (killed from outside)."""
    db = QueueDatabase(db_path)
    worker = QueueWorker(db, worker_id, lease_duration=lease)
    announced = False
    while True:
        task = worker.claim_next_task()
        if task is None:
            time.sleep(0.01)
            continue
        worker.complete_task(task)
        if not announced:
            print("working", flush=True)
            announced = True


def enqueue_idempotent(db_path: str, go_file: str, key: str) -> None:
    with QueueDatabase(db_path) as db:
        client = QueueClient(db)
        wait_for(Path(go_file))
        ids = [client.enqueue("race", {"key": key}, idempotency_key=key) for _ in range(20)]
        print(json.dumps(ids), flush=True)


def complete_later(db_path: str, delay: float) -> None:
    with QueueDatabase(db_path) as db:
        time.sleep(delay)
        worker = QueueWorker(db, "late-completer")
        task = worker.claim_next_task()
        assert task is not None
        worker.complete_task(task, {"from": "child"})
        worker.close()


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "drain":
        drain(args[0], args[1], args[2], args[3], int(args[4]))
    elif mode == "claim_and_hang":
        claim_and_hang(args[0], args[1], float(args[2]))
    elif mode == "churn":
        churn(args[0], args[1], float(args[2]))
    elif mode == "enqueue_idempotent":
        enqueue_idempotent(args[0], args[1], args[2])
    elif mode == "complete_later":
        complete_later(args[0], float(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
