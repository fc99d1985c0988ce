"""Does a death order found on one model family transfer to another?

Notebook 06 calls this module on notebook 05's tables::

    from gguf_fragility import artifacts
    from gguf_fragility.stats import transfer
    t = transfer.analyse(profile, artifacts.load_results(profile.layout))  # writes tables/*.csv

Its sentences are :func:`gguf_fragility.report.findings.transfer_conclusions`.

Every table has ``model_a, model_b`` columns; each ordered pair of models gets its own
rows. Only families measurable on both models are compared. With fewer than
:data:`MIN_FAMILIES` of them no correlation is printed: transfer "cannot be shown" (even
perfect agreement of four families has an exact two-sided p of 1/12).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from gguf_fragility.artifacts import Results
from gguf_fragility.layout import Table
from gguf_fragility.profile import Profile
from gguf_fragility.stats import ranking
from gguf_fragility.stats.lens.registry import LENSES
from gguf_fragility.stats.relevance import BEYOND, EQUIVALENT, NO_ROOM, UNDECIDED
from gguf_fragility.stats.settings import Settings
from gguf_fragility.store import write_tables

MIN_FAMILIES = 5  # common measurable families needed before a rank correlation is shown
N_RESAMPLES = 9_999  # random pairings when all n! are too many (n > 8)
CANNOT = f"cannot be shown: fewer than {MIN_FAMILIES} common measurable families"


class TransferTables(NamedTuple):
    """Every table notebook 06 writes; field name = CSV name without the ``.csv``."""

    transfer_families: pd.DataFrame  # model pair × family: fragility, ranks, death rungs on each
    transfer_rank: pd.DataFrame  # model pair: exact permutation tau-b and Spearman, verdict
    transfer_decisions: pd.DataFrame  # model pair × lens × rung match: decisions on both


# --------------------------------------------------------------------------- rank agreement


class RankAgreement(NamedTuple):
    """Result of :func:`rank_agreement_exact`."""

    n: int
    tau_b: float
    tau_pvalue: float
    spearman: float
    spearman_pvalue: float
    exact: bool  # all n! pairings enumerated
    can_show: bool  # n >= 5: otherwise the site says transfer "cannot be shown"


def _tau_b(x, y, axis=-1):
    """Kendall's tau-b along ``axis`` (vectorized for permutation_test)."""
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    x, y = np.broadcast_arrays(x, y)
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum((-1, -2)) / np.sqrt((sx * sx).sum((-1, -2)) * (sy * sy).sum((-1, -2)))


def _spearman(x, y, axis=-1):
    """Spearman's rho (Pearson on average ranks) along ``axis`` (vectorized)."""
    rx = sps.rankdata(np.asarray(x, float), axis=axis)
    ry = sps.rankdata(np.asarray(y, float), axis=axis)
    rx, ry = np.broadcast_arrays(np.moveaxis(rx, axis, -1), np.moveaxis(ry, axis, -1))
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))


