"""The generated parts of the report's pages, computed from a run's tables.

:mod:`gguf_fragility.report.site` fills each ``<!-- generated: name -->`` marker in ``report/*.qmd``
with ``GENERATED[name](run)``. Every number this prose states is a cell of a CSV under
``outputs/<profile>/tables/``; the derived ones (counts, correlations) are first written to
``site_headline.csv`` and ``settings.csv`` there (:func:`headline_table`,
:func:`settings_table`), so the claim check (:mod:`gguf_fragility.report.claims`) can trace them.
"""

from __future__ import annotations

import html
import importlib.metadata as md
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from gguf_fragility import paths, store
from gguf_fragility.ladder import imatrix
from gguf_fragility.layout import RunLayout
from gguf_fragility.stats import axes, lesions, recipes, transfer
from gguf_fragility.stats.grid import LENSES
from gguf_fragility.stats.inputs import read_ladder
from gguf_fragility.stats.lenses import EQUIVALENT

PACKAGES = ("llama_cpp_python", "numpy", "pandas", "scipy", "statsmodels", "altair",
            "vl-convert-python", "papermill", "nbformat", "smalldocs")
CHART_PREFERENCE = ("death_order", "accuracy_vs_bpw", "lens_heatmap", "decision_matrix")


def read_table(run: RunLayout, name: str) -> pd.DataFrame | None:
    """``tables/<name>.csv`` of a run, or None when absent."""
    f = run.tables_dir / f"{name}.csv"
    return pd.read_csv(f, keep_default_na=True) if f.exists() else None


def read_ladders(run: RunLayout) -> pd.DataFrame | None:
    """Every ladder manifest of a run, concatenated, or None."""
    try:
        return read_ladder(run)
    except FileNotFoundError:
        return None


# ----------------------------------------------------------------- derived numbers


def settings_table(run: RunLayout) -> pd.DataFrame:
    """The run's settings as ``name, value, source`` rows (numbers the methods text may cite)."""
    rows = []
    cfg = run.tables_dir / "stats_config.json"
    conf = json.loads(cfg.read_text()) if cfg.exists() else {}
    for k, v in conf.items():
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, int | float) and not isinstance(x, bool):
                rows.append((k, float(x), "stats_config.json"))
    alpha = float(conf.get("alpha", 0.05))
    rows.append(("confidence_level_pct", 100 * (1 - alpha), "1 - alpha"))
    rows.append(("min_transfer_families", float(transfer.MIN_FAMILIES), "transfer.MIN_FAMILIES"))
    rows += [("imatrix_chunks", float(imatrix.CHUNKS), "ladder.imatrix.CHUNKS"),
             ("imatrix_chunk_tokens", float(imatrix.CHUNK_TOKENS), "ladder.imatrix.CHUNK_TOKENS"),
             ("calibration_overlap_words", float(imatrix.NGRAM), "ladder.imatrix.NGRAM")]
    try:  # block widths of the ggml types (K-quants 256, legacy 32): the fallback's cause
        from gguf.constants import GGML_QUANT_SIZES

        widths = sorted({blk for blk, _ in GGML_QUANT_SIZES.values() if blk > 1})
        rows += [(f"ggml_block_width_{w}", float(w), "gguf.GGML_QUANT_SIZES") for w in widths]
    except ImportError:
        pass
    prof = paths.profiles_dir() / f"{run.profile}.yaml"
    if prof.exists():
        def walk(d, pre=""):
            for k, v in (d or {}).items():
                if isinstance(v, dict):
                    yield from walk(v, f"{pre}{k}.")
                elif isinstance(v, int | float) and not isinstance(v, bool):
                    yield f"{pre}{k}", float(v)
        rows += [(k, v, f"params/{run.profile}.yaml") for k, v in walk(yaml.safe_load(prof.read_text()))]
    return pd.DataFrame(rows, columns=["name", "value", "source"])


