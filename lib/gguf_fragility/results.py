"""Read the sweep's outputs, compute every statistics table, write them as CSV.

The one entry point for notebook 05::

    from gguf_fragility import results
    r = results.load_results("smoke")
    tables = results.stats_tables(r.items, r.ladder, r.costs, r.shift, seed=0)
    results.write_tables(tables, paths.tables_dir("smoke"))

:func:`synthetic_results` fabricates inputs with the same contract (for tests, the
benchmark and a dry run of the notebook): ``write_synthetic(profile)`` lays them out
where :func:`load_results` looks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import paths
from .deathorder import death_order
from .decision import decision_matrix, recommend
from .grid import ITEM_COLUMNS, paired_grid
from .store import write_json_atomic, write_table_atomic

LADDER_BPW = {"F16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q4_K_M": 4.89,
              "Q3_K_M": 3.91, "Q2_K": 3.0}  # typical real bpw, for synthetic ladders only


class Results(NamedTuple):
    """Inputs to :func:`stats_tables`, as the sweep writes them."""

    items: pd.DataFrame
    ladder: pd.DataFrame
    costs: pd.DataFrame | None  # None when no rung has a _cost.json
    shift: pd.DataFrame | None  # None when no rung has a _shift.json


class StatsTables(NamedTuple):
    """Every table notebook 05 writes; field name = CSV name."""

    accuracy: pd.DataFrame  # model × family × rung × subset, Wilson CI
    comparisons: pd.DataFrame  # paired tests vs reference
    death_order: pd.DataFrame  # model × subset × family
    decision: pd.DataFrame  # model × rung
    recommendations: pd.DataFrame  # model × memory budget


def load_results(profile: str) -> Results:
    """
    Read the sweep cells, ladders and (if present) cost and shift tables of a profile.

    Parameters
    ----------
    profile : str
        Run profile; files come from :mod:`gguf_fragility.paths`:
        the sweep cells with calibration's usable flag (:func:`gguf_fragility.sweep.load_items`),
        ``ladder_dir(profile, model)/ladder.csv``, and the per-rung ``_cost.json`` /
        ``_shift.json`` files (:func:`~gguf_fragility.sweep.load_costs`, ``load_shift``).

    Returns
    -------
    Results
        ``costs``/``shift`` are None when no rung has measured them.

    Raises
    ------
    FileNotFoundError
        If there are no sweep cells, or a model in them has no ladder manifest.
    """
    from .sweep import load_costs, load_items, load_shift  # late: sweep loads llama.cpp

    items = load_items(profile)  # every cell, with calibration's usable flag joined
    ladders = []
    for model in sorted(items["model"].astype(str).unique()):
        f = paths.ladder_dir(profile, model) / "ladder.csv"
        if not f.exists():
            raise FileNotFoundError(f"no ladder manifest {f} for model {model!r}; "
                                    "run notebook 01 first")
        ladders.append(pd.read_csv(f))
    ladder = pd.concat(ladders, ignore_index=True)
    costs, shift = load_costs(profile), load_shift(profile)
    return Results(items, ladder, costs if len(costs) else None, shift if len(shift) else None)


def reference_rungs(ladder: pd.DataFrame) -> dict[str, str]:
    """Each model's reference rung from ``ladder.is_reference``; exactly one per model."""
    if "is_reference" not in ladder.columns:
        raise ValueError("ladder lacks an 'is_reference' column")
    refs = ladder[ladder["is_reference"].astype(bool)]
    counts = refs.groupby("model").size()
    if (counts > 1).any():
        raise ValueError(f"several reference rungs for {counts[counts > 1].index.tolist()}")
    return dict(zip(refs["model"].astype(str), refs["rung"].astype(str), strict=True))


