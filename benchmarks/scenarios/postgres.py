"""PrismQ Queue on PostgreSQL, next to procrastinate on the same server, in one run.

Measured on one server (``PRISMQ_BENCH_POSTGRES_URL``, else ``PRISMQ_TEST_POSTGRES_URL``,
else ``postgresql://postgres@127.0.0.1:5432/test``), every side in its own freshly created
schema, dropped afterwards:

1. Enqueue: PrismQ ``enqueue`` one call at a time and ``enqueue_many`` (1,000 per call);
   procrastinate ``defer_async`` and ``batch_defer_async`` for reference.
2. Drain N no-op tasks with 1, 2 and 4 worker **processes** (spawn). PrismQ:
   ``claim_next_task`` + ``complete_task``, and ``claim_batch(100)`` + ``complete_many``;
   procrastinate: one ``run_worker(wait=False)`` per process (concurrency 1, an ``async``
   no-op task). Every execution reports its task (job) id; the parent counts duplicates and
   losses, and counts what the database still holds unfinished. The clock runs from the
   start signal to the last worker's finish (imports and connections are not timed).
3. Enqueue-to-start latency (p50/p99) of an idle worker: PrismQ ``QueueWorker.run`` with
   ``wake_mode="notify"`` (LISTEN/NOTIFY via ``wait_for_change``); procrastinate's worker
   with ``listen_notify=True`` (its default). Tasks are enqueued one at a time with random
   gaps, so the worker is idle before each one.

Only PrismQ's exactly-once checks are enforced; procrastinate's are observations. Rows carry
no targets. When the server cannot be reached the scenario returns one row saying so; with
``CI=true`` it also adds a failed check. procrastinate runs only when it is importable
(``nox -s bench`` installs it).

What a worker that dies mid-task means for each side (see :data:`GUARANTEES`): PrismQ hands
out leases with a fencing token, and an expired lease is reclaimed, so the task runs again
elsewhere and the dead worker's late writes are refused; procrastinate leaves the job in
``doing``, forever unless something retries it: its docs ("Retry stalled jobs") have the
application add a periodic task that finds stalled jobs (``JobManager.get_stalled_jobs``:
jobs of workers without a heartbeat for 30 s) and calls ``retry_job``, and warn that a job
retried while it is in fact still running may run twice.
"""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing as mp
import os
import queue as queue_module
import random
import secrets
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from common import Settings, exactly_once, median, payload, percentile, ratio, target_row

NAME = "postgres"
TITLE = "PostgreSQL backend: PrismQ Queue next to procrastinate"

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
URL_ENVS = ("PRISMQ_BENCH_POSTGRES_URL", "PRISMQ_TEST_POSTGRES_URL")
WORKER_TIMEOUT = 600.0
BATCH = 100

GUARANTEES = {
    "prismq": (
        "lease + fencing token per claim: a dead worker's task is reclaimed when its lease "
        "expires and runs again; the dead worker's late completion is refused"
    ),
    "procrastinate": (
        "a job whose worker is killed stays 'doing' forever unless retried explicitly: its docs "
        "(Retry stalled jobs) add a periodic task calling get_stalled_jobs + retry_job (workers "
        "without a heartbeat for 30 s); a job retried while still running may run twice"
    ),
}


# -- server and schemas -------------------------------------------------------------------
def server_url() -> str:
    """The PostgreSQL server the scenario measures on."""
    for name in URL_ENVS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return DEFAULT_URL


