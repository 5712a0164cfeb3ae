"""Flow control: the worker command end to end, the claim's cost, and an engine-level
drain, each with limits configured but not binding next to the same with no limit, on
SQLite and (when reachable) PostgreSQL.

End to end (reported first: what users run): ``prismq-queue worker --burst`` drains
20,000 no-op tasks that all carry a concurrency key, with 1 process x 4 slots and 4
processes x 4 slots, timed whole as in the ``endtoend`` scenario. Limits "on" there: a
concurrency limit on the task type, one on the key, and a rate limit on the type.

Engine level: a concurrency limit on every task type, one on a key, and a rate limit on
one task type, all far above what the run reaches; so every claim reads them and (for
the rate-limited type) records its start, but none holds a task back.

Off and on alternate on the same machine, so both see the same load (the claim cost
claim by claim, on two queues filled alike, in a random order); the reported numbers
are medians.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import secrets
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from common import Settings, exactly_once, median, ratio, scratch_dir, target_row

from scenarios.endtoend import (
    Side,
    count_prismq_completed,
    fresh_sqlite_file,
    measure_side,
    postgres_url,
    prismq_worker_command,
    recreate_database,
    run_python,
)

NAME = "flow"
TITLE = "Flow control: claim cost and drain with limits configured"

CLAIM_TARGET = 1.5
DRAIN_TARGET = 0.85
TASK_TYPES = ("email", "report", "resize", "webhook")
FILL_BATCH = 10_000
PROCESSES = 4
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


E2E_CONFIGS = ((1, 4), (4, 4))
"""(processes, slots per process) of the end-to-end runs."""
E2E_KEY = "tenant-1"
E2E_MIN_REPEAT = 5
"""Runs per side at the least: a whole worker command varies by 10-20 % from run to run
on a shared machine, and the target is a difference of 15 %."""


def _e2e_fill(limits: bool) -> Any:
    """Fill for an end-to-end run: no-op tasks with a concurrency key, limits on or off."""
    set_limits = (
        "client.set_concurrency_limit(100_000, task_type='noop')\n"
        f"client.set_concurrency_limit(100_000, key={E2E_KEY!r})\n"
        "client.set_rate_limit(1_000_000, 1.0, task_type='noop')\n"
        if limits
        else ""
    )

    def fill(n: int, env: dict[str, str]) -> None:
        run_python(
            "import os\n"
            "from prismq.queue import QueueClient, QueueDatabase, TaskSpec\n"
            "db = QueueDatabase(os.environ['PRISMQ_E2E_DB']); db.initialize_schema()\n"
            "client = QueueClient(db)\n"
            f"{set_limits}"
            f"n = {n}\n"
            "for s in range(0, n, 5000):\n"
            "    client.enqueue_many([TaskSpec('noop', {'n': i}, concurrency_key="
            f"{E2E_KEY!r}) for i in range(s, min(s + 5000, n))])\n"
            "db.close()\n",
            env,
        )

    return fill


def _e2e_size(settings: Settings) -> tuple[int, int]:
    """Tasks per end-to-end run and runs per side."""
    if settings.smoke:
        return 300, 1
    return settings.e2e_tasks, max(E2E_MIN_REPEAT, settings.e2e_repeat)


def _end_to_end(
    settings: Settings, folder: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """The worker command with limits on and off: rows, exactly-once checks, raw rates."""
    n, repeat = _e2e_size(settings)
    databases: list[tuple[str, Any]] = []
    sqlite_file = folder / "flow-e2e.db"

    def fresh_sqlite() -> dict[str, str]:
        return fresh_sqlite_file(sqlite_file)

    databases.append(("sqlite", fresh_sqlite))
    server = None if settings.smoke else postgres_url()
    if server is not None:

        def fresh_pg() -> dict[str, str]:
            return {"PRISMQ_E2E_DB": recreate_database(server, "bench_prismq_flow")}

        databases.append(("postgresql", fresh_pg))
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    table: dict[str, Any] = {}
    configs = ((2, 2),) if settings.smoke else E2E_CONFIGS
    for backend, prepare in databases:
        for processes, slots in configs:
            rates: dict[str, list[float]] = {"off": [], "on": []}
            for rep in range(repeat):
                for side_name in ("off", "on") if rep % 2 == 0 else ("on", "off"):
                    location = prepare()["PRISMQ_E2E_DB"]
                    side = Side(
                        f"flow {backend} {processes}x{slots} limits {side_name}",
                        "PrismQ Queue",
                        prismq_worker_command(location, processes, slots),
                        _e2e_fill(side_name == "on"),
                        True,
                        processes,
                        slots,
                        database=backend,
                        count_done=count_prismq_completed,
                    )
                    outcome = measure_side(
                        side, n, folder, lambda location=location: {"PRISMQ_E2E_DB": location}
                    )
                    rates[side_name].append(outcome["rate"])
                    checks.append(
                        {
                            "name": f"{backend} worker {processes}x{slots}, limits {side_name}: exactly once",
                            **outcome["check"],
                            "ok": outcome["check"]["ok"] and not outcome["error"],
                        }
                    )
            kept = ratio(median(rates["on"]), median(rates["off"]))
            plural = "es" if processes > 1 else ""
            rows.append(
                target_row(
                    f"{backend}: prismq-queue worker, {processes} process{plural} × {slots}, "
                    "limits on (not binding) vs off",
                    unit="tasks/s",
                    prismq=median(rates["on"]),
                    baseline=median(rates["off"]),
                    baseline_name="the same worker command with no limit",
                    value=kept,
                    target=f"≥ {DRAIN_TARGET}× (loses < 15%)",
                    met=kept >= DRAIN_TARGET,
                )
            )
            table[f"{backend} {processes}x{slots}"] = rates
    return rows, checks, table


def _open(target: tuple[str, str | None]) -> Any:
    from prismq.queue import QueueDatabase

    location, schema = target
    if schema is None:
        return QueueDatabase(location)
    from prismq.queue.backends.postgres import PostgresBackend

    return QueueDatabase(backend=PostgresBackend(location, schema=schema, max_size=2))


def _limits_on(client: Any) -> None:
    for task_type in TASK_TYPES:
        client.set_concurrency_limit(100_000, task_type=task_type)
    client.set_concurrency_limit(100_000, key="tenant-1")
    client.set_rate_limit(1_000_000, 1.0, task_type="webhook")


def _limits_off(client: Any) -> None:
    for limit in client.list_limits():
        scope = {"task_type": limit.task_type or None, "key": limit.key or None}
        client.remove_concurrency_limit(**scope)
        client.remove_rate_limit(**scope)


def _fill(client: Any, count: int, start: int) -> list[int]:
    from prismq.queue import TaskSpec

    ids: list[int] = []
    for offset in range(0, count, FILL_BATCH):
        size = min(FILL_BATCH, count - offset)
        specs = [
            TaskSpec(TASK_TYPES[(start + offset + i) % 4], {"n": start + offset + i}) for i in range(size)
        ]
        ids.extend(client.enqueue_many(specs))
    return ids


def _claim_cost(
    targets: dict[str, tuple[str, str | None]], ready: int, rounds: int, block: int
) -> dict[str, float]:
    """Median claim (and claim + complete) time with limits off and on, at ``ready`` tasks.

    Two queues filled alike, the limits set on the "on" one. Each step claims (and
    completes) one task on each queue, in a random order, so both sides are measured at
    the same moments of a shared machine and neither always follows the other; after
    every ``block`` steps both backlogs are topped up to ``ready`` (untimed).
    """
    from prismq.queue import QueueClient, QueueWorker

    order = random.Random(16)  # fixed: every run draws the same orders
    clock = time.perf_counter
    samples: dict[str, tuple[list[float], list[float]]] = {side: ([], []) for side in targets}
    with ExitStack() as stack:
        sides: dict[str, tuple[Any, Any]] = {}
        for side, target in targets.items():
            db = stack.enter_context(_open(target))
            db.initialize_schema()
            client = QueueClient(db)
            _fill(client, ready, 0)
            if side == "on":
                _limits_on(client)
            # Statistics of the filled tables, as autovacuum gathers them after a bulk load
            # (a server may run without it, as the benchmark machine's PostgreSQL does).
            db.analyze()
            worker = QueueWorker(db, worker_id=f"bench-flow-{side}")
            stack.callback(worker.close)
            sides[side] = (client, worker)
        names = list(sides)
        added = ready
        for rnd in range(rounds + 1):  # round 0 warms up (prepared statements, caches): not kept
            for _ in range(block):
                order.shuffle(names)
                for side in names:
                    worker = sides[side][1]
                    t0 = clock()
                    task = worker.claim_next_task()
                    t1 = clock()
                    if task is None:
                        raise RuntimeError(f"the {side} queue ran dry; it is topped up every {block} claims")
                    worker.complete_task(task)
                    if rnd:
                        samples[side][0].append(t1 - t0)
                        samples[side][1].append(clock() - t0)
            for client, _ in sides.values():
                _fill(client, block, added)  # keep the backlog at its size (untimed)
            added += block
    return {
        f"{side}_{what}_us": median(values[i]) * 1e6
        for side, values in samples.items()
        for i, what in enumerate(("claim", "claim_complete"))
    }


def _drain_worker(target: tuple[str, str | None], index: int, ready: Any, start: Any, out: Any) -> None:
    from prismq.queue import QueueWorker

    done: list[int] = []
    with _open(target) as db:
        worker = QueueWorker(db, worker_id=f"bench-flow-{index}")
        ready.put(index)
        start.wait()
        while True:
            task = worker.claim_next_task()
            if task is None:
                break
            worker.complete_task(task)
            done.append(task.id)
        worker.close()
    out.put((time.time(), done))


def _drain_once(target: tuple[str, str | None], tasks: int, limits: bool) -> dict[str, Any]:
    from prismq.queue import QueueClient

    with _open(target) as db:
        db.initialize_schema()
        client = QueueClient(db)
        (_limits_on if limits else _limits_off)(client)
        expected = _fill(client, tasks, 0)
    ctx = mp.get_context("spawn")
    ready, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_drain_worker, args=(target, i, ready, start, out), daemon=True)
        for i in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        t0 = time.time()
        start.set()
        finished = [out.get(timeout=600) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    seconds = max(max(f[0] for f in finished) - t0, 1e-9)
    return {"rate": tasks / seconds, "check": exactly_once(expected, [i for f in finished for i in f[1]])}


def _targets(folder: Path) -> list[tuple[str, tuple[str, str | None], Any]]:
    """(backend name, target, cleanup) for SQLite, and PostgreSQL when reachable."""
    targets: list[tuple[str, tuple[str, str | None], Any]] = []
    counter = iter(range(1_000_000))

    def sqlite_target() -> tuple[str, str | None]:
        return (str(folder / f"flow-{next(counter)}.db"), None)

    targets.append(("sqlite", ("", None), sqlite_target))
    url = (
        os.environ.get("PRISMQ_BENCH_POSTGRES_URL")
        or os.environ.get("PRISMQ_TEST_POSTGRES_URL")
        or DEFAULT_URL
    )
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception:  # no driver or no server: SQLite only
        return targets

    def postgres_target() -> tuple[str, str | None]:
        return (url, f"prismq_bench_flow_{secrets.token_hex(4)}")

    targets.append(("postgresql", (url, ""), postgres_target))
    return targets


def _drop(target: tuple[str, str | None]) -> None:
    if target[1] is None:
        return
    import psycopg
    from psycopg import sql

    with suppress(Exception), psycopg.connect(target[0], autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target[1])))


def run(settings: Settings) -> dict[str, Any]:
    """Claim cost and drain rate with limits on, as ratios to the same with limits off."""
    ready = 1_000 if settings.smoke else 100_000
    rounds, block = (2, 10) if settings.smoke else (24, 50)
    drain_tasks = 400 if settings.smoke else 4_000
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    table: dict[str, Any] = {}
    with scratch_dir() as folder:
        e2e_tasks, e2e_repeat = _e2e_size(settings)
        e2e_rows, e2e_checks, table["end_to_end"] = _end_to_end(settings, folder)
        rows.extend(e2e_rows)
        checks.extend(e2e_checks)
        for backend, _, make in _targets(folder):
            made: list[tuple[str, str | None]] = []
            try:
                queues = {"off": make(), "on": make()}
                made.extend(queues.values())
                cost = _claim_cost(queues, ready, rounds, block)
                factor = ratio(cost["on_claim_us"], cost["off_claim_us"])
                rows.append(
                    target_row(
                        f"{backend}: claim with limits on vs off at {ready:,} ready tasks",
                        unit="µs",
                        prismq=cost["on_claim_us"],
                        baseline=cost["off_claim_us"],
                        baseline_name="the same claim with no limit",
                        value=factor,
                        target=f"≤ {CLAIM_TARGET}×",
                        met=factor <= CLAIM_TARGET,
                        claim_complete_factor=ratio(
                            cost["on_claim_complete_us"], cost["off_claim_complete_us"]
                        ),
                    )
                )
                rates: dict[str, list[float]] = {"off": [], "on": []}
                for rep in range(settings.repeat):
                    for side in ("off", "on") if rep % 2 == 0 else ("on", "off"):
                        target = make()
                        made.append(target)
                        outcome = _drain_once(target, drain_tasks, side == "on")
                        rates[side].append(outcome["rate"])
                        checks.append(
                            {"name": f"{backend} drain, limits {side}: exactly once", **outcome["check"]}
                        )
                kept = ratio(median(rates["on"]), median(rates["off"]))
                rows.append(
                    target_row(
                        f"{backend}: engine drain by {PROCESSES} processes, one task per claim, "
                        "limits on (not binding) vs off",
                        unit="tasks/s",
                        prismq=median(rates["on"]),
                        baseline=median(rates["off"]),
                        baseline_name="the same drain with no limit",
                        value=kept,
                        value_text=f"{kept:.2f}×",
                    )
                )
                table[backend] = {"claim": cost, "drain_rates": rates}
            finally:
                for target in made:
                    _drop(target)
    return {
        "title": TITLE,
        "rows": rows,
        "checks": checks,
        "table": table,
        "params": {"ready": ready, "rounds": rounds, "block": block, "drain_tasks": drain_tasks},
        "notes": [
            f"Worker rows: {e2e_tasks:,} tasks per run, median of {e2e_repeat} runs per side, "
            "start-up included.",
            f"Claim rows: median of {rounds * block:,} claims per side at {ready:,} ready tasks, on two "
            "queues filled alike (the limits set on one); each step claims one task on each, in a "
            f"random order (after {block} warm-up steps). Engine drain: {drain_tasks:,} tasks, median "
            f"of {settings.repeat} runs per side.",
        ],
    }
