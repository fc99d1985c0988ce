"""The lens grid: every model × lens × family × rung against the model's reference.

Builds, from the sweep's item rows, one row per (model, lens, family, rung) for the three
lenses of issue 12 (:mod:`gguf_fragility.stats.lenses`), on every item the reference and
the rung both saw, then runs the family of tests of
:mod:`gguf_fragility.stats.multiplicity` per model and lens and labels every cell.

Usage::

    from gguf_fragility.stats.grid import lens_grid
    g = lens_grid(items, {"smollm2-135m": "F16"}, bpw, seed=0)
    g.comparisons  # one row per model × lens × family × rung
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from gguf_fragility.profile import NOISE_FLOOR
from gguf_fragility.stats import lenses, multiplicity

ITEM_COLUMNS = ("model", "rung", "family", "item_id", "correct", "extracted", "mode", "margin",
                "gold_logprob", "ref_answer_logprob", "answer_kl", "answer_same_top")
LENSES = ("correctness", "fidelity", "margin")
NOT_MEASURABLE = "not measurable"
UNTESTABLE = "untestable"
UNITS = {"correctness": "accuracy (fraction)", "fidelity": "flip rate (fraction)",
         "margin": "nats"}
MDE_POWER = 0.8  # power of the planned minimum detectable effect


class Settings(NamedTuple):
    """The profile settings the grid reads (see :class:`gguf_fragility.profile.Profile`)."""

    alpha: float = 0.05
    mcnemar: str = "exact"
    equivalence_margin: float = 0.05  # correctness and fidelity, fraction of items
    margin_equivalence_nats: float = 0.1  # margin lens, nats
    design_discordance: float = 0.2
    n_boot: int = 10_000
    seed: int = 0


DEFAULT_SETTINGS = Settings()


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


def cell_rng(seed: int, *key: str) -> np.random.Generator:
    """Generator seeded by (seed, key), so a cell's bootstrap ignores the rest of the grid."""
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(key).encode())])


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


def correctness_p(b, c, mcnemar: str = "exact") -> tuple[np.ndarray, np.ndarray]:
    """McNemar p (two-sided) and the loss-side p the sequence uses (1 where ``b <= c``)."""
    p = lenses.mcnemar_test(b, c, method=mcnemar).pvalue
    return p, np.where(np.asarray(b) > np.asarray(c), p, 1.0)


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


def _cell_rows(model, family, ref, floor, rungs, wide, s: Settings):
    """Raw statistics of one model × family: three lens rows per rung, and accuracy rows."""
    corr, ext = wide["correct"], wide["extracted"]
    present = corr.notna()
    acc, rows = [], []
    for rung in [ref, *([floor] if floor else []), *rungs]:
        k = corr[rung][present[rung]].astype(bool)
        acc.append({"model": model, "family": family, "rung": rung,
                    "is_reference": rung == ref, "is_floor": rung == floor,
                    "n": len(k), "n_correct": int(k.sum())})
    has_floor = floor is not None
    for rung in rungs:
        both = (present[ref] & present[rung]).to_numpy()
        x0 = corr[ref].to_numpy(object)[both].astype(bool)
        x1 = corr[rung].to_numpy(object)[both].astype(bool)
        common = {"model": model, "family": family, "rung": rung, "reference": ref,
                  "kl_mean": np.nanmean(wide["answer_kl"][rung].to_numpy(float)[both])
                  if np.isfinite(wide["answer_kl"][rung].to_numpy(float)[both]).any() else np.nan,
                  "same_top_rate": np.nanmean(wide["answer_same_top"][rung].to_numpy(float)[both])
                  if np.isfinite(wide["answer_same_top"][rung].to_numpy(float)[both]).any()
                  else np.nan}
        rows.append({**common, "lens": "correctness", "n": int(both.sum()),
                     "deaths": int((x0 & ~x1).sum()), "resurrections": int((~x0 & x1).sum()),
                     "acc_ref": x0.mean() if len(x0) else np.nan,
                     "accuracy": x1.mean() if len(x1) else np.nan})
        fl = both & (present[floor].to_numpy() if has_floor else True)
        e0 = ext[ref].to_numpy(object)[fl]
        f_r = ext[rung].to_numpy(object)[fl] != e0
        f_f = (ext[floor].to_numpy(object)[fl] != e0) if has_floor else np.zeros(len(e0), bool)
        rows.append({**common, "lens": "fidelity", "n": int(fl.sum()), "_flips": f_r.astype(bool),
                     "_floor_flips": f_f.astype(bool),
                     "floor": "measured" if has_floor else "absent: tested against zero"})
        d = item_delta(wide, ref, rung)
        ok = np.isfinite(d)
        floor_d = item_delta(wide, ref, floor) if has_floor else np.full(len(d), np.nan)
        fok = ok & np.isfinite(floor_d)
        rows.append({**common, "lens": "margin", "n": int(ok.sum()), "_delta": d[ok],
                     "floor_mean": floor_d[fok].mean() if fok.any() else np.nan,
                     "floor_sd": floor_d[fok].std(ddof=1) if fok.sum() > 1 else np.nan,
                     "floor": "measured" if has_floor else "absent"})
    return acc, rows


