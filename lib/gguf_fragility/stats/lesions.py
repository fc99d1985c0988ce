"""Why a capability dies: the lesion map (chapter 8, with :mod:`gguf_fragility.stats.recipes`).

A *lesion rung* (:func:`gguf_fragility.engine.rungs.lesion_of`) is the intact base
``Q8_0`` with one tensor group at a low type, e.g. ``Q8_0+ffn_down=Q2_K``. Each is swept
like any rung, on the same items against the same F16 reference. Here, per model,
:func:`lesion_map` compares every lesion, the intact base and the full low rung (``Q2_K``)
with the reference on chapter 5's lenses (one :func:`~gguf_fragility.stats.grid.lens_grid`
call: no new test), and :func:`damage_share` says which share of the full rung's loss on
the margin lens (points of gold-answer or per-token reply probability) each lesion alone
reproduces, with a paired bootstrap interval. The sentences about them are
:mod:`gguf_fragility.report.lesions`'. Usage::

    from gguf_fragility import artifacts
    from gguf_fragility.stats import lesions
    r = artifacts.load_results(profile.layout)
    m = lesions.lesion_map(r.items, r.ladder)   # m.lesion_map, m.lesion_shares
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from gguf_fragility.engine.rungs import INTACT_BASE, lesion_of, split_group
from gguf_fragility.stats.grid import lens_grid, validate_items
from gguf_fragility.stats.lens.base import CHANGE
from gguf_fragility.stats.lens.margin import item_pp
from gguf_fragility.stats.lens.registry import with_role
from gguf_fragility.stats.relevance import BEYOND
from gguf_fragility.stats.results import bpw_of, reference_rungs
from gguf_fragility.stats.settings import DEFAULT_SETTINGS, Settings, cell_rng

LESION_ROLE, BASE_ROLE, FULL_ROLE = "lesion", "intact base", "full rung"
SHARE_COLUMNS = ["model", "family", "rung", "group", "kind", "depth", "lesion_type",
                 "full_rung", "measurable", "n", "unit", "margin", "lesion_effect",
                 "lesion_ci_low", "lesion_ci_high", "full_effect", "full_ci_low",
                 "full_ci_high", "share",
                 "share_ci_low", "share_ci_high", "share_method", "lesion_decision",
                 "full_decision", "full_loss_shown"]
MAP_KEYS = ["model", "lens", "family", "rung", "role", "group", "kind", "depth", "lesion_type",
            "bpw", "reference", "measurable", "n", "effect", "ci_low", "ci_high", "decision"]


class Share(NamedTuple):
    """Result of :func:`damage_share`."""

    estimate: float  # mean lesion change / mean full-rung change (1 = all of it)
    ci_low: float
    ci_high: float
    n: int  # items with a finite change at both rungs
    method: str  # "BCa", "percentile" (BCa undefined), "degenerate" or "" (no estimate)


def damage_share(lesion_delta, full_delta, *, n_resamples: int = 10_000, alpha: float = 0.05,
                 rng: np.random.Generator | int | None = None) -> Share:
    """
    Share of a full rung's mean damage that a lesion reproduces, with a paired bootstrap CI.

    Parameters
    ----------
    lesion_delta, full_delta : array_like of float, shape (n_items,)
        Per-item paired change against the reference in one unit (negative = damage; the
        lesion map passes points, :func:`gguf_fragility.stats.lens.margin.item_pp`) under the
        lesion and under the full rung, aligned on item. Items where either is not finite
        are dropped.
    n_resamples : int, default 10000
    alpha : float, default 0.05
        The interval is ``1 - alpha``.
    rng : numpy.random.Generator, int or None

    Returns
    -------
    Share
        ``estimate = mean(lesion_delta) / mean(full_delta)``; its interval from
        :func:`scipy.stats.bootstrap` with ``paired=True`` (items resampled jointly, so the
        correlation between the two changes is kept), BCa, or the percentile interval when
        BCa is undefined; ``degenerate`` when every resample gives the same ratio (then the
        interval is the estimate). NaN with method "" for fewer than 3 items or a zero
        full-rung mean.

    Raises
    ------
    ValueError
        When the two arrays differ in length.

    Notes
    -----
    A ratio of means is unstable when the denominator's interval reaches zero: read a share
    only where the full rung's margin loss is shown (``full_loss_shown`` in
    :func:`lesion_map`'s shares). Shares of different groups need not add up to one: lesions
    interact, and the full rung's mix gives each group its own type (Q2_K keeps ``attn_v`` at
    Q4_K and ``ffn_down`` at Q3_K on Qwen2.5), while a lesion puts the group at the lesion
    type. Coverage of the 95% interval, simulated (normal changes, true share 0.4, 1,500 data
    sets, 999 resamples; ``tests/test_lesions.py`` repeats it with 400): 91.5% at 12 items,
    93.7% at 40. BCa undercovers a little at small samples [1]_; at the profile's 12 items
    read a 95% interval as about a 90% one.

    References
    ----------
    .. [1] Efron, B., Tibshirani, R. J. (1993). An Introduction to the Bootstrap, ch. 14
       (BCa) and ch. 9 (paired data). Chapman & Hall.
    .. [2] SciPy, ``scipy.stats.bootstrap``.
    """
    x, y = np.asarray(lesion_delta, float), np.asarray(full_delta, float)
    if x.shape != y.shape:
        raise ValueError(f"lesion_delta has {x.shape} items, full_delta {y.shape}; align "
                         "both on the same items")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or y.mean() == 0:
        return Share(np.nan, np.nan, np.nan, n, "")
    est = float(x.mean() / y.mean())

    def ratio(a, b, axis=-1):
        with np.errstate(divide="ignore", invalid="ignore"):
            return a.mean(axis) / b.mean(axis)

    if np.allclose(x, est * y):  # every resample has this ratio
        return Share(est, est, est, n, "degenerate")
    for method in ("BCa", "percentile"):
        res = sps.bootstrap((x, y), ratio, paired=True, vectorized=True,
                            n_resamples=n_resamples, confidence_level=1 - alpha,
                            method=method, random_state=rng)
        lo, hi = res.confidence_interval
        if np.isfinite(lo) and np.isfinite(hi):
            return Share(est, float(lo), float(hi), n, method)
    return Share(est, np.nan, np.nan, n, "")


class LesionMap(NamedTuple):
    """Result of :func:`lesion_map`; field name = CSV name."""

    lesion_map: pd.DataFrame  # model × lens × family × rung (lesions, base, full rung)
    lesion_shares: pd.DataFrame  # model × family × lesion: share of the full rung's damage


def lesion_map(items: pd.DataFrame, ladder: pd.DataFrame, *,
               settings: Settings = DEFAULT_SETTINGS) -> LesionMap:
    """
    Per model: every lesion's damage per family on three lenses, and its share of the full
    rung's damage.

    Parameters
    ----------
    items : pandas.DataFrame
        The sweep's item rows (:func:`gguf_fragility.artifacts.load_items`).
    ladder : pandas.DataFrame
        The ladder manifests (``model, rung, is_reference, bpw``).
    settings : Settings
        Level, McNemar variant, margins, bootstrap (``Settings.of(profile)``).

    Returns
    -------
    LesionMap
        ``lesion_map``: :func:`~gguf_fragility.stats.grid.lens_grid`'s columns for the rungs
        of one family of tests per model (the lesions, the intact base ``Q8_0`` and each
        lesion type's full rung, e.g. ``Q2_K``, when swept), each against the reference,
        plus ``role`` ({"lesion", "intact base", "full rung"}), ``group``, ``kind``,
        ``depth`` and ``lesion_type``. ``lesion_shares``: :data:`SHARE_COLUMNS`, one row per
        model × measurable family × lesion whose full rung was swept: the margin-lens mean
        changes of the lesion and of the full rung on the items both scored, in the
        family's ``unit`` (points of gold-answer or per-token reply probability) with the
        lens's relevance ``margin`` in that unit, the share (:func:`damage_share`) and both
        decisions. Without lesion rungs both tables are
        empty, with :data:`MAP_KEYS` and :data:`SHARE_COLUMNS` as their columns.

    Notes
    -----
    The fixed sequence of each family of tests runs from the lowest bpw up (chapter 5's
    design): the full rung first, then the lesions of the largest groups; a lesion is
    tested only after every lower-bpw rung showed a loss in that family. *Undecided* is not
    *harmless*.
    """
    refs = reference_rungs(ladder)
    bpw = bpw_of(ladder)
    maps, shares = [], []
    for model, sub in items.groupby("model", sort=True):
        ref = refs.get(str(model))
        present = set(sub["rung"].astype(str))
        lesions = sorted(r for r in present if lesion_of(r) is not None)
        if ref is None or not lesions:
            continue
        full = sorted({lesion_of(r)[1] for r in lesions} & present)
        roles = {**{r: LESION_ROLE for r in lesions}, **{r: FULL_ROLE for r in full},
                 **({INTACT_BASE: BASE_ROLE} if INTACT_BASE in present else {})}
        rows = sub[sub["rung"].astype(str).isin([ref, *roles])]
        cmp = lens_grid(rows, {model: ref}, bpw, settings=settings).comparisons
        cmp.insert(4, "role", cmp["rung"].map(roles))
        grp = cmp["rung"].map(lambda r: lesion_of(r) or ("", ""))
        cmp.insert(5, "group", grp.str[0])
        cmp.insert(6, "lesion_type", grp.str[1])
        kd = cmp["group"].map(lambda g: split_group(g) if g else (None, None))
        cmp.insert(6, "kind", kd.str[0].fillna(""))
        cmp.insert(7, "depth", kd.str[1].fillna(""))
        maps.append(cmp)
        shares.append(_shares(rows, ref, lesions, set(full), cmp, settings))
    if not maps:
        return LesionMap(pd.DataFrame(columns=MAP_KEYS), pd.DataFrame(columns=SHARE_COLUMNS))
    return LesionMap(pd.concat(maps, ignore_index=True),
                     pd.concat(shares, ignore_index=True)[SHARE_COLUMNS])


def _shares(rows: pd.DataFrame, ref: str, lesions: list[str], full: set[str],
            cmp: pd.DataFrame, s: Settings) -> pd.DataFrame:
    """:func:`damage_share` of every lesion × family of one model (margin lens)."""
    df = validate_items(rows, {rows["model"].iloc[0]: ref})
    model = str(df["model"].iloc[0])
    wide = df.set_index(["family", "item_id", "rung"])[
        ["correct", "extracted", "mode", "margin", "gold_logprob", "ref_answer_logprob",
         "answer_kl", "answer_same_top", "n_gen_tokens"]].unstack("rung")
    dec = cmp[cmp["lens"] == with_role(CHANGE)].set_index(["family", "rung"])
    fams = wide.index.get_level_values("family").to_numpy()
    out = []
    for family in sorted(set(fams)):
        w = wide[fams == family]
        for rung in lesions:
            group, typ = lesion_of(rung)
            if typ not in full:
                continue
            kind, depth = split_group(group)
            d_l, d_f = item_pp(w, ref, rung)[0], item_pp(w, ref, typ)[0]
            sh = damage_share(d_l, d_f, n_resamples=s.n_boot, alpha=s.alpha,
                              rng=cell_rng(s.seed, model, family, rung, "share"))
            ok = np.isfinite(d_l) & np.isfinite(d_f)
            fd, ld = dec.loc[(family, typ)], dec.loc[(family, rung)]
            out.append({"model": model, "family": family, "rung": rung, "group": group,
                        "kind": kind or "", "depth": depth or "", "lesion_type": typ,
                        "full_rung": typ, "measurable": bool(fd["measurable"]), "n": sh.n,
                        "unit": fd["unit"], "margin": fd["equivalence_margin"],
                        "lesion_effect": d_l[ok].mean() if ok.any() else np.nan,
                        "lesion_ci_low": ld["ci_low"], "lesion_ci_high": ld["ci_high"],
                        "full_effect": d_f[ok].mean() if ok.any() else np.nan,
                        "full_ci_low": fd["ci_low"], "full_ci_high": fd["ci_high"],
                        "share": sh.estimate, "share_ci_low": sh.ci_low,
                        "share_ci_high": sh.ci_high, "share_method": sh.method,
                        "lesion_decision": ld["decision"],
                        "full_decision": fd["decision"],
                        "full_loss_shown": fd["decision"] == BEYOND})
    return pd.DataFrame(out, columns=SHARE_COLUMNS)
