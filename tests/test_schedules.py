"""Periodic schedules: definitions, time zones across DST, misfire policies, storage.

Storage tests run on SQLite and PostgreSQL (the ``clocked_db`` fixture) with a fake clock,
so every tick is placed exactly; the multi-process proof is in
``test_schedules_multiprocess.py``.
"""

from __future__ import annotations

import itertools
import pickle
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prismq.queue import (
    ConfigError,
    CronExpressionError,
    MisfirePolicyError,
    PeriodicScheduleError,
    QueueClient,
    QueueDatabase,
    QueueError,
    ScheduleDefinition,
    ScheduleNotFoundError,
    Schedules,
    TaskStatus,
    TimeZoneError,
    ValidationError,
)
from prismq.queue.runtime import HandlerRegistry
from prismq.queue.runtime.settings import load_settings
from prismq.queue.schedules import tick_key

if TYPE_CHECKING:
    from conftest import FakeClock

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()  # a Thursday, 00:00 UTC


def epoch(*args: int, tz: object = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[arg-type]


def ticks_between(definition: ScheduleDefinition, start: float, end: float) -> list[float]:
    """Every tick in (start, end], walked one at a time with next_tick."""
    out = []
    tick = definition.next_tick(start)
    while tick <= end:
        out.append(tick)
        tick = definition.next_tick(tick)
    return out


# -- definitions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error", "fragment"),
    [
        ({"cron": "61 * * * *"}, CronExpressionError, "Bad minute"),
        ({"cron": "* * * *"}, CronExpressionError, "Wrong number of fields"),
        ({"cron": "0 0 31 2 *"}, CronExpressionError, "Bad day-of-month"),
        ({"cron": "   "}, CronExpressionError, "non-empty"),
        ({"timezone": "Mars/Olympus_Mons"}, TimeZoneError, "unknown time zone 'Mars/Olympus_Mons'"),
        ({"timezone": "../etc/passwd"}, TimeZoneError, "unknown time zone"),
        ({"misfire": "catch_up"}, MisfirePolicyError, "skip, run_once, backfill"),
        ({"max_backfill": 0}, MisfirePolicyError, "max_backfill must be an integer from 1 to 1000"),
        ({"max_backfill": True}, MisfirePolicyError, "max_backfill"),
        ({"grace": 0}, MisfirePolicyError, "grace must be a positive number"),
        ({"grace": float("nan")}, MisfirePolicyError, "grace"),
        ({"name": ""}, PeriodicScheduleError, "non-empty string"),
        ({"name": "a\nb"}, PeriodicScheduleError, "control character"),
        ({"source": "cli"}, PeriodicScheduleError, "source must be one of"),
        ({"task_type": ""}, ValidationError, "task"),
        ({"priority": 5000}, ValidationError, "priority"),
        ({"max_attempts": 0}, ValidationError, "max_attempts"),
        ({"payload": {"x": object()}}, ValidationError, "payload"),
    ],
)
def test_bad_definitions_are_refused_with_a_specific_error(
    changes: dict[str, object], error: type[Exception], fragment: str
) -> None:
    fields: dict[str, object] = {"name": "job", "cron": "*/5 * * * *", "task_type": "job", **changes}
    with pytest.raises(error, match=None) as caught:
        ScheduleDefinition(**fields)  # type: ignore[arg-type]
    assert fragment in str(caught.value)
    assert isinstance(caught.value, QueueError)


def test_definition_normalises_and_computes_ticks() -> None:
    d = ScheduleDefinition("five", "  */5   * * * * ", "cleanup", {"deep": True})
    assert d.cron == "*/5 * * * *"
    assert d.payload_json == '{"deep":true}'
    assert d.next_tick(T0) == T0 + 300  # strictly after
    assert d.next_tick(T0 - 0.5) == T0
    seconds = ScheduleDefinition("s", "*/10 * * * * *", "s")  # six fields: seconds first
    assert seconds.next_tick(T0) == T0 + 10