def stats_tables(items: pd.DataFrame, ladder: pd.DataFrame,
                 costs: pd.DataFrame | None = None, shift: pd.DataFrame | None = None, *,
                 seed: int, n_boot: int = 10_000, correction: str = "holm",
                 mcnemar: str = "exact", alpha: float = 0.05,
                 budgets_gib=(1, 2, 4, 8)) -> StatsTables:
    """
    Compute every statistics table of the report from the sweep's outputs.

    Parameters
    ----------
    items, ladder, costs, shift : pandas.DataFrame
        As returned by :func:`load_results`; ``costs``/``shift`` may be None.
    seed : int
        Bootstrap seed.
    n_boot : int, default 10000
    correction : {"holm", "bh", "fdr_bh", "bonferroni"}, default "holm"
    mcnemar : {"exact", "midp"}, default "exact"
    alpha : float, default 0.05
    budgets_gib : sequence of float, default (1, 2, 4, 8)

    Returns
    -------
    StatsTables
        accuracy, comparisons, death_order, decision, recommendations; ``accuracy`` and
        ``comparisons`` gain the rung's real ``bpw`` and are sorted by model, subset,
        family and falling bpw; ``comparisons`` also gains calibration's ``measurable``
        gate, and the death order and decision tables use measurable families only.

    See Also
    --------
    gguf_fragility.grid.paired_grid, gguf_fragility.deathorder.death_order,
    gguf_fragility.decision.decision_matrix, gguf_fragility.decision.recommend
    """
    refs = reference_rungs(ladder)
    grid = paired_grid(items, refs, seed=seed, n_boot=n_boot, correction=correction,
                       mcnemar=mcnemar, alpha=alpha)
    cmp = grid.comparisons.assign(measurable=measurable_rows(grid.comparisons, items))
    # death order and decisions stand on measurable families only (calibration's gate)
    keep = cmp.measurable.to_numpy()
    order = death_order(cmp[keep].reset_index(drop=True), grid.boot[:, keep], ladder,
                        alpha=alpha)
    dm = decision_matrix(cmp[keep], ladder, costs, shift)
    bpw = ladder[["model", "rung", "bpw"]]

    def with_bpw(df):
        out = df.merge(bpw, on=["model", "rung"], how="left")
        return out.sort_values(["model", "subset", "family", "bpw"],
                               ascending=[True, False, True, False], ignore_index=True)

    return StatsTables(with_bpw(grid.accuracy), with_bpw(cmp), order, dm,
                       recommend(dm, budgets_gib))


def measurable_rows(table: pd.DataFrame, items: pd.DataFrame) -> pd.Series:
    """Calibration's ``measurable`` gate of each row's model × family (True if items lack it)."""
    if "measurable" not in items.columns:
        return pd.Series(True, index=table.index)
    gate = items.groupby(["model", "family"])["measurable"].first()
    keys = pd.MultiIndex.from_frame(table[["model", "family"]].astype(str))
    return pd.Series(gate.reindex(keys).fillna(False).to_numpy(bool), index=table.index)


def write_tables(tables: StatsTables, out_dir, *, config: dict | None = None) -> list[Path]:
    """Write each table to ``out_dir/<name>.csv`` atomically (and ``stats_config.json``)."""
    out_dir = Path(out_dir)
    written = []
    for name, df in tables._asdict().items():
        write_table_atomic(df, out_dir / f"{name}.csv")
        written.append(out_dir / f"{name}.csv")
    if config is not None:
        write_json_atomic(out_dir / "stats_config.json", config)
        written.append(out_dir / "stats_config.json")
    return written


