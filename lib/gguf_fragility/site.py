"""Assemble and render the report website of one run profile, offline.

    .venv/bin/python -m gguf_fragility.site default            # quarto if on PATH, else smalldocs
    .venv/bin/python -m gguf_fragility.site smoke --renderer smalldocs

:func:`stage` copies ``_quarto.yml``, ``report/*`` (filling their generated sections from
the CSVs), the executed notebooks (``chapters/``) and the figures into
``outputs/<profile>/site_src/``; :func:`render` renders that folder into
``outputs/<profile>/site/`` with Quarto when it is installed and with smalldocs (the same
``_quarto.yml``, pure Python, no network) otherwise, then checks that no page loads
anything from outside the site and runs the claim check (:mod:`gguf_fragility.claims`).
Every number the generated prose states is a cell of a CSV under
``outputs/<profile>/tables/``; the derived ones (counts, correlations) are first written
to ``site_headline.csv`` and ``settings.csv`` there.
"""

from __future__ import annotations

import argparse
import html
import importlib.metadata as md
import inspect
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

from . import paths, store, transfer

REPORT = paths.REPO / "report"
CONFIG = paths.REPO / "_quarto.yml"
MARKER = re.compile(r"<!--\s*generated:\s*([\w-]+)\s*-->")
PACKAGES = ("llama_cpp_python", "numpy", "pandas", "scipy", "statsmodels", "altair",
            "vl-convert-python", "papermill", "nbformat", "smalldocs")
CHART_PREFERENCE = ("death_order", "accuracy_vs_bpw", "netloss_heatmap", "decision_matrix")


class Rendered(NamedTuple):
    """Result of :func:`render`."""

    renderer: str  # "quarto" or "smalldocs"
    site_dir: Path  # outputs/<profile>/site
    index: Path  # its index.html
    n_pages: int
    external: list[str]  # resources loaded from outside the site ("page: url"); empty = offline
    claims_ok: bool | None  # None when the claim check was not run
    n_untraced: int


def site_dir(profile: str) -> Path:
    """Where the rendered site of a profile goes."""
    return paths.run_dir(profile) / "site"


def stage_dir(profile: str) -> Path:
    """Where the site's sources are assembled before rendering."""
    return paths.run_dir(profile) / "site_src"


def read_table(profile: str, name: str) -> pd.DataFrame | None:
    """``tables/<name>.csv`` of a profile, or None when absent."""
    f = paths.tables_dir(profile) / f"{name}.csv"
    return pd.read_csv(f, keep_default_na=True) if f.exists() else None


def read_ladders(profile: str) -> pd.DataFrame | None:
    """Every ladder manifest of a profile, concatenated, or None."""
    files = sorted((paths.run_dir(profile) / "ladder").glob("*/ladder.csv"))
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else None


# ----------------------------------------------------------------- derived numbers


def settings_table(profile: str) -> pd.DataFrame:
    """The run's settings as ``name, value, source`` rows (numbers the methods text may cite)."""
    from . import stats

    rows = []
    cfg = paths.tables_dir(profile) / "stats_config.json"
    conf = json.loads(cfg.read_text()) if cfg.exists() else {}
    for k, v in conf.items():
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, int | float) and not isinstance(x, bool):
                rows.append((k, float(x), "stats_config.json"))
    alpha = float(conf.get("alpha", 0.05))
    rows.append(("confidence_level_pct", 100 * (1 - alpha), "1 - alpha"))
    rows += [(f"tier_floor_pp_{i}", -100 * f, "stats.TIER_FLOORS")
             for i, f in enumerate(stats.TIER_FLOORS)]
    power = inspect.signature(stats.mde_paired).parameters["power"].default
    rows.append(("mde_power_pct", 100 * power, "stats.mde_paired"))
    rows += [(f"tost_margin_pp_{pp}", float(pp), "grid._add_tests") for pp in (3, 5)]
    try:  # block widths of the ggml types (K-quants 256, legacy 32): the fallback's cause
        from gguf.constants import GGML_QUANT_SIZES

        widths = sorted({blk for blk, _ in GGML_QUANT_SIZES.values() if blk > 1})
        rows += [(f"ggml_block_width_{w}", float(w), "gguf.GGML_QUANT_SIZES") for w in widths]
    except ImportError:
        pass
    prof = paths.PARAMS / f"{profile}.yaml"
    if prof.exists():
        def walk(d, pre=""):
            for k, v in (d or {}).items():
                if isinstance(v, dict):
                    yield from walk(v, f"{pre}{k}.")
                elif isinstance(v, int | float) and not isinstance(v, bool):
                    yield f"{pre}{k}", float(v)
        rows += [(k, v, f"params/{profile}.yaml") for k, v in walk(yaml.safe_load(prof.read_text()))]
    return pd.DataFrame(rows, columns=["name", "value", "source"])


