"""Does a death order found on one model family transfer to another?

Notebook 06 calls this module on the sweep's item rows and notebook 05's tables::

    from gguf_fragility.stats import inputs, transfer
    t = transfer.analyse(profile, inputs.load_results(profile.layout))  # writes tables/*.csv
    print(transfer.conclusion(t.transfer_rank, t.transfer_safety, "model-a", "model-b"))

Every table has ``model_a, model_b`` columns; each ordered pair of models gets its own
rows, so "safe on A → safe on B" is read in both directions. Only families measurable on
both models (``usable`` items on each, at least ``min_usable``) are compared.
"""

from __future__ import annotations

import itertools
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from gguf_fragility.profile import Profile
from gguf_fragility.stats.deathorder import trapezoid_weights
from gguf_fragility.stats.inputs import Results
from gguf_fragility.store import write_tables

SUBSET = "usable"  # the primary subset of notebook 05's tables


class TransferTables(NamedTuple):
    """Every table notebook 06 writes; field name = CSV name without the ``.csv``."""

    transfer_families: pd.DataFrame  # model pair × family: fragility, rank, death rung on each
    transfer_rank: pd.DataFrame  # model pair: Kendall tau-b, Spearman, bootstrap CIs, counts
    transfer_safety: pd.DataFrame  # model pair × rung match (by name, by bpw): 2×2 safety table


def names(s: pd.Series) -> pd.Series:
    """Strings with missing as "" (a CSV round trip turns "" into NaN, even a float column)."""
    return s.astype(object).where(s.notna(), "").astype(str)


