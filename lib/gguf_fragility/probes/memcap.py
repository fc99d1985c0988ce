"""One memory cap for everything a sandboxed program starts (:mod:`.codeexec`'s total cap).

A per-process address-space limit does not bound a program that forks: six children of
2 GiB each were seen holding 11.4 GB at once. Where this machine lets us, each program
therefore runs in its own **memory cgroup** whose limit, :data:`TOTAL_MEMORY_BYTES`, is
shared by all its processes: past it the kernel kills one of them, and the run reports it.
The cgroup is made at the root of the memory hierarchy, under ``gguf-fragility/``
(cgroup v1's ``memory`` controller, or cgroup v2 where ``memory`` can be enabled there), is
entered by the launcher before the sandbox starts (so nothing inside can leave it) and is
removed when the program has ended.

Where no cgroup is writable (no root, a read-only ``/sys/fs/cgroup``, v2 without
delegation), the fallback bounds the product instead: the per-process address-space limit
drops to :func:`process_memory_bytes`, so :data:`~.codeexec.MAX_PROCS` processes together
stay within a quarter of the RAM. ``systemd-run --scope -p MemoryMax=`` is not used: it
needs systemd as PID 1 (or a user manager), which containers seldom have, and where it
works as root the direct cgroup works too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

TOTAL_MEMORY_BYTES = 2 << 30  # all of one program's processes together (with a cgroup)
GROUP = "gguf-fragility"  # our folder at the root of the memory hierarchy

# cgroup v1 / v2 file names: limit, peak usage, the file whose "oom_kill N" line counts kills
_FILES = {"v1": ("memory.limit_in_bytes", "memory.max_usage_in_bytes", "memory.oom_control"),
          "v2": ("memory.max", "memory.peak", "memory.events")}


class MemoryCap(NamedTuple):
    """How the total memory of a sandboxed program is capped here (:func:`find_memory_cap`)."""

    kind: str  # "cgroup-v1", "cgroup-v2" or "rlimit"
    parent: str  # folder the per-run cgroups are made in ("" for rlimit)
    reason: str  # why no cgroup is used ("" when one is)


class Usage(NamedTuple):
    """What one program's cgroup saw (:func:`usage`)."""

    peak_bytes: int | None  # the most its processes held at once (None without a cgroup)
    oom_kills: int  # processes the kernel killed at the cap


def _hierarchies() -> list[tuple[str, str]]:
    """(version, mount point) of every memory cgroup hierarchy mounted here."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            _, mnt, fstype, opts, *_ = line.split()
            if fstype == "cgroup" and "memory" in opts.split(","):
                found.append(("v1", mnt))
            elif fstype == "cgroup2":
                found.append(("v2", mnt))
    return found


def _prepare(version: str, mnt: str) -> str:
    """Make our parent folder in ``mnt`` and return it; OSError when not possible."""
    parent = Path(mnt, GROUP)
    if version == "v2":
        if "memory" not in Path(mnt, "cgroup.controllers").read_text().split():
            raise OSError(f"no memory controller in {mnt}")
        Path(mnt, "cgroup.subtree_control").write_text("+memory")
        parent.mkdir(exist_ok=True)
        Path(parent, "cgroup.subtree_control").write_text("+memory")
    else:
        parent.mkdir(exist_ok=True)
    for left in parent.glob("run-*"):  # cgroups of runs whose process was killed
        if not Path("/proc", left.name.split("-")[1]).exists():
            with contextlib.suppress(OSError):
                _remove(left)
    return str(parent)


@functools.lru_cache(maxsize=1)
def find_memory_cap() -> MemoryCap:
    """
    A writable memory cgroup hierarchy if there is one, else the per-process fallback.

    Returns
    -------
    MemoryCap
        Each hierarchy is tried by making, limiting and removing one cgroup (once per
        process); ``reason`` says why each failed when the answer is ``"rlimit"``.
    """
    reasons = []
    for version, mnt in _hierarchies():
        try:
            parent = _prepare(version, mnt)
            with run_cgroup(MemoryCap(f"cgroup-{version}", parent, "")) as cg:
                limit = int(Path(cg, _FILES[version][0]).read_text())
                entered = subprocess.run(launcher(cg, ["/bin/true"]), capture_output=True,
                                         text=True, timeout=20)
            if limit != TOTAL_MEMORY_BYTES:
                raise OSError(f"the limit reads back as {limit}")
            if entered.returncode:
                raise OSError(f"cannot enter it: {entered.stderr.strip()[-200:]}")
            return MemoryCap(f"cgroup-{version}", parent, "")
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            reasons.append(f"{mnt}: {exc}")
    return MemoryCap("rlimit", "", "; ".join(reasons) or "no memory cgroup hierarchy mounted")


def process_memory_bytes(cap: MemoryCap, per_process: int, max_procs: int) -> int:
    """Address-space limit per process: ``per_process`` under a cgroup, else a share of RAM.

    Without a cgroup, ``max_procs`` processes at this limit hold at most a quarter of the
    physical memory (and never more than ``per_process`` each).
    """
    if cap.kind != "rlimit":
        return per_process
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(per_process, ram // 4 // max_procs)


@contextlib.contextmanager
def run_cgroup(cap: MemoryCap) -> Iterator[str]:
    """A fresh cgroup limited to :data:`TOTAL_MEMORY_BYTES` for one program ("" for rlimit).

    On leaving, every process still in it is killed and the cgroup removed.
    """
    if cap.kind == "rlimit":
        yield ""
        return
    version = cap.kind.removeprefix("cgroup-")
    path = Path(cap.parent, f"run-{os.getpid()}-{secrets.token_hex(4)}")
    path.mkdir()
    try:
        Path(path, _FILES[version][0]).write_text(str(TOTAL_MEMORY_BYTES))
        yield str(path)
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    """Kill what is left in the cgroup ``path`` and remove it (retried while it drains)."""
    for _ in range(50):
        with contextlib.suppress(OSError):
            for pid in Path(path, "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY while killed processes are being reaped
            time.sleep(0.02)
    path.rmdir()  # still busy after a second: let the caller see why


def launcher(cgroup: str, argv: list[str]) -> list[str]:
    """``argv`` started inside ``cgroup``: a shell enters it, then execs ``argv`` (same pid)."""
    if not cgroup:
        return argv
    return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, *argv]


def usage(cgroup: str) -> Usage:
    """Peak memory and OOM kills of ``cgroup`` (read before it is removed)."""
    if not cgroup:
        return Usage(None, 0)
    version = "v2" if Path(cgroup, "memory.max").exists() else "v1"
    _, peak_file, events = _FILES[version]
    try:
        peak = int(Path(cgroup, peak_file).read_text())
    except (OSError, ValueError):  # memory.peak needs Linux 5.19
        peak = None
    kills = 0
    with contextlib.suppress(OSError):
        for line in Path(cgroup, events).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                kills = int(value)
    return Usage(peak, kills)


__all__ = ["GROUP", "TOTAL_MEMORY_BYTES", "MemoryCap", "Usage", "find_memory_cap",
           "launcher", "process_memory_bytes", "run_cgroup", "usage"]


if __name__ == "__main__":  # scripts/ensure_sandbox.sh: say which cap applies here
    found = find_memory_cap()
    if found.kind == "rlimit":
        quarter = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
        print(f"no writable memory cgroup ({found.reason}); per-process address-space "
              f"limits instead, at most {quarter >> 20} MiB for all processes together")
    else:
        print(f"{found.kind} under {found.parent}: {TOTAL_MEMORY_BYTES >> 20} MiB for all of "
              "a program's processes together")