def synthetic_results(*, n_models=2, n_families=13, n_items=500, rungs=tuple(LADDER_BPW),
                      seed=0) -> Results:
    """
    Fabricated sweep outputs with the input contract, families of graded fragility.

    Family ``f`` loses items below a family-specific bpw threshold (nested: an item dead
    at a rung stays dead lower down); a few wrong reference answers resurrect at random.
    Every third family is "generative" (``margin`` NaN). Not data: a test fixture.
    """
    rng = np.random.default_rng(seed)
    bpw = np.array([LADDER_BPW[r] for r in rungs])
    frames, ladders, costs, shifts = [], [], [], []
    for m in range(n_models):
        model = f"synth-{m}"
        n_params = 1.35e8 * 10**m
        for f in range(n_families):
            family = f"fam{f:02d}" + ("_gen" if f % 3 == 2 else "")
            thresh = 2.2 + 4.0 * f / max(n_families - 1, 1)  # bpw at which deaths start
            p_death = 0.25 / (1 + np.exp((bpw - thresh) / 0.4)) * (bpw < 16)
            ref_ok = rng.random(n_items) < 0.75
            u = rng.random(n_items)  # nested deaths: dies at every rung with p_death > u
            ok = np.where(ref_ok[:, None], u[:, None] >= p_death[None, :],
                          rng.random((n_items, len(rungs))) < 0.04 * (bpw < 16))
            margin = np.where(ref_ok, 0.5 + rng.exponential(2.0, n_items), -1.0)
            m_r = margin[:, None] - 3 * p_death[None, :] * rng.random((n_items, len(rungs)))
            kl = rng.exponential(0.02 + p_death, (n_items, len(rungs))) * (bpw < 16)
            df = pd.DataFrame({
                "model": model, "rung": np.tile(rungs, n_items), "family": family,
                "item_id": np.repeat([f"{family}-{i:04d}" for i in range(n_items)], len(rungs)),
                "correct": ok.ravel(),
                "usable": np.repeat(ref_ok & (rng.random(n_items) < 0.9), len(rungs)),
                "margin": m_r.ravel() if not family.endswith("_gen") else np.nan,
                "answer_kl": kl.ravel(), "answer_same_top": (kl < 0.3).ravel().astype(float)})
            frames.append(df)
        size = (bpw * n_params / 8).astype(np.int64)
        ladders.append(pd.DataFrame({"model": model, "rung": rungs, "is_reference": bpw == 16,
                                     "bpw": bpw, "file_size_bytes": size}))
        costs.append(pd.DataFrame({"model": model, "rung": rungs,
                                   "peak_rss_bytes": (size * 1.1 + 2e8).astype(np.int64),
                                   "prompt_tps": 4e11 / size, "gen_tps": 3e10 / size,
                                   "ttft_s_median": size / 2e9}))
        shifts.append(pd.DataFrame({"model": model, "rung": rungs, "kl_mean": 2 / bpw**2,
                                    "kl_median": 1 / bpw**2, "kl_p99": 20 / bpw**2,
                                    "same_top_rate": 1 - 1 / bpw**1.5,
                                    "ppl_ratio": 1 + 1 / bpw**2}))
    cat = lambda xs: pd.concat(xs, ignore_index=True)  # noqa: E731
    return Results(cat(frames)[list(ITEM_COLUMNS)], cat(ladders), cat(costs), cat(shifts))


def write_synthetic(profile: str, **kwargs) -> Results:
    """Write :func:`synthetic_results` where :func:`load_results` reads (one parquet per cell)."""
    r = synthetic_results(**kwargs)
    for (model, rung, family), cell in r.items.groupby(["model", "rung", "family"]):
        write_table_atomic(cell.drop(columns="usable").assign(provenance="synthetic"),
                           paths.sweep_dir(profile) / model / rung / f"{family}.parquet")
    for model, lad in r.ladder.groupby("model"):
        write_table_atomic(lad, paths.ladder_dir(profile, model) / "ladder.csv")
        usable = r.items[r.items.model == model].drop_duplicates("item_id")
        write_table_atomic(usable[["model", "item_id", "usable"]],
                           paths.calibration_dir(profile) / f"{model}_items.parquet")
        report = usable.groupby(["model", "family"], as_index=False)["usable"].sum()
        write_table_atomic(report.rename(columns={"usable": "n_usable"})
                           .assign(measurable=lambda d: d.n_usable >= 1),
                           paths.calibration_dir(profile) / f"{model}_report.csv")
    for name, table in (("_cost.json", r.costs), ("_shift.json", r.shift)):
        for row in table.to_dict("records"):
            write_json_atomic(paths.sweep_dir(profile) / row["model"] / row["rung"] / name, row)
    write_json_atomic(paths.sweep_dir(profile) / "SYNTHETIC.json",
                      {"note": "fabricated by results.write_synthetic", **json.loads(
                          json.dumps(kwargs, default=str))})
    return r
