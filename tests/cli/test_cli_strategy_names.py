"""``worker --strategy`` takes every name and alias ``resolve_strategy`` takes."""

from __future__ import annotations

import pytest

from prismq.queue.cli.parsing import UsageError, build_parser
from prismq.queue.strategies import STRATEGY_ALIASES, resolve_strategy


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("fifo", "fifo"),
        ("LIFO", "lifo"),
        ("priority", "priority"),
        ("weighted_random", "weighted_random"),
        ("weighted-random", "weighted_random"),
        ("weighted", "weighted_random"),
        ("Weighted", "weighted_random"),
    ],
)
def test_cli_and_python_accept_the_same_names(given: str, expected: str) -> None:
    args = build_parser().parse_args(["worker", "--strategy", given])
    assert args.strategy == expected == resolve_strategy(given).name


def test_every_alias_is_accepted_by_the_cli() -> None:
    for alias, name in STRATEGY_ALIASES.items():
        assert build_parser().parse_args(["worker", "--strategy", alias]).strategy == name


def test_unknown_strategy_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown scheduling strategy 'random'"):
        build_parser().parse_args(["worker", "--strategy", "random"])
