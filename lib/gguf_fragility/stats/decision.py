"""The deployment decision matrix: cost, decisions and worst-family quality per rung.

TR125's decision matrix, with llama.cpp's own memory accounting in place of an estimate,
decisions from interval bounds in place of point-estimate tiers, and the worst family given
a selection-adjusted interval. Usage::

    from gguf_fragility.stats.decision import decision_matrix, recommend
    dm = decision_matrix(grid.comparisons, ladder, costs, shift)
    recommend(dm, budgets_gib=(1, 2, 4, 8))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gguf_fragility.stats.grid import UNTESTABLE
from gguf_fragility.stats.lens.base import ACCURACY
from gguf_fragility.stats.lens.registry import LENSES, with_role
from gguf_fragility.stats.relevance import BEYOND, CHANGE, EQUIVALENT, NO_FLOOR, NO_ROOM, UNDECIDED

MEMORY_COLUMNS = ("model_buffer_bytes", "kv_buffer_bytes", "compute_buffer_bytes",
                  "planned_memory_bytes")  # llama.cpp's buffers at load (sweep's _cost.json)
COST_COLUMNS = (*MEMORY_COLUMNS, "kv_cache_bytes", "peak_rss_bytes", "prompt_tps", "gen_tps",
                "ttft_s_median")
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
                    *, alpha: float = 0.05, margin: float | None = None) -> pd.DataFrame:
    """
    One row per model × rung: size, measured cost, distribution shift, decisions, worst family.

    Parameters
    ----------
    comparisons : pandas.DataFrame
        ``Grid.comparisons``; only measurable families count.
    ladder : pandas.DataFrame
        ``model, rung, is_reference, bpw, file_size_bytes``.
    costs, shift : pandas.DataFrame or None
        ``model, rung`` + :data:`COST_COLUMNS` / :data:`SHIFT_COLUMNS`; missing tables or
        columns give NaN.
    alpha : float, default 0.05
    margin : float, optional
        Correctness relevance margin (fraction); default the accuracy lens's own margin,
        its rows' ``equivalence_margin`` in ``comparisons``.

    Returns
    -------
    pandas.DataFrame
        ``model, rung, is_reference, bpw, file_size_bytes``, cost and shift columns,
        ``memory_bytes`` and ``memory_source`` (see Notes);
        per lens ``n_loss_<lens>`` (losses beyond the margin), ``n_change_<lens>,
        n_equivalent_<lens>, n_undecided_<lens>, n_no_floor_<lens>, n_no_room_<lens>,
        n_untestable_<lens>`` (measurable families); ``n_families``; ``worst_family`` and
        ``worst_min_diff`` (the smallest accuracy change over the ``n_families`` noisy
        families: a minimum, biased downward) with the selection-adjusted interval
        ``worst_sim_low``/``worst_sim_high``; ``quality`` ({"reference", "loss shown",
        "equivalent within ±m shown", "undecided"}).

    Notes
    -----
    ``memory_bytes`` is what a user plans with: llama.cpp's own buffers at load
    (``planned_memory_bytes``: weights, KV cache at the profile's ``n_ctx``, compute
    buffers; ``memory_source`` "llama.cpp"); where a rung has none recorded, its file size
    plus the computed ``kv_cache_bytes`` ("file+kv"), or the file size alone ("file").
    ``peak_rss_bytes``, the peak resident memory of the process that ran the rung's cells,
    stays as a secondary column: it counts the interpreter and every library besides the
    model, so it is never the basis of a decision.

    The selection-adjusted interval takes each family's Tango interval at level
    ``alpha / m`` (Bonferroni over the ``m`` families) and returns the minimum of the lower
    and of the upper bounds: when all ``m`` intervals cover (probability >= 1 - alpha), the
    true worst-family change lies between them, whichever family it is. ``quality`` reads
    bounds, never point estimates: "loss beyond the margin shown" when some family shows
    one on the correctness lens, "equivalent within ±m shown" when ``worst_sim_low > -margin`` (every
    family within the margin, simultaneously), else "undecided".
    """
    need = {"model", "rung", "is_reference", "bpw", "file_size_bytes"}
    if not need <= set(ladder.columns):
        raise ValueError(f"ladder lacks columns {sorted(need - set(ladder.columns))}")
    base = ladder[sorted(need)].copy()
    base["is_reference"] = base["is_reference"].astype(bool)
    base = base.merge(_optional(costs, COST_COLUMNS, "costs"), on=["model", "rung"], how="left")
    base = base.merge(_optional(shift, SHIFT_COLUMNS, "shift"), on=["model", "rung"],
                      how="left")
    planned, kv = base["planned_memory_bytes"].notna(), base["kv_cache_bytes"].notna()
    base["memory_bytes"] = base["planned_memory_bytes"].where(
        planned, base["file_size_bytes"] + base["kv_cache_bytes"].where(kv, 0))
    base["memory_source"] = np.select([planned, kv], ["llama.cpp", "file+kv"], "file")
    c = comparisons[comparisons["measurable"].astype(bool)]
    acc = with_role(ACCURACY)
    if margin is None:
        own = c.loc[c["lens"] == acc, "equivalence_margin"].dropna().unique()
        if len(own) > 1:
            raise ValueError(f"the {acc} rows hold several margins {sorted(own)}; pass margin=")
        margin = float(own[0]) if len(own) else np.nan
    counts = []
    for (model, rung), g in c.groupby(["model", "rung"], sort=True):
        row = {"model": model, "rung": rung}
        for lens in LENSES:
            d = g.loc[g["lens"] == lens, "decision"]
            for key, label in (("loss", BEYOND), ("change", CHANGE), ("equivalent", EQUIVALENT),
                               ("undecided", UNDECIDED), ("no_floor", NO_FLOOR),
                               ("no_room", NO_ROOM), ("untestable", UNTESTABLE)):
                row[f"n_{key}_{lens}"] = int((d == label).sum())
        k = g[g["lens"] == acc]
        m = len(k)
        row["n_families"] = m
        if m:
            sim = LENSES[acc].interval(k, alpha / m)
            w = int(np.argmin(k["effect"].to_numpy(float)))
            row.update(worst_family=k["family"].iloc[w], worst_min_diff=float(k["effect"].iloc[w]),
                       worst_sim_low=float(np.min(sim.low)), worst_sim_high=float(np.min(sim.high)))
        counts.append(row)
    out = base.merge(pd.DataFrame(counts), on=["model", "rung"], how="left")
    ref = out["is_reference"]
    out.loc[ref, "worst_family"] = ""
    out["quality"] = np.select(
        [ref, out.get(f"n_loss_{acc}", 0) > 0, out.get("worst_sim_low", np.nan) > -margin],
        ["reference", BEYOND, EQUIVALENT], UNDECIDED)
    lens_cols = [f"n_{k}_{lens}" for lens in LENSES
                 for k in ("loss", "change", "equivalent", "undecided", "no_floor", "untestable")]
    order = ["model", "rung", "is_reference", "bpw", "file_size_bytes", *COST_COLUMNS,
             "memory_bytes", "memory_source", *SHIFT_COLUMNS, "n_families", *lens_cols,
             "worst_family", "worst_min_diff", "worst_sim_low", "worst_sim_high", "quality"]
    for col in order:
        if col not in out.columns:
            out[col] = np.nan
    return out[order].sort_values(["model", "bpw"], ascending=[True, False], ignore_index=True)


def recommend(decision: pd.DataFrame, budgets_gib=(1, 2, 4, 8)) -> pd.DataFrame:
    """
    The recommended rung per model and memory budget, from interval bounds only.

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
        ``basis``, ``quality, worst_family, worst_min_diff, worst_sim_low, bpw,
        memory_bytes, memory_source``.

    Notes
    -----
    Among rungs whose ``memory_bytes`` (llama.cpp's planned memory where recorded: see
    :func:`decision_matrix`) fits the budget: the smallest rung whose quality is
    "equivalent within ±m shown" (basis "equivalence shown"); else the reference when it
    fits ("reference"); else the fitting rung with the best guaranteed worst-family change
    (largest ``worst_sim_low``; basis "no equivalence shown: best lower bound"). A rung
    that merely shows no significant loss is never picked for being "safe".
    """
    if any(b <= 0 for b in budgets_gib):
        raise ValueError(f"budgets must be positive GiB; got {list(budgets_gib)}")
    keep = ["rung", "quality", "worst_family", "worst_min_diff", "worst_sim_low", "bpw",
            "memory_bytes", "memory_source"]
    rows = []
    for model, g in decision.groupby("model", sort=True):
        for budget in budgets_gib:
            fit = g[g["memory_bytes"] <= budget * GIB]
            row = {"model": model, "budget_gib": budget, "basis": ""}
            eq = fit[fit["quality"] == EQUIVALENT].sort_values("memory_bytes")
            ref = fit[fit["is_reference"].astype(bool)]
            if len(eq):
                pick, row["basis"] = eq.iloc[0], "equivalence shown"
            elif len(ref):
                pick, row["basis"] = ref.iloc[0], "reference"
            elif len(fit):
                pick = fit.sort_values(["worst_sim_low", "memory_bytes"],
                                       ascending=[False, True]).iloc[0]
                row["basis"] = "no equivalence shown: best lower bound"
            else:
                pick = None
            if pick is not None:
                row.update(pick[keep].to_dict())
            else:
                row.update({k: (np.nan if k not in ("rung", "quality", "worst_family") else "")
                            for k in keep})
            rows.append(row)
    return pd.DataFrame(rows)
