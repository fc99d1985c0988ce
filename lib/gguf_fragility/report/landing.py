"""The landing page: which quant to run, per model, on the first screen; the details below.

:data:`GENERATED` holds every generated section of the site (:mod:`.pages`' and this page's
two): ``landing`` is the first screen (per model: the effect chart, the recommendation per
memory budget, each rung's cost), ``landing-details`` the counts, planned MDEs, family of
tests, transfer, lesions and settings beside the ladder, in that order. The numbers the
recommendation derives are first written to ``site_advice.csv`` and
``site_advice_costs.csv`` under ``tables/``, so the claim check traces them.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from gguf_fragility import store
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.report import charts, findings, pages
from gguf_fragility.report import lesions as lesion_text
from gguf_fragility.report.pages import cols, md_table, read_ladders, read_table
from gguf_fragility.stats import transfer
from gguf_fragility.stats.decision import GIB, recommend
from gguf_fragility.stats.grid import UNTESTABLE
from gguf_fragility.stats.lens.base import ACCURACY
from gguf_fragility.stats.lens.registry import LENSES, with_role
from gguf_fragility.stats.relevance import BEYOND, CHANGE, EQUIVALENT, NO_FLOOR, NO_ROOM, UNDECIDED
from gguf_fragility.stats.sequential import ANYTIME_METHOD, budget_summary


class Verdict(NamedTuple):
    """How the landing page shows one decision label of the tables."""

    label: str
    colour: str
    shape: str


# The decision labels of comparisons.csv as the page names and draws them: the one place to
# rewire when the verdicts change (loss beyond the margin / change within it).
VERDICTS = {BEYOND: Verdict("loss beyond the margin", "#c62828", "triangle-down"),
            CHANGE: Verdict("change, possibly within the margin", "#ef6c00", "square"),
            EQUIVALENT: Verdict("equivalent within the margin", "#2e7d32", "circle"),
            UNDECIDED: Verdict("undecided", "#8d8d8d", "diamond"),
            NO_FLOOR: Verdict("answers changed (no floor)", "#b0a0c0", "triangle-up"),
            NO_ROOM: Verdict("no room: the reference is under the margin", "#d7ccc8", "cross"),
            UNTESTABLE: Verdict("untestable", "#cfcfcf", "cross")}
MEMORY_WORDS = {"llama.cpp": ("planned", "{} planned"),  # decision.csv's memory_source:
                "file+kv": ("file + KV", "{} as file + KV cache"),  # cost table header and
                "file": ("memory: file", "{} as file size"),  # sentence form
                "peak_rss": ("peak RSS", "{} peak RSS")}
CHART_PREFERENCE = ("death_order", "accuracy_vs_bpw", "lens_heatmap", "decision_matrix")
MIB = 2**20


class Advice(NamedTuple):
    """Result of :func:`advice`."""

    picks: pd.DataFrame  # model × budget: decision.recommend's pick, memory in GiB and MiB
    costs: pd.DataFrame  # model × budget × family the pick may cost: worst_pp, decision


def advice(decision: pd.DataFrame, comparisons: pd.DataFrame, budgets_gib, *,
           alpha: float = 0.05, margin: float = 0.05) -> Advice:
    """
    Per model and memory budget, the rung to run and the families it may cost.

    Parameters
    ----------
    decision : pandas.DataFrame
        ``decision.csv`` (or :func:`gguf_fragility.stats.decision.decision_matrix`).
    comparisons : pandas.DataFrame
        ``comparisons.csv``: its measurable correctness rows give each family's interval.
    budgets_gib : sequence of float
    alpha, margin : float
        The statistics' level and correctness equivalence margin (fractions).

    Returns
    -------
    Advice
        ``picks``: :func:`~gguf_fragility.stats.decision.recommend`'s rows (the smallest
        rung shown equivalent on every family; else the reference; else the fitting rung
        with the best worst-family bound; ``rung`` "" when nothing fits) plus
        ``memory_gib, memory_mib`` and the model's ``smallest_rung, smallest_gib,
        smallest_mib``. ``costs``: for a pick not shown equivalent, each family whose
        loss is shown or whose interval reaches beyond ``-margin``, with ``worst_pp``, the
        most it may lose in accuracy points: the lower bound of its Tango interval at level
        ``alpha / m`` over the rung's ``m`` families (the bounds whose minimum is
        ``decision.csv``'s ``worst_sim_low``), largest first.
    """
    picks = recommend(decision, tuple(budgets_gib))
    picks["rung"] = transfer.names(picks["rung"])
    picks["memory_gib"], picks["memory_mib"] = picks["memory_bytes"] / GIB, picks["memory_bytes"] / MIB
    small = decision.sort_values("memory_bytes").groupby("model").first()
    picks["smallest_rung"] = picks["model"].map(small["rung"])
    picks["smallest_gib"] = picks["model"].map(small["memory_bytes"]) / GIB
    picks["smallest_mib"] = picks["smallest_gib"] * GIB / MIB
    acc = with_role(ACCURACY)
    k = comparisons[(comparisons["lens"] == acc) & comparisons["measurable"].astype(bool)]
    rows = []
    for p in picks.itertuples():
        g = k[(k["model"] == p.model) & (k["rung"] == p.rung)]
        if g.empty or p.quality == EQUIVALENT:
            continue
        low = LENSES[acc].interval(g, alpha / len(g)).low
        for (_, f), lo in zip(g.iterrows(), low, strict=True):
            if lo <= -margin or f["decision"] == BEYOND:
                rows.append({"model": p.model, "budget_gib": p.budget_gib, "rung": p.rung,
                             "family": f["family"], "decision": f["decision"],
                             "worst_pp": -100 * lo})
    costs = pd.DataFrame(rows, columns=["model", "budget_gib", "rung", "family", "decision",
                                        "worst_pp"])
    costs = costs.sort_values(["model", "budget_gib", "worst_pp", "family"],
                              ascending=[True, True, False, True], ignore_index=True)
    return Advice(picks, costs)


def _memory(gib: float, mib: float, source: str = "") -> str:
    """Bytes as the text prints them: MiB below 1 GiB, else GiB, with the source's word."""
    text = f"{mib:.0f} MiB" if gib < 1 else f"{gib:.2f} GiB"
    source = source if isinstance(source, str) else ""
    return MEMORY_WORDS.get(source, ("", "{} (" + source + ")" if source else "{}"))[1].format(text)


