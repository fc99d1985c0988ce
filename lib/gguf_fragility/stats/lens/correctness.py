"""Correctness lens: paired accuracy, rung minus reference, on every item both answered.

Deaths (reference right, rung wrong) and resurrections (the reverse) give Tango's score
interval of the accuracy change and exact McNemar's test
(:mod:`gguf_fragility.stats.lenses`); the planned MDE is exact at the profile's design
discordance (:mod:`gguf_fragility.stats.multiplicity`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gguf_fragility.stats import lenses, multiplicity, relevance
from gguf_fragility.stats.lens.base import ACCURACY, Lens
from gguf_fragility.stats.settings import MDE_POWER, Settings


def correctness_p(b, c, mcnemar: str = "exact") -> tuple[np.ndarray, np.ndarray]:
    """McNemar p (two-sided) and the loss-side p the sequence uses (1 where ``b <= c``)."""
    p = lenses.mcnemar_test(b, c, method=mcnemar).pvalue
    return p, np.where(np.asarray(b) > np.asarray(c), p, 1.0)


def paired_binary_mde(n: np.ndarray, level: float, s: Settings) -> tuple[np.ndarray, np.ndarray]:
    """
    Planned MDE of an exact paired test of binary outcomes (fraction of items) and its basis.

    At the profile's design discordance (:func:`~gguf_fragility.stats.multiplicity.planned_mde`);
    where that cannot reach the power, one-way (every discordant item a loss).
    """
    mde = multiplicity.planned_mde(n, alpha=level, power=MDE_POWER,
                                   discordance=s.design_discordance)
    one_way = np.isnan(mde)
    mde[one_way] = multiplicity.planned_mde_one_way(n[one_way], alpha=level, power=MDE_POWER)
    basis = np.where(one_way, "exact, one-way (every discordant item a loss)",
                     f"exact, design discordance {s.design_discordance:g}")
    return mde, basis


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

    def mde(self, rows: pd.DataFrame, level: float, s: Settings) -> tuple[np.ndarray, np.ndarray]:
        """Exact planned MDE at the design discordance (:func:`paired_binary_mde`)."""
        return paired_binary_mde(rows["n"].to_numpy(np.int64), level, s)


LENS = Correctness()
