"""Atomic writes, provenance, stale-state reports and run locks: a result file is either
complete or absent, and is reused only when it is readable and was made the same way.

Every writer goes to ``<name>.tmp`` in the same folder, flushes it to disk and renames
it over the target (``os.replace`` is atomic on POSIX), so a run killed at any moment
never leaves a half-written table that a rerun would mistake for finished work. A stored
file that exists but cannot be reused (unreadable, made with other parameters, rows of
another cell) is named with the reason in one line by :func:`report_rebuild` before it is
rebuilt. :func:`hold_lock` keeps two processes from writing the same folder at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from gguf_fragility import paths


def _replace(tmp: Path, dst: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def write_json_atomic(path: Path, obj: object) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
    _replace(tmp, path)


def write_table_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame as CSV or Parquet (by suffix), atomically."""
    path = Path(path)
    if len(df.columns) == 0:
        raise ValueError(f"refusing to write {path.name}: the table has no columns, so it could "
                         "not be read back; give the empty table its columns")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    elif path.suffix == ".csv":
        df.to_csv(tmp, index=False)
    else:
        raise ValueError(f"unsupported table format {path.suffix!r} for {path}; use .csv or .parquet")
    _replace(tmp, path)


def write_tables(tables: tuple, out_dir: Path) -> list[Path]:
    """Write each field of a NamedTuple of DataFrames to ``out_dir/<field>.csv`` atomically."""
    out_dir = Path(out_dir)
    written = []
    for name, df in tables._asdict().items():
        write_table_atomic(df, out_dir / f"{name}.csv")
        written.append(out_dir / f"{name}.csv")
    return written


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def params_hash(obj: object) -> str:
    """Short stable hash of a JSON-able parameter set (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@cache
def code_version() -> str:
    """``git describe`` of the checkout (``-dirty`` when it has uncommitted changes)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                             cwd=paths.REPO, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report_rebuild(path: str | Path, why: str) -> None:
    """Say on stderr, in one line, that the stored file ``path`` is not reused and why."""
    # tqdm.write: on a line of its own even while a progress bar is drawn
    tqdm.write(f"gguf-fragility: rebuilding {path}: {why}", file=sys.stderr)


def sidecar(path: Path) -> Path:
    """The JSON record beside a built file: ``<file>.json``."""
    return path.with_name(path.name + ".json")


def stamp(path: Path) -> dict:
    """Size and modification time (ns) of a file: what make and DVC compare before hashing."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_sidecar(path: Path, record: dict) -> dict:
    """Record how ``path`` was made beside it, with its sha256 and :func:`stamp`; returns it."""
    record = {**record, "sha256": sha256_file(path), "stamp": stamp(path)}
    write_json_atomic(sidecar(path), record)
    return record


def fresh_record(path: Path, expect: dict) -> dict | None:
    """The sidecar of ``path`` if the file exists, hashes as recorded and matches ``expect``.

    A file that exists but fails (no or unreadable sidecar, made from another reference,
    bytes that no longer hash as recorded: truncated or modified) is reported in one line.
    The bytes are hashed only when the file's size or modification time differs from the
    stamp the sidecar recorded (as make and DVC decide staleness); a file that still hashes
    as recorded gets its new stamp.
    """
    side = sidecar(path)
    if not path.is_file():
        return None
    if not side.is_file():
        report_rebuild(path, f"no sidecar {side.name} records how it was made")
        return None
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        record = None
    if not (isinstance(record, dict) and isinstance(record.get("sha256"), str)):
        report_rebuild(path, f"its sidecar {side.name} is unreadable")
        return None
    differ = {k: record.get(k) for k, v in expect.items() if record.get(k) != v}
    if differ:
        report_rebuild(path, f"made with other inputs ({', '.join(f'{k} {v}' for k, v in differ.items())})")
        return None
    if record.get("stamp") == stamp(path):
        return record
    digest = sha256_file(path)
    if digest != record["sha256"]:
        report_rebuild(path, f"sha256 {digest[:12]}… of its {path.stat().st_size} bytes is not the "
                             f"{record['sha256'][:12]}… its sidecar recorded (truncated or modified)")
        return None
    record["stamp"] = stamp(path)
    write_json_atomic(side, record)
    return record


def read_json_or_none(path: Path) -> dict | None:
    """A stored JSON object, or None when absent or unreadable (the latter reported)."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        report_rebuild(path, f"unreadable ({type(exc).__name__}: {exc})")
        return None
    if not isinstance(obj, dict):
        report_rebuild(path, f"unreadable (a JSON {type(obj).__name__}, not an object)")
        return None
    return obj


class LockHeld(RuntimeError):
    """Another live process holds the lock (its PID and start time are in the message)."""


_HELD: dict[str, int] = {}  # lock file -> depth, for the locks this process holds


def _holder(text: str) -> str:
    """``PID n (started T on host H: command)`` from a lock file's contents."""
    try:
        h = json.loads(text)
        return f"PID {h['pid']} (started {h['started']} on {h['host']}: {h['command']})"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet written its PID (it is starting)"


@contextlib.contextmanager
def hold_lock(path: str | Path, what: str, *, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` for the ``with`` block (re-entrant per process).

    Parameters
    ----------
    path : path-like
        The lock file; created if absent and never deleted (deleting it would let a third
        process lock a new file while a second still waits on the old one).
    what : str
        What the lock protects, for the messages (``"outputs/smoke"``).
    wait : bool, default False
        Block until the holder ends instead of raising :class:`LockHeld`.

    Raises
    ------
    LockHeld
        When ``wait`` is False and a live process holds the lock; the message names its PID,
        start time, host and command line and the lock file.

    Notes
    -----
    The holder writes its PID, start time and command into the file and empties it on a
    clean exit, so a non-empty file found on acquiring means the last holder was killed:
    the kernel dropped its ``flock`` when it died, the lock is taken over and that is
    reported in one line. ``flock`` is per open file: a second ``open`` in the same process
    would block on itself, hence the re-entrancy count. On NFS, ``flock`` may only be
    local to one machine (Linux emulates it with POSIX locks since 2.6.12, which NFSv4
    honours; older servers may not).
    """
    path = Path(path)
    key = os.path.abspath(path)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield path
        finally:
            _HELD[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockHeld(f"{what} is in use by {_holder(path.read_text())}; lock file {path}. "
                           "Wait for that run to end, or stop it (kill PID) and start again"
                           ) from None
        left = os.pread(fd, 1 << 16, 0).decode(errors="replace")
        if left.strip():
            print(f"gguf-fragility: taking over the lock of {what} from {_holder(left)}, which "
                  "ended without releasing it (killed?); its partial files are checked on reuse",
                  file=sys.stderr, flush=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        _HELD[key] = 1
        try:
            yield path
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)  # empty = released cleanly
    finally:
        os.close(fd)  # closing drops the flock
