"""Correctness lens: paired accuracy, rung minus reference, on every item both answered.

Deaths (reference right, rung wrong) and resurrections (the reverse) give Tango's score
interval of the accuracy change and exact McNemar's test
(:mod:`gguf_fragility.stats.lenses`); the planned MDE is the smallest loss the exact
beyond-the-margin test shows, at the profile's design discordance
(:func:`gguf_fragility.stats.relevance.beyond_mde`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gguf_fragility.stats import lenses, relevance
from gguf_fragility.stats.lens.base import ACCURACY, Lens, PlannedMde
from gguf_fragility.stats.settings import MDE_POWER, Settings


def correctness_p(b, c, mcnemar: str = "exact") -> tuple[np.ndarray, np.ndarray]:
    """McNemar p (two-sided) and the loss-side p the sequence uses (1 where ``b <= c``)."""
    p = lenses.mcnemar_test(b, c, method=mcnemar).pvalue
    return p, np.where(np.asarray(b) > np.asarray(c), p, 1.0)


def paired_binary_mde(n: np.ndarray, margin: float, level: float, s: Settings) -> PlannedMde:
    """
    Planned MDE of the beyond-the-margin Tango test of a paired binary outcome.

    The smallest loss (share of items) that :func:`~gguf_fragility.stats.relevance.
    tango_beyond_p` shows beyond ``margin`` at ``level`` with power
    :data:`~gguf_fragility.stats.settings.MDE_POWER`, exactly
    (:func:`~gguf_fragility.stats.relevance.beyond_mde`), at the profile's design
    discordance; where that cannot reach the power, one-way (every discordant item a
    loss, a lower bound on what the cell could detect). The basis states which.
    """
    out = np.full(n.shape, np.nan)
    basis = np.empty(n.shape, dtype=object)
    for k in np.unique(n):
        at = n == k
        m = relevance.beyond_mde(int(k), margin, alpha=level, power=MDE_POWER,
                                 discordance=s.design_discordance)
        if np.isnan(m.loss).all():
            m = relevance.beyond_mde(int(k), margin, alpha=level, power=MDE_POWER,
                                     discordance=None)
        out[at], basis[at] = float(m.loss), m.basis
    return PlannedMde(out, basis)


class Correctness(Lens):
    """Accuracy change (fraction), Tango interval, exact McNemar; loss = accuracy falls.

    Its relevance margin is the profile's ``equivalence_margin`` (default 3 accuracy
    points; :data:`gguf_fragility.stats.relevance.MARGINS` cites why)."""

    name = "correctness"
    unit = mde_unit = "accuracy (fraction)"
    roles = frozenset({ACCURACY})

    def cell(self, wide: pd.DataFrame, ref: str, rung: str, floor: str | None) -> dict:
        """``n``, ``deaths``, ``resurrections``, ``acc_ref`` and ``accuracy`` of the cell."""
        corr = wide["correct"]
        both = (corr[ref].notna() & corr[rung].notna()).to_numpy()
        x0 = corr[ref].to_numpy(object)[both].astype(bool)
        x1 = corr[rung].to_numpy(object)[both].astype(bool)
        return {"n": int(both.sum()), "deaths": int((x0 & ~x1).sum()),
                "resurrections": int((~x0 & x1).sum()),
                "acc_ref": x0.mean() if len(x0) else np.nan,
                "accuracy": x1.mean() if len(x1) else np.nan}

    def item_effects(self, wide: pd.DataFrame, ref: str, rung: str, floor: str | None) -> pd.Series:
        """Rung right minus reference right (-1, 0 or 1) on the items both answered."""
        corr = wide["correct"]
        both = corr[ref].notna() & corr[rung].notna()
        d = corr[rung][both].astype(float) - corr[ref][both].astype(float)
        return d.droplevel("family") if "family" in d.index.names else d

    def interval(self, rows: pd.DataFrame, alpha: float) -> lenses.PairedDiffCI:
        """Tango's interval of each row's accuracy change at level ``1 - alpha``."""
        b, r, n = (rows[k].to_numpy(np.int64) for k in ("deaths", "resurrections", "n"))
        return lenses.paired_diff_ci(b, r, n, alpha=alpha)

    def statistics(self, rows: pd.DataFrame, s: Settings) -> pd.DataFrame:
        """Tango interval, McNemar p (two-sided and loss side), its smallest reachable p, and
        Tango's p of "the accuracy loss is at most the margin"."""
        b, r, n = (rows[k].to_numpy(np.int64) for k in ("deaths", "resurrections", "n"))
        ci = self.interval(rows, s.alpha)
        p, p_seq = correctness_p(b, r, s.mcnemar)
        return pd.DataFrame({
            "effect": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "p_value": p,
            "p_seq": p_seq, "min_p": lenses.mcnemar_min_pvalue(n),
            "p_beyond": relevance.tango_beyond_p(b, r, n, self.margin(s)),
            "p_method": ("McNemar exact, two-sided" if s.mcnemar == "exact"
                         else "McNemar mid-p, two-sided (labelled option)")}, index=rows.index)

    def mde(self, rows: pd.DataFrame, level: float, s: Settings) -> PlannedMde:
        """Exact planned MDE beyond the margin at the design discordance (:func:`paired_binary_mde`)."""
        return paired_binary_mde(rows["n"].to_numpy(np.int64), self.margin(s), level, s)


LENS = Correctness()