def rank_agreement_exact(x, y, alternative: str = "two-sided", max_exact: int = 40_320,
                         n_resamples: int = 9_999, rng=None) -> RankAgreement:
    """
    Kendall tau-b and Spearman rank agreement with permutation p-values.

    Parameters
    ----------
    x, y : array_like of float, shape (n,)
        Per-family scores of two models on their common measurable families.
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
    max_exact : int, default 40320 (8!)
        Enumerate all ``n!`` pairings when ``n! <= max_exact``; otherwise draw
        ``n_resamples`` random pairings (``exact=False``).
    n_resamples : int, default 9999
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    RankAgreement
        Statistics, permutation p-values, whether they are exact, and ``can_show``
        (n >= 5; below that even perfect agreement has a two-sided p >= 2/24).

    Notes
    -----
    ``scipy.stats.permutation_test(permutation_type="pairings")`` with vectorized tau-b
    and Spearman statistics (ties: tau-b's tie correction, average ranks). Valid under
    ties, unlike the normal approximations of ``kendalltau``/``spearmanr`` at small n.

    References
    ----------
    .. [1] Kendall, M. G. (1945). The treatment of ties in ranking problems. Biometrika
       33(3), 239-251.
    .. [2] Pitman, E. J. G. (1937). Significance tests which may be applied to samples
       from any populations. II. The correlation coefficient test. JRSS Suppl. 4, 225-232.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D and aligned; got {x.shape} and {y.shape}")
    if np.any(~np.isfinite(x) | ~np.isfinite(y)):
        raise ValueError("x or y contains NaN or inf; keep only common measurable families")
    n = x.size
    if n < 2:
        return RankAgreement(n, math.nan, math.nan, math.nan, math.nan, False, False)
    exact = math.factorial(n) <= max_exact
    out = []
    for stat in (_tau_b, _spearman):
        # one sample with y held fixed: "pairings" then permutes x against y, n! pairings in
        # all (passing (x, y) would permute both samples, (n!)**2 resamples)
        res = sps.permutation_test((x,), lambda xs, axis=-1, stat=stat: stat(xs, y, axis=axis),
                                   permutation_type="pairings", vectorized=True,
                                   n_resamples=np.inf if exact else n_resamples,
                                   alternative=alternative, rng=rng)
        out += [float(res.statistic), float(res.pvalue)]
    return RankAgreement(n, *out, exact, n >= 5)


def names(s: pd.Series) -> pd.Series:
    """Strings with missing as "" (a CSV round trip turns "" into NaN, even a float column)."""
    return s.astype(object).where(s.notna(), "").astype(str)


def common_families(death_order: pd.DataFrame, a: str, b: str, min_items: int = 1) -> list[str]:
    """Families measurable on both models (rows of ``death_order``) with ``min_items`` items each."""
    d = death_order[death_order["n"] >= min_items]
    return sorted(set(d.loc[d["model"] == a, "family"]) & set(d.loc[d["model"] == b, "family"]))


def rank_row(death_order: pd.DataFrame, a: str, b: str, families, *, alpha: float = 0.05,
             seed: int = 0) -> dict:
    """
    Exact permutation rank agreement of two models' fragility over their common families.

    Returns ``n_families, can_show, verdict, kendall_tau_b, kendall_p, spearman_rho,
    spearman_p, p_method, n_pairings`` (all ``n!`` pairings, or the random ones drawn);
    the statistics are NaN when ``can_show`` is False.
    "agreement shown" needs the tau-b permutation p below ``alpha`` and tau-b > 0
    ("reversal shown" with tau-b < 0); otherwise "not shown", never "no transfer".
    """
    n = len(families)
    row = {"n_families": n, "can_show": n >= MIN_FAMILIES, "verdict": CANNOT,
           "kendall_tau_b": np.nan, "kendall_p": np.nan, "spearman_rho": np.nan,
           "spearman_p": np.nan, "p_method": "", "n_pairings": np.nan}
    if n < MIN_FAMILIES:
        return row
    fa = death_order[death_order["model"] == a].set_index("family").loc[families, "fragility"]
    fb = death_order[death_order["model"] == b].set_index("family").loc[families, "fragility"]
    r = rank_agreement_exact(fa.to_numpy(float), fb.to_numpy(float), rng=seed,
                             n_resamples=N_RESAMPLES)
    row.update(kendall_tau_b=r.tau_b, kendall_p=r.tau_pvalue, spearman_rho=r.spearman,
               spearman_p=r.spearman_pvalue,
               p_method="exact permutation" if r.exact else "Monte Carlo permutation",
               n_pairings=math.factorial(n) if r.exact else N_RESAMPLES)
    if not np.isfinite(r.tau_b):
        row["verdict"] = "not shown: one model's fragilities all tie"
    elif r.tau_pvalue < alpha:
        row["verdict"] = "agreement shown" if r.tau_b > 0 else "reversal shown"
    else:
        row["verdict"] = "not shown"
    return row


def _nearest_rung(bpw_b: pd.Series, target: float) -> str:
    """B's rung whose real bpw is closest to ``target`` (ties: the higher bpw)."""
    gap = (bpw_b - target).abs()
    return str(gap.sort_values(kind="stable").index[0])