def _with_schema(url: str, schema: str) -> str:
    """``url`` with a ``schema=`` query parameter (PrismQ's way of choosing a schema)."""
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def _unreachable(url: str) -> str | None:
    """Why the server cannot be used (``None`` when it answers)."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc.name}); pip install 'prismq-queue[postgres]'"
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        host = url.split("@")[-1].split("?")[0]
        return f"no PostgreSQL server at {host} ({first})"
    return None


class Schemas:
    """Creates unique schema names on the server and drops every one of them at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.names: list[str] = []

    def new(self, side: str) -> str:
        """A fresh, unique schema name for ``side`` (created by whoever uses it)."""
        name = f"prismq_bench_{side}_{secrets.token_hex(4)}"
        self.names.append(name)
        return name

    def drop(self, name: str) -> None:
        """Drop one schema and everything in it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))

    def drop_all(self) -> None:
        """Drop every schema handed out (errors are ignored: the server may be gone)."""
        for name in self.names:
            with suppress(Exception):
                self.drop(name)
        self.names.clear()


# -- PrismQ side --------------------------------------------------------------------------
def _prismq_fill(url: str, schema: str, n: int) -> list[int]:
    """Create PrismQ's schema and enqueue ``n`` no-op tasks (untimed); return their ids."""
    from prismq.queue import QueueClient, QueueDatabase, TaskSpec

    with QueueDatabase(_with_schema(url, schema)) as db:
        db.initialize_schema()
        client = QueueClient(db)
        ids: list[int] = []
        for offset in range(0, n, 1_000):
            ids.extend(
                client.enqueue_many(
                    [TaskSpec("noop", payload(i)) for i in range(offset, min(n, offset + 1_000))]
                )
            )
    return ids


def _prismq_enqueue_rates(url: str, schema: str, single: int, many: int) -> dict[str, float]:
    """Time ``single`` one-at-a-time enqueues and ``many`` tasks by ``enqueue_many``."""
    from prismq.queue import QueueClient, QueueDatabase, TaskSpec

    with QueueDatabase(_with_schema(url, schema)) as db:
        db.initialize_schema()
        client = QueueClient(db)
        client.enqueue("noop", payload(-1))  # warm the pool and the statements
        t0 = time.perf_counter()
        for i in range(single):
            client.enqueue("noop", payload(i))
        single_rate = single / (time.perf_counter() - t0)
        specs = [TaskSpec("noop", payload(i)) for i in range(many)]
        t0 = time.perf_counter()
        for offset in range(0, many, 1_000):
            client.enqueue_many(specs[offset : offset + 1_000])
        many_rate = many / (time.perf_counter() - t0)
    return {"enqueue": single_rate, "enqueue_many": many_rate}


def _prismq_leftover(url: str, schema: str) -> int:
    """Tasks not completed after a drain."""
    from prismq.queue import QueueClient, QueueDatabase

    with QueueDatabase(_with_schema(url, schema)) as db:
        counts = QueueClient(db).count_by_status()
    return sum(v for k, v in counts.items() if k != "completed")


def _prismq_drain_loop(url: str, schema: str, index: int, batch: int, ready: Any, start: Any) -> list[int]:
    from prismq.queue import QueueDatabase, QueueWorker

    done: list[int] = []
    with QueueDatabase(_with_schema(url, schema)) as db:
        worker = QueueWorker(db, worker_id=f"bench-pg-{index}")
        db.schema_version()  # open the connection before the clock starts
        ready.put(("ready", index, None))
        start.wait()
        if batch == 1:
            while (task := worker.claim_next_task()) is not None:
                worker.complete_task(task)
                done.append(task.id)
        else:
            while tasks := worker.claim_batch(batch):
                done.extend(worker.complete_many(tasks))
        worker.close()
    return done


# -- procrastinate side -------------------------------------------------------------------
_EXECUTED: list[Any] = []
"""What this process's procrastinate tasks recorded (job ids, or wake-up delays)."""


def procrastinate_available() -> bool:
    """Whether procrastinate can be imported here."""
    return importlib.util.find_spec("procrastinate") is not None


def _procrastinate_app(url: str, schema: str) -> Any:
    """A procrastinate ``App`` whose connections use ``schema`` (its tables live there)."""
    import procrastinate

    connector = procrastinate.PsycopgConnector(
        conninfo=url, kwargs={"options": f"-c search_path={schema}"}, min_size=1, max_size=4
    )
    app = procrastinate.App(connector=connector)

    @app.task(name="noop", pass_context=True)
    async def noop(context: Any, n: int) -> None:
        _EXECUTED.append(context.job.id)

    @app.task(name="wake")
    async def wake(t: float) -> None:
        _EXECUTED.append(time.time() - t)

    return app


