"""The generated parts of the report's pages, computed from a run's tables.

:mod:`gguf_fragility.report.site` fills each ``<!-- generated: name -->`` marker in ``report/*.qmd``
with ``GENERATED[name](run)`` (:data:`gguf_fragility.report.landing.GENERATED`: these and the
landing page's, which :mod:`.landing` builds from the helpers here). Every number this prose
states is a cell of a CSV under ``outputs/<profile>/tables/``; the derived ones (counts,
correlations) are first written to ``site_headline.csv`` and ``settings.csv`` there
(:func:`headline_table`, :func:`settings_table`), so the claim check
(:mod:`gguf_fragility.report.claims`) can trace them.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import sys

import numpy as np
import pandas as pd
import yaml

from gguf_fragility import paths, store
from gguf_fragility.artifacts import read_ladder
from gguf_fragility.ladder import imatrix
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.stats import transfer
from gguf_fragility.stats.deathorder import FirstDeath, first_death
from gguf_fragility.stats.lens.registry import LENSES
from gguf_fragility.stats.relevance import UNDECIDED

PACKAGES = ("llama_cpp_python", "numpy", "pandas", "scipy", "statsmodels", "altair",
            "vl-convert-python", "papermill", "nbformat", "smalldocs")


def read_table(run: RunLayout, name: Table) -> pd.DataFrame | None:
    """Table ``name`` of a run, or None when absent."""
    f = run.table(name)
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
    cfg = run.stats_config
    conf = json.loads(cfg.read_text()) if cfg.exists() else {}
    for k, v in conf.items():
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, int | float) and not isinstance(x, bool):
                rows.append((k, float(x), cfg.name))
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


def points_of(unit: str) -> str:
    """``"gold-answer probability (pp)"`` -> ``"points of gold-answer probability"``."""
    return f"points of {str(unit).split(' (')[0]}"


def margin_text(rows: pd.DataFrame, unit: str = "unit", margin: str = "equivalence_margin") -> str:
    """The margins ``rows`` were judged against, in points: "±3 points of accuracy" (a
    fraction unit times 100), several joined with "; "."""
    pairs = sorted({(float(m), str(u)) for m, u in zip(rows[margin], rows[unit], strict=True)
                    if np.isfinite(float(m))})
    return "; ".join(f"±{(100 if u.endswith('(fraction)') else 1) * m:g} {points_of(u)}"
                     for m, u in pairs)


def first_to_die_text(f: FirstDeath) -> str:
    """The families a :class:`~gguf_fragility.stats.deathorder.FirstDeath` names, as prose:
    "a", "a and b (tied)", "a, b and c (tied)", then "; maybe c too (not shown beyond the
    margin)" for the families that cannot be shown less fragile; "" when none died."""
    text = _and(f.families) + (" (tied)" if f.tied else "")
    if f.families and f.possible:
        text += f"; maybe {_and(f.possible)} too (not shown beyond the margin)"
    return text


def _and(names) -> str:
    """'a', 'a and b', 'a, b and c'."""
    names = list(names)
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else "".join(names)