def item_scores(items: pd.DataFrame, ladder: pd.DataFrame, model: str) -> pd.DataFrame:
    """
    Per-item fragility contributions of one model, on its usable items.

    Parameters
    ----------
    items : pandas.DataFrame
        The item contract: ``model, rung, family, item_id, correct, usable``.
    ladder : pandas.DataFrame
        ``model, rung, is_reference, bpw``.
    model : str

    Returns
    -------
    pandas.DataFrame
        Index ``(family, item_id)``, one column ``score``: the item's loss (reference right,
        rung wrong = 1; the reverse = -1) summed over rungs with the trapezoid weights of
        :func:`gguf_fragility.stats.deathorder.death_order`, in pp × bpw. The mean over a
        family's items is that family's fragility index.

    Notes
    -----
    Fragility is linear in the per-rung accuracy differences, so it is the mean of
    per-item scores; resampling items therefore resamples fragility exactly.
    """
    lad = ladder[ladder["model"] == model]
    if lad.empty:
        raise ValueError(f"ladder has no rows for model {model!r}")
    refs = lad.loc[lad["is_reference"].astype(bool), "rung"].tolist()
    if len(refs) != 1:
        raise ValueError(f"model {model!r} needs exactly one reference rung; got {refs}")
    ref = refs[0]
    sub = items[(items["model"] == model) & items["usable"].astype(bool)]
    wide = sub.pivot_table(index=["family", "item_id"], columns="rung", values="correct",
                           aggfunc="first").astype(float)
    rungs = sorted((r for r in wide.columns if r != ref),
                   key=lambda r: -float(lad.set_index("rung").loc[r, "bpw"]))
    if ref not in wide.columns or not rungs:
        raise ValueError(f"model {model!r} has no reference rows or no rung to compare")
    bpw = lad.set_index("rung")["bpw"].astype(float)
    x = np.r_[bpw[rungs].to_numpy()[::-1], bpw[ref]]  # increasing bpw, reference last
    w = trapezoid_weights(x)[:-1][::-1]  # weight of each rung, highest bpw first
    loss = wide[[ref]].to_numpy() - wide[rungs].to_numpy()  # (n_items, n_rungs)
    return pd.DataFrame({"score": 100 * loss @ w}, index=wide.index)


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of (n_boot, n) arrays (average ranks for ties)."""
    rx = sps.rankdata(x, axis=1)
    ry = sps.rankdata(y, axis=1)
    rx = rx - rx.mean(axis=1, keepdims=True)
    ry = ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / den, np.nan)


def rank_agreement(scores_a: pd.DataFrame, scores_b: pd.DataFrame, families, *,
                   n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """
    Kendall's tau-b and Spearman's rho of two models' fragility orders, with bootstrap CIs.

    Parameters
    ----------
    scores_a, scores_b : pandas.DataFrame
        :func:`item_scores` of each model.
    families : sequence of str
        Families measurable on both models (at least 3).
    n_boot : int, default 2000
    seed : int, default 0
    alpha : float, default 0.05
        The CIs are percentile intervals at level ``1 - alpha``.

    Returns
    -------
    dict
        ``n_families, kendall_tau_b, kendall_p, kendall_ci_low, kendall_ci_high,
        spearman_rho, spearman_p, spearman_ci_low, spearman_ci_high, n_boot, n_boot_defined``
        (``n_boot_defined``: replicates where tau-b is defined).

    Notes
    -----
    The bootstrap resamples items within each family, the same item ids for both models
    (items are shared across models; an item usable on only one model counts on that one
    only), so shared item difficulty is kept paired. A replicate where a family draws no
    usable item on a model is dropped. Tau-b is undefined in a replicate where one model's
    fragilities are all tied (typically all 0: nothing died in the drawn items); the
    percentile interval is taken over the defined replicates and is NaN when fewer than
    half of ``n_boot`` are defined, since it would then describe an unrepresentative subset.
    With few families the tau-b interval is wide and its p-value (scipy's, exact for no
    ties) is the honest summary; ties among fragilities (common with few items) lower tau-b.
    """
    families = list(families)
    if len(families) < 3:
        raise ValueError(f"need at least 3 common families for a rank correlation; got "
                         f"{len(families)}: {families}")
    fa = np.array([scores_a.loc[f, "score"].mean() for f in families])
    fb = np.array([scores_b.loc[f, "score"].mean() for f in families])
    tau = sps.kendalltau(fa, fb, variant="b")
    rho = sps.spearmanr(fa, fb)
    rng = np.random.default_rng(seed)
    ba = np.empty((n_boot, len(families)))
    bb = np.empty((n_boot, len(families)))
    for j, f in enumerate(families):
        sa, sb = scores_a.loc[f, "score"], scores_b.loc[f, "score"]
        ids = sorted(set(sa.index) | set(sb.index))
        draw = rng.integers(0, len(ids), size=(n_boot, len(ids)))  # shared by both models
        for s, out in ((sa, ba), (sb, bb)):
            vals = s.reindex(ids).to_numpy(float)[draw]  # NaN: not usable on this model
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicate: dropped
                out[:, j] = np.nanmean(vals, axis=1)
    ok = np.isfinite(ba).all(axis=1) & np.isfinite(bb).all(axis=1)
    taus = np.array([sps.kendalltau(x, y, variant="b").statistic
                     for x, y in zip(ba[ok], bb[ok], strict=True)])
    rhos = _spearman(ba[ok], bb[ok])
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]

    def ci(v):
        v = v[np.isfinite(v)]
        return tuple(np.percentile(v, q)) if len(v) >= n_boot / 2 else (np.nan, np.nan)

    (tlo, thi), (rlo, rhi) = ci(taus), ci(rhos)
    n_defined = int(np.isfinite(taus).sum())
    return {"n_families": len(families), "kendall_tau_b": float(tau.statistic),
            "kendall_p": float(tau.pvalue), "kendall_ci_low": tlo, "kendall_ci_high": thi,
            "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue),
            "spearman_ci_low": rlo, "spearman_ci_high": rhi, "n_boot": int(n_boot),
            "n_boot_defined": n_defined}


def common_families(death_order: pd.DataFrame, a: str, b: str, min_usable: int = 1) -> list[str]:
    """Families with at least ``min_usable`` usable items on both models (sorted)."""
    d = death_order[(death_order["subset"] == SUBSET) & (death_order["n"] >= min_usable)]
    fa = set(d.loc[d["model"] == a, "family"])
    fb = set(d.loc[d["model"] == b, "family"])
    return sorted(fa & fb)


def _nearest_rung(bpw_b: pd.Series, target: float) -> str:
    """B's rung whose real bpw is closest to ``target`` (ties: the higher bpw)."""
    gap = (bpw_b - target).abs()
    return str(gap.sort_values(kind="stable").index[0])