def _procrastinate_prepare(url: str, schema: str) -> None:
    """Create ``schema`` and procrastinate's tables, functions and triggers inside it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    app = _procrastinate_app(url, schema)

    async def work() -> None:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    asyncio.run(work())


def _procrastinate_fill(url: str, schema: str, n: int, single: int = 0) -> dict[str, Any]:
    """Defer ``single`` jobs one at a time (timed), then the rest in batches; return ids and rates."""
    app = _procrastinate_app(url, schema)
    noop = app.tasks["noop"]

    async def work() -> dict[str, Any]:
        ids: list[int] = []
        async with app.open_async():
            single_rate = None
            if single:
                t0 = time.perf_counter()
                for i in range(single):
                    ids.append(await noop.defer_async(n=i))
                single_rate = single / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for offset in range(single, n, 1_000):
                ids.extend(
                    await noop.batch_defer_async(*({"n": i} for i in range(offset, min(n, offset + 1_000))))
                )
            many_rate = (n - single) / (time.perf_counter() - t0) if n > single else None
        return {"ids": ids, "defer": single_rate, "batch_defer": many_rate}

    return asyncio.run(work())


def _procrastinate_leftover(url: str, schema: str) -> int:
    """Jobs not ``succeeded`` after a drain."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        query = sql.SQL("SELECT count(*) FROM {}.procrastinate_jobs WHERE status <> 'succeeded'")
        row = conn.execute(query.format(sql.Identifier(schema))).fetchone()
    return int(row[0]) if row else -1


def _procrastinate_drain_loop(url: str, schema: str, index: int, ready: Any, start: Any) -> list[int]:
    app = _procrastinate_app(url, schema)

    async def work() -> None:
        async with app.open_async():
            await app.check_connection_async()
            ready.put(("ready", index, None))
            await asyncio.to_thread(start.wait)
            await app.run_worker_async(
                wait=False, concurrency=1, name=f"bench-pg-{index}", install_signal_handlers=False
            )

    _EXECUTED.clear()
    asyncio.run(work())
    return [int(job_id) for job_id in _EXECUTED]


# -- drains -------------------------------------------------------------------------------
def drain_worker(side: str, url: str, schema: str, index: int, batch: int, results: Any, start: Any) -> None:
    """Entry point of one spawned worker: drain, then report ``(finish_time, ids, error)``."""
    try:
        if side == "prismq":
            done = _prismq_drain_loop(url, schema, index, batch, results, start)
        else:
            done = _procrastinate_drain_loop(url, schema, index, results, start)
        results.put(("done", index, (time.time(), done, None)))
    except BaseException:
        results.put(("done", index, (time.time(), [], traceback.format_exc())))


def drain_once(side: str, url: str, schemas: Schemas, processes: int, n: int, batch: int) -> dict[str, Any]:
    """Fill a fresh schema with ``n`` tasks and drain it with ``processes`` spawned workers.

    Returns:
        ``rate`` (tasks/s), ``seconds``, the exactly-once ``check`` and per-worker counts.
    """
    schema = schemas.new(side[:5])
    try:
        if side == "prismq":
            expected = _prismq_fill(url, schema, n)
        else:
            _procrastinate_prepare(url, schema)
            expected = _procrastinate_fill(url, schema, n)["ids"]
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        start = ctx.Event()
        procs = [
            ctx.Process(target=drain_worker, args=(side, url, schema, i, batch, results, start), daemon=True)
            for i in range(processes)
        ]
        for proc in procs:
            proc.start()
        finished: dict[int, tuple[float, list[int], str | None]] = {}
        ready, t0 = 0, time.time()
        deadline = time.monotonic() + WORKER_TIMEOUT
        gone: dict[int, float] = {}
        try:
            while len(finished) < processes:
                try:
                    kind, index, data = results.get(timeout=1.0)
                except queue_module.Empty:
                    now = time.monotonic()
                    for i, proc in enumerate(procs):  # died without reporting (e.g. could not start)?
                        if i not in finished and not proc.is_alive():
                            gone.setdefault(i, now)
                    dead = [i for i, since in gone.items() if i not in finished and now - since > 3.0]
                    if dead:
                        for i in dead:
                            finished[i] = (time.time(), [], f"worker {i} exited with {procs[i].exitcode}")
                        start.set()
                    elif time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{side} workers did not finish within {WORKER_TIMEOUT:.0f} s"
                        ) from None
                    continue
                if kind == "ready":
                    ready += 1
                    if ready == processes:
                        t0 = time.time()
                        start.set()
                else:
                    finished[index] = data
                    if not start.is_set():  # a worker failed before the start
                        start.set()
        finally:
            for proc in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.terminate()
                    proc.join()
        seconds = max(max(item[0] for item in finished.values()) - t0, 1e-9)
        errors = [item[2] for item in finished.values() if item[2]]
        check = exactly_once(expected, [tid for item in finished.values() for tid in item[1]])
        leftover = _prismq_leftover(url, schema) if side == "prismq" else _procrastinate_leftover(url, schema)
        check["not_completed_in_db"] = leftover
        check["worker_errors"] = len(errors)
        check["ok"] = check["ok"] and not errors and leftover == 0
        return {
            "rate": n / seconds,
            "seconds": seconds,
            "check": check,
            "per_worker": [len(finished[i][1]) for i in sorted(finished)],
            "errors": errors[:2],
        }
    finally:
        schemas.drop(schema)
        schemas.names.remove(schema)


