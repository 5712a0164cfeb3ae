"""Worker settings files: the shipped examples load; mistakes fail at load, naming file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prismq.queue.errors import ConfigError
from prismq.queue.runtime.settings import WorkerSettings, load_settings, settings_from_mapping
from prismq.queue.strategies import WeightedRandomStrategy

EXAMPLES = Path(__file__).resolve().parents[2] / "_meta" / "docs" / "queue" / "examples" / "config"


def test_fifo_toml_example_loads() -> None:
    path = EXAMPLES / "worker_fifo.toml"
    settings = load_settings(path)
    assert settings.strategy == "fifo"
    assert settings.concurrency == 4
    assert settings.processes == 2
    assert settings.lease_duration == 60
    assert settings.task_timeout == 300
    assert settings.database == str((EXAMPLES / "queue.db").resolve())
    registry = settings.build_registry()
    assert registry.task_types == ("demo.resize_image", "demo.send_email", "demo.generate_report")
    assert registry.get("demo.send_email").is_async
    assert settings.build_strategy().name == "fifo"


def test_lifo_json_example_loads() -> None:
    settings = load_settings(EXAMPLES / "worker_lifo.json")
    assert settings.strategy == "lifo"
    assert settings.task_types == ("demo.send_email",)
    assert settings.burst is False
    assert settings.build_registry().task_types == ("demo.send_email",)
    assert settings.build_strategy().name == "lifo"


def test_weighted_random_yaml_example_loads() -> None:
    settings = load_settings(EXAMPLES / "worker_weighted_random.yaml")
    strategy = settings.build_strategy()
    assert isinstance(strategy, WeightedRandomStrategy)
    assert strategy.weight_of("demo.resize_image") == 3
    assert strategy.weight_of("demo.send_email") == 1.5
    assert strategy.weight_of("anything.else") == 1
    assert len(settings.build_registry()) == 3


def test_overrides_win_over_the_file_and_none_is_ignored(tmp_path: Path) -> None:
    settings = load_settings(EXAMPLES / "worker_fifo.toml", concurrency=9, strategy=None, burst=True)
    assert settings.concurrency == 9
    assert settings.strategy == "fifo"
    assert settings.burst is True


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_HANDLERS = '[handlers]\nresize = "prismq.queue.cli.demo:resize_image"\n'


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "unknown_key.toml",
            "[worker]\nconcurency = 4\n" + GOOD_HANDLERS,  # codespell:ignore concurency
            "unknown key worker.concurency",  # a misspelt key on purpose  # codespell:ignore concurency
        ),
        (
            "wrong_type.toml",
            '[worker]\nconcurrency = "4"\n' + GOOD_HANDLERS,
            "worker.concurrency must be an integer",
        ),
        ("wrong_bool.json", json.dumps({"worker": {"burst": "yes"}}), "worker.burst must be true or false"),
        (
            "wrong_weight.yaml",
            "worker:\n  strategy: weighted_random\n  weights:\n    a: heavy\n",
            "worker.weights.a must be a number",
        ),
        (
            "unknown_section.toml",
            "[workers]\nconcurrency = 4\n" + GOOD_HANDLERS,
            "unknown section(s) ['workers']",
        ),
        ("bad_handler.toml", '[handlers]\nresize = "nope.mod:x"\n', "cannot import module 'nope.mod'"),
        (
            "bad_reference.json",
            json.dumps({"handlers": {"a": "not a ref"}}),
            "is not a 'package.module:name'",
        ),
        ("bad_reference_type.yaml", "handlers:\n  a: 3\n", "handlers.a must be a 'module:function' string"),
        ("settings.ini", "[worker]\nconcurrency = 4\n", "unknown config format '.ini'"),
        ("malformed.toml", "[worker\nconcurrency = 4\n", "is not valid TOML"),
        ("malformed.json", '{"worker": {', "is not valid JSON"),
        ("malformed.yaml", "worker: [unclosed\n", "is not valid YAML"),
        ("list.json", "[1, 2]", "the top level must be a table"),
        ("worker_list.yaml", "worker:\n  - a\n", "[worker] and [handlers] must be tables"),
        ("no_handlers.toml", "[worker]\nconcurrency = 2\n", "no handlers"),
        ("bad_strategy.toml", '[worker]\nstrategy = "random"\n' + GOOD_HANDLERS, "random"),
    ],
)
def test_config_mistakes_fail_at_load(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert expected in message
    assert message.startswith(str(path))  # the file is named first


def test_bad_handler_error_names_the_file_and_the_task_type(tmp_path: Path) -> None:
    path = _write(tmp_path, "h.toml", '[handlers]\nresize = "os:nope"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}: handler for 'resize': ")
    assert "has no attribute 'nope'" in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.toml")


def test_settings_from_mapping_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown worker setting"):
        settings_from_mapping({"concurrency": 2, "colour": "blue"})
    settings = settings_from_mapping({"concurrency": 2, "strategy": None})
    assert settings == WorkerSettings(concurrency=2)


def test_weights_with_another_strategy_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "w.toml", '[worker]\nstrategy = "fifo"\n[worker.weights]\na = 2\n' + GOOD_HANDLERS
    )
    with pytest.raises(ConfigError, match="weighted_random strategy only"):
        load_settings(path)


def test_group_commit_settings_come_from_the_file_and_reach_the_runner(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "worker.toml",
        "[worker]\nbatch_size = 250\nlinger = 0.02\nprefetch = 0\n" + GOOD_HANDLERS,
    )
    settings = load_settings(path, batch_size=300)
    options = settings.runner_options()
    assert (options["batch_size"], options["linger"], options["prefetch"]) == (300, 0.02, 0)
    defaults = WorkerSettings().runner_options()
    assert (defaults["batch_size"], defaults["linger"], defaults["prefetch"]) == (100, 0.005, 100)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("batch_size = 2.5", "worker.batch_size must be an integer"),
        ("linger = 'fast'", "worker.linger must be a number"),
        ("prefetch = true", "worker.prefetch must be an integer"),
    ],
)
def test_group_commit_settings_of_the_wrong_type_fail_at_load(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _write(tmp_path, "worker.toml", f"[worker]\n{text}\n" + GOOD_HANDLERS)
    with pytest.raises(ConfigError, match=expected):
        load_settings(path)
