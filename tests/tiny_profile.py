"""A tiny SmolLM2 profile (F16 and Q2_K, a few items) for the sweep and cluster tests, and the
session's one calibrated tiny run and ladder that the real-llama.cpp tests copy instead of redoing."""

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

TINY_FAMILIES = ["arithmetic", "science_mc", "knowledge_mc", "factual_recall"]
TINY_ITEMS = 3


def tiny_profile_yaml(families: list[str], n_items: int, n_threads: int,
                      scheduler: str | None = None) -> str:
    """YAML of a profile that every family passes the gate of (``min_usable: 0``)."""
    sched = f'scheduler: "{scheduler}"\n' if scheduler else ""
    return f"""
models:
  smollm2-135m:
    rungs: [F16, Q2_K]
families: {families}
n_items: {n_items}
min_usable: 0
min_families: 1
shift_passages: 2
shift_tokens: 64
engine: {{n_ctx: 1024, n_threads: {n_threads}}}
{sched}"""


def copy_tiny_run(tiny_run: Path, outputs: Path, profile: str,
                  families: list[str] = TINY_FAMILIES) -> Path:
    """Copy the session's calibrated tiny run (the ``tiny_run`` fixture: its outputs root) to
    ``outputs/<profile>``, where a profile of that name writing under ``outputs`` finds it;
    returns ``outputs``. Only the cells of ``families`` are copied. They are reused by any
    profile with the same engine settings and items (a cell's hash holds no profile name)."""
    (src,) = [p for p in tiny_run.iterdir() if p.is_dir()]
    others = {f"{f}.parquet" for f in TINY_FAMILIES if f not in families}
    shutil.copytree(src, outputs / profile, ignore=lambda _, names: others & set(names))
    return outputs


def link_built(src: Path, dst: Path, names: Iterable[str]) -> Path:
    """Hard-link the built model files ``names`` of the model folder ``src`` (the session's
    ``smol_ladder``: ``source.gguf``, ``reference.gguf``, ``Q2_K.gguf`` ...) into the model
    folder ``dst`` and copy their sidecars (``<name>.json``), as a model whose source has the
    same bytes finds them there already built; returns ``dst``. The writers replace a file,
    never edit it in place, so the session's files stay intact (a test that edits one in
    place copies it instead); sidecars are copied because a moved stamp rewrites them."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.link(src / name, dst / name)
        if (src / f"{name}.json").is_file():
            shutil.copy(src / f"{name}.json", dst / f"{name}.json")
    return dst