def _names(values) -> str:
    """``[a, b, c]`` as "a, b and c"."""
    v = list(values)
    return ", ".join(v[:-1]) + " and " + v[-1] if len(v) > 1 else "".join(v)


def _budgets(values) -> str:
    """``[2, 4, 8]`` as "2, 4 or 8 GiB"."""
    v = [f"{b:g}" for b in values]
    return (", ".join(v[:-1]) + " or " + v[-1] if len(v) > 1 else v[0]) + " GiB"


def advice_sentences(adv: Advice, *, margin: float) -> dict[str, list[str]]:
    """One Markdown sentence per model and run of budgets with the same pick."""
    m = f"±{100 * margin:g} points"
    out: dict[str, list[str]] = {}
    for model, g in adv.picks.groupby("model", sort=True):
        runs = (g["rung"] != g["rung"].shift()).cumsum()
        for _, r in g.groupby(runs, sort=False):
            p, when = r.iloc[0], f"With {_budgets(r['budget_gib'])}"
            mem = _memory(p["memory_gib"], p["memory_mib"], p["memory_source"]) if p["rung"] else ""
            if p["rung"] == "":
                s = (f"{when}, nothing fits: the smallest rung, **{p['smallest_rung']}**, needs "
                     f"{_memory(p['smallest_gib'], p['smallest_mib'])}.")
            elif p["quality"] == EQUIVALENT:
                s = (f"{when}, run **{p['rung']}** ({p['bpw']:.2f} bpw, {mem}): every family is "
                     f"shown within {m} of the reference's accuracy.")
            elif p["quality"] == "reference":
                s = (f"{when}, run the reference, **{p['rung']}** ({mem}): no smaller rung is "
                     f"shown within {m} on every family.")
            else:
                c = adv.costs[(adv.costs["model"] == model)
                              & (adv.costs["budget_gib"] == p["budget_gib"])]
                by = c.assign(v=c["worst_pp"].map("{:.1f}".format)).groupby("v", sort=False)
                lost = _names(f"{_names(f['family'])} up to {v} points" for v, f in by)
                shown = _names(c.loc[c["decision"] == BEYOND, "family"])
                s = (f"{when}, the best that fits is **{p['rung']}** ({p['bpw']:.2f} bpw, {mem}): "
                     + (f"it may cost {lost} of accuracy" if lost else
                        f"it is not shown within {m} on every family")
                     + (f" (a loss beyond {m} is shown on {shown})" if shown else "")
                     + f"; none that fits is shown within {m} on every family.")
            out.setdefault(model, []).append(s)
    return out


