"""The lens grid: every model × lens × family × rung against the model's reference.

Builds, from the sweep's item rows, one row per (model, lens, family, rung) for every lens
of the registry (:data:`gguf_fragility.stats.lens.registry.LENSES`: each lens's module
computes its cells' statistics, MDE and decision), then runs the family of tests of
:mod:`gguf_fragility.stats.multiplicity` per model and lens and labels every cell.

Usage::

    from gguf_fragility.stats.grid import lens_grid
    g = lens_grid(items, {"smollm2-135m": "F16"}, bpw, seed=0)
    g.comparisons  # one row per model × lens × family × rung
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from gguf_fragility.engine.rungs import NOISE_FLOOR
from gguf_fragility.stats import multiplicity, relevance
from gguf_fragility.stats.lens.base import STATISTICS
from gguf_fragility.stats.lens.registry import LENSES
from gguf_fragility.stats.settings import DEFAULT_SETTINGS, Settings

ITEM_COLUMNS = ("model", "rung", "family", "item_id", "correct", "extracted", "mode", "margin",
                "gold_logprob", "ref_answer_logprob", "answer_kl", "answer_same_top")
OPTIONAL_COLUMNS = ("n_gen_tokens",)  # NaN where absent (e.g. imported runs): no reply-token scale
NOT_MEASURABLE = "not measurable"
UNTESTABLE = "untestable"


class Grid(NamedTuple):
    """Result of :func:`lens_grid`."""

    comparisons: pd.DataFrame  # model × lens × family × rung (rung != reference, != floor)
    accuracy: pd.DataFrame  # model × family × rung, reference and floor included


def validate_items(items: pd.DataFrame, reference: Mapping[str, str]) -> pd.DataFrame:
    """
    Check the sweep's item table against the input contract; return a clean copy.

    Parameters
    ----------
    items : pandas.DataFrame
        :data:`ITEM_COLUMNS`, one row per (model, rung, family, item_id); ``measurable``
        (calibration's family gate) is kept when present, else every family counts.
    reference : mapping of str to str
        Reference rung of each model.

    Returns
    -------
    pandas.DataFrame
        ``correct`` and ``measurable`` as bool, ``extracted`` as str ("" where missing),
        the log-probabilities and KL as float.

    Raises
    ------
    ValueError
        On missing columns, null keys or ``correct``, duplicate rows, an unknown ``mode``,
        or a model without a reference (or whose reference rung has no rows).
    """
    missing = [c for c in ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise ValueError(f"items lacks columns {missing}; expected {list(ITEM_COLUMNS)}")
    df = items.loc[:, list(ITEM_COLUMNS)].copy()
    for col in OPTIONAL_COLUMNS:
        df[col] = pd.to_numeric(items[col], errors="raise").astype(float) if col in items else np.nan
    df["measurable"] = items["measurable"].astype(bool) if "measurable" in items else True
    for col in ("model", "rung", "family", "item_id", "correct"):
        if df[col].isna().any():
            raise ValueError(f"items has {int(df[col].isna().sum())} null values in {col!r}")
    for col in ("model", "rung", "family", "item_id", "mode"):
        df[col] = df[col].astype(str)
    bad = ~df["correct"].isin([True, False, 0, 1])
    if bad.any():
        raise ValueError(f"items['correct'] must be boolean; got e.g. {df['correct'][bad].iloc[0]!r}")
    df["correct"] = df["correct"].astype(bool)
    odd = ~df["mode"].isin(["loglik", "generate"])
    if odd.any():
        raise ValueError(f"items['mode'] must be 'loglik' or 'generate'; got {df['mode'][odd].iloc[0]!r}")
    df["extracted"] = df["extracted"].astype(object).where(df["extracted"].notna(), "").astype(str)
    for col in ("margin", "gold_logprob", "ref_answer_logprob", "answer_kl", "answer_same_top"):
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
        if ref not in set(sub["rung"]):
            raise ValueError(f"model {model!r}: reference rung {ref!r} has no item rows "
                             f"(rungs present: {sorted(set(sub['rung']))})")
    return df


def _cell_rows(model, family, ref, floor, rungs, wide):
    """Raw quantities of one model × family: one row per lens and rung, and accuracy rows."""
    corr = wide["correct"]
    present = corr.notna()
    acc, rows = [], []
    for rung in [ref, *([floor] if floor else []), *rungs]:
        k = corr[rung][present[rung]].astype(bool)
        acc.append({"model": model, "family": family, "rung": rung,
                    "is_reference": rung == ref, "is_floor": rung == floor,
                    "n": len(k), "n_correct": int(k.sum())})
    for rung in rungs:
        both = (present[ref] & present[rung]).to_numpy()
        kl = wide["answer_kl"][rung].to_numpy(float)[both]
        top = wide["answer_same_top"][rung].to_numpy(float)[both]
        common = {"model": model, "family": family, "rung": rung, "reference": ref,
                  "kl_mean": np.nanmean(kl) if np.isfinite(kl).any() else np.nan,
                  "same_top_rate": np.nanmean(top) if np.isfinite(top).any() else np.nan}
        rows += [{**common, "lens": lens.name, **lens.cell(wide, ref, rung, floor)}
                 for lens in LENSES.values()]
    return acc, rows


def _lens_statistics(cmp: pd.DataFrame, s: Settings) -> pd.DataFrame:
    """Estimate, interval, p-value, directional p and smallest reachable p of every row."""
    out = cmp.copy()
    for col in (*STATISTICS, *(c for lens in LENSES.values() for c in lens.columns)):
        out[col] = np.nan
    out["p_method"] = ""
    for name, lens in LENSES.items():
        mine = (out["lens"] == name).to_numpy()
        if mine.any():
            res = lens.statistics(out[mine], s)
            for col in res.columns:
                out.loc[res.index, col] = res[col]
    return out


def _multiplicity(out: pd.DataFrame, order: Mapping[str, list[str]], s: Settings) -> pd.DataFrame:
    """Tarone screen, graph procedure, planned MDE and decision, per model × lens."""
    out = out.assign(testable=False, reject=False, level=np.nan, tarone_k=np.nan,
                     planned_mde=np.nan, mde_basis="", decision=NOT_MEASURABLE)
    out["decision"] = out["decision"].astype(object)
    for (model, name), g in out[out["measurable"]].groupby(["model", "lens"], sort=True):
        lens = LENSES[name]
        fams = sorted(g["family"].unique())
        rungs = order[model]  # lowest bpw first
        pos = {(f, r): (i, j) for i, f in enumerate(fams) for j, r in enumerate(rungs)}
        fi = np.array([pos[(f, r)][0] for f, r in zip(g["family"], g["rung"], strict=True)])
        rj = np.array([pos[(f, r)][1] for f, r in zip(g["family"], g["rung"], strict=True)])
        pm = np.full((len(fams), len(rungs)), np.nan)
        mp = np.full((len(fams), len(rungs)), np.nan)
        pm[fi, rj], mp[fi, rj] = g["p_seq"].to_numpy(float), g["min_p"].to_numpy(float)
        fam_tests = multiplicity.family_of_tests(pm, mp, s.alpha)
        testable, reject = fam_tests.testable[fi, rj], fam_tests.reject[fi, rj]
        level, tar = fam_tests.level, fam_tests
        planned = lens.mde(g, level, s)
        lab = np.where(testable, lens.decide(g, reject, level, s), UNTESTABLE)
        reject = reject & np.isin(lab, [relevance.BEYOND, relevance.CHANGE])  # never contrary
        for col, v in (("testable", testable), ("reject", reject), ("level", level),
                       ("tarone_k", float(tar.tarone_k)), ("planned_mde", planned.mde),
                       ("mde_basis", planned.basis),
                       ("decision", lab)):
            out.loc[g.index, col] = v
    out["equivalence_margin"], out["unit"] = np.nan, ""
    for name, lens in LENSES.items():
        mine = out["lens"] == name
        out.loc[mine, "equivalence_margin"] = lens.margins(out[mine], s)
        out.loc[mine, "unit"] = lens.units(out[mine])
    out["mde_unit"] = out["lens"].map({k: v.mde_unit for k, v in LENSES.items()})
    return out


def lens_grid(items: pd.DataFrame, reference: Mapping[str, str], bpw: Mapping, *,
              settings: Settings = DEFAULT_SETTINGS) -> Grid:
    """
    Compare every rung with its model's reference on every registered lens, per family.

    Parameters
    ----------
    items : pandas.DataFrame
        The sweep's item rows (see :func:`validate_items`). Rows of the pseudo-rung
        :data:`~gguf_fragility.engine.rungs.NOISE_FLOOR` are the noise floor, never a rung.
    reference : mapping of str to str
        Reference rung of each model (the ladder's ``is_reference``).
    bpw : mapping of (model, rung) to float
        Real bits per weight of each ladder rung; orders the fixed sequence (lowest first).
    settings : Settings
        Level, McNemar variant, equivalence margins, design discordance, bootstrap.

    Returns
    -------
    Grid
        ``comparisons``: one row per model × lens × family × rung with ``n``, the lens's
        own columns (``deaths, resurrections, acc_ref, accuracy``; ``flips, flip_rate,
        flip_ci_low, flip_ci_high, floor_flips, floor_flip_rate, rung_only, floor_only,
        floor``; ``scale, median, effect_nats, ci_low_nats, ci_high_nats, n_collapse,
        collapse_share_high, floor_mean, floor_sd``), ``effect`` (correctness: accuracy
        rung minus reference; fidelity: flip rate minus the floor's; margin: mean change of
        the gold-answer or reply per-token probability, points) with ``ci_low, ci_high``
        (Tango for the first two, collapse-robust for the margin), ``p_value, p_method``,
        ``min_p`` (smallest reachable p), ``p_beyond`` (p of "the loss is at most the
        margin"), ``testable`` (Tarone), ``tarone_k``, ``level`` (the corrected level of a
        family's first step), ``reject`` (the graph rejected "no change" and the decision
        says a change or a loss beyond the margin: a rejection never sits beside a
        contrary decision), ``planned_mde`` in ``mde_unit``, ``decision`` (a label of
        :mod:`gguf_fragility.stats.relevance`), ``equivalence_margin`` (the row's relevance
        margin) in ``unit``, ``kl_mean, same_top_rate``, ``measurable``.
        ``accuracy``: model × family × rung with Wilson intervals.

    Notes
    -----
    ``p_seq`` (the p-value the sequence uses) is the two-sided p on the loss side only
    (1 where the rung did better), so a rejection is always a loss.
    """
    df = validate_items(items, reference)
    acc_rows, rows = [], []
    order = {}
    values = ["correct", "extracted", "mode", "margin", "gold_logprob", "ref_answer_logprob",
              "answer_kl", "answer_same_top", *OPTIONAL_COLUMNS]
    measurable = df.groupby(["model", "family"])["measurable"].first()
    for model, sub in df.groupby("model", sort=True):
        ref = reference[model]
        present = set(sub["rung"])
        floor = NOISE_FLOOR if NOISE_FLOOR in present else None
        rungs = [r for r in present if r not in (ref, NOISE_FLOOR)]
        missing = [r for r in rungs if (model, r) not in bpw]
        if missing:
            raise ValueError(f"model {model!r}: rungs {missing} have no ladder row (bpw)")
        order[model] = sorted(rungs, key=lambda r: (float(bpw[(model, r)]), r))
        wide = sub.set_index(["family", "item_id", "rung"])[values].unstack("rung")
        fams = wide.index.get_level_values("family").to_numpy()
        for family in sorted(set(fams)):
            a, c = _cell_rows(model, family, ref, floor, order[model], wide[fams == family])
            acc_rows += a
            rows += [{**r, "measurable": bool(measurable[(model, family)])} for r in c]
    if not rows:
        raise ValueError("no comparisons: every model has only its reference rung")
    cmp = _multiplicity(_lens_statistics(pd.DataFrame(rows), settings), order, settings)
    cmp = cmp.drop(columns=[c for c in cmp.columns if c.startswith("_")])  # per-item arrays
    cmp["bpw"] = [float(bpw[(m, r)]) for m, r in zip(cmp["model"], cmp["rung"], strict=True)]
    lens_pos = {k: i for i, k in enumerate(LENSES)}
    cmp = cmp.assign(_l=cmp["lens"].map(lens_pos)).sort_values(
        ["model", "_l", "family", "bpw"], ascending=[True, True, True, False],
        ignore_index=True).drop(columns=["_l", "p_seq"])
    first = ["model", "lens", "family", "rung", "bpw", "reference", "measurable", "n", "effect",
             "ci_low", "ci_high", "unit", "equivalence_margin", "decision", "p_value",
             "p_beyond", "p_method", "testable", "reject", "planned_mde", "mde_unit",
             "mde_basis", "level", "tarone_k", "min_p"]
    cmp = cmp[first + [c for c in cmp.columns if c not in first]]
    acc = pd.DataFrame(acc_rows)
    nn = np.maximum(acc["n"].to_numpy(), 1)
    lo, hi = proportion_confint(acc["n_correct"].to_numpy(), nn, alpha=settings.alpha,
                                method="wilson")
    acc["accuracy"] = acc["n_correct"] / nn
    acc["ci_low"] = np.minimum(lo, acc["accuracy"])
    acc["ci_high"] = np.maximum(hi, acc["accuracy"])
    return Grid(cmp, acc)