def headline_table(run: RunLayout) -> pd.DataFrame:
    """
    One row per model × lens with the landing page's headline facts, from notebook 05's tables.

    Columns: ``model, lens, n_families`` (measurable), ``n_dead`` (families with a death
    rung), ``first_family, first_death_rung, first_death_bpw`` (the family that dies at the
    highest bpw), ``n_cells, n_decided, n_loss, n_equivalent, n_undecided, n_untestable,
    mde_low, mde_high, mde_unit`` (planned MDE range of the undecided cells; percentage
    points for the fraction lenses, SDs for the margin), ``floor_flip_pct``.
    """
    order, summ = read_table(run, "death_order"), read_table(run, "lens_summary")
    if order is None or summ is None:
        return pd.DataFrame()
    rows = []
    for _, s in summ.iterrows():
        model, lens = s["model"], s["lens"]
        g = order[order["model"] == model]
        rung = transfer.names(g[f"death_rung_{lens}"])
        dead = g[rung != ""].sort_values([f"death_bpw_{lens}", "family"],
                                         ascending=[False, True])
        pp = 100.0 if lens != "margin" else 1.0
        rows.append({"model": model, "lens": lens, "n_families": len(g), "n_dead": len(dead),
                     "first_family": dead["family"].iloc[0] if len(dead) else "",
                     "first_death_rung": dead[f"death_rung_{lens}"].iloc[0] if len(dead) else "",
                     "first_death_bpw": dead[f"death_bpw_{lens}"].iloc[0] if len(dead) else np.nan,
                     "n_cells": int(s["n_cells"]), "n_decided": int(s["n_decided"]),
                     "n_loss": int(s["n_loss"]), "n_equivalent": int(s["n_equivalent"]),
                     "n_undecided": int(s["n_undecided"]),
                     "n_untestable": int(s["n_untestable"]),
                     "mde_low": pp * s["undecided_mde_min"], "mde_high": pp * s["undecided_mde_max"],
                     "mde_unit": "pp" if lens != "margin" else "SD",
                     "floor_flip_pct": 100 * s["floor_flip_rate"]})
    return pd.DataFrame(rows)


def deaths_markdown(run: RunLayout, model: str) -> str:
    """Which families died at which rung on which lens, for one model (names and bpw only)."""
    order = read_table(run, "death_order")
    g = order[order["model"] == model] if order is not None else pd.DataFrame()
    parts = []
    for lens in LENSES:
        if g.empty:
            break
        rung = transfer.names(g[f"death_rung_{lens}"])
        dead = g[rung != ""].sort_values([f"death_bpw_{lens}", "family"], ascending=[False, True])
        if len(dead):
            parts.append(f"on **{lens}**, " + ", ".join(
                f"{r['family']} at {r[f'death_rung_{lens}']} ({r[f'death_bpw_{lens}']:.2f} bpw)"
                for _, r in dead.iterrows()))
        else:
            parts.append(f"on **{lens}**, no family shows a loss at any rung")
    return "; ".join(parts)


# ----------------------------------------------------------------- page text


def _md_table(df: pd.DataFrame, digits: int = 2) -> str:
    """A pipe table (cells are data, not prose: the claim check skips them)."""
    def cell(v):
        if isinstance(v, float):
            return "" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def _cols(df: pd.DataFrame, *names: str) -> pd.DataFrame:
    """The named columns that ``df`` has, in that order."""
    return df[[n for n in names if n in df.columns]]


def _inline_svg(path: Path, caption: str) -> str:
    """A figure whose SVG is inlined (no request, no JavaScript)."""
    svg = re.sub(r"<\?xml[^>]*\?>\s*", "", path.read_text())
    return (f"```{{=html}}\n<figure class=\"figure gf-chart\">\n{svg}\n"
            f"<figcaption>{html.escape(caption)}</figcaption>\n</figure>\n```\n")


