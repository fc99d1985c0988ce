"""The checkout's fixed folders and the model cache (CCDS ``config.py``).

``data/`` is read-only and committed; ``.cache/`` holds big downloads and model files
(never committed). Set ``GGUF_FRAGILITY_CACHE`` to keep model files elsewhere (e.g. a
bigger disk). A run's own files are named by :class:`gguf_fragility.layout.RunLayout`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
PARAMS = REPO / "params"
NOTEBOOKS = REPO / "notebooks"
REGISTRY = PARAMS / "models.yaml"  # the default registry; see registry()
PROBES = DATA / "probes"


def cache_root() -> Path:
    """Big downloads (``downloads/``) and model files (``models/``); read from the environment now."""
    return Path(os.environ.get("GGUF_FRAGILITY_CACHE", REPO / ".cache"))


def model_cache() -> Path:
    """Folder of every model's files."""
    return cache_root() / "models"


def model_dir(model: str) -> Path:
    """Folder holding a model's source, reference and rung GGUFs."""
    return model_cache() / model


def profiles_dir() -> Path:
    """Where profiles are looked up by name; tests point ``GGUF_FRAGILITY_PROFILES`` elsewhere."""
    return Path(os.environ.get("GGUF_FRAGILITY_PROFILES", PARAMS))


def registry() -> Path:
    """The model registry in use: ``$GGUF_FRAGILITY_REGISTRY`` if set (tests), else ``params/models.yaml``."""
    return Path(os.environ.get("GGUF_FRAGILITY_REGISTRY", REGISTRY))
