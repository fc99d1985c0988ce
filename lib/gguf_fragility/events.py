"""A run's event log: every "rebuilding …", lock takeover and skipped notebook, one line each.

:func:`emit` prints an event on stderr (on a line of its own, even under a progress bar)
and, while a run holds its outputs folder, appends it with its time to
``outputs/<profile>/events.log`` (:attr:`gguf_fragility.layout.RunLayout.events_log`).
The run names that file in ``GGUF_FRAGILITY_EVENTS`` (:func:`logging_to`), so the chapter
kernels it starts, and their workers, inherit it. A kernel's stderr never reaches the
terminal, so after each chapter the pipeline prints the events that chapter appended
(:func:`since`). Each line is one ``write`` to a file opened with ``O_APPEND``: lines of
concurrent processes never interleave.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

ENV = "GGUF_FRAGILITY_EVENTS"


def emit(message: str) -> None:
    """Say ``message`` on stderr and append it to the run's events log, if a run names one."""
    line = " ".join(message.split())  # one line, whatever the message holds
    tqdm.write(line, file=sys.stderr)
    log = os.environ.get(ENV)
    if log:
        append(Path(log), line)


def append(log: Path, line: str) -> None:
    """Append ``<time> <line>`` to ``log`` in one ``O_APPEND`` write."""
    log.parent.mkdir(parents=True, exist_ok=True)
    data = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {line}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def end(log: Path) -> int:
    """The log's size in bytes now (0 when it does not exist yet): a mark for :func:`since`."""
    return log.stat().st_size if log.is_file() else 0


def since(log: Path, mark: int) -> list[str]:
    """The events appended to ``log`` after byte ``mark``, without their times."""
    if not log.is_file():
        return []
    with open(log, "rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    return [ln.split(" ", 1)[-1] for ln in text.splitlines() if ln.strip()]


@contextlib.contextmanager
def logging_to(log: Path) -> Iterator[Path]:
    """Send this process's events, and those of processes it starts, to ``log`` in the block."""
    before = os.environ.get(ENV)
    os.environ[ENV] = str(log)
    try:
        yield log
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