def headline_table(run: RunLayout) -> pd.DataFrame:
    """
    One row per model × lens with the landing page's headline facts, from notebook 05's tables.

    Columns: ``model, lens, n_families`` (measurable), ``n_dead`` (families with a death
    rung), ``first_family, first_death_rung, first_death_bpw``
    (:func:`~gguf_fragility.stats.deathorder.first_death`: ranked by effect among the
    families with a loss beyond the margin there, ties named, then those not shown less
    fragile as "maybe"), ``n_cells, n_decided,
    n_loss, n_change, n_equivalent, n_undecided, n_no_floor, n_no_room, n_untestable,
    margin`` (each margin with its unit), ``mde_low, mde_high, mde_unit`` (planned MDE range of the
    undecided cells, points: the smallest loss beyond the margin each could show),
    ``mde_basis`` (the test and design it was planned for), ``floor_flip_pct``.
    """
    order, summ = read_table(run, Table.DEATH_ORDER), read_table(run, Table.LENS_SUMMARY)
    cmp = read_table(run, Table.COMPARISONS)
    if order is None or summ is None or cmp is None:
        return pd.DataFrame()
    cfg = run.stats_config
    alpha = float(json.loads(cfg.read_text()).get("alpha", 0.05)) if cfg.exists() else 0.05
    rows = []
    for _, s in summ.iterrows():
        model, lens = s["model"], s["lens"]
        g = order[order["model"] == model]
        rung = transfer.names(g[f"death_rung_{lens}"])
        dead = g[rung != ""]
        pp = LENSES[lens].display_scale
        mine = cmp[(cmp["model"] == model) & (cmp["lens"] == lens)]
        first = first_death(mine, lens, alpha)
        und = mine[mine["decision"] == UNDECIDED]
        rows.append({"model": model, "lens": lens, "n_families": len(g), "n_dead": len(dead),
                     "first_family": first_to_die_text(first), "first_death_rung": first.rung,
                     "first_death_bpw": first.bpw,
                     "n_cells": int(s["n_cells"]), "n_decided": int(s["n_decided"]),
                     "n_loss": int(s["n_loss"]), "n_equivalent": int(s["n_equivalent"]),
                     "n_change": int(s.get("n_change", 0)),
                     "n_no_floor": int(s.get("n_no_floor", 0)),
                     "n_no_room": int(s.get("n_no_room", 0)),
                     "margin": margin_text(mine),
                     "n_undecided": int(s["n_undecided"]),
                     "n_untestable": int(s["n_untestable"]),
                     "mde_low": pp * s["undecided_mde_min"], "mde_high": pp * s["undecided_mde_max"],
                     "mde_unit": LENSES[lens].display_unit,
                     "mde_basis": "; ".join(sorted(set(und["mde_basis"].dropna().astype(str)))),
                     "floor_flip_pct": 100 * s["floor_flip_rate"]})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------- page text


def md_table(df: pd.DataFrame, digits: int = 2) -> str:
    """A pipe table (cells are data, not prose: the claim check skips them)."""
    def cell(v):
        if isinstance(v, float):
            return "" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def cols(df: pd.DataFrame, *names: str) -> pd.DataFrame:
    """The named columns that ``df`` has, in that order."""
    return df[[n for n in names if n in df.columns]]


def limitations_counts(run: RunLayout) -> str:
    """Generated sentences for the limitations page: item counts and reference kinds."""
    out = []
    acc = read_table(run, Table.ACCURACY)
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
        out.append(md_table(cols(lad, "model", "rung", "reference_kind", "bpw",
                                   "file_size_bytes", "sha256")))
        for f in sorted((run.root / "ladder").glob("*/ladder.json")):
            j = json.loads(f.read_text())
            out.append(f"\n- `{j.get('model')}` source file sha256 `{j.get('source_sha256')}`\n")
    out.append("\n## Versions\n\nThe environment that rendered this site.\n\n")
    out.append(md_table(_versions()))
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
        out.append("\n## Wall time per notebook\n\n" + md_table(pd.read_csv(run.timings), 1))
    return "".join(out)


def family_table(run: RunLayout) -> pd.DataFrame | None:
    """The corrected family of tests of a run, one row per model and lens (None without tables)."""
    cmp = read_table(run, Table.COMPARISONS)
    if cmp is None:
        return None
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
    return pd.DataFrame(rows)


def family_of_tests(run: RunLayout) -> str:
    """The methods page's corrected family of tests, per model and lens, from the tables."""
    fam = family_table(run)
    if fam is None:
        return "No tables yet for this profile.\n"
    cfg = run.stats_config
    conf = json.loads(cfg.read_text()) if cfg.exists() else {}
    used = pd.DataFrame({"setting": list(conf), "value": [
        ", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in conf.values()]})
    return ("The family of tests of this run, one per model and lens (cells are data, see "
            f"`{Table.COMPARISONS.file_name}`):\n\n" + md_table(fam, 4)
            + f"\nThe settings the statistics used, read from the profile (`{cfg.name}`):"
            "\n\n" + md_table(used, 4))


GENERATED = {"limitations-counts": limitations_counts, "family-of-tests": family_of_tests,
             "reproducibility": reproducibility_markdown}  # the landing page's: report.landing