def test_spring_forward_runs_the_skipped_time_at_the_jump_and_hourly_follows_real_time() -> None:
    # New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
    daily = ScheduleDefinition("d", "30 2 * * *", "t", timezone="America/New_York")
    day = ticks_between(daily, epoch(2026, 3, 7, 12, tz=NY), epoch(2026, 3, 9, 12, tz=NY))
    local = [datetime.fromtimestamp(t, NY).strftime("%m-%d %H:%M %Z") for t in day]
    assert local == ["03-08 03:00 EDT", "03-09 02:30 EDT"]
    hourly = ScheduleDefinition("h", "0 * * * *", "t", timezone="America/New_York")
    start, end = epoch(2026, 3, 8, 0, tz=NY) - 1, epoch(2026, 3, 9, 0, tz=NY) - 1
    hours = ticks_between(hourly, start, end)
    assert len(hours) == 23  # the day has 23 hours
    assert {b - a for a, b in itertools.pairwise(hours)} == {3600.0}


def test_fall_back_runs_a_repeated_time_once_and_hourly_follows_real_time() -> None:
    # New York, 2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice.
    daily = ScheduleDefinition("d", "30 1 * * *", "t", timezone="America/New_York")
    day = ticks_between(daily, epoch(2026, 10, 31, 12, tz=NY), epoch(2026, 11, 2, 12, tz=NY))
    local = [datetime.fromtimestamp(t, NY).strftime("%m-%d %H:%M %Z") for t in day]
    assert local == ["11-01 01:30 EDT", "11-02 01:30 EST"]
    hourly = ScheduleDefinition("h", "0 * * * *", "t", timezone="America/New_York")
    start, end = epoch(2026, 11, 1, 0, tz=NY) - 1, epoch(2026, 11, 2, 0, tz=NY) - 1
    hours = ticks_between(hourly, start, end)
    assert len(hours) == 25  # the day has 25 hours, 01:00 comes twice
    assert {b - a for a, b in itertools.pairwise(hours)} == {3600.0}


def test_dst_in_europe_and_a_zone_without_dst() -> None:
    prague = ScheduleDefinition("p", "0 9 * * *", "t", timezone="Europe/Prague")
    # 2026-03-29: CET (UTC+1) becomes CEST (UTC+2); 09:00 local moves from 08:00 to 07:00 UTC.
    before = prague.next_tick(epoch(2026, 3, 28, 0))
    after = prague.next_tick(epoch(2026, 3, 29, 0))
    assert datetime.fromtimestamp(before, UTC).hour == 8
    assert datetime.fromtimestamp(after, UTC).hour == 7
    assert after - before == 23 * 3600
    tokyo = ScheduleDefinition("t", "0 9 * * *", "t", timezone="Asia/Tokyo")
    assert datetime.fromtimestamp(tokyo.next_tick(T0), UTC).hour == 0


def test_plan_applies_each_misfire_policy() -> None:
    def plan(misfire: str, now: float, **extra: object) -> tuple[list[float], float]:
        d = ScheduleDefinition("m", "*/5 * * * *", "t", misfire=misfire, **extra)  # type: ignore[arg-type]
        return d.plan(T0 + 300, now)

    late = T0 + 3600 + 30  # 12 ticks (00:05 .. 01:00) due, the last one 30 s ago
    assert plan("run_once", late) == ([T0 + 3600], T0 + 3900)
    assert plan("skip", late) == ([T0 + 3600], T0 + 3900)  # 30 s late, within the 60 s grace
    assert plan("skip", late, grace=10) == ([], T0 + 3900)
    assert plan("backfill", late, max_backfill=3) == ([T0 + 3000, T0 + 3300, T0 + 3600], T0 + 3900)
    every = plan("backfill", late, max_backfill=100)[0]
    assert every == [T0 + 300 * k for k in range(1, 13)]
    assert plan("run_once", T0 + 299) == ([], T0 + 300)  # not due yet


def test_plan_after_a_long_gap_stays_bounded() -> None:
    d = ScheduleDefinition("s", "* * * * * *", "t", misfire="backfill", max_backfill=5)
    now = T0 + 30 * 86400 + 0.25  # a month of one tick per second: 2.6 million missed
    started = time.perf_counter()
    ticks, upcoming = d.plan(T0 + 1, now)
    assert time.perf_counter() - started < 5
    assert ticks == [T0 + 30 * 86400 - k for k in (4, 3, 2, 1, 0)]
    assert upcoming == T0 + 30 * 86400 + 1


# -- storage, on both backends -----------------------------------------------------


@pytest.fixture
def schedules(clocked_db: QueueDatabase, clock: FakeClock) -> Schedules:
    clock.now = T0
    return QueueClient(clocked_db).schedules


def tasks_of(db: QueueDatabase) -> list[tuple[str, float, str | None]]:
    tasks = QueueClient(db).list(limit=1000, newest_first=False)
    return [(t.task_type, t.run_after.timestamp(), t.idempotency_key) for t in tasks]