def safety_tables(comparisons: pd.DataFrame, ladder: pd.DataFrame, a: str, b: str,
                  families) -> pd.DataFrame:
    """
    The 2×2 "safe on A at R → safe on B at R" table for every rung of A, by name and by bpw.

    Parameters
    ----------
    comparisons : pandas.DataFrame
        Notebook 05's ``comparisons.csv`` (``model, family, rung, subset, worse``).
    ladder : pandas.DataFrame
        ``model, rung, is_reference, bpw``.
    a, b : str
        The two models; A is the one a user has measured.
    families : sequence of str
        Families measurable on both.

    Returns
    -------
    pandas.DataFrame
        One row per (match, rung of A) plus one pooled row per match (``rung_a`` = "all"):
        ``model_a, model_b, match`` ({"name", "bpw"}), ``rung_a, rung_b, bpw_a, bpw_b,
        n_families, safe_safe, safe_unsafe, unsafe_safe, unsafe_unsafe`` (A then B),
        ``n_safe_a``, ``transfer_rate`` (P(safe on B | safe on A)), ``agreement``
        (share of families with the same verdict on both).

    Notes
    -----
    *Safe* means not significantly worse than the model's own reference after the
    grid-wide correction (``worse`` is False) on usable items; it is "no loss detected",
    not "equivalent". *By name* pairs rungs with the same llama.cpp name (only names both
    ladders have); *by bpw* pairs each rung of A with B's non-reference rung nearest in
    real bits per weight, so a "Q2_K" that fell back to 5 bpw meets B's ~5 bpw rung.
    """
    c = comparisons[(comparisons["subset"] == SUBSET) & comparisons["family"].isin(families)]
    worse = c.set_index(["model", "rung", "family"])["worse"].astype(bool)
    lad = ladder[~ladder["is_reference"].astype(bool)]
    bpw_a = lad[lad["model"] == a].set_index("rung")["bpw"].astype(float).sort_values(
        ascending=False)
    bpw_b = lad[lad["model"] == b].set_index("rung")["bpw"].astype(float)
    rows = []
    for match in ("name", "bpw"):
        pooled = np.zeros(4, int)
        for ra, xa in bpw_a.items():
            rb = ra if match == "name" else _nearest_rung(bpw_b, xa) if len(bpw_b) else None
            if rb not in bpw_b.index:
                continue
            counts = np.zeros(4, int)  # safe_safe, safe_unsafe, unsafe_safe, unsafe_unsafe
            n = 0
            for f in families:
                ka, kb = (a, ra, f), (b, rb, f)
                if ka not in worse.index or kb not in worse.index:
                    continue
                counts[2 * int(worse[ka]) + int(worse[kb])] += 1
                n += 1
            if n == 0:
                continue
            pooled += counts
            rows.append(_safety_row(a, b, match, ra, rb, xa, bpw_b[rb], n, counts))
        if pooled.sum():
            rows.append(_safety_row(a, b, match, "all", "all", np.nan, np.nan,
                                    int(pooled.sum()), pooled))
    cols = ["model_a", "model_b", "match", "rung_a", "rung_b", "bpw_a", "bpw_b", "n_families",
            "safe_safe", "safe_unsafe", "unsafe_safe", "unsafe_unsafe", "n_safe_a",
            "transfer_rate", "agreement"]
    return pd.DataFrame(rows, columns=cols)


def _safety_row(a, b, match, ra, rb, xa, xb, n, counts) -> dict:
    """One row of :func:`safety_tables`."""
    ss, su, us, uu = (int(v) for v in counts)
    return {"model_a": a, "model_b": b, "match": match, "rung_a": ra, "rung_b": rb,
            "bpw_a": xa, "bpw_b": xb, "n_families": n, "safe_safe": ss, "safe_unsafe": su,
            "unsafe_safe": us, "unsafe_unsafe": uu, "n_safe_a": ss + su,
            "transfer_rate": ss / (ss + su) if ss + su else np.nan,
            "agreement": (ss + uu) / n}


