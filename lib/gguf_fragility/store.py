"""Atomic writes, provenance, stale-state reports and run locks: a result file is either
complete or absent, and is reused only when it is readable and was made the same way.

Every writer goes to ``<name>.tmp`` in the same folder, flushes it to disk and renames
it over the target (``os.replace`` is atomic on POSIX), so a run killed at any moment
never leaves a half-written table that a rerun would mistake for finished work; a write
that fails (a full disk) removes its ``.tmp`` and leaves the target as it was. A stored
file that exists but cannot be reused (unreadable, made with other parameters, rows of
another cell) is named with the reason in one line by :func:`report_rebuild` before it is
rebuilt. :func:`hold_lock` keeps two processes from writing the same folder at once.

Every stored result carries ``content_sha256``, the digest of its decoded contents
(:func:`content_digest`), inside the same file, so it is written by the same atomic rename:
Parquet tables in their key-value metadata (:func:`write_table_atomic`), JSON results as a
key (:func:`write_result_json`), the reference store as an ``.npz`` member. Readers recompute
it (:func:`read_table_checked`, :func:`read_result_json`, :func:`check_digest`): a value
edited by hand or a bit flipped in a file that still parses is named and rebuilt, like a
file of another origin; a file with no digest (written before they were kept) is rebuilt too.
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
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gguf_fragility import events, paths
from gguf_fragility.layout import Table


@contextlib.contextmanager
def removed_on_error(tmp: Path) -> Iterator[Path]:
    """Delete the half-written file ``tmp`` when the block raises (a full disk), then re-raise."""
    try:
        yield tmp
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield ``<path>.tmp`` to write; on leaving, flush it to disk and rename it over ``path``.
    A write that fails (a full disk) removes the temporary file and leaves ``path`` as it was."""
    with removed_on_error(path.with_name(path.name + ".tmp")) as tmp:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


def write_json_atomic(path: Path, obj: object) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _replacing(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def write_table_atomic(df: pd.DataFrame, path: Path, record: dict | None = None) -> None:
    """Write a DataFrame as CSV or Parquet (by suffix), atomically.

    A Parquet file also stores, in its key-value metadata, ``record`` (how the table was
    made, JSON-able) and the ``content_sha256`` of its values (:func:`table_digest`), which
    :func:`read_table_checked` verifies.
    """
    path = Path(path)
    if len(df.columns) == 0:
        raise ValueError(f"refusing to write {path.name}: the table has no columns, so it could "
                         "not be read back; give the empty table its columns")
    if path.suffix not in (".parquet", ".csv") or (path.suffix == ".csv" and record is not None):
        raise ValueError(f"unsupported table format {path.suffix!r} for {path}; use .csv or "
                         ".parquet (a record is kept in .parquet only)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _replacing(path) as tmp:
        if path.suffix == ".parquet":
            table = pa.Table.from_pandas(df, preserve_index=False)
            meta = {**(record or {}), "content_sha256": table_digest(table)}
            pq.write_table(table.replace_schema_metadata(
                {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta, default=str)}), tmp)
        else:
            df.to_csv(tmp, index=False)


def write_tables(tables: tuple, out_dir: Path) -> list[Path]:
    """Write each field of a NamedTuple of DataFrames to ``out_dir`` atomically, as the
    file of the :class:`~gguf_fragility.layout.Table` the field is named after (ValueError
    for a field that names no table)."""
    written = []
    for name, df in tables._asdict().items():
        path = Path(out_dir) / Table.of(name).file_name
        write_table_atomic(df, path)
        written.append(path)
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


_META_KEY = b"gguf_fragility"  # Parquet key-value metadata: the table's record and digest


class StaleContent(ValueError):
    """A stored result's contents do not match the digest stored with them, or it has none."""


def content_digest(parts: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 of named byte strings, each framed by its name and length (so no two
    different sequences of parts hash alike)."""
    h = hashlib.sha256(b"gguf-fragility content v1\n")
    for name, data in parts:
        h.update(f"{name}:{len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()


def table_digest(table: pa.Table) -> str:
    """:func:`content_digest` of a table's column names and values (not of the file's bytes:
    the same values hash alike whatever the compression or the writer's version)."""
    return content_digest(
        (name, json.dumps(col.to_pylist(), default=str).encode())
        for name, col in zip(table.column_names, table.columns, strict=True))


def check_digest(stored: str | None, actual: str) -> None:
    """Raise :class:`StaleContent` unless ``stored`` (the digest kept with a result) is ``actual``.

    Raises
    ------
    StaleContent
        Naming both digests, or saying that the result has none.
    """
    if not stored:
        raise StaleContent("no content digest (stored before digests were kept)")
    if stored != actual:
        raise StaleContent(f"its contents hash to {actual[:12]}…, not the {stored[:12]}… stored "
                           "with them (edited or corrupted since it was written)")


class StoredTable(NamedTuple):
    """Result of :func:`read_table_checked`."""

    frame: pd.DataFrame
    record: dict  # what the writer recorded with it (less the digest)


def read_table_checked(path: Path, expect: dict | None = None) -> StoredTable | None:
    """A stored Parquet table whose values still hash as written and whose record matches
    ``expect``; None when absent or not reusable (the reason reported in one line).

    The whole file is read (a torn page fails here, not when a later stage reads it).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
        check_digest(meta.pop("content_sha256", None), table_digest(table))
    except StaleContent as exc:
        report_rebuild(path, str(exc))
        return None
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError or ValueError subclasses
        report_rebuild(path, f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        return None
    differ = {k: meta.get(k) for k, v in (expect or {}).items() if meta.get(k) != v}
    if differ:
        report_rebuild(path, f"made with other inputs ({', '.join(f'{k} {v}' for k, v in differ.items())})")
        return None
    return StoredTable(table.to_pandas(), meta)


def _json_digest(obj: dict) -> str:
    return content_digest([("json", json.dumps(obj, sort_keys=True, default=str).encode())])


def write_result_json(path: Path, obj: dict) -> None:
    """:func:`write_json_atomic` of a result with its ``content_sha256`` (:func:`read_result_json`)."""
    obj = json.loads(json.dumps(obj, default=str))  # as it will read back
    write_json_atomic(path, {**obj, "content_sha256": _json_digest(obj)})


def read_result_json(path: Path) -> dict | None:
    """A result of :func:`write_result_json` (less its digest) when it reads and still hashes
    as written; None when absent or not (the reason reported in one line)."""
    obj = read_json_or_none(path)
    if obj is None:
        return None
    try:
        check_digest(obj.pop("content_sha256", None), _json_digest(obj))
    except StaleContent as exc:
        report_rebuild(path, str(exc))
        return None
    return obj


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
    """Say in one line, on stderr and in the run's events log (:func:`events.emit`), that the
    stored file ``path`` is not reused and why."""
    events.emit(f"gguf-fragility: rebuilding {path}: {why}")


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
            events.emit(f"gguf-fragility: taking over the lock of {what} from {_holder(left)}, "
                        "which ended without releasing it (killed?); its partial files are "
                        "checked on reuse")
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