def landing_markdown(run: RunLayout) -> str:
    """The landing page's generated findings (Markdown), from the CSVs only."""
    head = headline_table(run)
    out = []
    if head.empty:
        out.append("Notebook 05 (statistics) has not written its tables for this profile yet, "
                   "so there are no findings to show. What the run did produce is below.\n")
        lad = read_ladders(run)
        if lad is not None:
            out.append("## Ladders\n\n" + _md_table(_cols(lad, "model", "rung", "bpw",
                                                          "file_size_bytes", "reference_kind")))
    else:
        out.append("## Headline\n\nEvery rung is compared with its model's own reference on "
                   "every item both answered, through three lenses: **correctness** (paired "
                   "accuracy), **fidelity** (does the rung give the reference's answer, "
                   "against a measured noise floor) and **margin** (the paired change of the "
                   "answer's log-probability, in nats). Every measurable cell ends as *loss "
                   "shown*, *equivalent within the margin shown*, *undecided* or *untestable*; "
                   "a loss is shown only after the corrected family of tests "
                   "([Methods](methods.qmd)), and no rung is called equivalent without an "
                   "interval inside the margin.\n\n")

        view = pd.DataFrame({
            "lens": head["lens"],
            "died": [f"{int(a)} / {int(b)}" for a, b in zip(
                head["n_dead"], head["n_families"], strict=True)],
            "first to die": [f"{f} at {r}" if f else "" for f, r in zip(
                transfer.names(head["first_family"]), transfer.names(head["first_death_rung"]),
                strict=True)],
            "decided": [f"{int(a)} / {int(b)}" for a, b in zip(
                head["n_decided"], head["n_cells"], strict=True)],
            "undecided": head["n_undecided"], "untestable": head["n_untestable"]})
        for model in sorted(head["model"].unique()):
            out.append(f"**{model}** (families died / measurable; cells decided / measurable; "
                       "what the undecided cells could have detected is under *What died "
                       "where*):\n\n")
            out.append(_md_table(view[(head["model"] == model).to_numpy()]) + "\n")
        out.append("\n## What died where\n")
        for model, g in head.groupby("model", sort=True):
            out.append(f"\n### {model}\n\n- Deaths: {deaths_markdown(run, model)}.\n")
            for _, h in g.iterrows():
                s = (f"- **{h['lens']}**: {int(h['n_decided'])} of {int(h['n_cells'])} "
                     f"measurable cells decided ({int(h['n_loss'])} loss shown, "
                     f"{int(h['n_equivalent'])} equivalent within the margin shown), "
                     f"{int(h['n_undecided'])} undecided, {int(h['n_untestable'])} untestable.")
                if h["n_undecided"] and np.isfinite(h["mde_low"]):
                    unit = ("pp" if h["mde_unit"] == "pp"
                            else "standard deviations of the per-item change")
                    low, high = f"{h['mde_low']:.1f}", f"{h['mde_high']:.1f}"
                    span = low if low == high else f"{low} to {high}"
                    s += (f" The undecided cells could have detected a loss of {span} {unit} "
                          "(planned, at their corrected level, with 80% power).")
                if h["lens"] == "fidelity":
                    if np.isfinite(h["floor_flip_pct"]):
                        s += (f" The noise floor (the reference re-run with other batch "
                              f"shapes) changes {h['floor_flip_pct']:.1f}% of the "
                              "reference's answers.")
                    else:
                        s += (" No noise floor was measured: flips are tested against a "
                              "floor of zero.")
                out.append(s + "\n")
        out.append(_rung_sentences(run))
        out.append(_lesion_sentences(run))
    rank, dec = read_table(run, "transfer_rank"), read_table(run, "transfer_decisions")
    out.append("\n## Does the death order transfer?\n\n")
    if rank is not None and len(rank):
        a, b = rank.iloc[0]["model_a"], rank.iloc[0]["model_b"]
        out.append(transfer.conclusion(rank, dec, a, b) + "\n")
    else:
        out.append("Transfer needs two models with sweep results; this profile has fewer.\n")
    beside = read_table(run, "axis_comparisons")
    if beside is not None and len(beside):
        out.append("\n## Beside the ladder: KV cache and importance matrix\n\n"
                   "Each rung below differs from its comparator in one setting (chapter 7): a "
                   "*gain shown* is the comparator's loss against it, tested the other way.\n\n"
                   + axes.axis_findings(beside) + "\n")
    charts = [run.figures_dir / f"{n}.svg" for n in CHART_PREFERENCE]
    charts = [c for c in charts if c.exists()] or _fragility_chart(run) or sorted(
        run.figures_dir.glob("*.svg"))
    if charts:
        out.append("\n## Chart\n\n" + _inline_svg(charts[0], f"Figure {charts[0].stem} of this run."))
    return "".join(out)