# ----------------------------------------------------------------- the first screen


def _inline_svg(path: Path, caption: str, cls: str = "gf-chart") -> str:
    """A figure whose SVG is inlined (no request, no JavaScript)."""
    svg = re.sub(r"<\?xml[^>]*\?>\s*", "", path.read_text())
    return (f"```{{=html}}\n<figure class=\"figure {cls}\">\n{svg}\n"
            f"<figcaption>{html.escape(caption)}</figcaption>\n</figure>\n```\n")


def _effects(run: RunLayout, model: str, cmp: pd.DataFrame, margin: float) -> Path | None:
    """The family × rung chart of one model's correctness changes as an SVG file (None when no
    family is measurable)."""
    k = cmp[(cmp["model"] == model) & (cmp["lens"] == with_role(ACCURACY))
            & cmp["measurable"].astype(bool)]
    if k.empty:
        return None
    df = pd.DataFrame({"family": k["family"], "rung": k["rung"], "bpw": k["bpw"].astype(float),
                       "change": 100 * k["effect"], "low": 100 * k["ci_low"],
                       "high": 100 * k["ci_high"],
                       "verdict": [VERDICTS[d].label if d in VERDICTS else d
                                   for d in k["decision"]]})
    legend = [v for d, v in VERDICTS.items()
              if d not in (UNTESTABLE, NO_ROOM) or d in set(k["decision"])]
    return charts.save(charts.effects_chart(df, margin_pp=100 * margin, verdicts=legend),
                       f"site_effects_{re.sub(r'[^A-Za-z0-9_.-]', '-', model)}", run)


def _cost_table(dm: pd.DataFrame) -> str:
    """Each rung's cost for one model (a data table)."""
    src = dm["memory_source"].dropna().unique()
    word = MEMORY_WORDS[src[0]][0] if len(src) == 1 and src[0] in MEMORY_WORDS else "memory"
    view = pd.DataFrame({
        "rung": dm["rung"], "bpw": dm["bpw"].astype(float),
        "file": [_memory(b / GIB, b / MIB) for b in dm["file_size_bytes"]],
        word: [_memory(b / GIB, b / MIB) if np.isfinite(b) else "" for b in dm["memory_bytes"]],
        "prompt t/s": [f"{x:,.0f}" if np.isfinite(x) else "" for x in dm["prompt_tps"]],
        "gen t/s": [f"{x:,.1f}" if np.isfinite(x) else "" for x in dm["gen_tps"]]})
    return md_table(view.sort_values("bpw", ascending=False), 2)


def first_screen_markdown(run: RunLayout) -> str:
    """The first screen: per model its chart, its recommendation per budget, its costs."""
    dm, cmp = read_table(run, Table.DECISION), read_table(run, Table.COMPARISONS)
    if dm is None or cmp is None:
        out = ["Notebook 05 (statistics) has not written its tables for this profile yet, so "
               "there is nothing to recommend. What the run did produce is below.\n"]
        lad = read_ladders(run)
        if lad is not None:
            out.append("\n## Ladders\n\n" + md_table(cols(lad, "model", "rung", "bpw",
                                                            "file_size_bytes", "reference_kind")))
        return "".join(out)
    cfg = run.stats_config
    conf = json.loads(cfg.read_text()) if cfg.exists() else {}
    alpha, margin = float(conf.get("alpha", 0.05)), float(conf.get("equivalence_margin", 0.05))
    adv = advice(dm, cmp, conf.get("budgets_gib", (1, 2, 4, 8)), alpha=alpha, margin=margin)
    store.write_table_atomic(adv.picks, run.table(Table.SITE_ADVICE))
    store.write_table_atomic(adv.costs, run.table(Table.SITE_ADVICE_COSTS))
    text = advice_sentences(adv, margin=margin)
    out = ["::::: {.gf-first}\n\n"]
    interval = ("confidence sequence (valid at every look of the budgeted sweep)"
                if (cmp["p_method"] == ANYTIME_METHOD).any() else "interval")
    for model, g in dm.groupby("model", sort=True):
        cap = (f"Each rung's accuracy change against {model}'s reference, with its "
               f"{100 * (1 - alpha):g}% {interval}. Band: the ±{100 * margin:g}-point "
               "equivalence margin. Colour: the decision after the corrected family of tests.")
        chart = _effects(run, model, cmp, margin)
        out.append(f":::: {{.gf-model}}\n\n### {model}\n\n"
                   + (_inline_svg(chart, cap) if chart else "No family is measurable.\n")
                   + "\n::: {.gf-recommend}\n\n"
                   + "".join(f"- {s}\n" for s in text.get(model, []))
                   + "\n:::\n\n" + _cost_table(g) + "\n::::\n\n")
    return "".join(out) + ":::::\n"