def test_add_get_list_and_errors(schedules: Schedules) -> None:
    added = schedules.add("report", "0 6 * * *", "report", {"k": 1}, timezone="Europe/Prague", priority=5)
    assert added.name == "report"
    assert added.definition.source == "api"
    assert added.next_run == datetime(2026, 1, 1, 5, tzinfo=UTC)  # 06:00 in Prague (CET)
    assert added.paused is False
    assert added.last_run is None
    assert schedules.get("report") == added
    schedules.add("cleanup", "*/5 * * * *", "cleanup")
    assert [s.name for s in schedules.list()] == ["cleanup", "report"]
    with pytest.raises(PeriodicScheduleError, match="exists"):
        schedules.add("report", "0 7 * * *", "report")
    replaced = schedules.add("report", "0 7 * * *", "report", replace=True)
    assert replaced.definition.cron == "0 7 * * *"
    assert replaced.next_run.hour == 7
    for call in (schedules.get, schedules.pause, schedules.resume, schedules.remove, schedules.run_now):
        with pytest.raises(ScheduleNotFoundError, match="no schedule named 'nope'"):
            call("nope")
    with pytest.raises(CronExpressionError):
        schedules.add("bad", "not cron", "x")
    assert len(schedules.list()) == 2  # nothing was stored for the refused ones


