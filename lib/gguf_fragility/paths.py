"""Every path the project reads or writes, in one place (CCDS ``config.py``).

``data/`` is read-only and committed; ``outputs/`` is derived and deletable;
``.cache/`` holds big downloads and model files (never committed). Set
``GGUF_FRAGILITY_CACHE`` to keep model files elsewhere (e.g. a bigger disk).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
PARAMS = REPO / "params"
NOTEBOOKS = REPO / "notebooks"
OUTPUTS = Path(os.environ.get("GGUF_FRAGILITY_OUTPUTS", REPO / "outputs"))
CACHE = Path(os.environ.get("GGUF_FRAGILITY_CACHE", REPO / ".cache"))
MODEL_CACHE = CACHE / "models"
REGISTRY = PARAMS / "models.yaml"
# where profiles are looked up by name; tests point it at a folder of tiny profiles
PROFILES = Path(os.environ.get("GGUF_FRAGILITY_PROFILES", PARAMS))
PROBES = DATA / "probes"


def model_dir(model: str) -> Path:
    """Folder holding a model's source, reference and rung GGUFs."""
    return MODEL_CACHE / model


def run_dir(profile: str) -> Path:
    """Root of everything one params profile produces."""
    return OUTPUTS / profile


def ladder_dir(profile: str, model: str) -> Path:
    """Ladder manifest (CSV + JSON) of one model."""
    return run_dir(profile) / "ladder" / model


def calibration_dir(profile: str) -> Path:
    """Calibration tables and usable-item sets, one file per model."""
    return run_dir(profile) / "calibration"


def sweep_dir(profile: str) -> Path:
    """Item-level sweep cells: ``<model>/<rung>/<family>.parquet``."""
    return run_dir(profile) / "sweep"


def tables_dir(profile: str) -> Path:
    """CSV tables: the single source of every number in the report."""
    return run_dir(profile) / "tables"


def figures_dir(profile: str) -> Path:
    """Chart files (SVG/PNG)."""
    return run_dir(profile) / "figures"


def executed_dir(profile: str) -> Path:
    """Executed notebooks written by papermill."""
    return run_dir(profile) / "notebooks"