# -- wake-up latency ----------------------------------------------------------------------
def _prismq_wake_handler(ctx: Any) -> dict[str, float]:
    return {"waited": time.time() - float(ctx.payload["t"])}


def latency_worker(side: str, url: str, schema: str, ready: Any, stop: Any, out: Any) -> None:
    """Entry point of the idle worker: run until ``stop``; report delays through ``out``."""
    try:
        if side == "prismq":
            from prismq.queue import QueueDatabase, QueueWorker
            from prismq.queue.runtime import HandlerRegistry

            registry = HandlerRegistry()
            registry.register("wake", _prismq_wake_handler)
            with QueueDatabase(_with_schema(url, schema)) as db:
                worker = QueueWorker(db, worker_id="bench-pg-wake")
                ready.set()
                worker.run(registry, wake_mode="notify", stop_flag=stop, idle_timeout=1.0)
            out.put(("done", None))
            return
        app = _procrastinate_app(url, schema)

        async def work() -> None:
            async with app.open_async():
                runner = asyncio.create_task(
                    app.run_worker_async(
                        wait=True, concurrency=1, listen_notify=True, install_signal_handlers=False
                    )
                )
                await asyncio.sleep(0.5)
                ready.set()
                await asyncio.to_thread(stop.wait)
                runner.cancel()
                with suppress(asyncio.CancelledError):
                    await runner

        _EXECUTED.clear()
        asyncio.run(work())
        out.put(("done", list(_EXECUTED)))
    except BaseException:
        ready.set()
        out.put(("error", traceback.format_exc()))


def measure_latency(side: str, url: str, schemas: Schemas, samples: int) -> dict[str, Any]:
    """Enqueue ``samples`` tasks with random gaps to an idle worker; p50/p99 of the waits."""
    schema = schemas.new(side[:5])
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    waits: list[float] = []
    error: str | None = None
    completed = 0
    try:
        if side == "prismq":
            from prismq.queue import QueueClient, QueueDatabase

            db = QueueDatabase(_with_schema(url, schema))
            db.initialize_schema()
        else:
            _procrastinate_prepare(url, schema)
        proc = ctx.Process(target=latency_worker, args=(side, url, schema, ready, stop, out), daemon=True)
        settle = 0.3 if samples < 50 else 1.0
        proc.start()
        try:
            ready.wait(timeout=120)
            time.sleep(settle)  # let the worker reach its idle wait
            rng = random.Random(7)
            if side == "prismq":
                client = QueueClient(db)
                ids = []
                for _ in range(samples):
                    time.sleep(rng.uniform(0.02, 0.06))
                    ids.append(client.enqueue("wake", {"t": time.time()}))
                deadline = time.monotonic() + 60
                while client.count_by_status()["completed"] < samples and time.monotonic() < deadline:
                    time.sleep(0.05)
                completed = client.count_by_status()["completed"]
                for task_id in ids:
                    task = client.get(task_id)
                    if task is not None and task.result is not None:
                        waits.append(float(task.result["waited"]))
            else:
                app = _procrastinate_app(url, schema)
                wake = app.tasks["wake"]

                async def enqueue_all() -> None:
                    async with app.open_async():
                        for _ in range(samples):
                            await asyncio.sleep(rng.uniform(0.02, 0.06))
                            await wake.defer_async(t=time.time())

                asyncio.run(enqueue_all())
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and _procrastinate_count(url, schema) < samples:
                    time.sleep(0.05)
        finally:
            stop.set()
            with suppress(queue_module.Empty):
                kind, data = out.get(timeout=30)
                if kind == "error":
                    error = data
                elif side == "procrastinate":
                    waits = [float(x) for x in data]
                    completed = len(waits)
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
            if side == "prismq":
                db.close()
    finally:
        schemas.drop(schema)
        schemas.names.remove(schema)
    return {
        "p50_ms": 1000 * median(waits),
        "p99_ms": 1000 * percentile(waits, 99),
        "samples": samples,
        "completed": completed,
        "error": error,
    }