def headline_table(profile: str) -> pd.DataFrame:
    """
    One row per model with the landing page's headline facts, from notebook 05's tables.

    Columns: ``model, n_families, n_dead, first_family, first_death_rung, first_death_bpw,
    most_robust, safest_rung, safest_bpw, safest_worst_family, safest_worst_pp,
    safest_ci_low_pp, safest_ci_high_pp, n_kl_cells, kl_accuracy_rho``. *Safest low rung*
    = the lowest-bpw rung (reference excluded) at which no family is significantly worse
    on usable items. ``kl_accuracy_rho`` = Spearman's rho between answer-position KL and
    the accuracy difference over the model's family × rung cells (usable items).
    """
    order, dm, cmp = (read_table(profile, n) for n in ("death_order", "decision", "comparisons"))
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
            c = cmp[(cmp["model"] == model) & (cmp["subset"] == transfer.SUBSET)]
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


def landing_markdown(profile: str) -> str:
    """The landing page's generated findings (Markdown), from the CSVs only."""
    head = headline_table(profile)
    out = []
    if head.empty:
        out.append("Notebook 05 (statistics) has not written its tables for this profile yet, "
                   "so there are no findings to show. What the run did produce is below.\n")
        lad = read_ladders(profile)
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
    rank, safety = read_table(profile, "transfer_rank"), read_table(profile, "transfer_safety")
    out.append("\n## Does it transfer?\n\n")
    if rank is not None and len(rank):
        a, b = rank.iloc[0]["model_a"], rank.iloc[0]["model_b"]
        out.append(transfer.conclusion(rank, safety, a, b) + "\n")
    else:
        out.append("Transfer needs two models with sweep results; this profile has fewer.\n")
    charts = [paths.figures_dir(profile) / f"{n}.svg" for n in CHART_PREFERENCE]
    charts = [c for c in charts if c.exists()] or _fragility_chart(profile) or sorted(
        paths.figures_dir(profile).glob("*.svg"))
    if charts:
        out.append("\n## Chart\n\n" + _inline_svg(charts[0], f"Figure {charts[0].stem} of this run."))
    return "".join(out)


def _fragility_chart(profile: str) -> list[Path]:
    """A fragility-per-family chart from ``death_order.csv`` when notebook 05 drew none."""
    order = read_table(profile, "death_order")
    if order is None or order.empty:
        return []
    import altair as alt

    from . import charts

    charts.use_svg()
    d = order[order["subset"] == transfer.SUBSET]
    fig = alt.Chart(d).mark_bar().encode(
        x=alt.X("fragility_mean_pp:Q", title="mean net loss over the ladder (pp)"),
        y=alt.Y("family:N", sort="-x", title=None), color=alt.Color("model:N"),
        yOffset="model:N").properties(width=420, title="Fragility per family")
    return [charts.save(fig, "site_fragility", profile)]


def limitations_counts(profile: str) -> str:
    """Generated sentences for the limitations page: item counts and reference kinds."""
    out = []
    acc = read_table(profile, "accuracy")
    if acc is not None:
        ref = acc[(acc["subset"] == transfer.SUBSET) & acc["is_reference"].astype(bool)]
        for model, g in ref.groupby("model"):
            out.append(f"- **{model}**: families have between {int(g['n'].min())} and "
                       f"{int(g['n'].max())} usable items.\n")
    lad = read_ladders(profile)
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


def _provenance(profile: str) -> list[str]:
    """Distinct llama.cpp system-info strings recorded in the run's JSON and parquet files."""
    seen: list[str] = []
    run = paths.run_dir(profile)
    for f in sorted(run.glob("*/**/*.json")):
        if "site" in f.parts[len(run.parts):][0]:
            continue
        try:
            blob = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for k, v in (blob.items() if isinstance(blob, dict) else ()):
            if "system_info" in k and str(v) not in seen:
                seen.append(str(v))
    for f in sorted(paths.sweep_dir(profile).rglob("*.parquet"))[:200]:
        cols = pd.read_parquet(f).columns
        for c in (c for c in cols if "system_info" in c or c == "provenance"):
            for v in pd.read_parquet(f, columns=[c])[c].dropna().astype(str).unique():
                if v not in seen:
                    seen.append(v)
    return seen


