"""The statistics settings every lens and table reads, and the seeded generator of a cell.

:class:`Settings` is built once from the profile (:meth:`Settings.of`), whose fields
(:class:`gguf_fragility.profile.Profile`) are the only place a setting's default is spelled.
Usage::

    from gguf_fragility.stats.settings import DEFAULT_SETTINGS, Settings, cell_rng
    s = Settings.of(profile)                      # or Settings(alpha=0.05, n_boot=2_000)
    rng = cell_rng(s.seed, "smollm2-135m", "arc_easy", "Q4_K_M")
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field

import numpy as np

from gguf_fragility.profile import Profile

MDE_POWER = 0.8  # power of the planned minimum detectable effect
# The multiplicity procedure is the lens design's, not a setting: a fixed sequence down each
# family (highest bpw first), Holm across families (a graphical procedure; Methods).
CORRECTION = "holm"
_PROFILE = {f.name: f.default for f in dataclasses.fields(Profile)}  # the defaults, spelled once


@dataclass(frozen=True)
class Settings:
    """
    The profile settings the statistics read, frozen (see :class:`gguf_fragility.profile.Profile`
    for each one's meaning and unit).

    The four relevance margins (what "matters to a user", issue 25) default to
    :data:`gguf_fragility.stats.relevance.MARGINS`, whose docstring gives the sources.
    ``correction`` and ``mde_power`` are fixed by the design, recorded with the rest
    (``stats_config.json``).
    """

    n_boot: int = _PROFILE["n_boot"]
    seed: int = _PROFILE["seed"]
    correction: str = field(default=CORRECTION, init=False)
    mcnemar: str = _PROFILE["mcnemar"]
    alpha: float = _PROFILE["alpha"]
    equivalence_margin: float = _PROFILE["equivalence_margin"]
    fidelity_margin: float = _PROFILE["fidelity_margin"]
    gold_prob_margin_pp: float = _PROFILE["gold_prob_margin_pp"]
    reply_prob_margin_pp: float = _PROFILE["reply_prob_margin_pp"]
    design_discordance: float = _PROFILE["design_discordance"]
    mde_power: float = field(default=MDE_POWER, init=False)
    target_mde: float | None = _PROFILE["target_mde"]
    noise_floor: bool = _PROFILE["noise_floor"]
    budgets_gib: tuple[float, ...] = _PROFILE["budgets_gib"]

    @classmethod
    def of(cls, profile: Profile) -> Settings:
        """The settings of ``profile``: each field read from the profile's field of that name."""
        return cls(**{f.name: getattr(profile, f.name) for f in dataclasses.fields(cls) if f.init})

    def replace(self, **changes) -> Settings:
        """A copy with ``changes`` (e.g. a Bonferroni-split ``alpha``)."""
        return dataclasses.replace(self, **changes)


DEFAULT_SETTINGS = Settings()


def cell_rng(seed: int, *key: str) -> np.random.Generator:
    """Generator seeded by (seed, key), so a cell's bootstrap ignores the rest of the grid."""
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(key).encode())])