def _lens_statistics(cmp: pd.DataFrame, s: Settings) -> pd.DataFrame:
    """Estimate, interval, p-value, directional p and smallest reachable p of every row."""
    out = cmp.copy()
    for col in ("effect", "ci_low", "ci_high", "p_value", "p_seq", "min_p", "flips",
                "flip_rate", "flip_ci_low", "flip_ci_high", "floor_flips", "floor_flip_rate",
                "rung_only", "floor_only", "median"):
        out[col] = np.nan
    out["p_method"] = ""
    c = (out["lens"] == "correctness").to_numpy()
    b, r, n = (out.loc[c, k].to_numpy(np.int64) for k in ("deaths", "resurrections", "n"))
    ci = lenses.paired_diff_ci(b, r, n, alpha=s.alpha)
    out.loc[c, "effect"], out.loc[c, "ci_low"], out.loc[c, "ci_high"] = ci.estimate, ci.low, ci.high
    out.loc[c, "p_value"], out.loc[c, "p_seq"] = correctness_p(b, r, s.mcnemar)
    out.loc[c, "min_p"] = lenses.mcnemar_min_pvalue(n)
    out.loc[c, "p_method"] = ("McNemar exact, two-sided" if s.mcnemar == "exact"
                              else "McNemar mid-p, two-sided (labelled option)")
    for i in np.flatnonzero((out["lens"] == "fidelity").to_numpy()):
        row = out.iloc[i]
        fr, ff = row["_flips"], row["_floor_flips"]
        idx = out.index[i]
        if len(fr) == 0:
            out.loc[idx, ["p_seq", "min_p", "p_value"]] = 1.0
            continue
        f = lenses.flip_vs_floor(fr, ff, alpha=s.alpha)
        u, v, nn = int(f.rung_only), int(f.floor_only), int(f.n)
        ci = lenses.paired_diff_ci(v, u, nn, alpha=s.alpha)  # (u - v) / n: excess flips
        out.loc[idx, ["flips", "flip_rate", "flip_ci_low", "flip_ci_high", "floor_flips",
                      "floor_flip_rate", "rung_only", "floor_only"]] = [
            int(fr.sum()), float(f.rung_rate), float(f.rung_low), float(f.rung_high),
            int(ff.sum()), float(f.floor_rate), u, v]
        out.loc[idx, ["effect", "ci_low", "ci_high"]] = [float(ci.estimate), float(ci.low),
                                                         float(ci.high)]
        out.loc[idx, ["p_value", "p_seq", "min_p"]] = [float(f.pvalue), float(f.pvalue),
                                                       0.5 ** nn]
        out.loc[idx, "p_method"] = "exact paired, one-sided (rung flips more than the floor)"
    for i in np.flatnonzero((out["lens"] == "margin").to_numpy()):
        row = out.iloc[i]
        d, idx = row["_delta"], out.index[i]
        out.loc[idx, "p_method"] = "Wilcoxon signed-rank, two-sided; BCa interval of the mean"
        if len(d) < 3:
            out.loc[idx, ["p_value", "p_seq", "min_p"]] = [np.nan, 1.0, 1.0]
            out.loc[idx, "effect"] = d.mean() if len(d) else np.nan
            continue
        m = lenses.margin_test(d, n_resamples=s.n_boot, alpha=s.alpha,
                               rng=cell_rng(s.seed, row["model"], row["family"], row["rung"]))
        lo, hi = float(m.ci_low), float(m.ci_high)
        if np.ptp(d) == 0:  # every item moved by the same amount: every resample has that mean
            lo = hi = float(m.mean)
        out.loc[idx, ["effect", "median", "ci_low", "ci_high", "p_value"]] = [
            float(m.mean), float(m.median), lo, hi, float(m.pvalue)]
        out.loc[idx, "p_seq"] = float(margin_p(d)[1])
        out.loc[idx, "min_p"] = min(1.0, 2 * 0.5 ** len(d))
    return out.drop(columns=["_flips", "_floor_flips", "_delta"])