def reproducibility_markdown(profile: str) -> str:
    """The reproducibility page's generated part: commands, hashes, versions, system info."""
    out = ["## Commands\n\n```bash\n", f"make autopsy PROFILE={profile}\n",
           f".venv/bin/gguf-fragility run --profile {profile}\n",
           f".venv/bin/python -m gguf_fragility.site {profile}\n",
           f".venv/bin/python -m gguf_fragility.claims {profile}\n```\n\n",
           f"Code version (git describe): `{store.code_version()}`.\n\n"]
    lad = read_ladders(profile)
    if lad is not None:
        out.append("## Model files\n\nEvery rung's GGUF, by sha256, as the ladder manifests "
                   "recorded it.\n\n")
        out.append(_md_table(_cols(lad, "model", "rung", "reference_kind", "bpw",
                                   "file_size_bytes", "sha256")))
        for f in sorted((paths.run_dir(profile) / "ladder").glob("*/ladder.json")):
            j = json.loads(f.read_text())
            out.append(f"\n- `{j.get('model')}` source file sha256 `{j.get('source_sha256')}`\n")
    out.append("\n## Versions\n\nThe environment that rendered this site.\n\n")
    out.append(_md_table(_versions()))
    info = _provenance(profile)
    out.append("\n## llama.cpp system information\n\n")
    if info:
        out.append("Recorded with the results:\n\n```text\n" + "\n".join(info) + "\n```\n")
    else:
        try:
            from .infer import system_info

            now = system_info()
            out.append("No result recorded it; the build installed now reports:\n\n```text\n"
                       f"llama-cpp-python {now['llama_cpp_python']}\n{now['system_info']}\n```\n")
        except Exception as exc:  # noqa: BLE001 - the page must render without llama.cpp
            out.append(f"Not recorded, and llama.cpp cannot be loaded here (`{exc}`).\n")
    prof = paths.PARAMS / f"{profile}.yaml"
    if prof.exists():
        out.append(f"\n## Profile\n\n`params/{profile}.yaml`:\n\n```yaml\n{prof.read_text()}```\n")
    timings = paths.run_dir(profile) / "timings.csv"
    if timings.exists():
        out.append("\n## Wall time per notebook\n\n" + _md_table(pd.read_csv(timings), 1))
    return "".join(out)


GENERATED = {"landing": landing_markdown, "limitations-counts": limitations_counts,
             "reproducibility": reproducibility_markdown}


# ----------------------------------------------------------------- staging and rendering


def _chapter(src: Path, dst: Path) -> None:
    """Copy an executed notebook, turning its first ``# heading`` into a title with its variant."""
    nb = json.loads(src.read_text())
    variant = src.stem.split("__", 1)[1].replace("__", " · ") if "__" in src.stem else ""
    title = src.stem
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            m = re.match(r"\s*#\s+(.+)\n?", text)
            if m:
                title = m.group(1).strip()
                cell["source"] = text[m.end():]
            break
    title = f"{title}: {variant}" if variant else title
    front = {"cell_type": "raw", "metadata": {}, "source": "---\n" + yaml.safe_dump(
        {"title": title}, allow_unicode=True) + "---\n"}
    nb["cells"] = [front, *nb.get("cells", [])]
    dst.write_text(json.dumps(nb))