def decision_tables(comparisons: pd.DataFrame, ladder: pd.DataFrame, a: str, b: str,
                    families) -> pd.DataFrame:
    """
    How the decisions on A carry to B, per lens and rung of A, by name and by bpw.

    Returns
    -------
    pandas.DataFrame
        One row per (lens, match, rung of A) plus a pooled row per lens and match
        (``rung_a`` = "all"): ``model_a, model_b, lens, match`` ({"name", "bpw"}),
        ``rung_a, rung_b, bpw_a, bpw_b, n_families, same_decision, loss_a, loss_both,
        equivalent_a, equivalent_both, undecided_a, undecided_b``.

    Notes
    -----
    Decisions are notebook 05's ("loss shown", "equivalent within ±m shown", "undecided",
    "untestable"), each backed by an interval; "equivalent on A and on B" is the only
    reading of "safe on both" this table supports. A cell its lens cannot judge on A or on B
    (:data:`~gguf_fragility.stats.relevance.NO_ROOM`) makes no pair. *By name* pairs rungs
    with the same llama.cpp name; *by bpw* pairs each rung of A with B's rung nearest in
    real bits per weight, so a "Q2_K" that fell back to 5 bpw meets B's ~5 bpw rung.
    """
    c = comparisons[comparisons["family"].isin(families) & (comparisons["decision"] != NO_ROOM)]
    dec = c.set_index(["model", "lens", "rung", "family"])["decision"]
    lad = ladder[~ladder["is_reference"].astype(bool)]
    bpw_a = lad[lad["model"] == a].set_index("rung")["bpw"].astype(float).sort_values(
        ascending=False)
    bpw_b = lad[lad["model"] == b].set_index("rung")["bpw"].astype(float)
    rows = []
    for lens in LENSES:
        for match in ("name", "bpw"):
            pooled = np.zeros(8, int)
            for ra, xa in bpw_a.items():
                rb = ra if match == "name" else _nearest_rung(bpw_b, xa) if len(bpw_b) else None
                if rb not in bpw_b.index:
                    continue
                k = np.zeros(8, int)
                for f in families:
                    ka, kb = (a, lens, ra, f), (b, lens, rb, f)
                    if ka not in dec.index or kb not in dec.index:
                        continue
                    da, db = dec[ka], dec[kb]
                    k += [1, da == db, da == BEYOND, da == db == BEYOND, da == EQUIVALENT,
                          da == db == EQUIVALENT, da == UNDECIDED, db == UNDECIDED]
                if k[0] == 0:
                    continue
                pooled += k
                rows.append(_decision_row(a, b, lens, match, ra, rb, xa, bpw_b[rb], k))
            if pooled[0]:
                rows.append(_decision_row(a, b, lens, match, "all", "all", np.nan, np.nan,
                                          pooled))
    return pd.DataFrame(rows, columns=DECISION_COLUMNS)


DECISION_COLUMNS = ["model_a", "model_b", "lens", "match", "rung_a", "rung_b", "bpw_a", "bpw_b",
                    "n_families", "same_decision", "loss_a", "loss_both", "equivalent_a",
                    "equivalent_both", "undecided_a", "undecided_b"]


def _decision_row(a, b, lens, match, ra, rb, xa, xb, k) -> dict:
    """One row of :func:`decision_tables`."""
    return dict(zip(DECISION_COLUMNS, [a, b, lens, match, ra, rb, xa, xb, *map(int, k)],
                    strict=True))


