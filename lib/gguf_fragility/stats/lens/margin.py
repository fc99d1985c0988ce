"""Margin lens: how much less the rung believes the reference's answer, per item, in nats.

The per-item paired change (:func:`item_delta`) gets Wilcoxon's signed-rank test and the
expanded BCa interval of its mean (:func:`gguf_fragility.stats.lenses.margin_test`); the
planned MDE is the normal shift the test detects, in SDs of the change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from gguf_fragility.stats import lenses
from gguf_fragility.stats.lens.base import CHANGE, Lens
from gguf_fragility.stats.settings import MDE_POWER, Settings, cell_rng


def item_delta(wide: pd.DataFrame, a: str, b: str) -> np.ndarray:
    """
    Per-item paired change in nats, rung ``b`` minus rung ``a`` (NaN where unscorable).

    Log-likelihood items: change of ``margin`` (log p(gold) minus the best other choice)
    where finite at both, else of ``gold_logprob``; generative items: change of
    ``ref_answer_logprob``, the teacher-forced log-probability of the reference's greedy
    output. Negative = the rung believes the reference's answer less.
    """
    mode = wide["mode"][a].to_numpy(object)
    d_margin = wide["margin"][b].to_numpy(float) - wide["margin"][a].to_numpy(float)
    d_gold = wide["gold_logprob"][b].to_numpy(float) - wide["gold_logprob"][a].to_numpy(float)
    d_ref = (wide["ref_answer_logprob"][b].to_numpy(float)
             - wide["ref_answer_logprob"][a].to_numpy(float))
    ll = np.where(np.isfinite(d_margin), d_margin, d_gold)
    return np.where(mode == "generate", d_ref, ll)


def margin_p(delta) -> tuple[np.ndarray, np.ndarray]:
    """
    Wilcoxon p (two-sided) and the loss-side p of each row of ``delta`` (..., n_items).

    The loss side is a negative signed-rank sum (W+ < W-, zeros dropped as in
    ``zero_method="wilcox"``); rows with fewer than three items or no change give p = 1.
    """
    x = np.asarray(delta, float)
    if x.shape[-1] < 3:
        p = np.full(x.shape[:-1], np.nan)
        return p, np.ones(x.shape[:-1])
    p = lenses.margin_test(x, n_resamples=0).pvalue
    a = np.abs(x)
    r = sps.rankdata(np.where(a == 0, -1.0, a), axis=-1)  # zeros rank first
    r = r - (a == 0).sum(-1, keepdims=True)  # ranks among the nonzero changes
    w = (r * np.sign(x)).sum(-1)  # W+ minus W-
    return p, np.where((w < 0) & np.isfinite(p), p, 1.0)


def wilcoxon_mde(n: np.ndarray, level: float) -> np.ndarray:
    """
    Planned shift (in SDs of the per-item change) the two-sided Wilcoxon test detects.

    ``(z_{1 - level/2} + z_power) / sqrt(n 3/pi)``: the normal shift alternative with the
    signed-rank test's asymptotic relative efficiency 3/pi against the t-test
    (Lehmann 1975, Nonparametrics, ch. 4); NaN below 3 items.
    """
    z = sps.norm.isf(level / 2) + sps.norm.isf(1 - MDE_POWER)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n >= 3, z / np.sqrt(n * 3 / np.pi), np.nan)


class Margin(Lens):
    """Mean per-item change (nats), expanded BCa interval, Wilcoxon; loss = belief falls."""

    name = "margin"
    unit = "nats"
    mde_unit = "SD of the per-item change"
    columns = ("median",)
    display_scale, display_unit = 1.0, "SD"
    roles = frozenset({CHANGE})

    def margin(self, s: Settings) -> float:
        """The margin lens's own equivalence margin, in nats."""
        return s.margin_equivalence_nats

    def cell(self, wide: pd.DataFrame, ref: str, rung: str, floor: str | None) -> dict:
        """``n``, the finite per-item changes, and the floor's mean and SD of its own change."""
        d = item_delta(wide, ref, rung)
        ok = np.isfinite(d)
        floor_d = item_delta(wide, ref, floor) if floor is not None else np.full(len(d), np.nan)
        fok = ok & np.isfinite(floor_d)
        return {"n": int(ok.sum()), "_delta": d[ok],
                "floor_mean": floor_d[fok].mean() if fok.any() else np.nan,
                "floor_sd": floor_d[fok].std(ddof=1) if fok.sum() > 1 else np.nan,
                "floor": "measured" if floor is not None else "absent"}

    def statistics(self, rows: pd.DataFrame, s: Settings) -> pd.DataFrame:
        """Mean and median change, expanded BCa interval, Wilcoxon p (two-sided, loss side)."""
        out = []
        for (_, row), d in zip(rows.iterrows(), rows["_delta"], strict=True):
            res = {"p_method": "Wilcoxon signed-rank, two-sided; BCa interval of the mean"}
            if len(d) < 3:
                out.append({**res, "p_value": np.nan, "p_seq": 1.0, "min_p": 1.0,
                            "effect": d.mean() if len(d) else np.nan})
                continue
            m = lenses.margin_test(d, n_resamples=s.n_boot, alpha=s.alpha,
                                   rng=cell_rng(s.seed, row["model"], row["family"], row["rung"]))
            lo, hi = float(m.ci_low), float(m.ci_high)
            if np.ptp(d) == 0:  # every item moved by the same amount: every resample has that mean
                lo = hi = float(m.mean)
            out.append({**res, "effect": float(m.mean), "median": float(m.median), "ci_low": lo,
                        "ci_high": hi, "p_value": float(m.pvalue), "p_seq": float(margin_p(d)[1]),
                        "min_p": min(1.0, 2 * 0.5 ** len(d))})
        return pd.DataFrame(out, index=rows.index)

    def mde(self, n: np.ndarray, level: float, s: Settings) -> tuple[np.ndarray, str]:
        """Wilcoxon's planned normal shift (:func:`wilcoxon_mde`)."""
        return wilcoxon_mde(n, level), "Wilcoxon, normal shift (ARE 3/pi)"


LENS = Margin()