# ----------------------------------------------------------------- below the first screen


def deaths_markdown(run: RunLayout, model: str) -> str:
    """Which families died at which rung on which lens, with the margin each lens's loss lies
    beyond, for one model ("" when none did)."""
    order, cmp = read_table(run, Table.DEATH_ORDER), read_table(run, Table.COMPARISONS)
    g = order[order["model"] == model] if order is not None else pd.DataFrame()
    parts = []
    for lens in LENSES if not g.empty else ():
        dead = g[transfer.names(g[f"death_rung_{lens}"]) != ""].sort_values(
            [f"death_bpw_{lens}", "family"], ascending=[False, True])
        if len(dead):
            mine = (cmp[(cmp["model"] == model) & (cmp["lens"] == lens)] if cmp is not None
                    else pd.DataFrame(columns=["unit", "equivalence_margin"]))
            parts.append(f"on **{lens}** (beyond {pages.margin_text(mine)}), " + ", ".join(
                f"{r['family']} at {r[f'death_rung_{lens}']} ({r[f'death_bpw_{lens}']:.2f} bpw)"
                for _, r in dead.iterrows()))
    return "; ".join(parts)


def _counts(head: pd.DataFrame, run: RunLayout) -> str:
    """Counts per model and lens (a table), then the deaths, or "nothing was shown" once."""
    view = pd.DataFrame({
        "model": head["model"], "lens": head["lens"],
        "margin": head["margin"],
        "families with a loss beyond it": [f"{a} of {b}" for a, b in zip(
            head["n_dead"], head["n_families"], strict=True)],
        "first to die": [f"{f} at {r}" if f else "" for f, r in zip(
            transfer.names(head["first_family"]), transfer.names(head["first_death_rung"]),
            strict=True)],
        "cells": head["n_cells"], "loss beyond the margin": head["n_loss"],
        "change, possibly within it": head["n_change"], "equivalent": head["n_equivalent"],
        "undecided": head["n_undecided"], "no floor": head["n_no_floor"],
        "no room": head["n_no_room"], "untestable": head["n_untestable"]})
    out = ["\n## Counts\n\nEvery measurable cell (model × lens × family × rung) is judged "
           "against its lens's margin (the table's column: accuracy points, points of excess "
           "flips, or points of the probability of the gold answer or of the reference's "
           "reply per token) and ends as *loss beyond the margin shown* (the whole interval "
           "beyond it: the only label that makes a family die), *change shown, possibly "
           "within the margin*, *equivalent within the margin shown*, *undecided*, *answers "
           "changed (no floor)* (fidelity without a measured noise floor), *no room* (the "
           "reference gives its answer less probability than the margin, so no rung could "
           "lose the margin and an equivalence would say nothing) or *untestable* "
           "([Methods](methods.qmd)). The first to die is ranked by effect; families whose "
           "effects cannot be separated are named together as tied, and a family whose "
           "loss there is not shown beyond the margin (too few items, say) but cannot be "
           "shown smaller is added as *maybe*.\n\n", md_table(view)]
    deaths = {m: deaths_markdown(run, m) for m in sorted(head["model"].unique())}
    if not (head["n_loss"].sum() or head["n_equivalent"].sum()):
        out.append("\nNothing was shown: no cell has a loss or an equivalence shown.\n")
    elif any(deaths.values()):
        out.append("\nWhere families died (a loss beyond the margin):\n\n" + "".join(
            f"- **{m}**: {d}.\n" for m, d in deaths.items() if d))
    return "".join(out)


