"""Compute every statistics table from the sweep's outputs and write them as CSV.

Notebook 05's calls::

    from gguf_fragility import artifacts
    from gguf_fragility.stats import results
    r = artifacts.load_results(profile.layout)
    tables = results.analyse(profile, r)   # computes and writes tables/*.csv

Every setting (seed, resamples, correction, test, alpha, budgets) comes from the profile.
:mod:`gguf_fragility.testing` fabricates inputs with the same contract.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

from gguf_fragility.artifacts import Results
from gguf_fragility.engine.rungs import is_kv_rung, lesion_of
from gguf_fragility.probes import item_positions
from gguf_fragility.profile import Profile
from gguf_fragility.stats import relevance
from gguf_fragility.stats.deathorder import death_order
from gguf_fragility.stats.decision import decision_matrix, recommend
from gguf_fragility.stats.grid import UNTESTABLE, lens_grid
from gguf_fragility.stats.lens.base import ACCURACY
from gguf_fragility.stats.lens.registry import LENSES, with_role
from gguf_fragility.stats.relevance import BEYOND, CHANGE, EQUIVALENT, NO_FLOOR, NO_ROOM, UNDECIDED
from gguf_fragility.stats.sequential import anytime_comparisons, decide_cells
from gguf_fragility.stats.settings import DEFAULT_SETTINGS, MDE_POWER, Settings
from gguf_fragility.store import write_json_atomic, write_tables


class StatsTables(NamedTuple):
    """Every table notebook 05 writes; field name = CSV name."""

    accuracy: pd.DataFrame  # model × family × rung (reference and floor included), Wilson CI
    comparisons: pd.DataFrame  # model × lens × family × rung: the three lenses, decisions
    death_order: pd.DataFrame  # model × measurable family: death rung per lens, fragility, ranks
    decision: pd.DataFrame  # model × rung
    recommendations: pd.DataFrame  # model × memory budget
    planner: pd.DataFrame  # model × measurable family: planned MDE, items a target MDE needs
    lens_summary: pd.DataFrame  # model × lens: decided, undecided and untestable cells


def reference_rungs(ladder: pd.DataFrame) -> dict[str, str]:
    """Each model's reference rung from ``ladder.is_reference``; exactly one per model."""
    if "is_reference" not in ladder.columns:
        raise ValueError("ladder lacks an 'is_reference' column")
    refs = ladder[ladder["is_reference"].astype(bool)]
    counts = refs.groupby("model").size()
    if (counts > 1).any():
        raise ValueError(f"several reference rungs for {counts[counts > 1].index.tolist()}")
    return dict(zip(refs["model"].astype(str), refs["rung"].astype(str), strict=True))