def _rung_sentences(run: RunLayout) -> str:
    """Per model: the lowest rung shown equivalent on every family, from the decision matrix."""
    dm = read_table(run, "decision")
    if dm is None:
        return ""
    out = ["\n## Lowest rung shown equivalent\n\n"]
    for model, g in dm.groupby("model", sort=True):
        eq = g[(g["quality"] == EQUIVALENT)].sort_values("bpw")
        if len(eq):
            r = eq.iloc[0]
            out.append(f"- **{model}**: {r['rung']} ({r['bpw']:.2f} bpw) is the lowest rung whose "
                       f"worst family is shown within the correctness margin: the worst family "
                       f"changes by at least {100 * r['worst_sim_low']:.1f} pp (a "
                       "selection-adjusted bound over all families).\n")
        else:
            out.append(f"- **{model}**: no rung below the reference is shown equivalent on every "
                       "family; the worst-family figures in the decision matrix are minima over "
                       "noisy families, with selection-adjusted intervals.\n")
    return "".join(out)


def _lesion_sentences(run: RunLayout) -> str:
    """Per model with lesion rungs: which group reproduces the full rung's loss, then the
    protective recipe's verdict where it was swept (chapter 8)."""
    shares = read_table(run, "lesion_shares")
    if shares is None or shares.empty:
        return ""
    shares = shares.assign(kind=shares["kind"].fillna(""), depth=shares["depth"].fillna(""))
    out = ["\n## Why it dies: lesions\n\nEach lesion rung keeps the model at Q8_0 except one "
           "tensor group; its share is the part of the full low rung's margin loss that the "
           "group alone reproduces (the lesions chapter has the whole map).\n\n"]
    for model in sorted(shares["model"].unique()):
        out.append(f"- {lesions.lesion_sentence(shares, model)}\n")
    comp, rec = read_table(run, "recipe_comparison"), read_table(run, "lesion_recipe")
    if comp is not None and rec is not None and (verdict := recipes.recipe_findings(comp, rec)):
        out.append("\nThe protective recipe, judged by the statistics chapter like every rung:"
                   "\n\n" + verdict + "\n")
    return "".join(out)


def _fragility_chart(run: RunLayout) -> list[Path]:
    """A fragility-per-family chart from ``death_order.csv`` when notebook 05 drew none."""
    order = read_table(run, "death_order")
    if order is None or order.empty:
        return []
    import altair as alt

    from gguf_fragility.report import charts

    charts.use_svg()
    fig = alt.Chart(order).mark_bar().encode(
        x=alt.X("fragility:Q", title="mean accuracy loss over the rungs (pp)"),
        y=alt.Y("family:N", sort="-x", title=None), color=alt.Color("model:N"),
        yOffset="model:N").properties(width=420, title="Fragility per family")
    return [charts.save(fig, "site_fragility", run)]


def limitations_counts(run: RunLayout) -> str:
    """Generated sentences for the limitations page: item counts and reference kinds."""
    out = []
    acc = read_table(run, "accuracy")
    if acc is not None:
        ref = acc[acc["is_reference"].astype(bool)]
        for model, g in ref.groupby("model"):
            out.append(f"- **{model}**: families have between {int(g['n'].min())} and "
                       f"{int(g['n'].max())} items, all of them compared.\n")
    lad = read_ladders(run)
    if lad is not None:
        for model, g in lad[lad["is_reference"].astype(bool)].groupby("model"):
            kind = g["reference_kind"].iloc[0] if "reference_kind" in g else "of unrecorded origin"
            out.append(f"- **{model}**: reference `{g['rung'].iloc[0]}` is *{kind}*.\n")
    return "".join(out) or "No tables yet for this profile.\n"


def _versions() -> pd.DataFrame:
    """Installed versions of the packages that shape the results."""
    rows = [("python", sys.version.split()[0])]
    for p in PACKAGES:
        try:
            rows.append((p, md.version(p)))
        except md.PackageNotFoundError:
            rows.append((p, "not installed"))
    return pd.DataFrame(rows, columns=["package", "version"])


