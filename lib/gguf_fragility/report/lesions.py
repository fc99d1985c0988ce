"""Chapter 8's findings in sentences: the lesion map, the first family to die and its recipe.

The statistics (:mod:`gguf_fragility.stats.lesions`, :mod:`gguf_fragility.stats.recipes`)
return tables; the words about them live here, for notebook 08 and the landing page::

    from gguf_fragility.report import lesions as lesion_text
    Markdown(lesion_text.chapter_findings(t))     # t = recipes.analyse_lesions(profile, r)

Every number printed is a cell of ``lesion_map.csv``, ``lesion_shares.csv``,
``lesion_recipe.csv`` or ``recipe_comparison.csv`` (a fraction printed in points is the
cell times 100), so the claim check (:mod:`gguf_fragility.report.claims`) can trace it;
every verdict names the margin it was judged against.
"""

from __future__ import annotations

import pandas as pd

from gguf_fragility.engine.rungs import INTACT_BASE
from gguf_fragility.report.pages import margin_text, points_of
from gguf_fragility.stats.lens.base import ACCURACY, CHANGE
from gguf_fragility.stats.lens.registry import LENSES, with_role
from gguf_fragility.stats.lesions import BASE_ROLE, LESION_ROLE
from gguf_fragility.stats.recipes import LesionTables
from gguf_fragility.stats.relevance import BEYOND, EQUIVALENT


def ci_text(e: float, lo: float, hi: float, unit: str) -> str:
    """``-5.1 (-8.0 to -2.3 points of gold-answer probability)``: an effect in points; a
    fraction unit (``"accuracy (fraction)"``) is printed times 100."""
    k = 100.0 if str(unit).endswith("(fraction)") else 1.0
    return f"{k * e:.1f} ({k * lo:.1f} to {k * hi:.1f} {points_of(unit)})"


def lesion_sentence(shares: pd.DataFrame, model: str) -> str:
    """
    One sentence for a model: the lesion that reproduces most of the full rung's loss on the
    family the full rung hurts most (where that loss is shown beyond the margin), with
    intervals in points and the margin.
    """
    s = shares[(shares["model"] == model) & shares["measurable"].astype(bool)]
    if s.empty:
        return f"**{model}**: no lesion rung was swept."
    shown = s[s["full_loss_shown"].astype(bool)]
    if shown.empty:
        return (f"**{model}**: the full {s['full_rung'].iloc[0]} rung shows no loss beyond "
                f"{margin_text(s, margin='margin')} on any family in the lesion map's family "
                "of tests, so no share of its damage can be attributed.")
    worst = shown.sort_values(["full_effect", "family"]).iloc[0]
    fam = shown[shown["family"] == worst["family"]]
    top = fam.sort_values(["lesion_effect", "group"]).iloc[0]
    kinds = fam[fam["depth"].fillna("") == ""].sort_values(["lesion_effect", "group"])
    depths = fam[fam["kind"].fillna("") == ""].sort_values(["lesion_effect", "group"])
    full = ci_text(worst["full_effect"], worst["full_ci_low"], worst["full_ci_high"], worst["unit"])
    alone = ci_text(top["lesion_effect"], top["lesion_ci_low"], top["lesion_ci_high"], top["unit"])
    out = (f"**{model}**: at {worst['full_rung']}, {worst['family']} changes by {full}, a loss "
           f"beyond ±{worst['margin']:g} points; the `{top['group']}` lesion alone "
           f"(`{top['rung']}`) costs {alone}, a share of {top['share']:.2f} "
           f"({top['share_ci_low']:.2f} to {top['share_ci_high']:.2f}) of that loss "
           f"({top['lesion_decision']})")
    if len(kinds) and kinds.iloc[0]["group"] != top["group"]:
        k = kinds.iloc[0]
        out += (f"; among tensor kinds `{k['group']}` {k['share']:.2f} "
                f"({k['share_ci_low']:.2f} to {k['share_ci_high']:.2f})")
    if len(depths) and depths.iloc[0]["group"] != top["group"]:
        d = depths.iloc[0]
        out += (f"; among thirds the {d['group'].replace('_', ' ')} {d['share']:.2f} "
                f"({d['share_ci_low']:.2f} to {d['share_ci_high']:.2f})")
    return out + "."