def bpw_of(ladder: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Real bits per weight of each (model, rung) of the ladder."""
    lad = ladder.drop_duplicates(["model", "rung"])
    return dict(zip(zip(lad["model"].astype(str), lad["rung"].astype(str), strict=True),
                    lad["bpw"].astype(float), strict=True))


def stats_tables(items: pd.DataFrame, ladder: pd.DataFrame,
                 costs: pd.DataFrame | None = None, shift: pd.DataFrame | None = None, *,
                 settings: Settings = DEFAULT_SETTINGS, budgets_gib=(1, 2, 4, 8),
                 target_mde: float | None = None,
                 positions: Mapping[tuple[str, str], int] | None = None) -> StatsTables:
    """
    Compute every statistics table of the report from the sweep's outputs.

    Parameters
    ----------
    items, ladder, costs, shift : pandas.DataFrame
        As returned by :func:`load_results`; ``costs``/``shift`` may be None. Rows of
        KV-cache rungs (``Q4_K_M+kv_q8_0``) are left out: they are not rungs of the weight
        ladder, and chapter 7 compares them (:func:`gguf_fragility.stats.axes.axis_comparisons`); so
        are lesion rungs (``Q8_0+ffn_down=Q2_K``), which chapter 8 maps
        (:func:`gguf_fragility.stats.lesions.lesion_map`). Recipes stay: they are rungs.
    settings : Settings
        Level, McNemar variant, margins, design discordance, bootstrap
        (:meth:`Settings.of <gguf_fragility.stats.settings.Settings.of>` a profile).
    budgets_gib : sequence of float, default (1, 2, 4, 8)
    target_mde : float, optional
        When set, ``planner.items_needed`` says how many items each family needs to
        show this accuracy loss beyond the margin at its corrected level.
    positions : mapping of (family, item_id) to int, optional
        A budgeted run's pre-registered item order
        (:func:`gguf_fragility.probes.item_positions`): its measurable cells are judged by
        the sequential statistics (:func:`gguf_fragility.stats.sequential.anytime_comparisons`),
        the only ones valid after looks; without it, the fixed design's.

    Returns
    -------
    StatsTables

    See Also
    --------
    gguf_fragility.stats.grid.lens_grid, gguf_fragility.stats.deathorder.death_order,
    gguf_fragility.stats.decision.decision_matrix, gguf_fragility.stats.decision.recommend
    """
    refs = reference_rungs(ladder)
    aside = lambda r: is_kv_rung(r) or lesion_of(r) is not None  # noqa: E731
    items = items[~items["rung"].astype(str).map(aside)]
    ladder = ladder[~ladder["rung"].astype(str).map(aside)]
    bpw = bpw_of(ladder)
    grid = lens_grid(items, refs, bpw, settings=settings)
    cmp = grid.comparisons
    if positions is not None:
        steered = (items[items["measurable"].astype(bool)] if "measurable" in items.columns
                   else items)  # a family calibration found unmeasurable keeps n_items
        cmp = anytime_comparisons(
            cmp, decide_cells(steered, refs, bpw, positions, settings).lenses, settings)
    order = death_order(items, cmp, refs, seed=settings.seed, n_boot=settings.n_boot,
                        alpha=settings.alpha)
    dm = decision_matrix(cmp, ladder, costs, shift, alpha=settings.alpha)
    acc = grid.accuracy.assign(bpw=[bpw.get((m, r), np.nan) for m, r in
                                    zip(grid.accuracy["model"], grid.accuracy["rung"],
                                        strict=True)])
    acc = acc.sort_values(["model", "family", "bpw"], ascending=[True, True, False],
                          ignore_index=True, na_position="last")
    return StatsTables(acc, cmp, order, dm, recommend(dm, budgets_gib),
                       planner(cmp, settings, target_mde), lens_summary(cmp))


def planner(comparisons: pd.DataFrame, settings: Settings,
            target_mde: float | None = None) -> pd.DataFrame:
    """
    Planned MDE of each measurable family (accuracy lens) and, with a target, items needed.

    Columns ``model, family, n, level, planned_mde, mde_basis, design_discordance,
    margin, target_mde, items_needed``: ``level`` is the corrected level of the family's
    first step (alpha over the tested families); ``planned_mde`` the smallest loss the
    verdict's own test shows beyond ``margin`` (:meth:`~gguf_fragility.stats.lens.base.
    Lens.mde`); ``items_needed`` what that test needs to show ``target_mde`` beyond the
    margin (:func:`gguf_fragility.stats.relevance.beyond_items_needed`) at that level and
    the design discordance (NaN without a target, or when the target is not between the
    margin and the discordance).
    """
    c = comparisons[(comparisons["lens"] == with_role(ACCURACY)) & comparisons["measurable"]]
    fam = c.groupby(["model", "family"], as_index=False).agg(
        n=("n", "max"), level=("level", "first"), planned_mde=("planned_mde", "min"),
        mde_basis=("mde_basis", "first"))
    fam["design_discordance"] = settings.design_discordance
    fam["margin"] = margin = LENSES[with_role(ACCURACY)].margin(settings)
    fam["target_mde"] = np.nan if target_mde is None else float(target_mde)
    need = []
    for lvl in fam["level"]:
        try:
            need.append(np.nan if target_mde is None else relevance.beyond_items_needed(
                target_mde, margin, alpha=float(lvl), power=MDE_POWER,
                discordance=settings.design_discordance))
        except ValueError:
            need.append(np.nan)
    fam["items_needed"] = need
    return fam


def lens_summary(comparisons: pd.DataFrame) -> pd.DataFrame:
    """
    Per model × lens: measurable cells, how many were decided, and what the rest could detect.

    Columns ``model, lens, n_cells, n_testable, n_loss`` (losses beyond the margin),
    ``n_change`` (changes possibly within it), ``n_no_floor``, ``n_no_room``, ``n_equivalent,
    n_decided, n_undecided, n_untestable, undecided_mde_min, undecided_mde_max, mde_unit,
    n_dead_families, floor_flip_rate`` (the noise floor's mean flip rate against the
    reference over the model's measurable families, fidelity rows; NaN without a floor).
    """
    c = comparisons[comparisons["measurable"].astype(bool)]
    rows = []
    for (model, lens), g in c.groupby(["model", "lens"], sort=True):
        d = g["decision"]
        und = g.loc[d == UNDECIDED, "planned_mde"].astype(float)
        n_loss, n_eq = int((d == BEYOND).sum()), int((d == EQUIVALENT).sum())
        fl = g.drop_duplicates("family")
        floor = (fl["floor_flips"].sum() / fl["n"].sum()
                 if LENSES[lens].against_floor and (fl["floor"] == "measured").all()
                 and fl["n"].sum()
                 else np.nan)
        rows.append({"model": model, "lens": lens, "n_cells": len(g),
                     "n_testable": int(g["testable"].sum()), "n_loss": n_loss,
                     "n_change": int((d == CHANGE).sum()), "n_no_floor": int((d == NO_FLOOR).sum()),
                     "n_no_room": int((d == NO_ROOM).sum()),
                     "n_equivalent": n_eq, "n_decided": n_loss + n_eq,
                     "n_undecided": int((d == UNDECIDED).sum()),
                     "n_untestable": int((d == UNTESTABLE).sum()),
                     "undecided_mde_min": und.min() if und.notna().any() else np.nan,
                     "undecided_mde_max": und.max() if und.notna().any() else np.nan,
                     "mde_unit": g["mde_unit"].iloc[0],
                     "n_dead_families": int(g.loc[d == BEYOND, "family"].nunique()),
                     "floor_flip_rate": floor})
    return pd.DataFrame(rows)


def stats_config(profile: Profile) -> dict:
    """The settings the statistics used (``tables/stats_config.json``): the profile's name and
    every field of its :class:`~gguf_fragility.stats.settings.Settings`, as JSON."""
    s = dataclasses.asdict(Settings.of(profile))
    return {"profile": profile.name, **s, "budgets_gib": list(s["budgets_gib"])}


def analyse(profile: Profile, r: Results) -> StatsTables:
    """Every statistics table of a run with the profile's settings, written to ``tables/``."""
    s = Settings.of(profile)
    positions = None if profile.budget is None else item_positions(
        sorted(set(r.items["family"].astype(str))))
    tables = stats_tables(r.items, r.ladder, r.costs, r.shift, settings=s,
                          budgets_gib=s.budgets_gib, target_mde=s.target_mde, positions=positions)
    write_tables(tables, profile.layout.tables_dir)
    write_json_atomic(profile.layout.stats_config, stats_config(profile))
    return tables


def inputs_summary(r: Results) -> pd.DataFrame:
    """Items, families and raw accuracy per model × rung (the floor is a pseudo-rung)."""
    return r.items.groupby(["model", "rung"]).agg(
        items=("item_id", "size"), families=("family", "nunique"),
        accuracy=("correct", "mean"))
