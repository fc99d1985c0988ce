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
    recipes.chapter_findings(t)
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
from gguf_fragility.stats.deathorder import death_rungs
from gguf_fragility.stats.grid import lens_grid
from gguf_fragility.stats.lens.base import ACCURACY, CHANGE
from gguf_fragility.stats.lens.registry import with_role
from gguf_fragility.stats.lesions import LesionMap, ci_text, lesion_findings, lesion_map
from gguf_fragility.stats.relevance import BEYOND, EQUIVALENT
from gguf_fragility.stats.results import bpw_of, reference_rungs
from gguf_fragility.stats.settings import DEFAULT_SETTINGS, Settings
from gguf_fragility.store import write_tables

RECIPE_K = 2  # groups a recipe keeps at the higher type
RECIPE_TYPE = "Q4_K"  # the higher type of a recipe's kept groups


def type_bits(typ: str) -> float:
    """Nominal bits per weight of a ggml type (``Q2_K`` -> 2.625), from gguf's block sizes."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[typ]]
    return 8.0 * size / block


def first_to_die(items: pd.DataFrame, ladder: pd.DataFrame, *, lens: str | None = None,
                 low: str = "Q2_K", settings: Settings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """
    Per model, the family that dies first on the plain ladder (no lesion, recipe or KV rung).

    The plain rungs are compared with the reference exactly as chapter 5 compares them
    (:func:`~gguf_fragility.stats.grid.lens_grid`, then
    :func:`~gguf_fragility.stats.deathorder.death_rungs`), so the answer does not change
    when a recipe is added to the profile. The first to die is the measurable family whose
    death rung on ``lens`` has the highest bpw; ties go to the larger mean loss at ``low``.
    With no death on ``lens``, the family with the larger mean loss at ``low`` is named and
    ``basis`` says so.

    Returns
    -------
    pandas.DataFrame
        ``model, family, death_rung, death_bpw, low, low_effect, low_decision, basis``.
    """
    lens = lens or with_role(CHANGE)
    plain = items[items["rung"].astype(str).map(_plain)]
    refs = reference_rungs(ladder)
    grid = lens_grid(plain, refs, bpw_of(ladder), settings=settings).comparisons
    deaths = death_rungs(grid)
    rows = []
    for model, g in grid[(grid["lens"] == lens) & grid["measurable"]].groupby("model"):
        at_low = g[g["rung"] == low].set_index("family")
        if at_low.empty:
            continue
        d = deaths[(deaths["model"] == model) & (deaths["lens"] == lens)]
        d = d[d["death_rung"].fillna("").astype(str) != ""]
        if len(d):
            top = d[d["death_bpw"] == d["death_bpw"].max()]
            fam = min(top["family"], key=lambda f: (at_low.loc[f, "effect"], f))
            dr = top.set_index("family").loc[fam]
            basis = f"dies first on the {lens} lens (highest-bpw death rung)"
            death_rung, death_bpw = dr["death_rung"], float(dr["death_bpw"])
        else:
            fam = min(at_low.index, key=lambda f: (at_low.loc[f, "effect"], f))
            basis = (f"no family shown to die on the {lens} lens: the family with the "
                     f"largest mean loss at {low}")
            death_rung, death_bpw = "", np.nan
        rows.append({"model": model, "family": fam, "death_rung": death_rung,
                     "death_bpw": death_bpw, "low": low,
                     "low_effect": float(at_low.loc[fam, "effect"]),
                     "low_decision": at_low.loc[fam, "decision"], "basis": basis})
    return pd.DataFrame(rows, columns=["model", "family", "death_rung", "death_bpw", "low",
                                       "low_effect", "low_decision", "basis"])


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
                      low_types: dict | None = None, material: float = 0.1) -> Recipe:
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
    groups overlap them), by their mean margin change on ``family`` (most negative first),
    and only those whose margin loss is shown in the lesion map, or whose interval lies
    below zero with a mean loss beyond ``material`` nats (the margin lens's equivalence
    margin: the lesion map's fixed sequence leaves small groups untested, so a clear
    interval counts too); when none is, the single most damaging kind is kept and ``basis``
    says so.
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
              | ((s["lesion_ci_high"] < 0) & (s["lesion_effect"] < -material))]
    pool, basis = ((shown, "lesions with a margin loss shown, or an interval below zero and "
                    f"a mean loss beyond {material:g} nats") if len(shown) else
                   (s.iloc[:1], "no kind lesion shows a clear margin loss: the most damaging one"))
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
    profile lists it (``in_profile``). One row per model with lesions.
    """
    if maps.lesion_shares.empty:
        return pd.DataFrame(columns=["model", "family", "basis", "death_rung", "low",
                                     "low_effect", "low_decision", "recipe", "groups",
                                     "skipped", "high_type", "groups_basis", "in_profile"])
    lows = sorted(set(maps.lesion_shares["full_rung"]))
    first = first_to_die(r.items, r.ladder, low=lows[0], settings=settings)
    rows = []
    for f in first.itertuples():
        lad = r.ladder[(r.ladder["model"] == f.model) & (r.ladder["rung"] == f.low)]
        low_types = (json.loads(lad["types_by_kind"].iloc[0])
                     if "types_by_kind" in lad and len(lad)
                     and isinstance(lad["types_by_kind"].iloc[0], str) else None)
        rec = protective_recipe(maps.lesion_shares, f.family, model=f.model, low=f.low,
                                low_types=low_types,
                                material=settings.margin_equivalence_nats)
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
    for rec in recipes.itertuples():
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


