"""Task functions: the decorator, checked enqueues, options, and workers running them."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from pathlib import Path
from typing import Literal

import pytest

from prismq.queue import (
    AsyncQueueClient,
    ConfigError,
    PayloadError,
    PriorityError,
    QueueClient,
    QueueDatabase,
    QueueWorker,
    TaskStatus,
)
from prismq.queue.runtime import HandlerRegistry, TaskContext
from prismq.queue.tasks import TaskFunction, TaskRegistry, current_context


@dataclasses.dataclass
class Email:
    to: str
    subject: str = "Hello"


def make_tasks() -> tuple[TaskRegistry, dict[str, list[object]]]:
    tasks = TaskRegistry()
    seen: dict[str, list[object]] = {"send": [], "resize": []}

    @tasks.task(priority=10, max_attempts=2)
    def send(email: Email, urgent: bool = False) -> str:
        seen["send"].append((email, urgent))
        return email.to

    @tasks.task("images.resize", delay=30)
    async def resize(size: tuple[int, int], mode: Literal["fit", "fill"] = "fit") -> dict[str, object]:
        seen["resize"].append((size, mode))
        ctx = current_context()
        await ctx.areport_progress(50)
        return {"size": list(size), "task": ctx.task_id}

    return tasks, seen


def test_decorated_function_is_still_a_function() -> None:
    tasks, seen = make_tasks()
    send = tasks["send"]
    assert isinstance(send, TaskFunction)
    assert send(Email("a@example.com")) == "a@example.com"
    assert seen["send"] == [(Email("a@example.com"), False)]
    assert tasks.handlers.task_types == ("send", "images.resize")
    assert "images.resize" in tasks
    assert len(tasks) == 2
    assert [t.name for t in tasks] == ["send", "images.resize"]


def test_enqueue_checks_the_payload_then_writes_with_the_options(db: QueueDatabase) -> None:
    tasks, _ = make_tasks()
    client = QueueClient(db)
    tasks.bind(client)
    send = tasks["send"]
    task_id = send.enqueue(Email("a@example.com"), urgent=True)
    task = client.get(task_id)
    assert (task.task_type, task.priority, task.max_attempts) == ("send", 10, 2)
    assert task.payload == {"email": {"to": "a@example.com", "subject": "Hello"}, "urgent": True}
    resize = tasks["images.resize"]
    delayed = client.get(resize.enqueue((3, 4)))
    assert (delayed.run_after - delayed.created_at).total_seconds() == pytest.approx(30, abs=1)
    assert delayed.payload == {"size": [3, 4]}
    # Nothing is written when the arguments do not fit.
    with pytest.raises(
        PayloadError, match=r"task 'send': email must be Email \(a dict of its fields\), got str"
    ):
        send.enqueue("a@example.com")  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="missing a required argument: 'email'"):
        send.enqueue()  # type: ignore[call-arg]
    with pytest.raises(PayloadError, match="mode must be one of 'fit', 'fill'"):
        resize.enqueue((1, 2), mode="stretch")  # type: ignore[arg-type]
    assert client.count_by_status()["queued"] == 2


def test_options_override_per_call_and_idempotency_keys(db: QueueDatabase) -> None:
    tasks, _ = make_tasks()
    client = QueueClient(db)
    tasks.bind(client)
    send = tasks["send"]
    keyed = send.options(priority=0, idempotency_key="welcome-7")
    first = keyed.enqueue(Email("a@example.com"))
    assert keyed.enqueue(Email("a@example.com")) == first
    task = client.get(first)
    assert (task.priority, task.idempotency_key) == (0, "welcome-7")
    assert send.default_options.priority == 10  # the original is unchanged
    later = client.get(send.options(delay=120).enqueue(Email("b@example.com")))
    assert (later.run_after - later.created_at).total_seconds() == pytest.approx(120, abs=1)
    with pytest.raises(PriorityError):
        send.options(priority=5000)


def test_enqueue_many_is_one_transaction_and_names_the_bad_call(db: QueueDatabase) -> None:
    tasks, _ = make_tasks()
    client = QueueClient(db)
    tasks.bind(client)
    send = tasks["send"]
    ids = send.enqueue_many([{"email": Email("a@x")}, {"email": {"to": "b@x"}, "urgent": True}])
    assert [client.get(i).payload["email"]["to"] for i in ids] == ["a@x", "b@x"]
    with pytest.raises(PayloadError, match="call #1: task 'send': urgent must be a boolean"):
        send.enqueue_many([{"email": Email("c@x")}, {"email": Email("d@x"), "urgent": "yes"}])
    with pytest.raises(PayloadError, match="call #0 of 'send': expected a mapping"):
        send.enqueue_many([Email("e@x")])  # type: ignore[list-item]
    assert client.count_by_status()["queued"] == 2
    # Specs mix task functions in one batch.
    mixed = client.enqueue_many([send.spec(Email("f@x")), tasks["images.resize"].spec((1, 1))])
    assert [client.get(i).task_type for i in mixed] == ["send", "images.resize"]


def test_without_a_client_enqueue_says_what_to_do() -> None:
    tasks, _ = make_tasks()
    with pytest.raises(ConfigError, match=r"call TaskRegistry.bind\(client\)"):
        tasks["send"].enqueue(Email("a@x"))
    with pytest.raises(ConfigError, match="no AsyncQueueClient"):
        asyncio.run(tasks["send"].aenqueue(Email("a@x")))
    with pytest.raises(ConfigError, match="takes a QueueClient or an AsyncQueueClient"):
        tasks.bind("client")  # type: ignore[arg-type]


def test_decoration_refuses_what_cannot_be_a_payload() -> None:
    tasks = TaskRegistry()
    with pytest.raises(ConfigError, match=r"parameter 'at' of task 'remind'.*datetime has no JSON form"):

        @tasks.task
        def remind(at: datetime.datetime) -> None: ...

    @tasks.task
    def ping() -> None: ...

    with pytest.raises(ConfigError, match="already has a handler"):

        @tasks.task("ping")
        def ping_again() -> None: ...

    with pytest.raises(PriorityError):
        tasks.task(priority=-1)


def test_a_worker_runs_task_functions_with_typed_arguments(db: QueueDatabase) -> None:
    tasks, seen = make_tasks()
    client = QueueClient(db)
    tasks.bind(client)
    send_id = tasks["send"].enqueue(Email("a@x", "Hi"), urgent=True)
    resize_id = tasks["images.resize"].options(delay=0).enqueue((640, 480), mode="fill")
    bad_id = client.enqueue("send", {"email": {"to": 5}})  # the explicit API, a wrong payload
    worker = QueueWorker(db, worker_id="w1", task_types=tasks.handlers.task_types)
    summary = worker.run(tasks.handlers, burst=True)
    assert summary.completed == 2
    assert seen["send"] == [(Email("a@x", "Hi"), True)]
    assert seen["resize"] == [((640, 480), "fill")]
    assert client.get_result(send_id) == "a@x"
    assert client.get_result(resize_id) == {"size": [640, 480], "task": resize_id}
    bad = client.get(bad_id)
    assert bad.status is TaskStatus.DEAD  # a retry cannot fix a payload: dead at once
    assert bad.attempts == 1
    assert "email.to must be a string" in (bad.last_error or "")


def test_task_functions_share_a_handler_registry_with_plain_handlers(db: QueueDatabase) -> None:
    handlers = HandlerRegistry()

    @handlers.handler("plain")
    def plain(ctx: TaskContext) -> int:
        return int(ctx.payload["n"]) * 2

    tasks = TaskRegistry(QueueClient(db), handlers=handlers)

    @tasks.task
    def typed(n: int) -> int:
        return n * 3

    assert handlers.task_types == ("plain", "typed")
    client = QueueClient(db)
    a, b = client.enqueue("plain", {"n": 2}), typed.enqueue(2)
    QueueWorker(db, worker_id="w").run(handlers, burst=True)
    assert (client.get_result(a), client.get_result(b)) == (4, 6)


def test_current_context_outside_a_task_is_an_error() -> None:
    with pytest.raises(ConfigError, match="only available while a worker runs"):
        current_context()


def test_aenqueue_goes_through_the_async_client(db: QueueDatabase) -> None:
    tasks, _ = make_tasks()

    async def scenario() -> list[int]:
        async with AsyncQueueClient(db) as client:
            tasks.bind(client)
            one = await tasks["send"].aenqueue(Email("a@x"))
            more = await tasks["send"].aenqueue_many([{"email": Email("b@x")}])
            with pytest.raises(PayloadError):
                await tasks["send"].aenqueue(Email(5))  # type: ignore[arg-type]
            return [one, *more]

    ids = asyncio.run(scenario())
    assert [QueueClient(db).get(i).payload["email"]["to"] for i in ids] == ["a@x", "b@x"]
    # Binding an async client also gave the registry a sync client on the same database.
    assert tasks.client is not None
    assert tasks.client.db is db


def test_a_task_registry_loads_as_the_workers_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "eco_tasks_module.py").write_text(
        "from prismq.queue.tasks import TaskRegistry\n"
        "tasks = TaskRegistry()\n"
        "@tasks.task\n"
        "def ping(n: int) -> int:\n"
        "    return n\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    handlers = HandlerRegistry.load("eco_tasks_module:tasks")  # what --handlers does
    assert handlers.task_types == ("ping",)
    with pytest.raises(ConfigError, match="is a type, not a HandlerRegistry"):
        HandlerRegistry.load("eco_tasks_module:TaskRegistry")
