"""The paired comparison grid: every model × family × rung against its reference.

Builds, from the sweep's item rows, one row per (model, family, rung, subset) with the
flip table, McNemar test (corrected across the grid), paired bootstrap CI, TOST, MDE,
effect size, tier, answer-position KL and the near-death margin signal. The statistics
themselves live in :mod:`gguf_fragility.stats.paired`.

Usage::

    from gguf_fragility.stats.grid import paired_grid
    g = paired_grid(items, {"smollm2-135m": "F16"}, seed=0)
    g.comparisons  # one row per model × family × rung × subset
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

from gguf_fragility.stats import paired

ITEM_COLUMNS = ("model", "rung", "family", "item_id", "correct", "usable", "margin",
                "answer_kl", "answer_same_top")
SUBSETS = ("usable", "all")


class Grid(NamedTuple):
    """Result of :func:`paired_grid`."""

    comparisons: pd.DataFrame  # one row per model × family × rung × subset (rung != reference)
    accuracy: pd.DataFrame  # one row per model × family × rung × subset, reference included
    boot: np.ndarray  # (n_boot, len(comparisons)) bootstrap replicates of ``diff``


def validate_items(items: pd.DataFrame, reference: Mapping[str, str]) -> pd.DataFrame:
    """
    Check the sweep's item table against the input contract; return a clean copy.

    Parameters
    ----------
    items : pandas.DataFrame
        Columns ``model, rung, family, item_id, correct, usable, margin, answer_kl,
        answer_same_top``; one row per (model, rung, family, item_id).
    reference : mapping of str to str
        Reference rung of each model.

    Returns
    -------
    pandas.DataFrame
        The contract's columns, ``correct``/``usable`` as bool, the rest as float.

    Raises
    ------
    ValueError
        On missing columns, missing or null ``correct``/``usable``, duplicate rows, a
        model without a reference (or whose reference rung has no rows), ``usable``
        varying across rungs, or items present at one rung and absent at another.
    """
    missing = [c for c in ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise ValueError(f"items lacks columns {missing}; expected {list(ITEM_COLUMNS)}")
    df = items.loc[:, list(ITEM_COLUMNS)].copy()
    for col in ("model", "rung", "family", "item_id", "correct", "usable"):
        if df[col].isna().any():
            raise ValueError(f"items has {int(df[col].isna().sum())} null values in {col!r}")
    for col in ("model", "rung", "family", "item_id"):
        df[col] = df[col].astype(str)
    for col in ("correct", "usable"):
        bad = ~df[col].isin([True, False, 0, 1])
        if bad.any():
            raise ValueError(f"items[{col!r}] must be boolean; got e.g. {df[col][bad].iloc[0]!r}")
        df[col] = df[col].astype(bool)
    for col in ("margin", "answer_kl", "answer_same_top"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
    key = ["model", "rung", "family", "item_id"]
    dup = df.duplicated(key)
    if dup.any():
        raise ValueError(f"items has {int(dup.sum())} duplicate (model, rung, family, item_id) "
                         f"rows, e.g. {tuple(df.loc[dup, key].iloc[0])}")
    for model, sub in df.groupby("model", sort=True):
        ref = reference.get(model)
        if ref is None:
            raise ValueError(f"no reference rung for model {model!r}; the ladder must mark "
                             f"one rung is_reference=True (known: {sorted(reference)})")
        rungs = set(sub["rung"])
        if ref not in rungs:
            raise ValueError(f"model {model!r}: reference rung {ref!r} has no item rows "
                             f"(rungs present: {sorted(rungs)})")
        per_rung = sub.groupby("rung").size()
        n_items = sub.drop_duplicates(["family", "item_id"]).shape[0]
        short = per_rung[per_rung != n_items]
        if len(short):
            raise ValueError(f"model {model!r}: items misaligned across rungs; {n_items} "
                             f"distinct (family, item_id) but rung row counts "
                             f"{short.to_dict()}; every rung must score the same items")
        if (sub.groupby(["family", "item_id"])["usable"].nunique() > 1).any():
            raise ValueError(f"model {model!r}: 'usable' differs across rungs for some item; "
                             "it must be fixed by the reference")
    return df


def _cell_seed(seed: int, *key: str) -> np.random.Generator:
    """Generator seeded by (seed, key), so a cell's bootstrap ignores the rest of the grid."""
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(key).encode())])


