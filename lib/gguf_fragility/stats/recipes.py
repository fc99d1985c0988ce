"""The protective recipe of chapter 8: from the lesion map, the rung that keeps the family
that dies first alive, and chapter 5's verdict on it.

:func:`first_to_die` names the family that dies first on the plain ladder;
:func:`protective_recipe` the recipe rung (e.g. ``Q2_K+ffn_down=Q4_K``) that keeps that
family's most damaging tensor kinds (:func:`gguf_fragility.stats.lesions.lesion_map`) at a
higher type and the rest at the low ftype. The recipe is then listed in the profile as a
normal rung, so chapter 5 evaluates it like every other rung (paired, corrected, decided);
:func:`recipe_comparison` only copies chapter 5's cells next to the low rung and ``Q3_K_M``.
Notebook 08's calls::

    from gguf_fragility import artifacts
    from gguf_fragility.stats import recipes
    r = artifacts.load_results(profile.layout)
    t = recipes.analyse_lesions(profile, r)   # lesion_map.csv, lesion_shares.csv, ... in tables/

The sentences about them: :func:`gguf_fragility.report.lesions.chapter_findings`.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np
import pandas as pd
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from gguf_fragility.artifacts import Results
from gguf_fragility.engine.rungs import KINDS, is_kv_rung, parse_weights, recipe_rung
from gguf_fragility.layout import Table
from gguf_fragility.profile import NOISE_FLOOR, Profile
from gguf_fragility.stats.deathorder import first_death
from gguf_fragility.stats.grid import lens_grid
from gguf_fragility.stats.lens.base import ACCURACY, CHANGE
from gguf_fragility.stats.lens.registry import with_role
from gguf_fragility.stats.lesions import LesionMap, lesion_map
from gguf_fragility.stats.relevance import BEYOND
from gguf_fragility.stats.results import bpw_of, reference_rungs
from gguf_fragility.stats.settings import DEFAULT_SETTINGS, Settings
from gguf_fragility.store import write_tables

RECIPE_K = 2  # groups a recipe keeps at the higher type
RECIPE_TYPE = "Q4_K"  # the higher type of a recipe's kept groups


def type_bits(typ: str) -> float:
    """Nominal bits per weight of a ggml type (``Q2_K`` -> 2.625), from gguf's block sizes."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[typ]]
    return 8.0 * size / block


DIES_FIRST = "dies first (the highest-bpw loss beyond the margin)"
TIED_FIRST = "tied first (the highest-bpw loss beyond the margin; effects inseparable)"
NO_DEATH = "no loss beyond the margin shown at any rung"
FIRST_COLUMNS = ["model", "family", "death_rung", "death_bpw", "low", "low_effect",
                 "low_decision", "basis"]


