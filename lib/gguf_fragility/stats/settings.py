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
    """
    The profile settings the statistics read (see :class:`gguf_fragility.profile.Profile`).

    The four relevance margins (what "matters to a user", issue 25) default to
    :data:`gguf_fragility.stats.relevance.MARGINS`, whose docstring gives the sources.
    """

    alpha: float = 0.05
    mcnemar: str = "exact"
    equivalence_margin: float = 0.03  # correctness: relevance margin, share of items (3 points)
    fidelity_margin: float = 0.03  # fidelity: excess flips over the floor, share of items
    gold_prob_margin_pp: float = 3.0  # margin lens, log-likelihood families: gold probability, pp
    reply_prob_margin_pp: float = 3.0  # margin lens, generative: reply per-token probability, pp
    margin_equivalence_nats: float = 0.1  # recipes: a lesion's material change, nats
    design_discordance: float = 0.2
    n_boot: int = 10_000
    seed: int = 0


DEFAULT_SETTINGS = Settings()


def cell_rng(seed: int, *key: str) -> np.random.Generator:
    """Generator seeded by (seed, key), so a cell's bootstrap ignores the rest of the grid."""
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(key).encode())])