def _group_rows(model, family, subset, ref, rungs, wide, n_boot, seed):
    """Accuracy rows, comparison rows and bootstrap replicates for one item set."""
    x = wide["correct"].to_numpy(bool)  # (n_items, n_rungs_all)
    cols = list(wide["correct"].columns)
    r = x[:, cols.index(ref)]
    n = x.shape[0]
    acc = [{"model": model, "family": family, "subset": subset, "rung": c,
            "is_reference": c == ref, "n": n, "n_correct": int(x[:, j].sum())}
           for j, c in enumerate(cols)]
    idx = [cols.index(c) for c in rungs]
    xr = x[:, idx]  # (n_items, n_rungs)
    boot = paired.bootstrap_paired_diffs(r, xr, n_boot=n_boot,
                                        rng=_cell_seed(seed, model, family, subset))
    kl = wide["answer_kl"].to_numpy(float)[:, idx]
    top = wide["answer_same_top"].to_numpy(float)[:, idx]
    m = wide["margin"].to_numpy(float)
    shrink = m[:, [cols.index(ref)]] - m[:, idx]  # (n_items, n_rungs), nats
    alive = r[:, None] & xr & np.isfinite(shrink)
    rows = []
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = shrink / np.abs(m[:, [cols.index(ref)]])
    for j, rung in enumerate(rungs):
        a = alive[:, j]
        rows.append({
            "model": model, "family": family, "rung": rung, "reference": ref, "subset": subset,
            "n": n, "n_ref_correct": int(r.sum()), "n_correct": int(xr[:, j].sum()),
            "deaths": int((r & ~xr[:, j]).sum()), "resurrections": int((~r & xr[:, j]).sum()),
            "both_right": int((r & xr[:, j]).sum()), "both_wrong": int((~r & ~xr[:, j]).sum()),
            "kl_mean": np.nanmean(kl[:, j]) if np.isfinite(kl[:, j]).any() else np.nan,
            "same_top_rate": np.nanmean(top[:, j]) if np.isfinite(top[:, j]).any() else np.nan,
            "n_margin": int(a.sum()),
            "margin_shrink_median": np.median(shrink[a, j]) if a.any() else np.nan,
            "margin_shrink_rel_median": np.nanmedian(rel[a, j]) if a.any() else np.nan,
        })
    return acc, rows, boot