def budget_markdown(run: RunLayout) -> str:
    """A budgeted run's looks: the cells its budget decided, the items each used, and what a
    further few minutes would likely settle ("" for a fixed design)."""
    seq = read_table(run, Table.SEQUENTIAL)
    if seq is None or seq.empty:
        return ""
    b = budget_summary(seq)
    store.write_table_atomic(b.cells, run.table(Table.SITE_BUDGET_CELLS))
    store.write_table_atomic(b.further, run.table(Table.SITE_BUDGET_FURTHER))
    per = b.further.drop_duplicates("model").set_index("model")
    view = pd.DataFrame({"model": per.index, "verdicts": per["verdicts"].to_numpy(),
                         "decided": per["decided"].to_numpy(),
                         "items per cell": [f"{a}" if a == z else f"{a} to {z}" for a, z in zip(
                             per["items_min"], per["items_max"], strict=True)]})
    f = b.further.pivot(index="model", columns="minutes", values="likely_decided")
    for m in f.columns:
        view[f"projected in {m:g} more min"] = f[m].reindex(per.index).to_numpy()
    view["not within the family's items"] = per["not_within_items"].to_numpy()
    decided = "; ".join(f"{m}: {r['decided']} of {r['verdicts']} lens verdicts"
                        for m, r in per.iterrows())
    return ("\n## Budgeted sweep\n\n"
            f"The sweep ran in {int(seq['looks'].max())} looks; its budget decided {decided} "
            "(a verdict is one lens on one cell, model × rung × family, showing a loss beyond "
            "its margin or equivalence within it). After each look only the cells projected to "
            "reach a verdict within the minutes left got more items, cheapest verdicts first. "
            "Every cell "
            "was judged by anytime-valid confidence sequences, which stay valid at every look and "
            "when a larger budget extends the run ([Methods](methods.qmd)): rerun with a "
            "larger `--budget` to continue the undecided cells. The last columns are the "
            "looks' own plan for further minutes, both models in one budget: each cell's own "
            "items replayed as the items to come, priced at the seconds per item measured on "
            "this machine (a family's reference and floor items shared by its rungs), "
            "cheapest verdicts first; it is optimistic (a cell whose first items all agree "
            "may meet disagreements later: Measurements), so read it as an upper guide. "
            "Verdicts whose projection needs more items than their family has are counted "
            "apart.\n\n" + md_table(view))


def _mdes(head: pd.DataFrame, discordance: float) -> str:
    """What the undecided cells could have shown beyond the margin, per model and lens (a
    table), with the design discordance the paired lenses' power assumes."""
    out = ["\n## Planned minimum detectable effects\n\n"]
    if not (head["n_undecided"] > 0).any():
        return out[0] + "No cell is undecided.\n"
    und = head[(head["n_undecided"] > 0) & np.isfinite(head["mde_low"])]
    if und.empty:
        return out[0] + ("A budgeted run's cells are judged by sequences, not by a fixed-sample "
                         "design, so no planned MDE applies; the Budgeted sweep section prices "
                         "further minutes instead.\n")
    view = pd.DataFrame({
        "model": und["model"], "lens": und["lens"], "undecided cells": und["n_undecided"],
        "could have detected": [f"{a:.1f}" if f"{a:.1f}" == f"{b:.1f}" else f"{a:.1f} to {b:.1f}"
                                for a, b in zip(und["mde_low"], und["mde_high"], strict=True)],
        "unit": np.where(und["mde_unit"] == "pp", "points",
                         "SD of the per-item change"),
        "planned for": und["mde_basis"],
        "noise floor flips (%)": [f"{x:.1f}" if np.isfinite(x) else
                                  ("not measured" if LENSES[lens].against_floor else "")
                                  for x, lens in zip(und["floor_flip_pct"], und["lens"],
                                                     strict=True)]})
    return "".join(out) + (
        "The smallest loss *beyond the margin* each lens's undecided cells could have shown "
        "with 80% power, at their corrected level, for the test the verdict uses (column "
        "*planned for*). For correctness and fidelity the exact power assumes the profile's "
        f"design discordance (`design_discordance`): {100 * discordance:g}% of items change "
        "their answer, either way; where that cannot reach the power, every discordant item "
        "a loss. The margin lens's is simulated from each cell's own "
        "changes. Fidelity is tested against the noise floor (the reference re-run with "
        "other batch shapes), or against zero where none was measured.\n\n" + md_table(view))


