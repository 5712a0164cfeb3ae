"""The one thing every benchmark handler does: append its task id to a per-process file."""

from __future__ import annotations

import os

_files: dict[int, int] = {}


def record(library: str, task_id: object) -> None:
    """Append ``task_id`` to ``$PRISMQ_E2E_IDS/<library>-<pid>.ids`` (one write call)."""
    pid = os.getpid()
    fd = _files.get(pid)
    if fd is None:
        path = os.path.join(os.environ["PRISMQ_E2E_IDS"], f"{library}-{pid}.ids")
        fd = _files[pid] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{task_id}\n".encode())
