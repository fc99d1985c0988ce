"""Death order: at which rung each capability family dies on each lens, and how fragile it is.

Reads the lens grid (:func:`gguf_fragility.stats.grid.lens_grid`) and the item rows. Usage::

    from gguf_fragility.stats.deathorder import death_order, first_death
    order = death_order(items, grid.comparisons, reference, seed=0)
    first = first_death(cmp[(cmp.model == m) & (cmp.lens == lens)], lens)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from gguf_fragility.profile import NOISE_FLOOR
from gguf_fragility.stats.grid import validate_items
from gguf_fragility.stats.lens.base import ABOVE
from gguf_fragility.stats.lens.registry import LENSES
from gguf_fragility.stats.lenses import expanded_level
from gguf_fragility.stats.ranking import first_to_die, rank_sets
from gguf_fragility.stats.relevance import BEYOND, NO_ROOM
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


class FirstDeath(NamedTuple):
    """Result of :func:`first_death`."""

    families: tuple[str, ...]  # named first (several = tied); () when no loss beyond the margin
    rung: str  # the highest-bpw rung with a loss beyond the margin; "" when none
    bpw: float  # its bits per weight; NaN when none
    tied: bool  # several families named
    possible: tuple[str, ...] = ()  # not shown beyond the margin there, yet not shown less fragile


def first_death(comparisons: pd.DataFrame, lens: str, alpha: float = 0.05) -> FirstDeath:
    """
    The families that die first on one model × lens, by effect, ties named.

    Parameters
    ----------
    comparisons : pandas.DataFrame
        That model's ``comparisons`` rows of ``lens`` (``family, rung, bpw, measurable,
        effect, ci_low, ci_high, decision``).
    lens : str
        A key of :data:`~gguf_fragility.stats.lens.registry.LENSES` (its loss side).
    alpha : float, default 0.05

    Returns
    -------
    FirstDeath
        The highest-bpw rung where a measurable family shows a loss beyond the margin and
        the families :func:`gguf_fragility.stats.ranking.first_to_die` names there: only
        families whose own cell there is :data:`~gguf_fragility.stats.relevance.BEYOND`,
        tied where their effects cannot be separated, never a tie broken by name or item
        count; ``possible`` the families there whose loss is not shown beyond the margin
        (too few items, say) but cannot be separated from the first's, a cell without room
        for a loss beyond the margin (:data:`~gguf_fragility.stats.relevance.NO_ROOM`) never
        among them. Empty (``()``, ``""``, NaN) when no cell shows a loss beyond the margin.
    """
    c = comparisons[comparisons["measurable"].astype(bool) & (comparisons["decision"] != NO_ROOM)
                    & comparisons["effect"].notna()]  # a cell without items cannot die
    if c.empty:
        return FirstDeath((), "", np.nan, False)
    rungs = c.drop_duplicates("rung").sort_values("bpw", ascending=False)["rung"].tolist()
    wide = c.pivot_table(index="family", columns="rung", aggfunc="first",
                         values=["effect", "ci_low", "ci_high"]).reindex(columns=rungs, level=1)
    bey = (c.assign(b=c["decision"] == BEYOND).pivot_table(index="family", columns="rung",
                                                           values="b", aggfunc="first")
           .reindex(index=wide.index, columns=rungs).fillna(False).to_numpy(bool))
    e, lo, hi = (wide[k].to_numpy(float) for k in ("effect", "ci_low", "ci_high"))
    if LENSES[lens].loss_side == ABOVE:  # a loss is a larger effect: rank its mirror
        e, lo, hi = -e, -hi, -lo
    f = first_to_die(e, lo, hi, bey, alpha)
    if f.rung < 0:
        return FirstDeath((), "", np.nan, False)
    rung = rungs[f.rung]
    return FirstDeath(tuple(wide.index[f.named]), rung,
                      float(c.loc[c["rung"] == rung, "bpw"].iloc[0]), f.tied,
                      tuple(wide.index[f.possible]))


def tie_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Rank range of each value along the last axis, 1 = largest: ``(low, high)``.

    A value tied with others holds every rank the tie spans: ``low = 1 + #(larger)``,
    ``high = #(larger or equal)``: the point ranks of the transfer table
    (:func:`gguf_fragility.stats.transfer.family_table`); the death order ranks by
    :func:`~gguf_fragility.stats.ranking.rank_sets` instead.
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
        ``fragility_ci_low``/``high``, ``rank_low``/``rank_high`` (the family's rank set,
        1 = most fragile) and ``tied_with`` (the families it cannot be separated from,
        comma-separated), sorted by rank set, then by fragility.

    Notes
    -----
    **Fragility index**: the accuracy loss (reference minus rung, pp, all items) averaged
    over the rungs with **equal weights**, so a loss counts the same at every rung: one
    death at Q8_0 no longer outweighs a large loss at Q2_K as the old bpw-area did. It is
    the mean of per-item scores ``100 (x_ref - mean_r x_r)``, so its interval is
    ``scipy.stats.bootstrap(method="BCa")`` on those scores at Hesterberg's expanded level
    (:func:`~gguf_fragility.stats.lenses.expanded_level`). **Ranks** are the simultaneous
    rank sets of those effects and intervals (:func:`gguf_fragility.stats.ranking.rank_sets`,
    the same ranking as "first to die"): ``rank_low = 1 +`` the families shown more
    fragile, ``rank_high = K -`` the families shown less fragile; families whose
    differences cannot be separated share ranks and are named in ``tied_with``, never
    ordered by item count or by name [1]_. A family without items has no rank.

    References
    ----------
    .. [1] Klein, M., Wright, T., Wieczorek, J. (2020). A joint confidence region for an
       overall ranking of populations. JRSS C 69(3), 589-606.
    """
    df = validate_items(items, reference)
    deaths = death_rungs(comparisons)
    keep = comparisons[comparisons["measurable"].astype(bool)][["model", "family"]]
    keep = keep.drop_duplicates()
    rows = []
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
            row = {"model": model, "family": family, "n": n, "fragility": point,
                   "fragility_ci_low": lo, "fragility_ci_high": hi}
            for lens in LENSES:
                d = deaths[(deaths["model"] == model) & (deaths["lens"] == lens)
                           & (deaths["family"] == family)]
                row[f"death_rung_{lens}"] = d["death_rung"].iloc[0] if len(d) else ""
                row[f"death_bpw_{lens}"] = d["death_bpw"].iloc[0] if len(d) else np.nan
            rows.append(row)
    cols = ["model", "family", "n", *[f"death_{k}_{lens}" for lens in LENSES
                                      for k in ("rung", "bpw")],
            "fragility", "fragility_ci_low", "fragility_ci_high", "rank_low", "rank_high",
            "tied_with"]
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=cols)
    out["tied_with"] = ""
    for _, g in out.groupby("model", sort=False):
        i = g.index.to_numpy()
        f = (g[k].to_numpy(float) for k in ("fragility", "fragility_ci_high", "fragility_ci_low"))
        r = rank_sets(*(-x for x in f), alpha)  # a loss is a positive fragility: rank its mirror
        out.loc[i, "rank_low"], out.loc[i, "rank_high"] = r.low, r.high
        apart = r.worse | r.worse.T | np.eye(len(i), dtype=bool)
        names = g["family"].to_numpy(object)
        out.loc[i, "tied_with"] = [", ".join(names[~a]) for a in apart]
    for c in ("rank_low", "rank_high"):
        out[c] = out[c].astype("Int64")
    out["_by"] = -out["fragility"]
    return (out.sort_values(["model", "rank_low", "rank_high", "_by"], ignore_index=True,
                            kind="stable")[cols])
