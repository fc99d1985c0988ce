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
import inspect
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

from gguf_fragility import paths, store
from gguf_fragility.layout import RunLayout
from gguf_fragility.stats import transfer
from gguf_fragility.stats.inputs import read_ladder

PACKAGES = ("llama_cpp_python", "numpy", "pandas", "scipy", "statsmodels", "altair",
            "vl-convert-python", "papermill", "nbformat", "smalldocs")
CHART_PREFERENCE = ("death_order", "accuracy_vs_bpw", "netloss_heatmap", "decision_matrix")


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
    from gguf_fragility.stats import paired

    rows = []
    cfg = run.tables_dir / "stats_config.json"
    conf = json.loads(cfg.read_text()) if cfg.exists() else {}
    for k, v in conf.items():
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, int | float) and not isinstance(x, bool):
                rows.append((k, float(x), "stats_config.json"))
    alpha = float(conf.get("alpha", 0.05))
    rows.append(("confidence_level_pct", 100 * (1 - alpha), "1 - alpha"))
    rows += [(f"tier_floor_pp_{i}", -100 * f, "paired.TIER_FLOORS")
             for i, f in enumerate(paired.TIER_FLOORS)]
    power = inspect.signature(paired.mde_paired).parameters["power"].default
    rows.append(("mde_power_pct", 100 * power, "paired.mde_paired"))
    rows += [(f"tost_margin_pp_{pp}", float(pp), "grid._add_tests") for pp in (3, 5)]
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
    One row per model with the landing page's headline facts, from notebook 05's tables.

    Columns: ``model, n_families, n_dead, first_family, first_death_rung, first_death_bpw,
    most_robust, safest_rung, safest_bpw, safest_worst_family, safest_worst_pp,
    safest_ci_low_pp, safest_ci_high_pp, n_kl_cells, kl_accuracy_rho``. *Safest low rung*
    = the lowest-bpw rung (reference excluded) at which no family is significantly worse
    on usable items. ``kl_accuracy_rho`` = Spearman's rho between answer-position KL and
    the accuracy difference over the model's measurable family × rung cells (usable items).
    """
    order, dm, cmp = (read_table(run, n) for n in ("death_order", "decision", "comparisons"))
    if order is None:
        return pd.DataFrame()
    rows = []
    order = order[order["subset"] == transfer.SUBSET]
    for model, g in order.groupby("model", sort=True):
        g = g.sort_values(["rank", "family"])
        dead = g[transfer.names(g["death_rung"]) != ""]
        first = dead.sort_values(["death_bpw", "rank"], ascending=[False, True]).head(1)
        row = {"model": model, "n_families": len(g), "n_dead": len(dead),
               "first_family": first["family"].iloc[0] if len(first) else "",
               "first_death_rung": first["death_rung"].iloc[0] if len(first) else "",
               "first_death_bpw": first["death_bpw"].iloc[0] if len(first) else np.nan,
               "most_robust": g["family"].iloc[-1]}
        if dm is not None:
            d = dm[(dm["model"] == model) & ~dm["is_reference"].astype(bool)
                   & (dm["n_families_worse"] == 0)
                   & dm["tier"].isin(["negligible", "acceptable"])].sort_values("bpw")
            if len(d):
                s = d.iloc[0]
                row.update(safest_rung=s["rung"], safest_bpw=s["bpw"],
                           safest_worst_family=s["worst_family"],
                           safest_worst_pp=100 * s["worst_diff"],
                           safest_ci_low_pp=100 * s["worst_ci_low"],
                           safest_ci_high_pp=100 * s["worst_ci_high"])
        if cmp is not None:
            c = cmp[(cmp["model"] == model) & (cmp["subset"] == transfer.SUBSET)
                    & cmp.get("measurable", True)]
            c = c[np.isfinite(c["kl_mean"]) & np.isfinite(c["diff"])]
            row["n_kl_cells"] = len(c)
            if len(c) >= 3 and c["kl_mean"].nunique() > 1 and c["diff"].nunique() > 1:
                row["kl_accuracy_rho"] = float(sps.spearmanr(c["kl_mean"], c["diff"]).statistic)
        rows.append(row)
    return pd.DataFrame(rows)


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
        out.append("## Headline\n\nOne row per model, on usable items (those the reference "
                   "knows robustly); rungs are compared with the model's own reference.\n\n")
        cols = {"model": "model", "first_family": "first to die", "first_death_rung": "at rung",
                "first_death_bpw": "real bpw", "most_robust": "most robust",
                "safest_rung": "safest low rung", "safest_bpw": "its real bpw",
                "safest_worst_pp": "worst family (pp)", "kl_accuracy_rho": "KL vs accuracy rho"}
        out.append(_md_table(head[[c for c in cols if c in head.columns]].rename(columns=cols)))
        out.append("\n## Death order per model\n")
        for _, h in head.iterrows():
            s = f"- **{h['model']}**: "
            if h["n_dead"]:
                s += (f"{int(h['n_dead'])} of {int(h['n_families'])} families die somewhere on "
                      f"the ladder; the first is {h['first_family']} at {h['first_death_rung']} "
                      f"({h['first_death_bpw']:.2f} real bits per weight). ")
            else:
                s += f"none of its {int(h['n_families'])} families is significantly worse at any rung. "
            s += f"The most robust family is {h['most_robust']}.\n"
            out.append(s)
        out.append("\n## The safest low rung\n")
        for _, h in head.iterrows():
            if isinstance(h.get("safest_rung"), str) and h["safest_rung"]:
                out.append(f"- **{h['model']}**: {h['safest_rung']} ({h['safest_bpw']:.2f} real "
                           f"bits per weight) is the lowest rung with no family significantly "
                           f"worse and an acceptable worst-family loss; its worst family, "
                           f"{h['safest_worst_family']}, changes by "
                           f"{h['safest_worst_pp']:.1f} pp (interval {h['safest_ci_low_pp']:.1f} "
                           f"to {h['safest_ci_high_pp']:.1f} pp).\n")
            else:
                out.append(f"- **{h['model']}**: no rung below the reference both shows no "
                           "significant loss and keeps its worst family's loss in an acceptable "
                           "tier.\n")
        out.append("\n## KL divergence against accuracy\n")
        for _, h in head.iterrows():
            if np.isfinite(h.get("kl_accuracy_rho", np.nan)):
                out.append(f"- **{h['model']}**: over {int(h['n_kl_cells'])} family × rung cells, "
                           f"Spearman's rho between answer-position KL and the accuracy change "
                           f"is {h['kl_accuracy_rho']:.2f}.\n")
            else:
                out.append(f"- **{h['model']}**: too few cells with a KL divergence to correlate.\n")
    rank, safety = read_table(run, "transfer_rank"), read_table(run, "transfer_safety")
    out.append("\n## Does it transfer?\n\n")
    if rank is not None and len(rank):
        a, b = rank.iloc[0]["model_a"], rank.iloc[0]["model_b"]
        out.append(transfer.conclusion(rank, safety, a, b) + "\n")
    else:
        out.append("Transfer needs two models with sweep results; this profile has fewer.\n")
    charts = [run.figures_dir / f"{n}.svg" for n in CHART_PREFERENCE]
    charts = [c for c in charts if c.exists()] or _fragility_chart(run) or sorted(
        run.figures_dir.glob("*.svg"))
    if charts:
        out.append("\n## Chart\n\n" + _inline_svg(charts[0], f"Figure {charts[0].stem} of this run."))
    return "".join(out)


def _fragility_chart(run: RunLayout) -> list[Path]:
    """A fragility-per-family chart from ``death_order.csv`` when notebook 05 drew none."""
    order = read_table(run, "death_order")
    if order is None or order.empty:
        return []
    import altair as alt

    from gguf_fragility.report import charts

    charts.use_svg()
    d = order[order["subset"] == transfer.SUBSET]
    fig = alt.Chart(d).mark_bar().encode(
        x=alt.X("fragility_mean_pp:Q", title="mean net loss over the ladder (pp)"),
        y=alt.Y("family:N", sort="-x", title=None), color=alt.Color("model:N"),
        yOffset="model:N").properties(width=420, title="Fragility per family")
    return [charts.save(fig, "site_fragility", run)]


def limitations_counts(run: RunLayout) -> str:
    """Generated sentences for the limitations page: item counts and reference kinds."""
    out = []
    acc = read_table(run, "accuracy")
    if acc is not None:
        ref = acc[(acc["subset"] == transfer.SUBSET) & acc["is_reference"].astype(bool)]
        for model, g in ref.groupby("model"):
            out.append(f"- **{model}**: families have between {int(g['n'].min())} and "
                       f"{int(g['n'].max())} usable items.\n")
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


GENERATED = {"landing": landing_markdown, "limitations-counts": limitations_counts,
             "reproducibility": reproducibility_markdown}