def _procrastinate_count(url: str, schema: str) -> int:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        query = sql.SQL("SELECT count(*) FROM {}.procrastinate_jobs WHERE status = 'succeeded'")
        row = conn.execute(query.format(sql.Identifier(schema))).fetchone()
    return int(row[0]) if row else 0


# -- the scenario -------------------------------------------------------------------------
@contextmanager
def _schemas(url: str) -> Iterator[Schemas]:
    schemas = Schemas(url)
    try:
        yield schemas
    finally:
        schemas.drop_all()


def _plural(count: int) -> str:
    return f"{count} process{'es' if count > 1 else ''}"


def run(settings: Settings) -> dict[str, Any]:
    """Enqueue rates, multi-process drains and wake-up latency on PostgreSQL."""
    smoke = settings.smoke
    n = 200 if smoke else 5_000
    single_enqueue, many_enqueue = (100, 1_000) if smoke else (2_000, 20_000)
    processes = (2,) if smoke else (1, 2, 4)
    batch_processes = (2,) if smoke else (1, 2, 4)
    samples = 10 if smoke else 200
    reps = 1 if smoke else max(1, min(settings.repeat, 3))
    peer = procrastinate_available() and not smoke  # smoke: PrismQ only, a few seconds
    url = server_url()
    params: dict[str, Any] = {
        "tasks": n,
        "processes": list(processes),
        "batch_size": BATCH,
        "latency_samples": samples,
        "repeat": reps,
        "start_method": "spawn",
        "procrastinate": peer,
    }
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    samples_out: dict[str, Any] = {"guarantees": GUARANTEES}

    reason = _unreachable(url)
    if reason is not None:
        rows.append(target_row(f"not measured: {reason}", unit="", prismq=float("nan")))
        if os.environ.get("CI", "").strip().lower() == "true":
            checks.append({"name": "PostgreSQL server reachable (CI=true)", "ok": False, "error": reason})
        return {"title": TITLE, "rows": rows, "checks": checks, "samples": samples_out, "params": params}

    phases: dict[str, float] = {}
    params["phase_seconds"] = phases
    clock = time.perf_counter()
    with _schemas(url) as schemas:
        # 1. enqueue rates
        schema = schemas.new("enq")
        rates = _prismq_enqueue_rates(url, schema, single_enqueue, many_enqueue)
        schemas.drop(schema)
        peer_rates: dict[str, Any] = {}
        if peer:
            schema = schemas.new("penq")
            _procrastinate_prepare(url, schema)
            peer_rates = _procrastinate_fill(url, schema, single_enqueue + many_enqueue, single_enqueue)
            peer_rates.pop("ids")
            schemas.drop(schema)
        samples_out["enqueue"] = {"prismq": rates, "procrastinate": peer_rates}
        rows.append(
            target_row(
                "enqueue, one call per task",
                unit="tasks/s",
                prismq=rates["enqueue"],
                baseline=peer_rates.get("defer"),
                baseline_name="procrastinate defer_async" if peer else None,
                tasks=single_enqueue,
            )
        )
        rows.append(
            target_row(
                "enqueue_many, 1,000 tasks per call",
                unit="tasks/s",
                prismq=rates["enqueue_many"],
                baseline=peer_rates.get("batch_defer"),
                baseline_name="procrastinate batch_defer_async, 1,000 per call" if peer else None,
                tasks=many_enqueue,
            )
        )

        phases["enqueue"] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

        # 2. drains
        drains: dict[str, dict[int, list[dict[str, Any]]]] = {
            "prismq": {},
            "prismq_batch": {},
            "procrastinate": {},
        }
        for rep in range(reps):
            for count in sorted(set(processes) | set(batch_processes)):
                plan: list[tuple[str, str, int]] = []
                if count in processes:
                    plan.append(("prismq", "prismq", 1))
                if count in batch_processes:
                    plan.append(("prismq_batch", "prismq", BATCH))
                if peer and count in processes:
                    plan.append(("procrastinate", "procrastinate", 1))
                if rep % 2:
                    plan.reverse()
                for key, side, batch in plan:
                    outcome = drain_once(side, url, schemas, count, n, batch)
                    drains[key].setdefault(count, []).append(outcome)
                    if side == "prismq":
                        name = "PrismQ Queue"
                        how = f"claim_batch({batch}) + complete_many" if batch > 1 else "one task per claim"
                    else:
                        name, how = "procrastinate (observed, not enforced)", "run_worker(concurrency=1)"
                    checks.append(
                        {
                            "name": f"PostgreSQL: {name}, {how}, {_plural(count)}, run {rep + 1}",
                            **outcome["check"],
                            "errors": outcome["errors"],
                            "enforce": side == "prismq",
                        }
                    )
        samples_out["drain"] = {
            key: {count: [r["rate"] for r in runs] for count, runs in per.items()}
            for key, per in drains.items()
        }
        for count, runs in drains["prismq"].items():
            p = median([r["rate"] for r in runs])
            peer_runs = drains["procrastinate"].get(count)
            b = median([r["rate"] for r in peer_runs]) if peer_runs else None
            dup = sum(r["check"]["duplicates"] for r in peer_runs) if peer_runs else None
            lost = sum(r["check"]["lost"] for r in peer_runs) if peer_runs else None
            rows.append(
                target_row(
                    f"drain {n:,} no-op tasks, claim_next_task + complete_task, {_plural(count)}",
                    unit="tasks/s",
                    prismq=p,
                    baseline=b,
                    baseline_name=(
                        f"procrastinate, {_plural(count)} × run_worker(concurrency=1) "
                        f"(duplicates {dup}, lost {lost})"
                        if peer_runs
                        else None
                    ),
                    value=ratio(p, b) if b else None,
                    tasks=n,
                )
            )
        for count, runs in drains["prismq_batch"].items():
            rows.append(
                target_row(
                    f"drain {n:,} no-op tasks, claim_batch({BATCH}) + complete_many, {_plural(count)}",
                    unit="tasks/s",
                    prismq=median([r["rate"] for r in runs]),
                    tasks=n,
                )
            )

        phases["drain"] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

        # 3. wake-up latency
        latency = {"prismq": measure_latency("prismq", url, schemas, samples)}
        if peer:
            latency["procrastinate"] = measure_latency("procrastinate", url, schemas, samples)
        samples_out["latency"] = latency
        phases["latency"] = round(time.perf_counter() - clock, 2)
        for side, result in latency.items():
            checks.append(
                {
                    "name": f"PostgreSQL wake-up: {side} ran every task",
                    "ok": result["completed"] == samples and not result["error"],
                    "enforce": side == "prismq",
                    "completed": result["completed"],
                    "expected": samples,
                    "error": result["error"],
                }
            )
        mine, theirs = latency["prismq"], latency.get("procrastinate")
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            rows.append(
                target_row(
                    f"enqueue-to-start {label}, idle worker, LISTEN/NOTIFY",
                    unit="ms",
                    prismq=mine[key],
                    baseline=theirs[key] if theirs else None,
                    baseline_name="procrastinate worker, listen_notify=True" if theirs else None,
                )
            )
    for side, name in (("prismq", "PrismQ Queue"), ("procrastinate", "procrastinate")):
        rows.append(
            target_row(f"when a worker dies, {name}: {GUARANTEES[side]}", unit="", prismq=float("nan"))
        )
    if not peer:
        why = "skipped in smoke runs" if smoke else "not installed (nox -s bench installs it)"
        rows.append(target_row(f"procrastinate: {why}", unit="", prismq=float("nan")))
    return {
        "title": TITLE,
        "rows": rows,
        "checks": checks,
        "samples": samples_out,
        "params": params,
        "guarantees": GUARANTEES,
    }