def test_each_tick_is_enqueued_once_with_its_time_and_key(
    schedules: Schedules, clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    schedules.add("five", "*/5 * * * *", "cleanup", {"deep": True}, priority=7, max_attempts=2)
    assert schedules.fire_due() == []
    clock.advance(300)
    fired = schedules.fire_due()
    assert [(t.name, t.at.timestamp()) for t in fired] == [("five", T0 + 300)]
    assert schedules.fire_due() == []  # the same tick again: nothing
    task = QueueClient(clocked_db).get(fired[0].task_id)
    assert task.payload == {"deep": True}
    assert task.priority == 7
    assert task.max_attempts == 2
    assert task.run_after.timestamp() == T0 + 300
    assert task.status is TaskStatus.QUEUED
    assert task.idempotency_key == "prismq.schedule:five@2026-01-01T00:05:00Z" == tick_key("five", T0 + 300)
    stored = schedules.get("five")
    assert stored.next_run.timestamp() == T0 + 600
    assert stored.last_run == fired[0].at
    assert stored.last_task_id == task.id


def test_a_second_database_connection_never_enqueues_a_tick_again(
    schedules: Schedules, make_db, clock: FakeClock
) -> None:
    other = Schedules(make_db(clock=clock))
    schedules.add("minute", "* * * * *", "tick", misfire="backfill", max_backfill=100)
    fired = []
    for _ in range(30):
        clock.advance(20)
        fired += schedules.fire_due() + other.fire_due()
    ticks = [t.at.timestamp() for t in fired]
    assert ticks == [T0 + 60 * k for k in range(1, 11)]


def test_the_unique_key_stops_a_tick_enqueued_twice_even_if_next_run_goes_back(
    schedules: Schedules, clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    schedules.add("minute", "* * * * *", "tick")
    clock.advance(61)
    assert len(schedules.fire_due()) == 1
    with clocked_db.transaction() as conn:  # as if a stale scheduler had read the old next_run
        sql = "UPDATE schedules SET next_run = {} WHERE name = 'minute'"
        conn.execute(sql.format(T0 + 60))
    assert schedules.fire_due() == []
    assert len(tasks_of(clocked_db)) == 1
    assert schedules.get("minute").next_run.timestamp() == T0 + 120


@pytest.mark.parametrize(
    ("misfire", "extra", "expected"),
    [
        ("skip", {}, []),
        ("skip", {"grace": 600}, [T0 + 3600]),
        ("run_once", {}, [T0 + 3600]),
        ("backfill", {"max_backfill": 4}, [T0 + 2700, T0 + 3000, T0 + 3300, T0 + 3600]),
    ],
)
def test_misfire_policy_after_no_scheduler_ran_for_an_hour(
    schedules: Schedules,
    clocked_db: QueueDatabase,
    clock: FakeClock,
    misfire: str,
    extra: dict[str, object],
    expected: list[float],
) -> None:
    schedules.add("five", "*/5 * * * *", "t", misfire=misfire, **extra)  # type: ignore[arg-type]
    clock.advance(3600 + 120)  # 12 ticks passed; the latest 2 minutes ago
    assert [t.at.timestamp() for t in schedules.fire_due()] == expected
    assert [run_after for _, run_after, _ in tasks_of(clocked_db)] == expected
    assert schedules.get("five").next_run.timestamp() == T0 + 3900


def test_pause_resume_and_run_now(schedules: Schedules, clocked_db: QueueDatabase, clock: FakeClock) -> None:
    schedules.add("five", "*/5 * * * *", "t", misfire="backfill", max_backfill=100)
    paused = schedules.pause("five")
    assert paused.paused is True
    clock.advance(1000)
    assert schedules.fire_due() == []
    assert schedules.next_due() is None
    run_now_id = schedules.run_now("five")  # works while paused, outside the ticks
    task = QueueClient(clocked_db).get(run_now_id)
    assert task.idempotency_key is None
    assert task.run_after.timestamp() == T0 + 1000
    assert schedules.get("five").last_task_id == run_now_id
    resumed = schedules.resume("five")
    assert resumed.paused is False
    assert resumed.next_run.timestamp() == T0 + 1200  # the ticks while paused are not made up
    assert schedules.resume("five") == resumed  # resuming a running schedule changes nothing
    clock.advance(200)
    assert [t.at.timestamp() for t in schedules.fire_due()] == [T0 + 1200]
    schedules.remove("five")
    assert schedules.list() == []
    assert len(tasks_of(clocked_db)) == 2  # its tasks stay


def test_sync_keeps_pause_and_next_run_unless_the_timing_changed(
    schedules: Schedules, clock: FakeClock
) -> None:
    code = ScheduleDefinition("job", "*/5 * * * *", "t", source="code")
    (first,) = schedules.sync([code])
    assert first.definition.source == "code"
    assert first.next_run.timestamp() == T0 + 300
    schedules.pause("job")
    clock.advance(100)
    (again,) = schedules.sync([ScheduleDefinition("job", "*/5 * * * *", "t", priority=3, source="code")])
    assert again.paused is True
    assert again.next_run.timestamp() == T0 + 300
    assert again.definition.priority == 3
    (moved,) = schedules.sync([ScheduleDefinition("job", "*/7 * * * *", "t", source="config")])
    assert moved.next_run.timestamp() == T0 + 420
    assert moved.definition.source == "config"


def test_schedules_need_an_sql_backend() -> None:
    from prismq.queue.backends.schedulestore import ScheduleStore

    class Custom:
        name = "memory"

        def schedule_store(self) -> ScheduleStore:
            return ScheduleStore(self)

    class FakeDb:
        backend = Custom()

    with pytest.raises(ConfigError, match="SQLite or PostgreSQL"):
        Schedules(FakeDb())  # type: ignore[arg-type]


# -- definitions in code and in config files ----------------------------------------


def test_registry_periodic_registers_the_handler_and_the_schedule() -> None:
    registry = HandlerRegistry()

    @registry.periodic("*/5 * * * *", payload={"deep": True}, misfire="skip")
    def cleanup(ctx: object) -> str:
        return "ok"

    @registry.handler("report")
    def report(ctx: object) -> str:
        return "ok"

    registry.periodic("0 6 * * *", task_type="report", name="morning", timezone="Europe/Prague")(report)
    registry.periodic("0 18 * * *", task_type="report", name="evening")(report)
    assert registry.task_types == ("cleanup", "report")
    assert [(s.name, s.task_type, s.source) for s in registry.schedules] == [
        ("cleanup", "cleanup", "code"),
        ("morning", "report", "code"),
        ("evening", "report", "code"),
    ]
    with pytest.raises(ConfigError, match="already registered"):
        registry.periodic("* * * * *", task_type="report", name="morning")(report)
    with pytest.raises(TimeZoneError):
        registry.periodic("* * * * *", task_type="x", timezone="Nowhere/City")(report)
    merged = HandlerRegistry()
    merged.update(registry)
    assert merged.schedules == registry.schedules


def test_config_file_schedules(tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(
        '[handlers]\nreport = "json:dumps"\n\n'
        '[schedules.nightly]\ncron = "0 3 * * *"\ntask_type = "report"\ntimezone = "Europe/Prague"\n'
        'payload = {kind = "daily"}\nmisfire = "backfill"\nmax_backfill = 3\n',
        encoding="utf-8",
    )
    settings = load_settings(config)
    (nightly,) = settings.schedules
    assert (nightly.name, nightly.cron, nightly.timezone, nightly.payload) == (
        "nightly",
        "0 3 * * *",
        "Europe/Prague",
        {"kind": "daily"},
    )
    assert (nightly.misfire, nightly.max_backfill, nightly.source) == ("backfill", 3, "config")
    assert settings.build_registry().schedules == (nightly,)
    assert settings.runner_options()["scheduler"] is True
    # The settings cross to spawned worker processes by pickle, schedules included.
    copied = pickle.loads(pickle.dumps(settings))
    assert copied.schedules == (nightly,)
    assert copied.schedules[0].payload_json == nightly.payload_json


@pytest.mark.parametrize(
    ("table", "error", "fragment"),
    [
        ('cron = "0 3 * * *"', ConfigError, "schedules.n needs task_type"),
        ('cron = "0 3 * * *"\ntask_type = "r"\nevery = 5', ConfigError, "unknown key(s) ['every']"),
        ("cron = 5\ntask_type = 'r'", ConfigError, "schedules.n.cron must be a string"),
        ('cron = "0 3 * *"\ntask_type = "r"', CronExpressionError, "schedules.n"),
        ('cron = "0 3 * * *"\ntask_type = "r"\ntimezone = "X/Y"', TimeZoneError, "unknown time zone 'X/Y'"),
        ('cron = "0 3 * * *"\ntask_type = "r"\nmisfire = "all"', MisfirePolicyError, "misfire must be"),
    ],
)
def test_config_file_schedule_errors_name_the_file_and_table(
    tmp_path: Path, table: str, error: type[Exception], fragment: str
) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(f'[handlers]\nr = "json:dumps"\n\n[schedules.n]\n{table}\n', encoding="utf-8")
    with pytest.raises(error) as caught:
        load_settings(config)
    assert fragment in str(caught.value)
    assert str(config) in str(caught.value)


# -- schedules travel with backups and migrations -----------------------------------


def test_backup_and_restore_keep_schedules_and_their_state(
    schedules: Schedules, clocked_db: QueueDatabase, clock: FakeClock, tmp_path: Path
) -> None:
    schedules.add("five", "*/5 * * * *", "t", {"n": 1}, misfire="backfill", max_backfill=7)
    schedules.add("paused", "0 * * * *", "t")
    schedules.pause("paused")
    clock.advance(301)
    schedules.fire_due()
    before = schedules.list()
    backup = clocked_db.backup(tmp_path / "queue.backup")
    schedules.remove("five")
    schedules.add("later", "* * * * *", "t")
    clocked_db.restore(backup)
    assert schedules.list() == before
    clock.advance(300)  # the restored next_run is followed: the 00:10 tick, once
    assert [(t.name, t.at.timestamp()) for t in schedules.fire_due()] == [("five", T0 + 600)]


@pytest.mark.postgres
def test_migrate_copies_schedules_with_their_state(
    tmp_path: Path, postgres_schema: tuple[str, str], clock: FakeClock
) -> None:
    from prismq.queue.migrate import migrate

    url, schema = postgres_schema
    clock.now = T0
    with (
        QueueDatabase(tmp_path / "queue.db", clock=clock) as source,
        QueueDatabase(f"{url}?schema={schema}", clock=clock) as target,
    ):
        source.initialize_schema()
        on_source = Schedules(source)
        on_source.add("five", "*/5 * * * *", "t", {"n": 1}, timezone="Europe/Prague", misfire="skip", grace=5)
        on_source.add("paused", "0 * * * *", "t")
        on_source.pause("paused")
        clock.advance(300)
        on_source.fire_due()
        report = migrate(source, target)
        assert report.schedules_copied == 2
        assert "2 schedules" in report.summary()
        assert Schedules(target).list() == on_source.list()
        assert migrate(source, target).schedules_copied == 2  # again: upserted, not doubled
        assert len(Schedules(target).list()) == 2
        with QueueDatabase(tmp_path / "back.db") as back:
            assert migrate(target, back).schedules_copied == 2
            assert [s.name for s in Schedules(back).list()] == ["five", "paused"]


def test_doctor_warns_when_a_schedule_is_overdue(
    schedules: Schedules, clocked_db: QueueDatabase, clock: FakeClock
) -> None:
    from prismq.queue.cli.doctor import run_doctor

    def check() -> dict[str, str]:
        return next(c for c in run_doctor(clocked_db, stale_after=120)["checks"] if c["check"] == "schedules")

    schedules.add("five", "*/5 * * * *", "t")
    schedules.add("held", "* * * * *", "t")
    schedules.pause("held")
    assert check() == {"check": "schedules", "status": "ok", "detail": "1 running, none overdue"}
    clock.advance(300 + 121)  # the 00:05 tick is two minutes late: nobody fires it
    overdue = check()
    assert overdue["status"] == "warn"
    expected = "1 schedule(s) overdue (the oldest, five, was due at 2026-01-01T00:05:00+00:00)"
    assert expected in overdue["detail"]
    schedules.fire_due()
    assert check()["status"] == "ok"


def test_config_schedules_beside_an_imported_registry_build_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sched_registry_mod.py").write_text(
        "from prismq.queue.runtime import HandlerRegistry\n"
        "registry = HandlerRegistry()\n"
        "@registry.periodic('*/5 * * * *')\n"
        "def cleanup(ctx):\n"
        "    return 'ok'\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "worker.toml"
    config.write_text(
        '[worker]\nregistry = "sched_registry_mod:registry"\n\n'
        '[schedules.hourly]\ncron = "0 * * * *"\ntask_type = "cleanup"\n',
        encoding="utf-8",
    )
    settings = load_settings(config)  # builds the registry once to check it
    first, second = settings.build_registry(), settings.build_registry()  # as a worker does, again
    assert [s.name for s in first.schedules] == [s.name for s in second.schedules] == ["cleanup", "hourly"]
    import sched_registry_mod  # type: ignore[import-not-found]

    assert [s.name for s in sched_registry_mod.registry.schedules] == ["cleanup"]  # left as it was


def test_a_schedule_this_process_cannot_read_does_not_stop_the_others(
    schedules: Schedules, clocked_db: QueueDatabase, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    schedules.add("good", "*/5 * * * *", "t")
    schedules.add("foreign", "*/5 * * * *", "t")
    with clocked_db.transaction() as conn:  # as written by a machine that knows this zone
        conn.execute("UPDATE schedules SET timezone = 'Atlantis/Capital' WHERE name = 'foreign'")
    clock.advance(300)
    with caplog.at_level("WARNING", logger="prismq.queue.schedules"):
        fired = schedules.fire_due()
    assert [t.name for t in fired] == ["good"]
    assert "schedule foreign: unknown time zone 'Atlantis/Capital'" in caplog.text
    assert schedules.get("foreign").definition.timezone == "Atlantis/Capital"  # still listed
    with pytest.raises(TimeZoneError):
        schedules.get("foreign").definition.next_tick(T0)  # using its ticks fails clearly
    with clocked_db.transaction() as conn:
        row = conn.execute("SELECT next_run FROM schedules WHERE name = 'foreign'").fetchone()
    assert row[0] == T0 + 300  # left for a worker that can read it


# -- properties --------------------------------------------------------------------

CRONS = ["*/5 * * * *", "0 * * * *", "30 2 * * *", "30 1 * * *", "15 */3 * * MON-FRI", "*/20 * * * * *"]
ZONES = ["UTC", "America/New_York", "Europe/Prague", "Australia/Lord_Howe", "Asia/Kolkata"]


@settings(max_examples=150, deadline=None)
@given(
    cron=st.sampled_from(CRONS),
    zone=st.sampled_from(ZONES),
    start=st.integers(int(epoch(2026, 1, 1)), int(epoch(2027, 1, 1))),
    gap=st.floats(0, 3 * 86400),
    misfire=st.sampled_from(["skip", "run_once", "backfill"]),
    keep=st.integers(1, 50),
)
def test_plan_agrees_with_walking_every_tick(
    cron: str, zone: str, start: int, gap: float, misfire: str, keep: int
) -> None:
    d = ScheduleDefinition("p", cron, "t", timezone=zone, misfire=misfire, max_backfill=keep)
    next_run = d.next_tick(start)
    now = next_run + gap
    walked = ticks_between(d, next_run - 1, now)  # every tick in [next_run, now]
    ticks, upcoming = d.plan(next_run, now)
    assert upcoming == d.next_tick(now)
    assert upcoming > now >= walked[-1]
    if misfire == "backfill":
        assert ticks == walked[-keep:]
    elif misfire == "run_once":
        assert ticks == walked[-1:]
    else:
        assert ticks == ([walked[-1]] if now - walked[-1] <= 60 else [])
