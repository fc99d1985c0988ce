"""The deployment decision matrix: cost and worst-family quality per rung, and a pick per budget.

TR125's decision matrix, with measured peak memory in place of an estimate and the
paired worst-family loss in place of an average. Usage::

    from gguf_fragility.stats.decision import decision_matrix, recommend
    dm = decision_matrix(grid.comparisons, ladder, costs, shift)
    recommend(dm, budgets_gib=(1, 2, 4, 8))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gguf_fragility.stats import paired

COST_COLUMNS = ("peak_rss_bytes", "prompt_tps", "gen_tps", "ttft_s_median")
SHIFT_COLUMNS = ("kl_mean", "kl_median", "kl_p99", "same_top_rate", "ppl_ratio")
GIB = 2**30


def _optional(table: pd.DataFrame | None, columns, name: str) -> pd.DataFrame:
    """The (model, rung) + ``columns`` of an optional input, NaN-filled when absent."""
    if table is None:
        return pd.DataFrame(columns=["model", "rung", *columns])
    missing = {"model", "rung"} - set(table.columns)
    if missing:
        raise ValueError(f"{name} lacks key columns {sorted(missing)}")
    if table.duplicated(["model", "rung"]).any():
        raise ValueError(f"{name} has duplicate (model, rung) rows")
    out = table[["model", "rung"]].copy()
    for c in columns:
        out[c] = pd.to_numeric(table[c], errors="coerce") if c in table.columns else np.nan
    return out


def decision_matrix(comparisons: pd.DataFrame, ladder: pd.DataFrame,
                    costs: pd.DataFrame | None = None, shift: pd.DataFrame | None = None,
                    *, subset: str = "usable") -> pd.DataFrame:
    """
    One row per model × rung: size, measured cost, distribution shift, worst-family loss.

    Parameters
    ----------
    comparisons : pandas.DataFrame
        ``Grid.comparisons``.
    ladder : pandas.DataFrame
        ``model, rung, is_reference, bpw, file_size_bytes``.
    costs, shift : pandas.DataFrame or None
        ``model, rung`` + :data:`COST_COLUMNS` / :data:`SHIFT_COLUMNS`; missing tables or
        columns give NaN.
    subset : {"usable", "all"}, default "usable"
        Which item subset's comparisons define quality.

    Returns
    -------
    pandas.DataFrame
        ``model, rung, is_reference, bpw, file_size_bytes``, cost and shift columns,
        ``memory_bytes`` (peak RSS when measured, else file size) and ``memory_source``
        ({"peak_rss", "file_size"}), ``worst_family``, ``worst_diff`` with paired
        bootstrap ``worst_ci_low``/``high`` and ``worst_p_adj``, ``n_families_worse``
        (significantly worse after correction), ``n_families``, ``tier`` (TR125 tier of
        ``worst_diff``; the reference is "negligible" by definition).

    Notes
    -----
    The worst family is the minimum of several noisy differences, so it is biased
    downward (a winner's-curse in reverse) when families are small; its CI is that
    family's own paired interval, not a simultaneous one.
    """
    need = {"model", "rung", "is_reference", "bpw", "file_size_bytes"}
    if not need <= set(ladder.columns):
        raise ValueError(f"ladder lacks columns {sorted(need - set(ladder.columns))}")
    base = ladder[sorted(need)].copy()
    base["is_reference"] = base["is_reference"].astype(bool)
    base = base.merge(_optional(costs, COST_COLUMNS, "costs"), on=["model", "rung"], how="left")
    base = base.merge(_optional(shift, SHIFT_COLUMNS, "shift"), on=["model", "rung"],
                      how="left")
    measured = base["peak_rss_bytes"].notna()
    base["memory_bytes"] = base["peak_rss_bytes"].where(measured, base["file_size_bytes"])
    base["memory_source"] = np.where(measured, "peak_rss", "file_size")
    c = comparisons[comparisons["subset"] == subset]
    worst = c.loc[c.groupby(["model", "rung"])["diff"].idxmin()]
    worst = worst[["model", "rung", "family", "diff", "diff_ci_low", "diff_ci_high", "p_adj"]]
    worst.columns = ["model", "rung", "worst_family", "worst_diff", "worst_ci_low",
                     "worst_ci_high", "worst_p_adj"]
    counts = c.groupby(["model", "rung"]).agg(n_families_worse=("worse", "sum"),
                                              n_families=("family", "nunique")).reset_index()
    out = base.merge(worst, on=["model", "rung"], how="left").merge(
        counts, on=["model", "rung"], how="left")
    ref = out["is_reference"]
    out.loc[ref, ["worst_diff", "worst_ci_low", "worst_ci_high", "n_families_worse"]] = 0
    out.loc[ref, "worst_family"] = ""
    out["n_families"] = out.groupby("model")["n_families"].transform("max")
    out["tier"] = paired.quality_tier(out["worst_diff"])
    order = ["model", "rung", "is_reference", "bpw", "file_size_bytes", *COST_COLUMNS,
             "memory_bytes", "memory_source", *SHIFT_COLUMNS, "worst_family", "worst_diff",
             "worst_ci_low", "worst_ci_high", "worst_p_adj", "n_families_worse",
             "n_families", "tier"]
    return out[order].sort_values(["model", "bpw"], ascending=[True, False], ignore_index=True)


def recommend(decision: pd.DataFrame, budgets_gib=(1, 2, 4, 8)) -> pd.DataFrame:
    """
    The recommended rung per model and memory budget.

    Parameters
    ----------
    decision : pandas.DataFrame
        Output of :func:`decision_matrix`.
    budgets_gib : sequence of float, default (1, 2, 4, 8)
        Memory budgets in GiB (2**30 bytes).

    Returns
    -------
    pandas.DataFrame
        One row per model × budget: ``budget_gib, rung`` (empty when nothing fits),
        ``tier, worst_family, worst_diff, worst_ci_low, worst_ci_high, bpw,
        memory_bytes, memory_source``.

    Notes
    -----
    Among rungs whose ``memory_bytes`` fits the budget, the highest quality wins:
    best tier first, then the least worst-family loss (largest ``worst_diff``), then the
    smaller footprint. Quality is the point estimate, as in TR125; read the CI beside it.
    """
    if any(b <= 0 for b in budgets_gib):
        raise ValueError(f"budgets must be positive GiB; got {list(budgets_gib)}")
    d = decision.assign(_tier=paired.tier_rank(decision["tier"]))
    keep = ["rung", "tier", "worst_family", "worst_diff", "worst_ci_low", "worst_ci_high",
            "bpw", "memory_bytes", "memory_source"]
    rows = []
    for model, g in d.groupby("model", sort=True):
        for budget in budgets_gib:
            fit = g[g["memory_bytes"] <= budget * GIB].sort_values(
                ["_tier", "worst_diff", "memory_bytes"], ascending=[True, False, True])
            row = {"model": model, "budget_gib": budget}
            if len(fit):
                row.update(fit.iloc[0][keep].to_dict())
            else:
                row.update({k: (np.nan if k not in ("rung", "tier") else "") for k in keep})
            rows.append(row)
    return pd.DataFrame(rows)
