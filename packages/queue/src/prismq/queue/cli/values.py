"""Command-line values shared by the CLI's modules: the usage error, durations and JSON."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

__all__ = ["UsageError", "parse_duration", "parse_json"]


class UsageError(Exception):
    """The command line is wrong; printed as one line, exit code 2."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhdw]?)\s*$")
_UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90``, ``250ms``, ``90s``, ``30m``, ``12h``, ``7d`` or ``2w`` to seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use e.g. 90s, 30m, 12h, 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_json(text: str) -> Any:
    """A JSON document; NaN and Infinity are refused."""

    def reject(constant: str) -> None:
        raise ValueError(f"{constant} is not valid JSON")

    try:
        return json.loads(text, parse_constant=reject)
    except ValueError as exc:
        raise UsageError(f"payload is not valid JSON: {exc}") from None