def _multiplicity(out: pd.DataFrame, order: Mapping[str, list[str]], s: Settings) -> pd.DataFrame:
    """Tarone screen, graph procedure, planned MDE and decision, per model × lens."""
    out = out.assign(testable=False, reject=False, level=np.nan, tarone_k=np.nan,
                     planned_mde=np.nan, mde_basis="", decision=NOT_MEASURABLE)
    out["decision"] = out["decision"].astype(object)
    for (model, lens), g in out[out["measurable"]].groupby(["model", "lens"], sort=True):
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
        n = g["n"].to_numpy(np.int64)
        if lens == "margin":
            mde, basis = _wilcoxon_mde(n, level), "Wilcoxon, normal shift (ARE 3/pi)"
        else:
            mde = multiplicity.planned_mde(n, alpha=level, power=MDE_POWER,
                                           discordance=s.design_discordance)
            one_way = np.isnan(mde)
            mde[one_way] = multiplicity.planned_mde_one_way(n[one_way], alpha=level,
                                                            power=MDE_POWER)
            basis = np.where(one_way, "exact, one-way (every discordant item a loss)",
                             f"exact, design discordance {s.design_discordance:g}")
        if lens == "fidelity":  # loss = more flips than the floor: the interval's sign flips
            lab = lenses.decide(-g["ci_high"], -g["ci_low"], reject, s.equivalence_margin)
        elif lens == "margin":
            lab = lenses.decide(g["ci_low"], g["ci_high"], reject, s.margin_equivalence_nats)
        else:
            lab = lenses.decide(g["ci_low"], g["ci_high"], reject, s.equivalence_margin)
        lab = np.where(testable, lab, UNTESTABLE)
        for col, v in (("testable", testable), ("reject", reject), ("level", level),
                       ("tarone_k", float(tar.tarone_k)), ("planned_mde", mde), ("mde_basis", basis),
                       ("decision", lab)):
            out.loc[g.index, col] = v
    out["equivalence_margin"] = np.where(out["lens"] == "margin", s.margin_equivalence_nats,
                                         s.equivalence_margin)
    out["unit"] = out["lens"].map(UNITS)
    out["mde_unit"] = np.where(out["lens"] == "margin", "SD of the per-item change",
                               out["unit"])
    return out


def _wilcoxon_mde(n: np.ndarray, level: float) -> np.ndarray:
    """
    Planned shift (in SDs of the per-item change) the two-sided Wilcoxon test detects.

    ``(z_{1 - level/2} + z_power) / sqrt(n 3/pi)``: the normal shift alternative with the
    signed-rank test's asymptotic relative efficiency 3/pi against the t-test
    (Lehmann 1975, Nonparametrics, ch. 4); NaN below 3 items.
    """
    z = sps.norm.isf(level / 2) + sps.norm.isf(1 - MDE_POWER)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n >= 3, z / np.sqrt(n * 3 / np.pi), np.nan)


def lens_grid(items: pd.DataFrame, reference: Mapping[str, str], bpw: Mapping, *,
              settings: Settings = DEFAULT_SETTINGS) -> Grid:
    """
    Compare every rung with its model's reference on three lenses, per family.

    Parameters
    ----------
    items : pandas.DataFrame
        The sweep's item rows (see :func:`validate_items`). Rows of the pseudo-rung
        :data:`~gguf_fragility.profile.NOISE_FLOOR` are the noise floor, never a rung.
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
        counts (``deaths, resurrections, acc_ref, accuracy``; ``flips, flip_rate,
        flip_ci_low, flip_ci_high, floor_flips, floor_flip_rate, rung_only, floor_only,
        floor``; ``median, floor_mean, floor_sd``), ``effect`` (correctness: accuracy rung
        minus reference; fidelity: flip rate minus the floor's; margin: mean change, nats)
        with ``ci_low, ci_high`` (Tango for the first two, expanded BCa for the margin),
        ``p_value, p_method``, ``min_p`` (smallest reachable p), ``testable`` (Tarone),
        ``tarone_k``, ``level`` (the corrected level of a family's first step),
        ``reject`` (the graph), ``planned_mde`` in ``mde_unit``, ``decision``,
        ``equivalence_margin``, ``unit``, ``kl_mean, same_top_rate``, ``measurable``.
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
              "answer_kl", "answer_same_top"]
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
            a, c = _cell_rows(model, family, ref, floor, order[model], wide[fams == family],
                              settings)
            acc_rows += a
            rows += [{**r, "measurable": bool(measurable[(model, family)])} for r in c]
    if not rows:
        raise ValueError("no comparisons: every model has only its reference rung")
    cmp = _multiplicity(_lens_statistics(pd.DataFrame(rows), settings), order, settings)
    cmp["bpw"] = [float(bpw[(m, r)]) for m, r in zip(cmp["model"], cmp["rung"], strict=True)]
    lens_pos = {k: i for i, k in enumerate(LENSES)}
    cmp = cmp.assign(_l=cmp["lens"].map(lens_pos)).sort_values(
        ["model", "_l", "family", "bpw"], ascending=[True, True, True, False],
        ignore_index=True).drop(columns=["_l", "p_seq"])
    first = ["model", "lens", "family", "rung", "bpw", "reference", "measurable", "n", "effect",
             "ci_low", "ci_high", "unit", "p_value", "p_method", "testable", "reject",
             "decision", "planned_mde", "mde_unit", "mde_basis", "level", "tarone_k", "min_p",
             "equivalence_margin"]
    cmp = cmp[first + [c for c in cmp.columns if c not in first]]
    acc = pd.DataFrame(acc_rows)
    nn = np.maximum(acc["n"].to_numpy(), 1)
    lo, hi = proportion_confint(acc["n_correct"].to_numpy(), nn, alpha=settings.alpha,
                                method="wilson")
    acc["accuracy"] = acc["n_correct"] / nn
    acc["ci_low"] = np.minimum(lo, acc["accuracy"])
    acc["ci_high"] = np.maximum(hi, acc["accuracy"])
    return Grid(cmp, acc)