def details_markdown(run: RunLayout) -> str:
    """Counts, planned MDEs, the family of tests, transfer, lesions, settings beside the ladder."""
    head = pages.headline_table(run)
    out = []
    if not head.empty:
        conf = json.loads(run.stats_config.read_text()) if run.stats_config.exists() else {}
        out += [_counts(head, run), budget_markdown(run),
                _mdes(head, float(conf.get("design_discordance", 0.2)))]
        fam = pages.family_table(run)
        if fam is not None:
            out.append("\n## The family of tests\n\nOne per model and lens; its settings are "
                       "on the [Methods](methods.qmd) page.\n\n"
                       + md_table(fam.drop(columns=["rungs, lowest first"]), 4))
    rank, dec = read_table(run, Table.TRANSFER_RANK), read_table(run, Table.TRANSFER_DECISIONS)
    out.append("\n## Does the death order transfer?\n\n")
    if rank is not None and len(rank):
        a, b = rank.iloc[0]["model_a"], rank.iloc[0]["model_b"]
        out.append(findings.transfer_conclusion(rank, dec, a, b) + "\n")
    else:
        out.append("Transfer needs two models with sweep results; this profile has fewer.\n")
    out.append(_lesion_sentences(run))
    beside = read_table(run, Table.AXIS_COMPARISONS)
    if beside is not None and len(beside):
        out.append("\n## Beside the ladder: KV cache and importance matrix\n\n"
                   "Each rung below differs from its comparator in one setting (chapter 7): a "
                   "*gain shown* is the comparator's loss against it, tested the other way.\n\n"
                   + findings.axis_findings(beside) + "\n")
    more = [run.figures_dir / f"{n}.svg" for n in CHART_PREFERENCE]
    more = [c for c in more if c.exists()] or _fragility_chart(run)
    if more:
        out.append("\n## More charts\n\n" + _inline_svg(more[0], f"Figure {more[0].stem} of this run."))
    return "".join(out)


def _lesion_sentences(run: RunLayout) -> str:
    """Per model with lesion rungs: which group reproduces the full rung's loss, then the
    protective recipe's verdict where it was swept (chapter 8)."""
    shares = read_table(run, Table.LESION_SHARES)
    if shares is None or shares.empty:
        return ""
    shares = shares.assign(kind=shares["kind"].fillna(""), depth=shares["depth"].fillna(""))
    out = ["\n## Why it dies: lesions\n\nEach lesion rung keeps the model at Q8_0 except one "
           "tensor group; its share is the part of the full low rung's loss on the margin "
           "lens (points of gold-answer or per-token reply probability) that the group alone "
           "reproduces (the lesions chapter has the whole map).\n\n"]
    for model in sorted(shares["model"].unique()):
        out.append(f"- {lesion_text.lesion_sentence(shares, model)}\n")
    comp, rec = read_table(run, Table.RECIPE_COMPARISON), read_table(run, Table.LESION_RECIPE)
    if comp is not None and rec is not None and (verdict := lesion_text.recipe_findings(
            comp, rec.fillna({"recipe": ""}))):
        out.append("\nThe protective recipe, judged by the statistics chapter like every rung:"
                   "\n\n" + verdict + "\n")
    return "".join(out)


def _fragility_chart(run: RunLayout) -> list[Path]:
    """A fragility-per-family chart from ``death_order.csv`` when notebook 05 drew none."""
    order = read_table(run, Table.DEATH_ORDER)
    if order is None or order.empty:
        return []
    import altair as alt

    charts.use_svg()
    fig = alt.Chart(order).mark_bar().encode(
        x=alt.X("fragility:Q", title="mean accuracy loss over the rungs (pp)"),
        y=alt.Y("family:N", sort="-x", title=None),
        color=alt.Color("model:N", legend=alt.Legend(orient="bottom")),
        yOffset="model:N").properties(width=420, title="Fragility per family")
    return [charts.save(fig, "site_fragility", run)]


GENERATED = {**pages.GENERATED, "landing": first_screen_markdown,
             "landing-details": details_markdown}
