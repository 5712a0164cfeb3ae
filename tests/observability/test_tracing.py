"""OpenTelemetry: enqueue and execution spans, the trace context carried in the task, retries."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from prismq.queue import QueueClient, QueueDatabase, QueueWorker, RetryPolicy, TaskSpec, Unique
from prismq.queue.cli.parsing import build_parser
from prismq.queue.errors import QueueBusyError
from prismq.queue.migrate import migrate
from prismq.queue.observability.tracing import TracingObserver, extract_context
from prismq.queue.runtime import HandlerRegistry, TaskContext, TaskFailed
from prismq.queue.runtime.settings import WorkerSettings


@pytest.fixture
def spans() -> Iterator[tuple[TracingObserver, InMemorySpanExporter, Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield TracingObserver(tracer_provider=provider), exporter, provider.get_tracer("test")
    provider.shutdown()


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0):
        out.setdefault(span.name, []).append(span)
    return out


def test_enqueue_and_execution_share_one_trace(db: QueueDatabase, spans: Any) -> None:
    tracing, exporter, tracer = spans
    registry = HandlerRegistry()

    @registry.handler("resize")
    def resize(ctx: TaskContext) -> str:
        with tracer.start_as_current_span("inside the handler"):
            return "ok"

    @registry.handler("notify")
    async def notify(ctx: TaskContext) -> str:
        with tracer.start_as_current_span("inside the async handler"):
            await asyncio.sleep(0)
            return "ok"

    client = QueueClient(db, observer=tracing)
    with tracer.start_as_current_span("web request") as request:
        resize_id = client.enqueue("resize", {"w": 640})
        notify_id = client.enqueue("notify", None)
    QueueWorker(db, worker_id="w1").run(registry, burst=True, observer=tracing, concurrency=2)

    found = _by_name(exporter)
    (web,) = found["web request"]
    (send,) = found["send resize"]
    (process,) = found["process resize"]
    (inner,) = found["inside the handler"]
    (async_process,) = found["process notify"]
    (async_inner,) = found["inside the async handler"]
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in (web, send, process, inner, async_process, async_inner)} == {trace_id}
    assert _parent_id(send) == web.context.span_id
    assert _parent_id(process) == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert _parent_id(inner) == process.context.span_id
    assert _parent_id(async_inner) == async_process.context.span_id
    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert dict(send.attributes or {}) == {
        "messaging.system": "prismq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "resize",
        "messaging.message.id": str(resize_id),
    }
    assert dict(process.attributes or {}) == {
        "messaging.system": "prismq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "resize",
        "messaging.message.id": str(resize_id),
        "messaging.client.id": "w1",
        "prismq.task.attempt": 1,
        "prismq.task.outcome": "completed",
    }
    assert process.status.status_code is StatusCode.UNSET
    # The stored context is the W3C traceparent of the send span.
    stored = json.loads(client.get(notify_id).trace_context or "{}")
    assert stored["traceparent"].split("-")[1] == f"{trace_id:032x}"


def test_retries_join_the_original_trace_and_record_the_error(db: QueueDatabase, spans: Any) -> None:
    tracing, exporter, _tracer = spans
    registry = HandlerRegistry()

    @registry.handler("flaky")
    def flaky(ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            raise TaskFailed("first attempt fails")
        return "second attempt works"

    client = QueueClient(db, observer=tracing, default_retry_policy=RetryPolicy(base_delay=0.01, jitter=0))
    task_id = client.enqueue("flaky", None)
    for _ in range(50):  # a burst run may end before the retry's 10 ms backoff is over
        QueueWorker(db, worker_id="w1").run(registry, burst=True, observer=tracing)
        if client.get(task_id).status.value == "completed":
            break
        time.sleep(0.02)
    assert client.get(task_id).status.value == "completed"
    found = _by_name(exporter)
    (send,) = found["send flaky"]
    first, second = found["process flaky"]
    for span in (first, second):
        assert span.context.trace_id == send.context.trace_id
        assert _parent_id(span) == send.context.span_id
    assert first.attributes["prismq.task.attempt"] == 1  # type: ignore[index]
    assert first.attributes["prismq.task.outcome"] == "retried"  # type: ignore[index]
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes["error.type"] == "TaskFailed"  # type: ignore[index]
    assert [event.name for event in first.events] == ["exception"]
    assert second.attributes["prismq.task.attempt"] == 2  # type: ignore[index]
    assert second.attributes["prismq.task.outcome"] == "completed"  # type: ignore[index]


def test_a_retry_by_hand_links_to_the_original_trace(db: QueueDatabase, spans: Any) -> None:
    tracing, exporter, tracer = spans
    registry = HandlerRegistry()
    outcomes = iter([TaskFailed("final", retry=False), None])

    @registry.handler("job")
    def job(ctx: TaskContext) -> None:
        error = next(outcomes)
        if error is not None:
            raise error

    client = QueueClient(db, observer=tracing)
    task_id = client.enqueue("job", None)
    QueueWorker(db, worker_id="w1").run(registry, burst=True, observer=tracing)
    assert client.get(task_id).status.value == "dead"
    with tracer.start_as_current_span("operator action") as action:
        client.retry(task_id)
    QueueWorker(db, worker_id="w1").run(registry, burst=True, observer=tracing)
    assert client.get(task_id).status.value == "completed"
    found = _by_name(exporter)
    (send,) = found["send job"]
    (retry,) = found["retry job"]
    dead, rerun = found["process job"]
    assert retry.context.trace_id == action.get_span_context().trace_id != send.context.trace_id
    assert [link.context.span_id for link in retry.links] == [send.context.span_id]
    assert [link.context.trace_id for link in retry.links] == [send.context.trace_id]
    assert dead.attributes["prismq.task.outcome"] == "dead"  # type: ignore[index]
    assert rerun.context.trace_id == send.context.trace_id


def test_enqueue_many_is_one_send_span_every_task_carries(db: QueueDatabase, spans: Any) -> None:
    tracing, exporter, _tracer = spans
    client = QueueClient(db, observer=tracing)
    ids = client.enqueue_many([TaskSpec("a", 1), TaskSpec("b", 2), TaskSpec("a", 3)])
    (send,) = exporter.get_finished_spans()
    assert send.name == "send multiple"
    assert send.attributes["messaging.batch.message_count"] == 3  # type: ignore[index]
    contexts = {client.get(task_id).trace_context for task_id in ids}
    assert len(contexts) == 1
    (text,) = contexts
    assert trace.get_current_span(extract_context(text)).get_span_context().span_id == send.context.span_id


def test_tasks_with_flow_options_carry_the_trace_context(db: QueueDatabase, spans: Any) -> None:
    tracing, exporter, _tracer = spans
    client = QueueClient(db, observer=tracing)
    first = client.enqueue("a", 1, concurrency_key="k", unique=Unique())
    assert client.enqueue("a", 1, unique=Unique()) == first  # the duplicate is the first task
    ids = client.enqueue_many([TaskSpec("a", 2, concurrency_key="k"), TaskSpec("b", 3)])
    sends = [span.context.span_id for span in exporter.get_finished_spans()]
    assert len(sends) == 3
    stored = [client.get(task_id).trace_context for task_id in (first, *ids)]
    assert [trace.get_current_span(extract_context(t or "")).get_span_context().span_id for t in stored] == [
        sends[0],
        sends[2],
        sends[2],
    ]


def test_without_an_observer_nothing_is_stored(db: QueueDatabase) -> None:
    client = QueueClient(db)
    assert client.get(client.enqueue("a", None)).trace_context is None


def test_a_damaged_context_starts_a_new_trace(db: QueueDatabase, spans: Any) -> None:
    tracing, exporter, _tracer = spans
    task_id = QueueClient(db).enqueue("a", None)
    with db.transaction() as conn:
        conn.execute(
            'UPDATE tasks SET trace_context = \'{"traceparent": "garbage"}\' WHERE id = '
            + ("?" if db.backend_name == "sqlite" else "%s"),
            (task_id,),
        )
    registry = HandlerRegistry()
    registry.register("a", lambda ctx: "ok")
    summary = QueueWorker(db, worker_id="w1").run(registry, burst=True, observer=tracing)
    assert summary.completed == 1
    (process,) = exporter.get_finished_spans()
    assert process.parent is None
    assert process.links == ()


def test_an_insert_that_fails_ends_its_span_with_the_error(
    db: QueueDatabase, spans: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracing, exporter, _tracer = spans

    def busy(*_args: object) -> None:
        raise QueueBusyError("database is locked")

    monkeypatch.setattr(db.backend, "insert_tasks", busy)
    with pytest.raises(QueueBusyError):
        QueueClient(db, observer=tracing).enqueue("a", None)
    (send,) = exporter.get_finished_spans()
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == "QueueBusyError"  # type: ignore[index]
    assert "messaging.message.id" not in (send.attributes or {})


def test_trace_context_survives_backup_and_restore(db: QueueDatabase, spans: Any, tmp_path: Path) -> None:
    tracing, _exporter, _tracer = spans
    client = QueueClient(db, observer=tracing)
    task_id = client.enqueue("a", None)
    stored = client.get(task_id).trace_context
    assert stored is not None
    backup = db.backup(tmp_path / "backup")
    client.prune(0, ["completed"])  # nothing to prune; the restore below replaces everything
    client.cancel(task_id)
    db.restore(backup)
    restored = client.get(task_id)
    assert restored.status.value == "queued"
    assert restored.trace_context == stored


def test_trace_context_survives_migrate(db: QueueDatabase, spans: Any, tmp_path: Path) -> None:
    tracing, _exporter, _tracer = spans
    client = QueueClient(db, observer=tracing)
    task_id = client.enqueue("a", None)
    with QueueDatabase(tmp_path / "target.db") as target:
        target.initialize_schema()
        report = migrate(db, target)
        assert report.verified
        assert QueueClient(target).get(task_id).trace_context == client.get(task_id).trace_context


def test_worker_settings_and_cli_turn_tracing_on() -> None:
    observers = WorkerSettings(tracing=True).runner_options()["observer"]
    assert [type(o).__name__ for o in observers] == ["TracingObserver"]
    assert WorkerSettings().runner_options()["observer"] is None
    args = build_parser().parse_args(["worker", "--handlers", "m:r", "--tracing"])
    assert args.tracing is True


def test_config_file_turns_metrics_and_tracing_on(tmp_path: Path) -> None:
    from prismq.queue.runtime.settings import load_settings

    (tmp_path / "handlers_cfg.py").write_text("def run(ctx):\n    return 1\n", encoding="utf-8")
    config = tmp_path / "worker.toml"
    config.write_text(
        '[worker]\nmetrics = true\ntracing = true\n[handlers]\njob = "handlers_cfg:run"\n', encoding="utf-8"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        settings = load_settings(config)
    finally:
        sys.path.remove(str(tmp_path))
    assert (settings.metrics, settings.tracing) == (True, True)
    names = [type(o).__name__ for o in settings.runner_options()["observer"]]
    assert names == ["MetricsObserver", "TracingObserver"]
    config.write_text('[worker]\nmetrics = "yes"\n[handlers]\njob = "handlers_cfg:run"\n', encoding="utf-8")
    from prismq.queue.errors import ConfigError

    with pytest.raises(ConfigError, match=r"worker\.metrics must be true or false"):
        load_settings(config)


@pytest.mark.postgres
def test_a_postgres_dump_from_before_trace_context_restores(
    postgres_schema: tuple[str, str], tmp_path: Path, spans: Any
) -> None:
    """PostgreSQL backups are dumps (SQLite's are database files, migrated when opened)."""
    import hashlib

    from prismq.queue.backends.postgres import PostgresBackend

    tracing, _exporter, _tracer = spans
    url, schema = postgres_schema
    db = QueueDatabase(backend=PostgresBackend(url, schema=schema, max_size=2))
    db.initialize_schema()
    client = QueueClient(db, observer=tracing)
    task_id = client.enqueue("a", {"n": 1})
    dump = db.backup(tmp_path / "new.dump")
    # The same dump as schema version 2 wrote it: no trace_context field.
    lines = dump.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["schema_version"] = 2
    body = [json.dumps(header, separators=(",", ":")).encode() + b"\n"]
    for line in lines[1:-1]:
        record = json.loads(line)
        record.get("task", {}).pop("trace_context", None)
        body.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    end = json.loads(lines[-1])
    end["sha256"] = hashlib.sha256(b"".join(body)).hexdigest()
    old = tmp_path / "old.dump"
    old.write_bytes(b"".join(body) + json.dumps(end, separators=(",", ":")).encode() + b"\n")
    client.cancel(task_id)
    db.restore(old)
    restored = client.get(task_id)
    assert restored.status.value == "queued"
    assert restored.payload == {"n": 1}
    assert restored.trace_context is None
    db.close()


def test_with_the_api_alone_nothing_is_recorded_or_stored(db: QueueDatabase) -> None:
    from opentelemetry.trace import ProxyTracerProvider

    assert isinstance(trace.get_tracer_provider(), ProxyTracerProvider)  # no SDK configured
    tracing = TracingObserver()
    client = QueueClient(db, observer=tracing)
    task_id = client.enqueue("a", None)
    assert client.get(task_id).trace_context is None
    registry = HandlerRegistry()
    registry.register("a", lambda ctx: trace.get_current_span().is_recording())
    QueueWorker(db, worker_id="w1").run(registry, burst=True, observer=tracing)
    assert client.get(task_id).result is False


def test_an_untraced_task_after_a_traced_one_starts_its_own_trace(db: QueueDatabase, spans: Any) -> None:
    tracing, exporter, _tracer = spans
    QueueClient(db, observer=tracing).enqueue("a", 1)
    QueueClient(db).enqueue("a", 2)  # no observer: no trace context
    registry = HandlerRegistry()
    registry.register("a", lambda ctx: trace.get_current_span().get_span_context().trace_id)
    # One slot: the second task is claimed with the first one's completion, from inside
    # the first one's execution; its span must not inherit the first one's.
    QueueWorker(db, worker_id="w1").run(registry, burst=True, observer=tracing, concurrency=1)
    found = _by_name(exporter)
    (send,) = found["send a"]
    first, second = found["process a"]
    assert _parent_id(first) == send.context.span_id
    assert second.parent is None
    assert second.context.trace_id != first.context.trace_id
    results = [t.result for t in QueueClient(db).list(newest_first=False)]
    assert results == [first.context.trace_id, second.context.trace_id]  # each handler saw its own span