def stage(profile: str) -> Path:
    """
    Assemble the site's sources for ``profile`` in ``outputs/<profile>/site_src/``.

    Returns
    -------
    pathlib.Path
        The staging folder: ``_quarto.yml`` (output-dir ``../site``), ``index.qmd``,
        ``methods.qmd``, ``limitations.qmd``, ``reproducibility.qmd``, ``styles.css``,
        ``chapters/*.ipynb`` (executed copies) and ``figures/*.svg``.
    """
    tables = paths.tables_dir(profile)
    tables.mkdir(parents=True, exist_ok=True)
    store.write_table_atomic(settings_table(profile), tables / "settings.csv")
    head = headline_table(profile)
    if not head.empty:
        store.write_table_atomic(head, tables / "site_headline.csv")
    out = stage_dir(profile)
    if out.exists():
        shutil.rmtree(out)
    (out / "chapters").mkdir(parents=True)
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["project"]["output-dir"] = "../site"
    (out / "_quarto.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for f in sorted(REPORT.iterdir()):
        if f.suffix == ".qmd":
            text = MARKER.sub(lambda m: GENERATED[m.group(1)](profile), f.read_text())
            (out / f.name).write_text(text)
        elif f.is_file():
            shutil.copy2(f, out / f.name)
    for nb in sorted(paths.executed_dir(profile).glob("*.ipynb")):
        _chapter(nb, out / "chapters" / nb.name)
    if paths.figures_dir(profile).exists():
        shutil.copytree(paths.figures_dir(profile), out / "figures")
    return out


class _Refs(HTMLParser):
    """Collect the URLs a page loads (not the links it offers)."""

    LOADS = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src",
             "audio": "src", "embed": "src", "object": "data", "image": "href", "use": "href"}

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "link" and a.get("href"):
            self.loads.append(a["href"])
        elif tag in self.LOADS and a.get(self.LOADS[tag]):
            self.loads.append(a[self.LOADS[tag]])
        elif tag == "image" and a.get("xlink:href"):
            self.loads.append(a["xlink:href"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


def page_refs(page: Path) -> _Refs:
    """The loaded resources and the link targets of one HTML page."""
    p = _Refs()
    p.feed(page.read_text(errors="replace"))
    return p


def external_loads(site: Path) -> list[str]:
    """Every resource a page or stylesheet would fetch from outside the site (``file: url``)."""
    ext = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)
    bad = []
    for f in sorted(site.rglob("*.html")):
        bad += [f"{f.relative_to(site)}: {u}" for u in page_refs(f).loads if ext.match(u)]
    for f in sorted(site.rglob("*.css")):
        for u in re.findall(r"(?:url\(\s*['\"]?|@import\s+['\"])([^'\")\s]+)", f.read_text(errors="replace")):
            if ext.match(u):
                bad.append(f"{f.relative_to(site)}: {u}")
    return bad


def _render_quarto(src: Path) -> None:
    """``quarto render`` on the staged folder."""
    subprocess.run(["quarto", "render", str(src)], check=True)


def _render_smalldocs(src: Path) -> int:
    """smalldocs on the staged folder; returns the number of pages."""
    from smalldocs.site import build

    site = build(src, quiet=True)
    for w in site.warnings:
        print(f"site: smalldocs warning: {w}", file=sys.stderr)
    return len(site.pages)


def render(profile: str, renderer: str | None = None, *, check_claims: bool = True) -> Rendered:
    """
    Stage and render the report website of ``profile``; print the renderer and the path.

    Parameters
    ----------
    profile : str
        Run profile whose outputs (``outputs/<profile>/``) the site presents.
    renderer : {"quarto", "smalldocs"}, optional
        Default: ``quarto`` when it is on PATH, else ``smalldocs``.
    check_claims : bool, default True
        Run :func:`gguf_fragility.claims.check` on the rendered pages and print its verdict
        (it does not raise: ``python -m gguf_fragility.claims`` is the failing gate).

    Returns
    -------
    Rendered

    Raises
    ------
    ValueError
        On an unknown renderer, or ``quarto`` asked for but not installed.
    """
    if renderer is None:
        renderer = "quarto" if shutil.which("quarto") else "smalldocs"
    if renderer not in ("quarto", "smalldocs"):
        raise ValueError(f"renderer must be 'quarto' or 'smalldocs'; got {renderer!r}")
    if renderer == "quarto" and not shutil.which("quarto"):
        raise ValueError("quarto is not on PATH; install Quarto or use renderer='smalldocs'")
    src = stage(profile)
    out = site_dir(profile)
    if out.exists() and not (out / "site_libs").is_dir():
        shutil.rmtree(out)  # a half-written folder; both renderers refuse a foreign non-empty one
    if renderer == "quarto":
        _render_quarto(src)
    else:
        _render_smalldocs(src)
    pages = sorted(out.rglob("*.html"))
    ext = external_loads(out)
    why = "" if renderer == "quarto" or shutil.which("quarto") else " (quarto is not on PATH)"
    version = md.version("smalldocs") if renderer == "smalldocs" else "quarto"
    print(f"site: rendered {len(pages)} pages with {renderer} {version}{why}")
    print(f"site: open {out / 'index.html'}")
    for e in ext:
        print(f"site: WARNING external resource {e}", file=sys.stderr)
    ok, n_bad = None, 0
    if check_claims:
        from . import claims

        res = claims.check(profile)
        ok, n_bad = res.ok, int((~res.claims["traced"]).sum()) if len(res.claims) else 0
        print(f"site: claim check {'passed' if ok else 'FAILED'}: {len(res.claims)} numbers in "
              f"prose, {n_bad} untraceable (details: {res.report})")
    return Rendered(renderer, out, out / "index.html", len(pages), ext, ok, n_bad)


def main(argv: list[str] | None = None) -> int:
    """``python -m gguf_fragility.site <profile> [--renderer R]``."""
    p = argparse.ArgumentParser(prog="python -m gguf_fragility.site", description=__doc__.split("\n")[0])
    p.add_argument("profile")
    p.add_argument("--renderer", choices=["quarto", "smalldocs"])
    args = p.parse_args(argv)
    r = render(args.profile, args.renderer)
    return 1 if r.external else 0


if __name__ == "__main__":
    sys.exit(main())
