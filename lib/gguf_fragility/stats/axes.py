"""Axes beside the weight ladder: what a quantized KV cache costs on top of a rung.

A KV-cache rung ``X+kv_<type>`` (:mod:`gguf_fragility.engine.kvcache`) is swept like any
rung, on the same items and against the same F16 reference's answers and replies. Here it
is compared, per family, with its comparator on the three existing lenses
(:func:`gguf_fragility.stats.grid.lens_grid`, no new statistics): the control
``X+kv_f16`` when the profile lists it (same weights, same flash-attention setting: only the
cache type differs), else the plain rung ``X`` (f16 cache with flash attention off, so the
cache type and the attention kernel change together). Usage::

    from gguf_fragility.stats import axes, inputs
    r = inputs.load_results(profile.layout)
    t = axes.analyse_kv(profile, r)   # kv_axis(r.items, ...) and kv_costs, written to tables/
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from gguf_fragility.engine.kvcache import bytes_per_element
from gguf_fragility.engine.rungs import KV_DEFAULT, is_kv_rung, parse_rung
from gguf_fragility.profile import Profile
from gguf_fragility.stats.grid import DEFAULT_SETTINGS, Settings, lens_grid
from gguf_fragility.stats.inputs import Results
from gguf_fragility.stats.lenses import EQUIVALENT, LOSS
from gguf_fragility.stats.results import settings_of
from gguf_fragility.store import write_tables

CONTROL = "the control: same flash attention, only the cache type differs"
PLAIN = ("the plain rung: f16 cache with flash attention off, so the cache type and the "
         "attention kernel differ together")
COLUMNS = ["model", "weights", "rung", "kv_cache", "cache_bits", "comparator",
           "comparator_kind", "lens", "family", "measurable", "n", "effect", "ci_low",
           "ci_high", "unit", "p_value", "p_method", "testable", "reject", "decision",
           "equivalence_margin", "planned_mde", "mde_unit", "level"]


def kv_pairs(rungs_by_model: pd.DataFrame) -> pd.DataFrame:
    """
    Each quantized-cache KV rung with its comparator.

    Parameters
    ----------
    rungs_by_model : pandas.DataFrame
        ``model, rung``: the rungs present (sweep rows, or a profile's lists).

    Returns
    -------
    pandas.DataFrame
        ``model, weights, rung, kv_cache, comparator, comparator_kind``: one row per rung
        ``X+kv_<type>`` with ``<type>`` not f16 whose comparator is present; the comparator
        is ``X+kv_f16`` when present (:data:`CONTROL`), else ``X`` (:data:`PLAIN`). A KV
        rung with neither is left out.
    """
    rows = []
    for model, g in rungs_by_model.groupby("model", sort=True):
        present = set(g["rung"].astype(str))
        for rung in sorted(present):
            if not is_kv_rung(rung) or (spec := parse_rung(rung)).kv_cache == KV_DEFAULT:
                continue
            control = f"{spec.weights}+kv_{KV_DEFAULT}"
            if control in present:
                comparator, kind = control, CONTROL
            elif spec.weights in present:
                comparator, kind = spec.weights, PLAIN
            else:
                continue
            rows.append({"model": model, "weights": spec.weights, "rung": rung,
                         "kv_cache": spec.kv_cache, "comparator": comparator,
                         "comparator_kind": kind})
    return pd.DataFrame(rows, columns=["model", "weights", "rung", "kv_cache", "comparator",
                                       "comparator_kind"])


def kv_axis(items: pd.DataFrame, *, settings: Settings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """
    Per family, what a quantized KV cache changes against its comparator, on three lenses.

    Parameters
    ----------
    items : pandas.DataFrame
        The sweep's item rows (:func:`gguf_fragility.stats.inputs.load_items`), KV-cache
        rungs included; the noise floor's rows are ignored.
    settings : Settings
        Level, McNemar variant, margins, bootstrap (:func:`~gguf_fragility.stats.results.settings_of`).

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS`: one row per model × weights rung × KV rung × lens × family, with
        ``effect`` the KV rung minus its comparator (correctness: accuracy; fidelity: share
        of answers that differ from the comparator's; margin: mean change in nats of the
        answer's log-probability; generative items: the F16 reference's reply teacher-forced
        under both), its interval, p-value and decision, exactly as chapter 5 computes them
        against the reference. ``cache_bits`` is the cache's bits per element. Empty when no
        KV rung has a comparator.

    Notes
    -----
    Each model × weights rung is one family of tests (one :func:`lens_grid` call with the
    comparator as the reference): the fixed sequence runs from the lowest-precision cache
    up, Holm passes across families, per lens. There is no noise floor for the comparator:
    fidelity flips are tested against zero, so with a plain-rung comparator a kernel change
    alone (flash attention) can show up as flips. Only items both rungs answered count.
    """
    pairs = kv_pairs(items[["model", "rung"]].drop_duplicates())
    frames = []
    for (model, weights, comparator, kind), g in pairs.groupby(
            ["model", "weights", "comparator", "comparator_kind"], sort=True):
        rungs = [comparator, *g["rung"]]
        sub = items[(items["model"] == model) & items["rung"].isin(rungs)]
        bits = {(model, r): 8 * bytes_per_element(parse_rung(r).cache) for r in rungs}
        cmp = lens_grid(sub, {model: comparator}, bits, settings=settings).comparisons
        cmp = cmp.merge(g[["rung", "kv_cache"]], on="rung")
        frames.append(cmp.assign(weights=weights, comparator=comparator, comparator_kind=kind,
                                 cache_bits=cmp["bpw"]))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def kv_costs(costs: pd.DataFrame | None) -> pd.DataFrame:
    """
    Per model × rung: the KV-cache type, its bytes at the profile's ``n_ctx`` and the
    measured cost (``_cost.json`` of the sweep); an empty table when there are none.
    """
    cols = ["model", "rung", "kv_cache", "n_ctx", "kv_cache_bytes", "kv_cache_mib",
            "peak_rss_bytes", "prompt_tps", "gen_tps"]
    if costs is None:
        return pd.DataFrame(columns=cols)
    out = costs.reindex(columns=cols)
    out["kv_cache_mib"] = pd.to_numeric(out["kv_cache_bytes"], errors="coerce") / 2**20
    return out.sort_values(["model", "rung"], ignore_index=True)


class KvTables(NamedTuple):
    """Chapter 7's tables; field name = CSV name in ``tables/``."""

    kv_axis: pd.DataFrame  # model × weights × KV rung × lens × family (see kv_axis)
    kv_costs: pd.DataFrame  # model × rung: cache type, its bytes at n_ctx, measured cost


def analyse_kv(profile: Profile, r: Results) -> KvTables:
    """The KV-cache axis of a run with the profile's settings, written to ``tables/``."""
    tables = KvTables(kv_axis(r.items, settings=settings_of(profile)), kv_costs(r.costs))
    write_tables(tables, profile.layout.tables_dir)
    return tables


def kv_findings(table: pd.DataFrame) -> str:
    """
    Generated sentences: per model × KV rung, which families show a loss or equivalence on
    each lens against the comparator, and which comparator that was.

    Every number is a cell of ``kv_axis.csv`` (effects and intervals printed with a plain
    hyphen as the minus sign, which the claim check parses).
    """
    if table.empty:
        return ("This profile lists no KV-cache rung with a comparator (`X+kv_q8_0` with `X` "
                "or `X+kv_f16`): there is nothing to compare on this axis.")
    out = []
    keys = ["model", "weights", "rung", "comparator", "comparator_kind"]
    for (model, _, rung, comparator, kind), g in table[table["measurable"]].groupby(
            keys, sort=True):
        parts = []
        for lens, h in g.groupby("lens", sort=False):
            loss = h[h["decision"] == LOSS]
            eq = h[h["decision"] == EQUIVALENT]
            said = [f"loss shown on {_cells(loss)}" if len(loss) else "",
                    f"equivalent within ±{h['equivalence_margin'].iloc[0]:g} "
                    f"({h['unit'].iloc[0]}) on "
                    f"{', '.join(eq['family'])}" if len(eq) else ""]
            said = "; ".join(s for s in said if s) or f"no family decided of {len(h)}"
            parts.append(f"{lens}: {said}")
        out.append(f"**{model} {rung}** against {comparator} ({kind}): " + ". ".join(parts)
                   + ".")
    return "\n\n".join(out) or "No measurable family: calibration left none to compare."


def _cells(rows: pd.DataFrame) -> str:
    """``family effect (low to high)`` for each row, as the findings print them."""
    return ", ".join(f"{r.family} {r.effect:.3f} ({r.ci_low:.3f} to {r.ci_high:.3f} {r.unit})"
                     for r in rows.itertuples())
