"""One configuration chain for ``prismq-queue worker``: flags over file over environment over defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prismq.queue import ConfigError, QueueClient, QueueConfig, QueueDatabase
from prismq.queue.config import settings_from_env
from prismq.queue.runtime.settings import WorkerSettings, resolve_settings

SRC = Path(__file__).resolve().parents[2] / "packages" / "queue" / "src"

HANDLERS = """\
from prismq.queue.runtime import HandlerRegistry

registry = HandlerRegistry()


@registry.handler("probe")
def probe(ctx):
    lease = (ctx.task.lease_until - ctx.task.started_at).total_seconds()
    return {"worker_id": ctx.worker_id, "lease": lease}
"""


def _worker_run(
    tmp_path: Path, db: Path, env_vars: dict[str, str], *args: str, before: tuple[str, ...] = ()
) -> dict[str, object]:
    """Enqueue one probe task, drain it with ``prismq-queue worker --burst ARGS``, return its result."""
    with QueueDatabase(db) as database:
        database.initialize_schema()
        task_id = QueueClient(database).enqueue("probe", None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISMQ_QUEUE_")}
    env.update(env_vars)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(SRC), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prismq.queue",
            *before,
            "worker",
            "--handlers",
            "chain_handlers",
            "--burst",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    with QueueDatabase(db) as database:
        task = QueueClient(database).get(task_id)
    assert task.status.value == "completed", task
    return task.result  # type: ignore[no-any-return]


def test_flags_over_file_over_environment_over_defaults(tmp_path: Path) -> None:
    (tmp_path / "chain_handlers.py").write_text(HANDLERS, encoding="utf-8")
    db = tmp_path / "queue.db"
    env = {
        "PRISMQ_QUEUE_DB_PATH": str(db),
        "PRISMQ_QUEUE_WORKER_ID": "from-env",
        "PRISMQ_QUEUE_LEASE_DURATION": "90",
    }
    # The environment over the defaults (no flag names the database: the variable does).
    assert _worker_run(tmp_path, db, env) == {"worker_id": "from-env", "lease": 90.0}
    # The file over the environment.
    config = tmp_path / "worker.json"
    config.write_text(
        json.dumps({"worker": {"worker_id": "from-file", "lease_duration": 45}}), encoding="utf-8"
    )
    assert _worker_run(tmp_path, db, env, "--config", str(config)) == {
        "worker_id": "from-file",
        "lease": 45.0,
    }
    # A flag over the file; what the flags leave out still comes from the file.
    result = _worker_run(tmp_path, db, env, "--config", str(config), "--lease", "20s")
    assert result == {"worker_id": "from-file", "lease": 20.0}
    # Nothing set: the defaults (60 s lease, <hostname>-<pid> id).
    bare = _worker_run(tmp_path, db, {}, before=("--db", str(db)))
    assert bare["lease"] == 60.0
    assert isinstance(bare["worker_id"], str)
    assert bare["worker_id"] != "from-env"


def test_resolve_settings_layers(tmp_path: Path) -> None:
    (tmp_path / "chain_handlers.py").write_text(HANDLERS, encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        env = {"PRISMQ_QUEUE_MAX_WORKERS": "3", "PRISMQ_QUEUE_DB_PATH": "postgresql://db.example/q"}
        settings = resolve_settings(None, {"registry": "chain_handlers", "concurrency": None}, env)
        assert settings.processes == 3
        assert settings.database == "postgresql://db.example/q"
        assert settings.concurrency == WorkerSettings.concurrency
        config = tmp_path / "worker.toml"
        config.write_text('[worker]\nprocesses = 2\ndatabase = "here.db"\n', encoding="utf-8")
        settings = resolve_settings(config, {"registry": "chain_handlers"}, env)
        assert settings.processes == 2
        assert settings.database == str((tmp_path / "here.db").resolve())
        settings = resolve_settings(config, {"registry": "chain_handlers", "processes": 1}, env)
        assert settings.processes == 1
        # No database anywhere: QueueConfig's default path.
        settings = resolve_settings(None, {"registry": "chain_handlers"}, {"HOME": str(tmp_path)})
        assert settings.database == QueueConfig.from_env({"HOME": str(tmp_path)}).db_path
    finally:
        sys.path.remove(str(tmp_path))


def test_a_malformed_layer_is_named() -> None:
    with pytest.raises(ConfigError, match="PRISMQ_QUEUE_MAX_WORKERS='many' is not a whole number"):
        resolve_settings(None, {"registry": "x:y"}, {"PRISMQ_QUEUE_MAX_WORKERS": "many"})
    with pytest.raises(ConfigError, match="unknown worker setting"):
        resolve_settings(None, {"colour": "blue"}, {})
    assert settings_from_env({}) == {}
    assert settings_from_env({"PRISMQ_QUEUE_LEASE_DURATION": "7.5"}) == {"lease_duration": 7.5}
