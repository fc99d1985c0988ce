"""Atomic writes and provenance: a result file is either complete or absent.

Every writer goes to ``<name>.tmp`` in the same folder, flushes it to disk and renames
it over the target (``os.replace`` is atomic on POSIX), so a run killed at any moment
never leaves a half-written table that a rerun would mistake for finished work.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from functools import cache
from pathlib import Path

import pandas as pd

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