def paired_grid(items: pd.DataFrame, reference: Mapping[str, str], *, seed: int,
                n_boot: int = 10_000, correction: str = "holm", mcnemar: str = "exact",
                alpha: float = 0.05) -> Grid:
    """
    Compare every rung with its model's reference, per family, on paired items.

    Parameters
    ----------
    items : pandas.DataFrame
        The sweep's item rows (see :func:`validate_items`).
    reference : mapping of str to str
        Reference rung of each model (the ladder's ``is_reference``).
    seed : int
        Bootstrap seed; each cell's generator is derived from (seed, model, family, subset).
    n_boot : int, default 10000
        Bootstrap resamples per cell.
    correction : {"holm", "bh", "fdr_bh", "bonferroni"}, default "holm"
        Multiple-comparison correction, applied across the whole grid within each subset.
    mcnemar : {"exact", "midp"}, default "exact"
    alpha : float, default 0.05
        Level for significance, TOST, the CIs (1 - alpha) and the MDE.

    Returns
    -------
    Grid
        ``comparisons`` with columns: model, family, rung, reference, subset, n,
        n_ref_correct, n_correct, deaths, resurrections, both_right, both_wrong, acc_ref,
        accuracy, acc_ci_low, acc_ci_high (Wilson), diff (rung - reference),
        diff_ci_low, diff_ci_high (paired bootstrap percentile), net_loss (deaths -
        resurrections), death_rate, resurrection_rate, net_loss_rate (per item),
        death_frac_of_known (deaths / n_ref_correct), p_raw, p_adj, significant, worse
        (significant and diff < 0), tost_p_3pp, equiv_3pp, tost_p_5pp, equiv_5pp,
        mde (fraction), cohens_h, tier, kl_mean, same_top_rate, n_margin,
        margin_shrink_median, margin_shrink_rel_median. ``accuracy`` per rung including
        the reference: model, family, subset, rung, is_reference, n, n_correct,
        accuracy, ci_low, ci_high. ``boot`` holds the bootstrap replicates of ``diff``.

    Notes
    -----
    Subsets: ``"usable"`` = items the reference knows robustly (primary), ``"all"`` =
    every item (secondary). The correction runs separately per subset: the two are views
    of the same data, not independent tests. ``margin_shrink_*`` is the near-death
    signal: on items right at both the reference and the rung, the median drop of the
    gold log-prob margin (reference minus rung, nats; and relative to the reference's
    margin). A positive value at a rung with no significant loss means items are
    weakening before they flip.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    if mcnemar not in ("exact", "midp"):
        raise ValueError(f"mcnemar must be 'exact' or 'midp'; got {mcnemar!r}")
    if correction not in paired.CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(paired.CORRECTIONS)}; "
                         f"got {correction!r}")
    df = validate_items(items, reference)
    acc_rows, cmp_rows, boots = [], [], []
    values = ["correct", "usable", "margin", "answer_kl", "answer_same_top"]
    for model, sub in df.groupby("model", sort=True):
        ref = reference[model]
        wide = sub.set_index(["family", "item_id", "rung"])[values].unstack("rung")
        rungs = sorted(r for r in wide["correct"].columns if r != ref)
        usable = wide["usable"].iloc[:, 0].to_numpy(bool)
        fams = wide.index.get_level_values("family").to_numpy()
        for family in sorted(set(fams)):
            for subset in SUBSETS:
                mask = (fams == family) & (usable if subset == "usable" else True)
                if not mask.any():
                    continue
                a, c, b = _group_rows(model, family, subset, ref, rungs, wide[mask],
                                      n_boot, seed)
                acc_rows += a
                cmp_rows += c
                boots.append(b)
    if not cmp_rows:
        raise ValueError("no comparisons: every model has only its reference rung")
    acc = pd.DataFrame(acc_rows)
    ci = paired.wilson_ci(acc["n_correct"].to_numpy(), acc["n"].to_numpy(), alpha=alpha)
    acc["accuracy"] = acc["n_correct"] / acc["n"]
    acc["ci_low"], acc["ci_high"] = ci
    cmp = pd.DataFrame(cmp_rows)
    boot = np.concatenate(boots, axis=1)  # (n_boot, n_cells)
    return Grid(_add_tests(cmp, boot, correction, mcnemar, alpha), acc, boot)


def _add_tests(cmp: pd.DataFrame, boot: np.ndarray, correction: str, mcnemar: str,
               alpha: float) -> pd.DataFrame:
    """Vectorized statistics on the counted comparison rows."""
    n, b, c = (cmp[k].to_numpy() for k in ("n", "deaths", "resurrections"))
    k_ref, k = cmp["n_ref_correct"].to_numpy(), cmp["n_correct"].to_numpy()
    out = {"acc_ref": k_ref / n, "accuracy": k / n}
    out["acc_ci_low"], out["acc_ci_high"] = paired.wilson_ci(k, n, alpha=alpha)
    out["diff"] = (c - b) / n
    lo, hi = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    out["diff_ci_low"], out["diff_ci_high"] = lo, hi
    out["net_loss"] = b - c
    out["death_rate"], out["resurrection_rate"], out["net_loss_rate"] = b / n, c / n, (b - c) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        out["death_frac_of_known"] = np.where(k_ref > 0, b / np.maximum(k_ref, 1), np.nan)
    out["p_raw"] = paired.mcnemar_exact(b, c, method=mcnemar).pvalue
    p_adj = np.full(len(cmp), np.nan)
    sig = np.zeros(len(cmp), bool)
    for subset in cmp["subset"].unique():
        sel = (cmp["subset"] == subset).to_numpy()
        adj = paired.adjust_pvalues(out["p_raw"][sel], method=correction, alpha=alpha)
        p_adj[sel], sig[sel] = adj.pvalue, adj.reject
    out["p_adj"], out["significant"] = p_adj, sig
    out["worse"] = sig & (out["diff"] < 0)
    for pp in (3, 5):
        t = paired.paired_tost(b, c, n, margin=pp / 100, alpha=alpha)
        out[f"tost_p_{pp}pp"], out[f"equiv_{pp}pp"] = t.pvalue, t.equivalent
    out["mde"] = paired.mde_paired(b + c, n, alpha=alpha)
    out["cohens_h"] = paired.cohens_h(out["accuracy"], out["acc_ref"])
    out["tier"] = paired.quality_tier(out["diff"])
    first = ["model", "family", "rung", "reference", "subset", "n", "n_ref_correct",
             "n_correct", "deaths", "resurrections", "both_right", "both_wrong"]
    tail = ["kl_mean", "same_top_rate", "n_margin", "margin_shrink_median",
            "margin_shrink_rel_median"]
    return pd.concat([cmp[first], pd.DataFrame(out, index=cmp.index), cmp[tail]], axis=1)
