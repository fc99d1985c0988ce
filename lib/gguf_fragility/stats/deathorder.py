"""Death order: at which rung each capability family dies on each lens, and how fragile it is.

Reads the lens grid (:func:`gguf_fragility.stats.grid.lens_grid`) and the item rows. Usage::

    from gguf_fragility.stats.deathorder import death_order
    order = death_order(items, grid.comparisons, reference, seed=0)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats as sps

from gguf_fragility.profile import NOISE_FLOOR
from gguf_fragility.stats.grid import validate_items
from gguf_fragility.stats.lens.registry import LENSES
from gguf_fragility.stats.lenses import expanded_level
from gguf_fragility.stats.relevance import BEYOND
from gguf_fragility.stats.settings import cell_rng


def death_rungs(comparisons: pd.DataFrame) -> pd.DataFrame:
    """
    Each measurable family's death rung per lens, from the decisions of the grid.

    Returns
    -------
    pandas.DataFrame
        ``model, lens, family, death_rung, death_bpw, n_loss``: the death rung is the
        highest-bpw rung of the unbroken run of "loss shown" cells from the bottom of the
        ladder ("" and NaN when the lowest rung shows no loss); ``n_loss`` counts the
        family's "loss shown" cells. The graph rejects a rung only after every rung below
        it, so the run is the rejected set minus cells shown equivalent within the margin,
        and the death rung is monotone: every rung below it shows a loss.
    """
    c = comparisons[comparisons["measurable"].astype(bool)]
    rows = []
    for (model, lens, family), g in c.groupby(["model", "lens", "family"], sort=True):
        g = g.sort_values("bpw")  # lowest precision first
        loss = (g["decision"] == BEYOND).to_numpy()
        run = np.cumprod(loss).astype(bool)
        last = int(np.flatnonzero(run)[-1]) if run.any() else None
        rows.append({"model": model, "lens": lens, "family": family,
                     "death_rung": g["rung"].iloc[last] if last is not None else "",
                     "death_bpw": float(g["bpw"].iloc[last]) if last is not None else np.nan,
                     "n_loss": int(loss.sum())})
    return pd.DataFrame(rows, columns=["model", "lens", "family", "death_rung", "death_bpw",
                                       "n_loss"])


def tie_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Rank range of each value along the last axis, 1 = largest: ``(low, high)``.

    A value tied with others holds every rank the tie spans: ``low = 1 + #(larger)``,
    ``high = #(larger or equal)``. The one tie rule of the point ranks and the bootstrap.
    """
    x = np.asarray(x, float)
    greater = (x[..., None, :] > x[..., :, None]).sum(-1)  # for each i: #j with x_j > x_i
    geq = (x[..., None, :] >= x[..., :, None]).sum(-1)
    return 1 + greater, geq


def _scores(sub: pd.DataFrame, ref: str) -> pd.DataFrame:
    """Per item of one model × family: 100 (ref right - mean over rungs of rung right), pp."""
    wide = sub.pivot(index="item_id", columns="rung", values="correct")
    wide = wide.drop(columns=[c for c in wide.columns if c == NOISE_FLOOR]).dropna()
    rungs = [c for c in wide.columns if c != ref]
    x = wide.to_numpy(bool)
    j = list(wide.columns).index(ref)
    return pd.Series(100 * (x[:, j] - x[:, [wide.columns.get_loc(r) for r in rungs]].mean(1)),
                     index=wide.index)