def family_table(death_order: pd.DataFrame, a: str, b: str, families) -> pd.DataFrame:
    """Per common family: fragility, rank and death rung on each model, and whether they agree.

    Columns: ``model_a, model_b, family, n_a, n_b, fragility_a, fragility_b, rank_a,
    rank_b`` (ranks re-computed among the common families, 1 = most fragile),
    ``death_rung_a, death_bpw_a, death_rung_b, death_bpw_b, death_agree_name`` (same
    rung name, or neither died) and ``death_bpw_gap`` (A minus B, NaN unless both died).
    """
    d = death_order[(death_order["subset"] == SUBSET) & death_order["family"].isin(families)]
    keep = ["family", "n", "fragility", "death_rung", "death_bpw"]
    da = d.loc[d["model"] == a, keep].set_index("family")
    db = d.loc[d["model"] == b, keep].set_index("family")
    out = da.merge(db, left_index=True, right_index=True, suffixes=("_a", "_b")).reset_index()
    for s in ("a", "b"):
        out[f"death_rung_{s}"] = names(out[f"death_rung_{s}"])
        out[f"rank_{s}"] = sps.rankdata(-out[f"fragility_{s}"].to_numpy(), method="min")
    out["death_agree_name"] = out["death_rung_a"] == out["death_rung_b"]
    out["death_bpw_gap"] = out["death_bpw_a"] - out["death_bpw_b"]
    out.insert(0, "model_b", b)
    out.insert(0, "model_a", a)
    cols = ["model_a", "model_b", "family", "n_a", "n_b", "fragility_a", "fragility_b",
            "rank_a", "rank_b", "death_rung_a", "death_bpw_a", "death_rung_b", "death_bpw_b",
            "death_agree_name", "death_bpw_gap"]
    return out[cols].sort_values(["rank_a", "family"], ignore_index=True)


