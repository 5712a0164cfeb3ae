"""Helpers shared by the benchmark scenarios: settings, statistics, machine facts, memory.

Everything here uses the standard library only, so the suite runs wherever PrismQ Queue
runs (Linux, macOS, Windows).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prismq.queue.backends.sqlite import DEFAULT_PRAGMAS

PAYLOAD_TEMPLATE = {"kind": "noop", "user": "bench@example.com"}
"""Every benchmark task carries this payload plus its sequence number ``n``."""


def payload(n: int) -> dict[str, Any]:
    """The payload of the ``n``-th benchmark task (small, JSON-friendly)."""
    return {"n": n, **PAYLOAD_TEMPLATE}


@dataclass
class Settings:
    """Sizes and repetitions of one suite run (full by default, tiny with ``--smoke``).

    Attributes:
        smoke: Tiny sizes; only correctness (exactly-once) is asserted.
        repeat: Repetitions of every timed measurement (the median is reported).
        enqueue_tasks: Tasks per single-enqueue measurement, per side.
        enqueue_many_tasks: Tasks per ``enqueue_many`` measurement.
        enqueue_many_batch: Tasks per ``enqueue_many`` call.
        drain_tasks: Tasks drained per claim-and-complete measurement.
        drain_processes: Worker process counts for the one-at-a-time drain.
        batch_drain_tasks: Tasks drained per batched measurement.
        batch_size: Tasks claimed and completed per transaction in the batched drain.
        batch_processes: Worker process counts for the batched drain.
        backlog_sizes: Ready backlog sizes for the claim-cost measurement.
        backlog_samples: Timed claims per (strategy, backlog size).
        backlog_block: Claims timed per size before moving on to the next size.
        memory_tasks: Tasks the memory-measuring worker drains.
        e2e_tasks: Tasks per end-to-end run of a worker command.
        e2e_repeat: Runs of each worker command end to end (the median is reported).
        pragmas: The SQLite PRAGMAs both PrismQ and the raw baseline use.
    """

    smoke: bool = False
    repeat: int = 3
    enqueue_tasks: int = 5_000
    enqueue_many_tasks: int = 100_000
    enqueue_many_batch: int = 1_000
    drain_tasks: int = 20_000
    drain_processes: tuple[int, ...] = (1, 2, 4)
    batch_drain_tasks: int = 50_000
    batch_size: int = 100
    batch_processes: tuple[int, ...] = (1, 2)
    backlog_sizes: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    backlog_samples: int = 300
    backlog_block: int = 25
    memory_tasks: int = 20_000
    e2e_tasks: int = 20_000
    e2e_repeat: int = 3
    pragmas: dict[str, str | int] = field(default_factory=lambda: dict(DEFAULT_PRAGMAS))

    @classmethod
    def for_smoke(cls) -> Settings:
        """Sizes small enough for CI: the whole suite in a few seconds."""
        return cls(
            smoke=True,
            repeat=1,
            enqueue_tasks=300,
            enqueue_many_tasks=5_000,
            drain_tasks=600,
            drain_processes=(1, 2, 4),
            batch_drain_tasks=1_000,
            batch_processes=(2,),
            backlog_sizes=(200, 2_000),
            backlog_samples=20,
            backlog_block=10,
            memory_tasks=500,
        )

    def to_json(self) -> dict[str, Any]:
        """The settings as plain JSON values."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


def median(values: Sequence[float]) -> float:
    """The median (``nan`` for no values)."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by nearest rank (``nan`` for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or ``nan`` when the denominator is zero."""
    return numerator / denominator if denominator else float("nan")


def target_row(
    label: str,
    *,
    unit: str,
    prismq: float,
    baseline: float | None = None,
    baseline_name: str | None = None,
    value: float | None = None,
    target: str | None = None,
    met: bool | None = None,
    value_text: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One result row: what was measured, the numbers, and the target it is held to.

    Args:
        label: What the row measures.
        unit: Unit of ``prismq`` and ``baseline``.
        prismq: The PrismQ Queue number.
        baseline: The baseline's number measured in the same run, if any.
        baseline_name: What the baseline is.
        value: The number the target is checked against (a ratio, a rate).
        target: The target, in words (``None``: informational row).
        met: Whether the target was met (``None``: no target).
        value_text: How to show ``value`` in the report (default: from the target).
        **extra: More facts to keep in the JSON.
    """
    return {
        "label": label,
        "unit": unit,
        "prismq": prismq,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "value": value,
        "target": target,
        "met": met,
        "value_text": value_text,
        **extra,
    }


def exactly_once(expected: Iterable[int], completed: Iterable[int]) -> dict[str, Any]:
    """Compare the ids every worker reported completing against the ids enqueued.

    Returns:
        ``expected``, ``completed`` (reports), ``duplicates`` (reports beyond the first per
        id), ``lost`` (enqueued, never reported), ``unexpected`` (reported, never enqueued)
        and ``ok``.
    """
    wanted = set(expected)
    counts = Counter(completed)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    lost = len(wanted - counts.keys())
    unexpected = len(counts.keys() - wanted)
    return {
        "expected": len(wanted),
        "completed": sum(counts.values()),
        "duplicates": duplicates,
        "lost": lost,
        "unexpected": unexpected,
        "ok": duplicates == 0 and lost == 0 and unexpected == 0,
    }


@contextlib.contextmanager
def scratch_dir(prefix: str = "prismq-bench-") -> Iterator[Path]:
    """A temporary folder for benchmark databases, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def peak_rss_method() -> str:
    """How :func:`peak_rss_bytes` measures on this platform."""
    if Path("/proc/self/status").is_file():
        return "VmHWM"
    try:
        import resource  # noqa: F401
    except ImportError:  # Windows
        return "tracemalloc"
    return "ru_maxrss"


def peak_rss_bytes() -> int | None:
    """This process's resident-set high-water mark in bytes, where the OS reports it.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss``
    there also keeps the high-water mark of the process image replaced by ``exec``, so a
    child started by a large parent (``spawn`` forks, then executes Python) would report
    the parent's size. Elsewhere ``resource.getrusage`` is used; ``None`` where neither
    exists (Windows: use ``tracemalloc``).
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux and the BSDs report KiB, macOS reports bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _cpu_model() -> str:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            )
            if out.stdout.strip():
                return out.stdout.strip()
    return platform.processor() or platform.machine() or "unknown"


def _git_commit(root: Path) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, where the OS reports them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info(root: Path) -> dict[str, Any]:
    """Facts about this machine and software, recorded with every result."""
    from importlib import metadata

    try:
        version = metadata.version("prismq-queue")
    except metadata.PackageNotFoundError:
        from prismq.queue import __version__ as version
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "prismq_queue": version,
        "git_commit": _git_commit(root),
        "load_average_at_start": load_average(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