def _provenance(run: RunLayout) -> list[str]:
    """Distinct llama.cpp system-info strings recorded in the run's JSON and parquet files."""
    seen: list[str] = []
    for f in sorted(run.root.glob("*/**/*.json")):
        if "site" in f.parts[len(run.root.parts):][0]:
            continue
        try:
            blob = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for k, v in (blob.items() if isinstance(blob, dict) else ()):
            if "system_info" in k and str(v) not in seen:
                seen.append(str(v))
    for f in sorted(run.sweep_dir.rglob("*.parquet"))[:200]:
        cols = pd.read_parquet(f).columns
        for c in (c for c in cols if "system_info" in c or c == "provenance"):
            for v in pd.read_parquet(f, columns=[c])[c].dropna().astype(str).unique():
                if v not in seen:
                    seen.append(v)
    return seen


def reproducibility_markdown(run: RunLayout) -> str:
    """The reproducibility page's generated part: commands, hashes, versions, system info."""
    out = ["## Commands\n\n```bash\n", f"make autopsy PROFILE={run.profile}\n",
           f".venv/bin/gguf-fragility run --profile {run.profile}\n",
           f".venv/bin/python -m gguf_fragility.report.site {run.profile}\n",
           f".venv/bin/python -m gguf_fragility.report.claims {run.profile}\n```\n\n",
           f"Code version (git describe): `{store.code_version()}`.\n\n"]
    lad = read_ladders(run)
    if lad is not None:
        out.append("## Model files\n\nEvery rung's GGUF, by sha256, as the ladder manifests "
                   "recorded it.\n\n")
        out.append(_md_table(_cols(lad, "model", "rung", "reference_kind", "bpw",
                                   "file_size_bytes", "sha256")))
        for f in sorted((run.root / "ladder").glob("*/ladder.json")):
            j = json.loads(f.read_text())
            out.append(f"\n- `{j.get('model')}` source file sha256 `{j.get('source_sha256')}`\n")
    out.append("\n## Versions\n\nThe environment that rendered this site.\n\n")
    out.append(_md_table(_versions()))
    info = _provenance(run)
    out.append("\n## llama.cpp system information\n\n")
    if info:
        out.append("Recorded with the results:\n\n```text\n" + "\n".join(info) + "\n```\n")
    else:
        out.append("No result of this run recorded it (no sweep cell or cost file yet).\n")
    prof = paths.profiles_dir() / f"{run.profile}.yaml"
    if prof.exists():
        out.append(f"\n## Profile\n\n`params/{run.profile}.yaml`:\n\n```yaml\n{prof.read_text()}```\n")
    if run.timings.exists():
        out.append("\n## Wall time per notebook\n\n" + _md_table(pd.read_csv(run.timings), 1))
    return "".join(out)


def family_of_tests(run: RunLayout) -> str:
    """The methods page's corrected family of tests, per model and lens, from the tables."""
    cmp = read_table(run, "comparisons")
    if cmp is None:
        return "No tables yet for this profile.\n"
    c = cmp[cmp["measurable"].astype(bool)]
    rows = []
    for (model, lens), g in c.groupby(["model", "lens"], sort=True):
        t = g[g["testable"].astype(bool)]
        rows.append({"model": model, "lens": lens, "families": g["family"].nunique(),
                     "tested families": t["family"].nunique(),
                     "hypotheses": len(t), "untestable cells": len(g) - len(t),
                     "Tarone K": int(g["tarone_k"].max()) if g["tarone_k"].notna().any() else "",
                     "first-step level": g["level"].max(),
                     "rungs, lowest first": ", ".join(
                         g.drop_duplicates("rung").sort_values("bpw")["rung"]),
                     "test": g["p_method"].iloc[0]})
    cfg = run.tables_dir / "stats_config.json"
    conf = json.loads(cfg.read_text()) if cfg.exists() else {}
    used = pd.DataFrame({"setting": list(conf), "value": [
        ", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in conf.values()]})
    return ("The family of tests of this run, one per model and lens (cells are data, see "
            "`comparisons.csv`):\n\n" + _md_table(pd.DataFrame(rows), 4)
            + "\nThe settings the statistics used, read from the profile (`stats_config.json`):"
            "\n\n" + _md_table(used, 4))


GENERATED = {"landing": landing_markdown, "limitations-counts": limitations_counts,
             "family-of-tests": family_of_tests,
             "reproducibility": reproducibility_markdown}
