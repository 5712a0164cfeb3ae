"""QueueConfig.from_env, the default database path per platform, and PRISMQ_QUEUE_DB_PATH."""

from __future__ import annotations

import os
import socket
from pathlib import Path, PureWindowsPath

import pytest

from prismq.queue import ConfigError, QueueConfig, QueueDatabase, default_db_path
from prismq.queue.config import DEFAULT_LEASE_DURATION, default_worker_id


def test_windows_default_path() -> None:
    path = default_db_path(platform="win32", environ={})
    assert PureWindowsPath(str(path)) == PureWindowsPath(r"C:\Data\PrismQ\queue\queue.db")


def test_macos_default_path() -> None:
    path = default_db_path(platform="darwin", environ={"HOME": "/Users/someone"})
    assert path == Path("/Users/someone/Library/Application Support/PrismQ/queue/queue.db")


def test_linux_default_path_uses_xdg_data_home() -> None:
    path = default_db_path(platform="linux", environ={"HOME": "/home/u", "XDG_DATA_HOME": "/data/xdg"})
    assert path == Path("/data/xdg/prismq/queue/queue.db")


@pytest.mark.parametrize("xdg", [None, "", "   "])
def test_linux_default_path_falls_back_to_local_share(xdg: str | None) -> None:
    env = {"HOME": "/home/u"}
    if xdg is not None:
        env["XDG_DATA_HOME"] = xdg
    assert default_db_path(platform="linux", environ=env) == Path(
        "/home/u/.local/share/prismq/queue/queue.db"
    )


@pytest.mark.parametrize("platform", ["win32", "darwin", "linux", "freebsd13"])
def test_environment_variable_wins_on_every_platform(platform: str, tmp_path: Path) -> None:
    target = tmp_path / "custom" / "q.db"
    env = {"PRISMQ_QUEUE_DB_PATH": f"  {target}  ", "HOME": "/home/u"}
    assert default_db_path(platform=platform, environ=env) == target


def test_blank_environment_variable_is_ignored() -> None:
    env = {"PRISMQ_QUEUE_DB_PATH": "  ", "HOME": "/home/u"}
    assert default_db_path(platform="linux", environ=env) == Path(
        "/home/u/.local/share/prismq/queue/queue.db"
    )


def test_queue_database_honours_env_path_and_creates_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "deep" / "er" / "queue.db"
    monkeypatch.setenv("PRISMQ_QUEUE_DB_PATH", str(target))
    with QueueDatabase() as db:
        assert db.path == target
        db.initialize_schema()
        assert target.is_file()
        assert db.schema_version() >= 1


def test_queue_database_creates_missing_parent_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c" / "queue.db"
    with QueueDatabase(target) as db:
        db.initialize_schema()
    assert target.is_file()


def test_sqlite_url_is_accepted(tmp_path: Path) -> None:
    target = tmp_path / "url.db"
    with QueueDatabase(f"sqlite:///{target}") as db:
        db.initialize_schema()
        assert db.path == target
        assert db.backend_name == "sqlite"
    assert target.is_file()


@pytest.mark.parametrize("target", [":memory:", "", "sqlite:///", "file::memory:?cache=shared"])
def test_in_memory_or_empty_targets_are_config_errors(target: str) -> None:
    with pytest.raises(ConfigError):
        QueueDatabase(target)


def test_from_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"HOME": "/home/u"}
    config = QueueConfig.from_env(env)
    assert config.worker_id == f"{socket.gethostname()}-{os.getpid()}" == default_worker_id()
    assert config.lease_duration == DEFAULT_LEASE_DURATION == 60.0
    assert config.max_workers == 1
    assert Path(config.db_path) == default_db_path(environ=env)


def test_from_env_reads_every_variable(tmp_path: Path) -> None:
    env = {
        "PRISMQ_QUEUE_DB_PATH": str(tmp_path / "q.db"),
        "PRISMQ_QUEUE_WORKER_ID": " worker-7 ",
        "PRISMQ_QUEUE_LEASE_DURATION": "12.5",
        "PRISMQ_QUEUE_MAX_WORKERS": "3",
    }
    config = QueueConfig.from_env(env)
    assert config == QueueConfig(
        db_path=str(tmp_path / "q.db"), worker_id="worker-7", lease_duration=12.5, max_workers=3
    )


def test_from_env_keeps_postgres_url() -> None:
    url = "postgresql://user:secret@db.example/queue"
    assert QueueConfig.from_env({"PRISMQ_QUEUE_DB_PATH": url}).db_path == url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PRISMQ_QUEUE_LEASE_DURATION", "abc"),
        ("PRISMQ_QUEUE_LEASE_DURATION", "0"),
        ("PRISMQ_QUEUE_LEASE_DURATION", "-5"),
        ("PRISMQ_QUEUE_LEASE_DURATION", "nan"),
        ("PRISMQ_QUEUE_LEASE_DURATION", "inf"),
        ("PRISMQ_QUEUE_MAX_WORKERS", "0"),
        ("PRISMQ_QUEUE_MAX_WORKERS", "two"),
        ("PRISMQ_QUEUE_MAX_WORKERS", "2.5"),
        ("PRISMQ_QUEUE_WORKER_ID", "w" * 201),
    ],
)
def test_from_env_rejects_malformed_values_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        QueueConfig.from_env({name: value})
