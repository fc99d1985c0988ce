"""The statistics settings every lens and table reads, and the seeded generator of a cell.

Usage::

    from gguf_fragility.stats.settings import DEFAULT_SETTINGS, Settings, cell_rng
    s = Settings(alpha=0.05, n_boot=2_000)
    rng = cell_rng(s.seed, "smollm2-135m", "arc_easy", "Q4_K_M")
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np

MDE_POWER = 0.8  # power of the planned minimum detectable effect


class Settings(NamedTuple):
    """The profile settings the statistics read (see :class:`gguf_fragility.profile.Profile`)."""

    alpha: float = 0.05
    mcnemar: str = "exact"
    equivalence_margin: float = 0.05  # correctness and fidelity, fraction of items
    margin_equivalence_nats: float = 0.1  # margin lens, nats
    design_discordance: float = 0.2
    n_boot: int = 10_000
    seed: int = 0


DEFAULT_SETTINGS = Settings()


def cell_rng(seed: int, *key: str) -> np.random.Generator:
    """Generator seeded by (seed, key), so a cell's bootstrap ignores the rest of the grid."""
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(key).encode())])
