"""Death order: at which rung each capability family dies, and how fragile it is.

Reads the paired grid (:func:`gguf_fragility.stats.grid.paired_grid`) and the ladder's real
bits per weight. Usage::

    from gguf_fragility.stats.deathorder import death_order
    order = death_order(grid.comparisons, grid.boot, ladder)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def trapezoid_weights(x) -> np.ndarray:
    """Weights w with ``sum(w * y) == numpy.trapezoid(y, x)`` for increasing ``x``."""
    x = np.asarray(x, float)
    if x.size < 2:
        return np.zeros_like(x)
    dx = np.diff(x)
    if np.any(dx <= 0):
        raise ValueError(f"x must be strictly increasing; got {x.tolist()}")
    w = np.zeros_like(x)
    w[:-1] += dx / 2
    w[1:] += dx / 2
    return w


def _bpw(ladder: pd.DataFrame) -> pd.Series:
    """Real bits per weight indexed by (model, rung); errors on gaps and duplicates."""
    need = {"model", "rung", "bpw", "is_reference"}
    if not need <= set(ladder.columns):
        raise ValueError(f"ladder lacks columns {sorted(need - set(ladder.columns))}")
    if ladder.duplicated(["model", "rung"]).any():
        raise ValueError("ladder has duplicate (model, rung) rows")
    if ladder["bpw"].isna().any():
        raise ValueError("ladder has missing bpw; the death order needs real bits per weight")
    return ladder.set_index(["model", "rung"])["bpw"].astype(float)


def death_order(comparisons: pd.DataFrame, boot: np.ndarray, ladder: pd.DataFrame, *,
                alpha: float = 0.05) -> pd.DataFrame:
    """
    Death rung, death persistence, fragility index and ranked death order per family.

    Parameters
    ----------
    comparisons : pandas.DataFrame
        ``Grid.comparisons``, with its original RangeIndex: row ``i`` owns ``boot[:, i]``.
    boot : ndarray, shape (n_boot, len(comparisons))
        ``Grid.boot``, bootstrap replicates of each row's accuracy difference.
    ladder : pandas.DataFrame
        Columns ``model, rung, bpw, is_reference``.
    alpha : float, default 0.05
        1 - level of the bootstrap intervals.

    Returns
    -------
    pandas.DataFrame
        One row per model × subset × family: ``n`` (items), ``death_rung`` and
        ``death_bpw`` (highest-bpw rung whose loss is significant after correction,
        empty if none), ``persistent`` (every lower rung also significantly worse),
        ``recoveries`` (lower rungs that are not, ";"-joined), ``n_rungs_worse``,
        ``worst_rung``, ``worst_diff``, ``fragility`` (pp x bpw) with bootstrap
        ``fragility_ci_low``/``high``, ``fragility_mean_pp`` (fragility / bpw span),
        ``rank`` (1 = most fragile) with bootstrap ``rank_ci_low``/``high``.

    Notes
    -----
    **Fragility index.** The area between the reference's accuracy and the family's
    accuracy curve drawn against real bits per weight: the trapezoidal integral of the
    net-loss rate (percentage points; the reference contributes 0) from the lowest
    rung's bpw up to the reference's. It uses every rung rather than one thresholded
    event, so it does not depend on the item count the way a significance-based death
    rung does, it rewards dying *early* (loss at high bpw spans a wide stretch of the
    axis) as well as dying *hard*, it is signed (noise gains cancel noise losses), and
    it is a linear function of the per-rung differences, so the paired bootstrap carries
    straight through to it. Ranks are comparable within a model (same ladder); across
    models use ``fragility_mean_pp``. The rank interval re-ranks the families in every
    bootstrap replicate (items resampled within each family, all rungs together) and
    takes percentiles of the family's rank, as in [1]_.

    References
    ----------
    .. [1] Hall, P., Miller, H. (2009). Using the bootstrap to quantify the authority of
       an empirical ranking. Annals of Statistics 37(6B), 3929-3959.
    """
    if boot.shape[1] != len(comparisons) or not comparisons.index.equals(
            pd.RangeIndex(len(comparisons))):
        raise ValueError(f"boot has {boot.shape[1]} columns for {len(comparisons)} rows, or "
                         "comparisons was reordered; pass Grid.comparisons unchanged")
    bpw = _bpw(ladder)
    ref_bpw = ladder[ladder["is_reference"].astype(bool)].set_index("model")["bpw"]
    cmp = comparisons.assign(bpw=[bpw.get((m, r), np.nan)
                                  for m, r in zip(comparisons["model"], comparisons["rung"],
                                                  strict=True)])
    if cmp["bpw"].isna().any():
        gap = cmp.loc[cmp["bpw"].isna(), ["model", "rung"]].iloc[0].tolist()
        raise ValueError(f"ladder has no bpw for (model, rung) {gap}")
    rows, reps = [], []
    for (model, subset, family), g in cmp.groupby(["model", "subset", "family"], sort=True):
        g = g.sort_values("bpw", ascending=False)  # highest precision first
        worse = g["worse"].to_numpy(bool)
        rungs = g["rung"].tolist()
        first = int(np.argmax(worse)) if worse.any() else None
        x = np.r_[g["bpw"].to_numpy()[::-1], ref_bpw[model]]  # increasing bpw, ref last
        w = trapezoid_weights(x)[:-1][::-1]  # weight of each rung, in g's order
        loss = -100 * boot[:, g.index.to_numpy()]  # (n_boot, n_rungs) net-loss rate, pp
        rep = loss @ w  # (n_boot,)
        lo, hi = np.percentile(rep, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        point = float(-100 * g["diff"].to_numpy() @ w)
        worst = int(np.argmin(g["diff"].to_numpy()))
        rows.append({
            "model": model, "subset": subset, "family": family, "n": int(g["n"].iloc[0]),
            "death_rung": rungs[first] if first is not None else "",
            "death_bpw": g["bpw"].iloc[first] if first is not None else np.nan,
            "persistent": bool(worse[first:].all()) if first is not None else pd.NA,
            "recoveries": ";".join(r for r, w_ in zip(rungs[first:], worse[first:],
                                                      strict=True) if not w_)
            if first is not None else "",
            "n_rungs_worse": int(worse.sum()),
            "worst_rung": rungs[worst], "worst_diff": float(g["diff"].iloc[worst]),
            "fragility": point, "fragility_ci_low": lo, "fragility_ci_high": hi,
            "fragility_mean_pp": point / (x[-1] - x[0]) if x[-1] > x[0] else np.nan,
        })
        reps.append(rep)
    out = pd.DataFrame(rows)
    reps = np.stack(reps, axis=1)  # (n_boot, n_rows)
    out["rank"] = np.nan
    out["rank_ci_low"] = np.nan
    out["rank_ci_high"] = np.nan
    for _, g in out.groupby(["model", "subset"], sort=False):
        i = g.index.to_numpy()
        out.loc[i, "rank"] = rankdata(-g["fragility"].to_numpy(), method="min")
        r = rankdata(-reps[:, i], axis=1, method="average")  # (n_boot, n_families)
        out.loc[i, "rank_ci_low"] = np.percentile(r, 100 * alpha / 2, axis=0)
        out.loc[i, "rank_ci_high"] = np.percentile(r, 100 * (1 - alpha / 2), axis=0)
    out["rank"] = out["rank"].astype(int)
    return out.sort_values(["model", "subset", "rank", "family"], ignore_index=True)
