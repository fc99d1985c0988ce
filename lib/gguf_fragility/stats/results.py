"""Compute every statistics table from the sweep's outputs and write them as CSV.

Notebook 05's calls::

    from gguf_fragility.stats import inputs, results
    r = inputs.load_results(profile.layout)
    tables = results.analyse(profile, r)   # computes and writes tables/*.csv

Every setting (seed, resamples, correction, test, alpha, budgets) comes from the profile.
:mod:`gguf_fragility.testing` fabricates inputs with the same contract.
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from gguf_fragility.profile import Profile
from gguf_fragility.stats.deathorder import death_order
from gguf_fragility.stats.decision import decision_matrix, recommend
from gguf_fragility.stats.grid import paired_grid
from gguf_fragility.stats.inputs import Results
from gguf_fragility.store import write_json_atomic, write_tables


class StatsTables(NamedTuple):
    """Every table notebook 05 writes; field name = CSV name."""

    accuracy: pd.DataFrame  # model × family × rung × subset, Wilson CI
    comparisons: pd.DataFrame  # paired tests vs reference
    death_order: pd.DataFrame  # model × subset × family
    decision: pd.DataFrame  # model × rung
    recommendations: pd.DataFrame  # model × memory budget


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
    gguf_fragility.stats.grid.paired_grid, gguf_fragility.stats.deathorder.death_order,
    gguf_fragility.stats.decision.decision_matrix, gguf_fragility.stats.decision.recommend
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


def stats_config(profile: Profile) -> dict:
    """The profile settings the statistics used (``tables/stats_config.json``)."""
    return {"profile": profile.name, "n_boot": profile.n_boot, "seed": profile.seed,
            "correction": profile.correction, "mcnemar": profile.mcnemar,
            "alpha": profile.alpha, "budgets_gib": list(profile.budgets_gib)}


def analyse(profile: Profile, r: Results) -> StatsTables:
    """Every statistics table of a run with the profile's settings, written to ``tables/``."""
    tables = stats_tables(r.items, r.ladder, r.costs, r.shift, seed=profile.seed,
                          n_boot=profile.n_boot, correction=profile.correction,
                          mcnemar=profile.mcnemar, alpha=profile.alpha,
                          budgets_gib=profile.budgets_gib)
    write_tables(tables, profile.layout.tables_dir)
    write_json_atomic(profile.layout.tables_dir / "stats_config.json", stats_config(profile))
    return tables


def summary(tables: StatsTables) -> str:
    """The death order in sentences: how many cells die, which family is most fragile."""
    order = tables.death_order.query("subset == 'usable'")
    dead = order[order["death_rung"].fillna("") != ""]
    lines = [f"{len(dead)} of {len(order)} model × family cells die on usable items; "
             f"{int(dead['persistent'].astype(bool).sum())} of those deaths are persistent."]
    for model, g in order.groupby("model"):
        lines.append(f"{model}: most fragile {g.iloc[0]['family']} (rank interval "
                     f"{g.iloc[0]['rank_ci_low']:.0f}-{g.iloc[0]['rank_ci_high']:.0f}), "
                     f"most robust {g.iloc[-1]['family']}.")
    return "\n".join(lines)


def inputs_summary(r: Results) -> pd.DataFrame:
    """Items, families, usable items and raw accuracy per model × rung (what was loaded)."""
    return r.items.groupby(["model", "rung"]).agg(
        items=("item_id", "size"), families=("family", "nunique"), usable=("usable", "sum"),
        accuracy=("correct", "mean"))


