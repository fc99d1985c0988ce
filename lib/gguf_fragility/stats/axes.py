"""Axes beside the weight ladder: a quantized KV cache, and an importance matrix.

Rungs of these axes (:mod:`gguf_fragility.engine.rungs`) are swept like any rung, on the
same items and against the same F16 reference's answers and replies. Here each is
compared, per family, with a *comparator* that differs from it in one setting, on the
three existing lenses (:func:`gguf_fragility.stats.grid.lens_grid` with the comparator in
the reference's place; no new statistics):

- ``kv_cache``: ``X+kv_<type>`` against the control ``X+kv_f16`` when the profile lists it
  (same weights, same flash-attention setting: only the cache type differs), else the
  plain rung ``X`` (f16 cache with flash attention off: the cache type and the attention
  kernel change together);
- ``imatrix``: ``W+imatrix_<text>`` against ``W`` (same ftype and overrides, no importance
  matrix);
- ``imatrix_text``: ``W+imatrix_<text>`` against ``W+imatrix_wiki`` (same ftype, another
  calibration text): does the calibration domain move damage, e.g. toward or away from
  the ``code`` family?

Usage::

    from gguf_fragility import artifacts
    from gguf_fragility.stats import axes
    r = artifacts.load_results(profile.layout)
    t = axes.analyse_axes(profile, r)   # axis_comparisons and kv_costs, written to tables/

Its sentences are :func:`gguf_fragility.report.findings.axis_findings`.
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from gguf_fragility.artifacts import Results
from gguf_fragility.engine.kvcache import bytes_per_element
from gguf_fragility.engine.rungs import (
    IMATRIX_PREFIX,
    IMATRIX_TEXTS,
    KV_DEFAULT,
    is_kv_rung,
    parse_rung,
    parse_weights,
)
from gguf_fragility.profile import Profile
from gguf_fragility.stats.grid import lens_grid
from gguf_fragility.stats.lens.registry import undirected
from gguf_fragility.stats.relevance import BEYOND, NO_FLOOR
from gguf_fragility.stats.results import bpw_of
from gguf_fragility.stats.settings import DEFAULT_SETTINGS, Settings
from gguf_fragility.store import write_tables

CONTROL = "the control: same flash attention, only the cache type differs"
PLAIN = ("the plain rung: f16 cache with flash attention off, so the cache type and the "
         "attention kernel differ together")
NO_IMATRIX = "the same type without an importance matrix"
OTHER_TEXT = f"the same type with the {IMATRIX_TEXTS[0]} importance matrix: only the text differs"
AXES = ("kv_cache", "imatrix", "imatrix_text")
GAIN = "gain shown"  # the comparator's loss against the axis rung (see axis_comparisons)
CHANGE = "change shown"  # fidelity against a comparator that is no closer to the reference
PAIR_COLUMNS = ["model", "axis", "rung", "comparator", "comparator_kind"]
COLUMNS = ["model", "axis", "rung", "comparator", "comparator_kind", "bits", "lens", "family",
           "measurable", "n", "effect", "ci_low", "ci_high", "unit", "p_value", "p_method",
           "testable", "reject", "decision", "equivalence_margin", "planned_mde", "mde_unit",
           "level"]


def axis_pairs(rungs_by_model: pd.DataFrame) -> pd.DataFrame:
    """
    Each axis rung with the comparator it is tested against.

    Parameters
    ----------
    rungs_by_model : pandas.DataFrame
        ``model, rung``: the rungs present (sweep rows, or a profile's lists).

    Returns
    -------
    pandas.DataFrame
        :data:`PAIR_COLUMNS`, one row per rung × axis whose comparator is present:
        ``kv_cache`` for ``X+kv_<type>`` (type not f16) against ``X+kv_f16``
        (:data:`CONTROL`) or else ``X`` (:data:`PLAIN`); ``imatrix`` for an imatrix rung
        against the same name without ``+imatrix_<text>`` (:data:`NO_IMATRIX`);
        ``imatrix_text`` for an imatrix rung whose text is not ``wiki`` against the same
        name with ``+imatrix_wiki`` (:data:`OTHER_TEXT`). A rung may be on two axes
        (``Q2_K+imatrix_code``: against ``Q2_K`` and ``Q2_K+imatrix_wiki``).
    """
    rows = []
    for model, g in rungs_by_model.groupby("model", sort=True):
        present = set(g["rung"].astype(str))
        for rung in sorted(present):
            try:
                spec = parse_rung(rung)
            except ValueError:  # the noise floor and other pseudo-rungs
                continue
            if is_kv_rung(rung):
                if spec.kv_cache == KV_DEFAULT:
                    continue
                control = f"{spec.weights}+kv_{KV_DEFAULT}"
                for comparator, kind in ((control, CONTROL), (spec.weights, PLAIN)):
                    if comparator in present:
                        rows.append([model, "kv_cache", rung, comparator, kind])
                        break
                continue
            text = parse_weights(rung).imatrix
            if text is None:
                continue
            plain = rung.replace(f"+{IMATRIX_PREFIX}{text}", "")
            if plain in present:
                rows.append([model, "imatrix", rung, plain, NO_IMATRIX])
            other = rung.replace(f"+{IMATRIX_PREFIX}{text}", f"+{IMATRIX_PREFIX}{IMATRIX_TEXTS[0]}")
            if text != IMATRIX_TEXTS[0] and other in present:
                rows.append([model, "imatrix_text", rung, other, OTHER_TEXT])
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def axis_comparisons(items: pd.DataFrame, ladder: pd.DataFrame, *,
                     settings: Settings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """
    Per family, what each axis rung changes against its comparator, on three lenses.

    Parameters
    ----------
    items : pandas.DataFrame
        The sweep's item rows (:func:`gguf_fragility.artifacts.load_items`), axis rungs
        included; the noise floor's rows are ignored.
    ladder : pandas.DataFrame
        The ladder manifests (``model, rung, bpw``): the bits of an imatrix rung.
    settings : Settings
        Level, McNemar variant, margins, bootstrap (``Settings.of(profile)``).

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS`: one row per model × axis × rung × lens × family, with ``effect``
        the rung minus its comparator (correctness: accuracy; fidelity: share of answers
        that differ from the comparator's; margin: mean change in nats of the answer's
        log-probability; generative items: the F16 reference's reply teacher-forced under
        both), its interval, p-value and decision, exactly as chapter 5 computes them
        against the reference. ``bits`` orders each fixed sequence: the cache's bits per
        element (``kv_cache``) or the file's real bits per weight (imatrix axes). Empty
        when no axis rung has a comparator.

    Notes
    -----
    Each model × axis × comparator is one family of tests (one :func:`lens_grid` call with
    the comparator as the reference): the fixed sequence runs from the fewest bits up (ties
    by name), Holm passes across families, per lens. :func:`lens_grid` tests the loss side
    only; an axis may also help (an importance matrix is meant to), so each rung is tested
    the other way too, with the rung as the reference: the comparator's *loss shown* there
    is the rung's :data:`GAIN` here (correctness and margin; flips have no direction), at
    level alpha divided by the rungs sharing the comparator (Bonferroni). Both directions
    use two-sided p-values, so the two together keep a two-sided test's level. On the
    imatrix axes the comparator is no closer to the reference than the rung, so answers
    that differ from it are a :data:`CHANGE`, not a loss (fidelity lens). There is no noise floor for the
    comparator: fidelity flips are tested against zero, so a kernel change alone (flash
    attention, against a plain-rung comparator) or the rounding of another imatrix can
    show up as flips. Only items both rungs answered count.
    """
    pairs = axis_pairs(items[["model", "rung"]].drop_duplicates())
    bpw = bpw_of(ladder)
    frames = []
    for (model, axis, comparator, kind), g in pairs.groupby(
            ["model", "axis", "comparator", "comparator_kind"], sort=True):
        rungs = [comparator, *g["rung"]]
        sub = items[(items["model"] == model) & items["rung"].isin(rungs)]
        bits = {(model, r): (8 * bytes_per_element(parse_rung(r).cache) if axis == "kv_cache"
                             else bpw[(model, r)]) for r in rungs}
        cmp = lens_grid(sub, {model: comparator}, bits, settings=settings).comparisons
        cmp = _mark_gains(cmp, sub, model, comparator, bits, settings)
        if axis != "kv_cache":  # plain Q2_K is no standard for the imatrix: flips are changes
            cmp.loc[cmp["lens"].isin(undirected()) & cmp["decision"].isin([BEYOND, NO_FLOOR]),
                    "decision"] = CHANGE
        frames.append(cmp.assign(axis=axis, comparator=comparator, comparator_kind=kind,
                                 bits=cmp["bpw"]))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def _mark_gains(cmp: pd.DataFrame, sub: pd.DataFrame, model: str, comparator: str,
                bits: dict, settings: Settings) -> pd.DataFrame:
    """``cmp`` with ``decision`` set to :data:`GAIN` where the comparator shows a loss
    against the rung (the rung as reference; see :func:`axis_comparisons`)."""
    rungs = sorted(set(cmp["rung"]))
    level = settings.replace(alpha=settings.alpha / len(rungs))
    out = cmp.copy()
    for rung in rungs:
        pair = sub[sub["rung"].isin([rung, comparator])]
        swap = lens_grid(pair, {model: rung}, bits, settings=level).comparisons
        won = swap[(swap["decision"] == BEYOND) & ~swap["lens"].isin(undirected())]
        hit = out["rung"].eq(rung) & out.set_index(["lens", "family"]).index.isin(
            list(zip(won["lens"], won["family"], strict=True)))
        out.loc[hit, "decision"] = GAIN
    return out


def kv_costs(costs: pd.DataFrame | None) -> pd.DataFrame:
    """
    Per model × rung: the KV-cache type, its bytes at the profile's ``n_ctx`` (computed,
    and llama.cpp's KV buffer), llama.cpp's planned memory and the measured cost
    (``_cost.json`` of the sweep; peak RSS secondary); an empty table when there are none.
    """
    cols = ["model", "rung", "kv_cache", "n_ctx", "kv_cache_bytes", "kv_cache_mib",
            "kv_buffer_bytes", "planned_memory_bytes", "peak_rss_bytes", "prompt_tps",
            "gen_tps"]
    if costs is None:
        return pd.DataFrame(columns=cols)
    out = costs.reindex(columns=cols)
    out["kv_cache_mib"] = pd.to_numeric(out["kv_cache_bytes"], errors="coerce") / 2**20
    return out.sort_values(["model", "rung"], ignore_index=True)


class AxesTables(NamedTuple):
    """Chapter 7's tables; field name = CSV name in ``tables/``."""

    axis_comparisons: pd.DataFrame  # model × axis × rung × lens × family (see axis_comparisons)
    kv_costs: pd.DataFrame  # model × rung: cache type, its bytes at n_ctx, measured cost


def analyse_axes(profile: Profile, r: Results) -> AxesTables:
    """The axes of a run with the profile's settings, written to ``tables/``."""
    tables = AxesTables(axis_comparisons(r.items, r.ladder, settings=Settings.of(profile)),
                        kv_costs(r.costs))
    write_tables(tables, profile.layout.tables_dir)
    return tables