def transfer_tables(items: pd.DataFrame, ladder: pd.DataFrame, death_order: pd.DataFrame,
                    comparisons: pd.DataFrame, *, models=None, min_usable: int = 1,
                    n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> TransferTables:
    """
    Every transfer table for every ordered pair of models.

    Parameters
    ----------
    items : pandas.DataFrame
        The item contract (``model, rung, family, item_id, correct, usable``).
    ladder : pandas.DataFrame
        All models' ladder manifests (``model, rung, is_reference, bpw``).
    death_order, comparisons : pandas.DataFrame
        Notebook 05's ``death_order.csv`` and ``comparisons.csv``.
    models : sequence of str, optional
        Models to compare (default: every model in ``death_order``, sorted).
    min_usable : int, default 1
        Usable items a family needs on each model to count as measurable.
    n_boot, seed, alpha
        Bootstrap of :func:`rank_agreement`.

    Returns
    -------
    TransferTables
        Empty tables (with their columns) when fewer than two models are present; a pair
        with fewer than 3 common families gets NaN correlations.
    """
    models = sorted(models or death_order["model"].astype(str).unique())
    fam, rank, safe = [], [], []
    for a, b in itertools.permutations(models, 2):
        families = common_families(death_order, a, b, min_usable)
        row = {"model_a": a, "model_b": b, "n_families": len(families)}
        if len(families) >= 3:
            row.update(rank_agreement(item_scores(items, ladder, a),
                                      item_scores(items, ladder, b), families,
                                      n_boot=n_boot, seed=seed, alpha=alpha))
        ft = family_table(death_order, a, b, families)
        row["n_death_agree_name"] = int(ft["death_agree_name"].sum())
        fam.append(ft)
        rank.append(row)
        safe.append(safety_tables(comparisons, ladder, a, b, families))
    rank_cols = ["model_a", "model_b", "n_families", "kendall_tau_b", "kendall_p",
                 "kendall_ci_low", "kendall_ci_high", "spearman_rho", "spearman_p",
                 "spearman_ci_low", "spearman_ci_high", "n_boot", "n_boot_defined",
                 "n_death_agree_name"]
    empty_fam = family_table(death_order.iloc[:0], "", "", [])
    return TransferTables(
        pd.concat(fam, ignore_index=True) if fam else empty_fam,
        pd.DataFrame(rank, columns=rank_cols),
        pd.concat(safe, ignore_index=True) if safe else safety_tables(
            comparisons.iloc[:0], ladder.iloc[:0], "", "", []))


def analyse(profile: Profile, r: Results) -> TransferTables:
    """Every transfer table of a run, from notebook 05's tables and the profile's settings,
    written to ``tables/``."""
    tables = profile.layout.tables_dir
    t = transfer_tables(r.items, r.ladder, pd.read_csv(tables / "death_order.csv"),
                        pd.read_csv(tables / "comparisons.csv"),
                        min_usable=profile.transfer_min_usable, n_boot=profile.n_boot,
                        seed=profile.seed, alpha=profile.alpha)
    write_tables(t, tables)
    return t


def conclusions(t: TransferTables) -> str:
    """:func:`conclusion` for every ordered pair of models, as Markdown paragraphs."""
    pairs = t.transfer_rank[["model_a", "model_b"]].itertuples(index=False)
    return ("\n\n".join(conclusion(t.transfer_rank, t.transfer_safety, a, b) for a, b in pairs)
            or "Fewer than two models: nothing to transfer.")


def _fmt(x: float, nd: int = 2) -> str:
    """A number as the sentences print it (a true minus sign is avoided: claims parse '-')."""
    return f"{x:.{nd}f}"


def conclusion(rank: pd.DataFrame, safety: pd.DataFrame, a: str, b: str) -> str:
    """
    One generated sentence on whether A's fragility order and safety transfer to B.

    Every number in it is a cell of ``transfer_rank.csv`` or ``transfer_safety.csv``
    (rounded, or a rate times 100), so the claim check can trace it.
    """
    r = rank[(rank["model_a"] == a) & (rank["model_b"] == b)]
    if r.empty:
        return f"No transfer comparison of {a} and {b} was computed."
    r = r.iloc[0]
    n = int(r["n_families"])
    if n < 3 or not np.isfinite(r.get("kendall_tau_b", np.nan)):
        text = (f"Only {n} families are measurable on both {a} and {b}: too few for a rank "
                "correlation of their fragility orders.")
    else:
        lo, hi = r["kendall_ci_low"], r["kendall_ci_high"]
        if np.isfinite(lo) and lo > 0:
            verdict = "the fragility order transfers (the interval excludes zero)"
        elif np.isfinite(hi) and hi < 0:
            verdict = "the fragility order is reversed (the interval lies below zero)"
        elif np.isfinite(lo):
            verdict = "no transfer of the fragility order can be shown (the interval includes zero)"
        else:
            verdict = "no transfer of the fragility order can be shown"
        interval = (f"bootstrap interval {_fmt(lo)} to {_fmt(hi)}" if np.isfinite(lo) else
                    f"no bootstrap interval: tau-b was defined in only "
                    f"{int(r['n_boot_defined'])} of {int(r['n_boot'])} resamples, the others "
                    f"drawing items where one model's fragilities all tie")
        text = (f"Across {n} families measurable on both models, {verdict}: Kendall's tau-b "
                f"between {a} and {b} is {_fmt(r['kendall_tau_b'])} ({interval}; Spearman's "
                f"rho {_fmt(r['spearman_rho'])}); death rungs agree by name for "
                f"{int(r['n_death_agree_name'])} of {n} families.")
    s = safety[(safety["model_a"] == a) & (safety["model_b"] == b) & (safety["rung_a"] == "all")]
    for _, p in s.iterrows():
        if p["n_safe_a"] == 0:
            text += f" Matched by {p['match']}, no family was safe on {a} at any rung."
            continue
        text += (f" Matched by {'rung name' if p['match'] == 'name' else 'real bits per weight'},"
                 f" a family safe on {a} was also safe on {b} in {int(p['safe_safe'])} of "
                 f"{int(p['n_safe_a'])} cases ({_fmt(100 * p['transfer_rate'], 1)}%).")
    return text