def lesion_findings(lesion_map: pd.DataFrame, shares: pd.DataFrame) -> dict[str, str]:
    """
    Generated paragraph per model: the headline share (:func:`lesion_sentence`), the intact
    base against the reference, and the lesions with a loss beyond the margin on the margin
    and fidelity lenses, each with its margin in points.
    """
    out = {}
    m = lesion_map[lesion_map["measurable"].astype(bool)] if len(lesion_map) else lesion_map
    change = with_role(CHANGE)
    for model, g in (m.groupby("model", sort=True) if len(m) else ()):
        para = [lesion_sentence(shares, model)]
        base = g[(g["role"] == BASE_ROLE) & (g["lens"] == change)]
        if len(base):
            eq = base[base["decision"] == EQUIVALENT]
            rest = ", ".join(base.loc[base["decision"] != EQUIVALENT, "family"])
            para.append(f"The intact base {INTACT_BASE} against the reference on the {change} "
                        f"lens: equivalent within {margin_text(base)} on {len(eq)} of "
                        f"{len(base)} families" + (f" (not shown on {rest})" if rest else "") + ".")
        for lens in [change, *(k for k in LENSES if k not in (change, with_role(ACCURACY)))]:
            les = g[(g["role"] == LESION_ROLE) & (g["lens"] == lens)]
            loss = les[les["decision"] == BEYOND].sort_values(["effect", "group"])
            if len(loss):
                cells = ", ".join(f"`{r.group}` on {r.family} "
                                  f"{ci_text(r.effect, r.ci_low, r.ci_high, r.unit)}"
                                  for r in loss.itertuples())
                para.append(f"On the {lens} lens, loss beyond {margin_text(loss)} shown for: "
                            f"{cells}.")
            elif len(les):
                para.append(f"On the {lens} lens no single lesion of {les['rung'].nunique()} "
                            f"shows a loss beyond {margin_text(les)} after the correction "
                            "(undecided is not harmless).")
        out[model] = " ".join(para)
    return out


def recipe_findings(comp: pd.DataFrame, recipes: pd.DataFrame) -> str:
    """
    The recipe against the low rung and the standard rung near it, in chapter 5's own
    numbers (``recipe_comparison.csv``): sizes, the protected family's change at each with
    the margin, a verdict, and the other families' losses beyond the margin.

    The verdict reads decisions, never a missing p-value: "kept within the margin" only
    when the recipe is shown equivalent on the protected family; a loss no longer shown
    but not shown equivalent is *undecided*, not safe.
    """
    out = []
    for rec in recipes.itertuples():
        c = comp[(comp["model"] == rec.model) & (comp["lens"] == with_role(CHANGE))]
        if not rec.recipe or rec.recipe not in set(c["rung"]):
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
              BEYOND: f"The recipe does not keep {rec.family} alive: its loss beyond the "
                      "margin is still shown."
              }.get(verdict, f"At the recipe, {rec.family}'s loss beyond the margin is not "
                             "shown, nor is equivalence: undecided, which is not safe.")
        for rung, h in c[~c["protected"].astype(bool)].groupby("rung", sort=False):
            lost = h[h["decision"] == BEYOND]["family"]
            s += (f" {rung}: loss beyond the margin on {len(lost)} of {len(h)} other families"
                  + (f" ({', '.join(lost)})" if len(lost) else "") + ".")
        out.append(s)
    return "\n\n".join(out)


def _recipe_clause(r, lesion_map: pd.DataFrame) -> str:
    """The recipe a :func:`~gguf_fragility.stats.recipes.recipe_table` row names, or why none."""
    if not r.family:
        rows = lesion_map[(lesion_map["model"] == r.model)
                          & (lesion_map["lens"] == with_role(CHANGE))]
        return (f" No recipe: on the plain ladder no family shows a loss beyond "
                f"{margin_text(rows)} at any rung on the {with_role(CHANGE)} lens.")
    tie = " (tied first)" if r.basis.startswith("tied") else ""
    return (f" Recipe for {r.family}{tie}, the first to die at {r.death_rung}: `{r.recipe}`"
            + ("" if r.in_profile else
               f" (not in this profile yet: add it to the rungs of {r.model} and rerun; the "
               "second run reuses every stored cell)") + ".")


def chapter_findings(t: LesionTables) -> str:
    """
    Chapter 8's generated findings: per model the lesion map's paragraph
    (:func:`lesion_findings`) and the recipe it names, then the recipe against the low rung
    and ``Q3_K_M`` in chapter 5's numbers (:func:`recipe_findings`).
    """
    if t.lesion_map.empty:
        return ("This profile lists no lesion rung (`Q8_0+<group>=<TYPE>`): there is no "
                "lesion map. The `lesions` profile sweeps one per tensor kind and third.")
    out = []
    for model, para in lesion_findings(t.lesion_map, t.lesion_shares).items():
        rec = t.lesion_recipe[t.lesion_recipe["model"] == model].astype(object).fillna("")
        for r in rec.itertuples():
            para += _recipe_clause(r, t.lesion_map)
        out.append(para)
    out.append(recipe_findings(t.recipe_comparison, t.lesion_recipe.fillna({"recipe": ""})))
    return "\n\n".join(x for x in out if x)