def death_order(items: pd.DataFrame, comparisons: pd.DataFrame, reference: Mapping[str, str],
                *, seed: int, n_boot: int = 10_000, alpha: float = 0.05) -> pd.DataFrame:
    """
    Death rung per lens, fragility index and ranked death order per measurable family.

    Parameters
    ----------
    items : pandas.DataFrame
        The item rows (see :func:`gguf_fragility.stats.grid.validate_items`).
    comparisons : pandas.DataFrame
        ``Grid.comparisons``.
    reference : mapping of str to str
    seed, n_boot, alpha
        Bootstrap of the fragility interval and of the ranks; intervals are ``1 - alpha``.

    Returns
    -------
    pandas.DataFrame
        One row per model × measurable family: ``n`` (items seen at every rung),
        ``death_rung_<lens>, death_bpw_<lens>`` for each lens, ``fragility`` (pp) with
        ``fragility_ci_low``/``high``, ``rank_low``/``rank_high`` (the ranks the family
        holds, 1 = most fragile; a tie spans several) and ``rank_ci_low``/``high``.

    Notes
    -----
    **Fragility index**: the accuracy loss (reference minus rung, pp, all items) averaged
    over the rungs with **equal weights**, so a loss counts the same at every rung: one
    death at Q8_0 no longer outweighs a large loss at Q2_K as the old bpw-area did. It is
    the mean of per-item scores ``100 (x_ref - mean_r x_r)``, so its interval is
    ``scipy.stats.bootstrap(method="BCa")`` on those scores at Hesterberg's expanded level
    (:func:`~gguf_fragility.stats.lenses.expanded_level`). **Ranks** use one tie rule for
    the point and every resample (:func:`tie_ranks`): a tied family holds the whole range
    of ranks the tie spans. The rank interval runs from the ``alpha/2`` quantile of the
    resampled low ranks to the ``1 - alpha/2`` quantile of the resampled high ranks
    (items resampled within each family), so ties widen it instead of splitting it
    arbitrarily; bootstrap rank intervals remain approximate for near-ties [1]_.

    References
    ----------
    .. [1] Hall, P., Miller, H. (2009). Using the bootstrap to quantify the authority of
       an empirical ranking. Annals of Statistics 37(6B), 3929-3959.
    """
    df = validate_items(items, reference)
    deaths = death_rungs(comparisons)
    keep = comparisons[comparisons["measurable"].astype(bool)][["model", "family"]]
    keep = keep.drop_duplicates()
    rows, reps = [], []
    for model, fams in keep.groupby("model", sort=True):
        rng = cell_rng(seed, model, "death_order")
        sub = df[df["model"] == model]
        for family in sorted(fams["family"]):
            s = _scores(sub[sub["family"] == family], reference[model]).to_numpy(float)
            n = len(s)
            point = s.mean() if n else np.nan
            lo = hi = point
            if n >= 3 and np.ptp(s) > 0:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", sps.DegenerateDataWarning)
                    ci = sps.bootstrap((s,), np.mean, n_resamples=n_boot, method="BCa",
                                       confidence_level=expanded_level(n, alpha),
                                       rng=rng).confidence_interval
                lo, hi = ci.low, ci.high
            rep = (s[rng.integers(0, n, (n_boot, n))].mean(1) if n
                   else np.full(n_boot, np.nan))
            row = {"model": model, "family": family, "n": n, "fragility": point,
                   "fragility_ci_low": lo, "fragility_ci_high": hi}
            for lens in LENSES:
                d = deaths[(deaths["model"] == model) & (deaths["lens"] == lens)
                           & (deaths["family"] == family)]
                row[f"death_rung_{lens}"] = d["death_rung"].iloc[0] if len(d) else ""
                row[f"death_bpw_{lens}"] = d["death_bpw"].iloc[0] if len(d) else np.nan
            rows.append(row)
            reps.append(rep)
    cols = ["model", "family", "n", *[f"death_{k}_{lens}" for lens in LENSES
                                      for k in ("rung", "bpw")],
            "fragility", "fragility_ci_low", "fragility_ci_high", "rank_low", "rank_high",
            "rank_ci_low", "rank_ci_high"]
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=cols)
    reps = np.stack(reps, axis=1)  # (n_boot, n_rows)
    for _, g in out.groupby("model", sort=False):
        i = g.index.to_numpy()
        low, high = tie_ranks(g["fragility"].to_numpy(float))
        out.loc[i, "rank_low"], out.loc[i, "rank_high"] = low, high
        bl, bh = tie_ranks(reps[:, i])
        out.loc[i, "rank_ci_low"] = np.floor(np.percentile(bl, 100 * alpha / 2, axis=0))
        out.loc[i, "rank_ci_high"] = np.ceil(np.percentile(bh, 100 * (1 - alpha / 2), axis=0))
    for c in ("rank_low", "rank_high", "rank_ci_low", "rank_ci_high"):
        out[c] = out[c].astype(int)
    return out[cols].sort_values(["model", "rank_low", "family"], ignore_index=True)