def recipe_findings(comp: pd.DataFrame, recipes: pd.DataFrame) -> str:
    """
    The recipe against the low rung and the standard rung near it, in chapter 5's own
    numbers (``recipe_comparison.csv``): sizes, the protected family's margin change at
    each, a verdict, and the other families' losses.

    The verdict reads decisions, never a missing p-value: "kept within the margin" only
    when the recipe is shown equivalent on the protected family; a loss no longer shown
    but not shown equivalent is *undecided*, not safe.
    """
    out = []
    for rec in recipes.itertuples():
        c = comp[(comp["model"] == rec.model) & (comp["lens"] == with_role(CHANGE))]
        if rec.recipe not in set(c["rung"]):
            continue
        prot = c[c["protected"].astype(bool)].sort_values("bpw")
        size = c.drop_duplicates("rung").set_index("role")
        near = [f"{size.loc[role, 'rung']} at {size.loc[role, 'bpw']:.2f} bpw"
                for role in ("low rung", "standard rung near it") if role in size.index]
        s = (f"**{rec.model}**: recipe `{rec.recipe}` at {size.loc['recipe', 'bpw']:.2f} bpw, "
             f"against {' and '.join(near)}. On {rec.family}, the family it protects "
             "(margin lens): ")
        s += "; ".join(f"{p.rung} {ci_text(p.effect, p.ci_low, p.ci_high, p.unit)}, {p.decision}"
                       for p in prot.itertuples()) + ". "
        mine = prot[prot["role"] == "recipe"]["decision"]
        verdict = mine.iloc[0] if len(mine) else ""
        s += {EQUIVALENT: f"The recipe keeps {rec.family} within the margin (equivalence shown).",
              BEYOND: f"The recipe does not keep {rec.family} alive: its loss is still shown."
              }.get(verdict, f"At the recipe, {rec.family}'s loss is not shown, nor is "
                             "equivalence: undecided, which is not safe.")
        for rung, h in c[~c["protected"].astype(bool)].groupby("rung", sort=False):
            lost = h[h["decision"] == BEYOND]["family"]
            s += (f" {rung}: loss shown on {len(lost)} of {len(h)} other families"
                  + (f" ({', '.join(lost)})" if len(lost) else "") + ".")
        out.append(s)
    return "\n\n".join(out)


def chapter_findings(t: LesionTables) -> str:
    """
    Chapter 8's generated findings: per model the lesion map's paragraph
    (:func:`~gguf_fragility.stats.lesions.lesion_findings`) and the recipe it names, then
    the recipe against the low rung and ``Q3_K_M`` in chapter 5's numbers. Every number is
    a cell of a table in ``tables/``.
    """
    if t.lesion_map.empty:
        return ("This profile lists no lesion rung (`Q8_0+<group>=<TYPE>`): there is no "
                "lesion map. The `lesions` profile sweeps one per tensor kind and third.")
    out = []
    for model, para in lesion_findings(t.lesion_map, t.lesion_shares).items():
        for r in t.lesion_recipe[t.lesion_recipe["model"] == model].itertuples():
            para += (f" Recipe for {r.family} ({r.basis}): `{r.recipe}`"
                     + ("" if r.in_profile else
                        f" (not in this profile yet: add it to the rungs of {model} and "
                        "rerun; the second run reuses every stored cell)") + ".")
        out.append(para)
    out.append(recipe_findings(t.recipe_comparison, t.lesion_recipe))
    return "\n\n".join(x for x in out if x)