def family_table(death_order: pd.DataFrame, a: str, b: str, families,
                 comparisons: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per common family: fragility, rank range and death rung per lens on each model.

    Columns: ``model_a, model_b, family, n_a, n_b, fragility_a, fragility_b, rank_low_a,
    rank_high_a, rank_low_b, rank_high_b`` (ranks re-computed among the common families,
    1 = most fragile, a tie spanning several ranks), and per lens ``death_rung_<lens>_a,
    death_rung_<lens>_b``, ``death_counted_<lens>`` (either model shows a loss beyond the
    margin at some rung of ``comparisons``; without it, either has a death rung) and
    ``death_agree_<lens>`` (counted and the same rung name:
    :func:`gguf_fragility.stats.ranking.transfer_count`; joint non-detection is never
    agreement).
    """
    from gguf_fragility.stats.deathorder import tie_ranks

    d = death_order[death_order["family"].isin(families)]
    keep = ["family", "n", "fragility", *[f"death_rung_{lens}" for lens in LENSES]]
    da = d.loc[d["model"] == a, keep].set_index("family")
    db = d.loc[d["model"] == b, keep].set_index("family")
    out = da.merge(db, left_index=True, right_index=True, suffixes=("_a", "_b")).reset_index()
    for s in ("a", "b"):
        lo, hi = tie_ranks(out[f"fragility_{s}"].to_numpy(float))
        out[f"rank_low_{s}"], out[f"rank_high_{s}"] = lo, hi
    for lens in LENSES:
        for s in ("a", "b"):
            out[f"death_rung_{lens}_{s}"] = names(out[f"death_rung_{lens}_{s}"])
        lost = [_lost(comparisons, m, lens, out["family"]) if comparisons is not None
                else out[f"death_rung_{lens}_{s}"].to_numpy(object) != "" for m, s in ((a, "a"), (b, "b"))]
        tc = ranking.transfer_count(out[f"death_rung_{lens}_a"], out[f"death_rung_{lens}_b"], *lost)
        out[f"death_counted_{lens}"] = tc.counted
        out[f"death_agree_{lens}"] = tc.counted & (out[f"death_rung_{lens}_a"]
                                                   == out[f"death_rung_{lens}_b"]).to_numpy()
    out.insert(0, "model_b", b)
    out.insert(0, "model_a", a)
    cols = ["model_a", "model_b", "family", "n_a", "n_b", "fragility_a", "fragility_b",
            "rank_low_a", "rank_high_a", "rank_low_b", "rank_high_b",
            *[f"{k}" for lens in LENSES for k in (f"death_rung_{lens}_a", f"death_rung_{lens}_b",
                                                  f"death_counted_{lens}", f"death_agree_{lens}")]]
    return out[cols].sort_values(["rank_low_a", "family"], ignore_index=True)


def _lost(comparisons: pd.DataFrame, model: str, lens: str, families) -> np.ndarray:
    """Per family: the model shows a loss beyond the margin on ``lens`` at some rung."""
    c = comparisons[(comparisons["model"] == model) & (comparisons["lens"] == lens)]
    beyond = set(c.loc[c["decision"] == BEYOND, "family"])
    return np.array([f in beyond for f in families], bool)


def transfer_tables(ladder: pd.DataFrame, death_order: pd.DataFrame,
                    comparisons: pd.DataFrame, *, models=None, min_items: int = 1,
                    seed: int = 0, alpha: float = 0.05) -> TransferTables:
    """
    Every transfer table for every ordered pair of models.

    Parameters
    ----------
    ladder : pandas.DataFrame
        All models' ladder manifests (``model, rung, is_reference, bpw``).
    death_order, comparisons : pandas.DataFrame
        Notebook 05's ``death_order.csv`` (measurable families only) and ``comparisons.csv``.
    models : sequence of str, optional
        Models to compare (default: every model in ``death_order``, sorted).
    min_items : int, default 1
        Items a family needs on each model to be compared.
    seed : int
        Seed of the random pairings when more than 8 families make enumeration too long.
    alpha : float, default 0.05

    Returns
    -------
    TransferTables
        Empty tables (with their columns) when fewer than two models are present.
    """
    models = sorted(models or death_order["model"].astype(str).unique())
    fam, rank, dec = [], [], []
    for a, b in itertools.permutations(models, 2):
        families = common_families(death_order, a, b, min_items)
        row = {"model_a": a, "model_b": b,
               **rank_row(death_order, a, b, families, alpha=alpha, seed=seed)}
        ft = family_table(death_order, a, b, families, comparisons)
        for lens in LENSES:
            row[f"n_death_counted_{lens}"] = int(ft[f"death_counted_{lens}"].sum())
            row[f"n_death_agree_{lens}"] = int(ft[f"death_agree_{lens}"].sum())
        fam.append(ft)
        rank.append(row)
        dec.append(decision_tables(comparisons, ladder, a, b, families))
    rank_cols = ["model_a", "model_b", "n_families", "can_show", "verdict", "kendall_tau_b",
                 "kendall_p", "spearman_rho", "spearman_p", "p_method", "n_pairings",
                 *[k for lens in LENSES for k in (f"n_death_counted_{lens}",
                                                  f"n_death_agree_{lens}")]]
    return TransferTables(
        pd.concat(fam, ignore_index=True) if fam else family_table(death_order.iloc[:0], "", "", []),
        pd.DataFrame(rank, columns=rank_cols),
        pd.concat(dec, ignore_index=True) if dec else pd.DataFrame(columns=DECISION_COLUMNS))


def analyse(profile: Profile, r: Results) -> TransferTables:
    """Every transfer table of a run, from notebook 05's tables and the profile's settings,
    written to ``tables/``."""
    run, s = profile.layout, Settings.of(profile)
    t = transfer_tables(r.ladder, pd.read_csv(run.table(Table.DEATH_ORDER)),
                        pd.read_csv(run.table(Table.COMPARISONS)),
                        min_items=profile.transfer_min_usable, seed=s.seed, alpha=s.alpha)
    write_tables(t, run.tables_dir)
    return t