def first_to_die(items: pd.DataFrame, ladder: pd.DataFrame, *, lens: str | None = None,
                 low: str = "Q2_K", settings: Settings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """
    Per model, the family (or tied families) that die first on the plain ladder.

    The plain rungs (no lesion, recipe or KV rung) are compared with the reference exactly
    as chapter 5 compares them (:func:`~gguf_fragility.stats.grid.lens_grid`), and the
    first to die is chapter 5's (:func:`~gguf_fragility.stats.deathorder.first_death`):
    the families whose own cell shows a loss beyond the margin at the highest-bpw rung
    where any does, by effect, tied where inseparable; so the answer does not change when
    a recipe is added to the profile. A model where no family shows a loss beyond the
    margin names none.

    Returns
    -------
    pandas.DataFrame
        :data:`FIRST_COLUMNS`: one row per named family (``basis`` :data:`DIES_FIRST` or
        :data:`TIED_FIRST`) with its effect and decision at ``low``; one row with
        ``family = ""`` and ``basis`` :data:`NO_DEATH` for a model where none died.
    """
    lens = lens or with_role(CHANGE)
    plain = items[items["rung"].astype(str).map(_plain)]
    grid = lens_grid(plain, reference_rungs(ladder), bpw_of(ladder), settings=settings).comparisons
    rows = []
    for model, g in grid[(grid["lens"] == lens) & grid["measurable"]].groupby("model"):
        at_low = g[g["rung"] == low].set_index("family")
        if at_low.empty:
            continue
        f = first_death(g, lens, settings.alpha)
        if not f.families:
            rows.append({"model": model, "family": "", "death_rung": "", "death_bpw": np.nan,
                         "low": low, "low_effect": np.nan, "low_decision": "", "basis": NO_DEATH})
        for fam in f.families:
            rows.append({"model": model, "family": fam, "death_rung": f.rung,
                         "death_bpw": f.bpw, "low": low,
                         "low_effect": float(at_low.loc[fam, "effect"]),
                         "low_decision": at_low.loc[fam, "decision"],
                         "basis": TIED_FIRST if f.tied else DIES_FIRST})
    return pd.DataFrame(rows, columns=FIRST_COLUMNS)


def _plain(rung: str) -> bool:
    """A rung of the plain ladder (a bare ftype) or the noise floor."""
    return rung == NOISE_FLOOR or (not is_kv_rung(rung) and parse_weights(rung).in_process)


class Recipe(NamedTuple):
    """Result of :func:`protective_recipe`."""

    model: str
    family: str  # the family it protects
    rung: str  # e.g. "Q2_K+ffn_down=Q4_K+attn_v=Q4_K"
    groups: tuple[str, ...]  # kept at ``high_type``, most damaging first
    skipped: tuple[str, ...]  # damaging kinds the low ftype's mix already keeps at >= high
    high_type: str
    basis: str  # which lesions were ranked


def protective_recipe(shares: pd.DataFrame, family: str, *, model: str, k: int = RECIPE_K,
                      high_type: str = RECIPE_TYPE, low: str = "Q2_K",
                      low_types: dict | None = None) -> Recipe:
    """
    The recipe rung that keeps one family's ``k`` most damaging tensor kinds at a higher type.

    Parameters
    ----------
    shares : pandas.DataFrame
        :func:`lesion_map`'s ``lesion_shares``.
    family, model : str
        The family to protect (:func:`first_to_die`) and its model.
    k : int, default :data:`RECIPE_K`
    high_type : str, default :data:`RECIPE_TYPE`
    low : str, default "Q2_K"
        The ftype of everything else.
    low_types : dict, optional
        ``{kind: {type: n_tensors}}`` of the ``low`` rung's file (the ladder's
        ``types_by_kind``): a kind the low mix already stores at ``high_type`` or above in
        every tensor is skipped (raising it would do nothing, or lower it).

    Returns
    -------
    Recipe

    Raises
    ------
    ValueError
        When ``k < 1``, or no kind lesion of ``model`` damages ``family`` (mean margin
        change below zero), naming the family and model.

    Notes
    -----
    Only kind lesions are ranked (a recipe by kind is a partition of the tensors; depth
    groups overlap them), by their mean change on ``family`` on the margin lens (points,
    most negative first), and only those whose loss beyond the margin is shown in the
    lesion map, or whose interval lies below zero with a mean loss beyond the row's
    ``margin`` (the margin lens's own margin in points: the lesion map's fixed sequence
    leaves small groups untested, so a clear interval counts too); when none is, the
    single most damaging kind is kept and ``basis`` says so.
    """
    if k < 1:
        raise ValueError(f"k={k}: a recipe keeps at least one group (k >= 1)")
    s = shares[(shares["model"] == model) & (shares["family"] == family)
               & (shares["depth"].fillna("") == "") & (shares["kind"].isin(KINDS))]
    s = s[s["lesion_effect"] < 0].sort_values(["lesion_effect", "group"])
    if s.empty:
        raise ValueError(f"no kind lesion of model {model!r} lowers the margin of family "
                         f"{family!r}: there is nothing to protect; sweep the kind lesions "
                         f"(e.g. 'Q8_0+ffn_down=Q2_K') first")
    shown = s[(s["lesion_decision"] == BEYOND)
              | ((s["lesion_ci_high"] < 0) & (s["lesion_effect"] < -s["margin"]))]
    pool, basis = ((shown, "lesions with a loss beyond the margin shown, or an interval below "
                    "zero and a mean loss beyond the margin") if len(shown) else
                   (s.iloc[:1], "no kind lesion shows a loss beyond the margin: the most "
                    "damaging one"))
    keep, skipped = [], []
    for g in pool["group"]:
        held = (low_types or {}).get(g, {})
        if held and min(type_bits(t) for t in held) >= type_bits(high_type):
            skipped.append(g)
        elif len(keep) < k:
            keep.append(g)
    if not keep:
        raise ValueError(f"model {model!r}, family {family!r}: every damaging kind "
                         f"({', '.join(skipped)}) is already at {high_type} or above in "
                         f"{low}'s mix; choose a higher type than {high_type}")
    return Recipe(model, family, recipe_rung(low, keep, high_type), tuple(keep),
                  tuple(skipped), high_type, basis)


def recipe_table(r: Results, maps: LesionMap, *, settings: Settings = DEFAULT_SETTINGS,
                 rungs_by_model: dict | None = None) -> pd.DataFrame:
    """
    Per model: the family that dies first, the recipe that would protect it, and whether the
    profile lists it (``in_profile``). One row per family :func:`first_to_die` names (tied
    families each get their recipe); a model where none died keeps one row with no recipe.
    """
    if maps.lesion_shares.empty:
        return pd.DataFrame(columns=["model", "family", "basis", "death_rung", "low",
                                     "low_effect", "low_decision", "recipe", "groups",
                                     "skipped", "high_type", "groups_basis", "in_profile"])
    lows = sorted(set(maps.lesion_shares["full_rung"]))
    first = first_to_die(r.items, r.ladder, low=lows[0], settings=settings)
    rows = []
    for f in first.itertuples():
        if not f.family:
            rows.append({"model": f.model, "family": "", "basis": f.basis, "death_rung": "",
                         "low": f.low, "low_effect": np.nan, "low_decision": "", "recipe": "",
                         "groups": "", "skipped": "", "high_type": "", "groups_basis": "",
                         "in_profile": False})
            continue
        lad = r.ladder[(r.ladder["model"] == f.model) & (r.ladder["rung"] == f.low)]
        low_types = (json.loads(lad["types_by_kind"].iloc[0])
                     if "types_by_kind" in lad and len(lad)
                     and isinstance(lad["types_by_kind"].iloc[0], str) else None)
        rec = protective_recipe(maps.lesion_shares, f.family, model=f.model, low=f.low,
                                low_types=low_types)
        listed = (rungs_by_model or {}).get(f.model, ())
        rows.append({"model": f.model, "family": f.family, "basis": f.basis,
                     "death_rung": f.death_rung, "low": f.low, "low_effect": f.low_effect,
                     "low_decision": f.low_decision, "recipe": rec.rung,
                     "groups": ",".join(rec.groups), "skipped": ",".join(rec.skipped),
                     "high_type": rec.high_type, "groups_basis": rec.basis,
                     "in_profile": rec.rung in listed})
    return pd.DataFrame(rows)


COMP_COLUMNS = ["model", "rung", "role", "family", "protected", "lens", "n", "effect",
                "ci_low", "ci_high", "unit", "decision", "bpw", "file_size_bytes", "quality"]


def recipe_comparison(comparisons: pd.DataFrame, decision: pd.DataFrame,
                      recipes: pd.DataFrame, near: str = "Q3_K_M") -> pd.DataFrame:
    """
    Chapter 5's own numbers for each recipe rung beside the low rung and ``near``.

    One row per model × rung ({low, recipe, near}) × measurable family on the margin and
    correctness lenses, copied from chapter 5's ``comparisons`` (effect, interval, decision)
    with the rung's ``bpw``, ``file_size_bytes`` and ``quality`` from its ``decision``
    matrix, and ``protected`` = the family the recipe protects. Rungs chapter 5 did not
    evaluate (a recipe not yet in the profile) are absent.
    """
    rows = []
    for rec in recipes[recipes["recipe"].fillna("").astype(str) != ""].itertuples():
        roles = {rec.low: "low rung", rec.recipe: "recipe", near: "standard rung near it"}
        c = comparisons[(comparisons["model"] == rec.model) & comparisons["rung"].isin(roles)
                        & comparisons["lens"].isin([with_role(CHANGE), with_role(ACCURACY)])
                        & comparisons["measurable"].astype(bool)]
        d = decision[decision["model"] == rec.model][["rung", "file_size_bytes", "quality"]]
        c = c.merge(d, on="rung", how="left")
        rows.append(c.assign(role=c["rung"].map(roles), protected=c["family"] == rec.family))
    if not rows:
        return pd.DataFrame(columns=COMP_COLUMNS)
    return pd.concat(rows, ignore_index=True)[COMP_COLUMNS].sort_values(
        ["model", "lens", "family", "bpw"], ascending=[True, False, True, True],
        ignore_index=True)


class LesionTables(NamedTuple):
    """Chapter 8's tables; field name = CSV name in ``tables/``."""

    lesion_map: pd.DataFrame
    lesion_shares: pd.DataFrame
    lesion_recipe: pd.DataFrame  # per model: first-to-die family, its recipe, in the profile?
    recipe_comparison: pd.DataFrame  # chapter 5's cells of the low rung, recipe and Q3_K_M


def analyse_lesions(profile: Profile, r: Results) -> LesionTables:
    """The lesion map, the recipe and its comparison with the profile's settings, written to
    ``tables/``; the comparison reads chapter 5's ``comparisons.csv`` and ``decision.csv``
    there (empty when chapter 5 has not run)."""
    s = Settings.of(profile)
    maps = lesion_map(r.items, r.ladder, settings=s)
    rec = recipe_table(r, maps, settings=s,
                       rungs_by_model={m: run.rungs for m, run in profile.models.items()})
    tdir = profile.layout.tables_dir
    ch5 = [profile.layout.table(Table.COMPARISONS), profile.layout.table(Table.DECISION)]
    comp = (recipe_comparison(*(pd.read_csv(f) for f in ch5), rec)
            if len(rec) and all(f.is_file() for f in ch5) else pd.DataFrame(columns=COMP_COLUMNS))
    tables = LesionTables(maps.lesion_map, maps.lesion_shares, rec, comp)
    write_tables(tables, tdir)
    return tables
