"""The chapters' findings in sentences, written from the tables the statistics return.

The statistics (:mod:`gguf_fragility.stats`) compute tables and named results; the words
about them live here, so the notebooks and the site say the same thing::

    from gguf_fragility.report import findings
    print(findings.lens_summary(tables.lens_summary))            # chapter 5
    Markdown(findings.transfer_conclusions(t))                    # chapter 6
    Markdown(findings.axis_findings(t.axis_comparisons))          # chapter 7

Every number these sentences print is a cell of a table under ``outputs/<profile>/tables/``,
so the claim check (:mod:`gguf_fragility.report.claims`) can trace it; numbers are printed
with a plain hyphen as the minus sign, which the claim check parses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gguf_fragility.stats.axes import AXES, CHANGE, GAIN
from gguf_fragility.stats.lens.base import ACCURACY
from gguf_fragility.stats.lens.registry import with_role
from gguf_fragility.stats.relevance import BEYOND, EQUIVALENT
from gguf_fragility.stats.transfer import MIN_FAMILIES, TransferTables

# ----------------------------------------------------------------- chapter 5: lenses


def lens_summary(summary: pd.DataFrame) -> str:
    """Per model and lens: dead families, decided and undecided cells, in sentences.

    ``summary``: the ``lens_summary`` table (:func:`gguf_fragility.stats.results.lens_summary`).
    """
    lines = []
    for _, r in summary.iterrows():
        lines.append(f"{r['model']} / {r['lens']}: {r['n_dead_families']} families show a loss; "
                     f"{r['n_decided']} of {r['n_cells']} measurable cells decided "
                     f"({r['n_loss']} loss, {r['n_equivalent']} equivalent), "
                     f"{r['n_undecided']} undecided, {r['n_untestable']} untestable.")
    return "\n".join(lines)


# ----------------------------------------------------------------- chapter 6: transfer


def transfer_conclusions(t: TransferTables) -> str:
    """:func:`transfer_conclusion` for every ordered pair of models, as Markdown paragraphs."""
    pairs = t.transfer_rank[["model_a", "model_b"]].itertuples(index=False)
    return ("\n\n".join(transfer_conclusion(t.transfer_rank, t.transfer_decisions, a, b)
                        for a, b in pairs)
            or "Fewer than two models: nothing to transfer.")


def _fmt(x: float, nd: int = 2) -> str:
    """A number as the sentences print it (a true minus sign is avoided: claims parse '-')."""
    return f"{x:.{nd}f}"


def transfer_conclusion(rank: pd.DataFrame, decisions: pd.DataFrame, a: str, b: str) -> str:
    """
    Generated sentences on whether A's fragility order and decisions carry over to B.

    Every number in it is a cell of ``transfer_rank.csv`` or ``transfer_decisions.csv``
    (:func:`gguf_fragility.stats.transfer.transfer_tables`), so the claim check can trace
    it. Below :data:`~gguf_fragility.stats.transfer.MIN_FAMILIES` common families it prints
    no correlation: transfer "cannot be shown".
    """
    r = rank[(rank["model_a"] == a) & (rank["model_b"] == b)]
    if r.empty:
        return f"No transfer comparison of {a} and {b} was computed."
    r = r.iloc[0]
    n = int(r["n_families"])
    acc = with_role(ACCURACY)
    if not bool(r["can_show"]):
        text = (f"Only {n} families are measurable on both {a} and {b}: transfer of the fragility "
                f"order cannot be shown (a rank correlation needs at least "
                f"{MIN_FAMILIES} common families).")
    elif not np.isfinite(r["kendall_tau_b"]):
        text = (f"Across {n} families measurable on both {a} and {b}, one model's fragilities "
                "all tie: no rank agreement can be shown.")
    else:
        verdict = {"agreement shown": "the fragility order agrees (the permutation test "
                                      "rejects independence)",
                   "reversal shown": "the fragility order is reversed (the permutation test "
                                     "rejects independence)"}.get(
            r["verdict"], "agreement of the fragility orders is not shown (the permutation "
                          "test does not reject independence; this is not evidence of "
                          "disagreement)")
        text = (f"Across {n} families measurable on both models, {verdict}: Kendall's tau-b "
                f"between {a} and {b} is {_fmt(r['kendall_tau_b'])} ({r['p_method']} p = "
                f"{_fmt(r['kendall_p'], 3)}; Spearman's rho {_fmt(r['spearman_rho'])}, p = "
                f"{_fmt(r['spearman_p'], 3)}); " + _death_agreement(r, acc))
    s = decisions[(decisions["model_a"] == a) & (decisions["model_b"] == b)
                  & (decisions["rung_a"] == "all") & (decisions["lens"] == acc)]
    for _, p in s[(s["equivalent_a"] > 0) | (s["loss_a"] > 0)].iterrows():
        how = "rung name" if p["match"] == "name" else "real bits per weight"
        parts = [f"of {int(p[f'{k}_a'])} {what} on {a}, {_count(p[f'{k}_both'])} {also} on {b}"
                 for k, what, also in (
                     ("equivalent", f"{acc} cells shown equivalent", "were also shown "
                      "equivalent"), ("loss", "with a loss shown", "also showed one"))
                 if p[f"{k}_a"] > 0]
        text += f" Matched by {how}, " + "; ".join(parts) + "."
    if len(s) and not ((s["equivalent_a"] > 0) | (s["loss_a"] > 0)).any():
        text += (f" On {acc}, nothing was shown on {a} (no loss, no equivalence) to carry "
                 f"over to {b}.")
    return text


def _death_agreement(r: pd.Series, lens: str) -> str:
    """The death-rung sentence: agreement counted only where a loss beyond the margin exists."""
    k = int(r.get(f"n_death_counted_{lens}", 0))
    if not k:
        return (f"agreement of {lens} death rungs cannot be shown: no common family shows a "
                "loss beyond the margin on either model.")
    return (f"{lens} death rungs agree by name for {_count(r[f'n_death_agree_{lens}'])} of the "
            f"{k} families where either model shows a loss beyond the margin.")


def _count(k) -> str:
    """A count as the sentences write it: "none" for zero, so no sentence is about zeros."""
    return str(int(k)) if k else "none"


# ----------------------------------------------------------------- chapter 7: axes


def axis_findings(table: pd.DataFrame) -> str:
    """
    Generated sentences: per model × axis × rung, which families show a loss or
    equivalence on each lens against the comparator, and which comparator that was.

    ``table``: ``axis_comparisons`` (:func:`gguf_fragility.stats.axes.axis_comparisons`);
    every number printed is one of its cells.
    """
    if table.empty:
        return ("This profile lists no rung with a comparator on these axes (`X+kv_q4_0` with "
                "`X+kv_f16` or `X`; `Q2_K+imatrix_wiki` with `Q2_K`): there is nothing to "
                "compare.")
    out = []
    keys = ["model", "axis", "rung", "comparator", "comparator_kind"]
    axis_pos = {a: i for i, a in enumerate(AXES)}
    groups = sorted(table[table["measurable"]].groupby(keys, sort=True),
                    key=lambda kv: (kv[0][0], axis_pos[kv[0][1]], kv[0][2]))
    for (model, axis, rung, comparator, kind), g in groups:
        parts = []
        for lens, h in g.groupby("lens", sort=False):
            loss = h[h["decision"] == BEYOND]
            gain = h[h["decision"] == GAIN]
            changed = h[h["decision"] == CHANGE]
            eq = h[h["decision"] == EQUIVALENT]
            said = [f"loss shown on {_cells(loss)}" if len(loss) else "",
                    f"gain shown on {_cells(gain)}" if len(gain) else "",
                    f"answers differ from the comparator's on {_cells(changed)}"
                    if len(changed) else "",
                    f"equivalent within ±{h['equivalence_margin'].iloc[0]:g} "
                    f"({h['unit'].iloc[0]}) on "
                    f"{', '.join(eq['family'])}" if len(eq) else ""]
            said = "; ".join(s for s in said if s) or f"no family decided of {len(h)}"
            parts.append(f"{lens}: {said}")
        out.append(f"**{model} {rung}** against {comparator} ({axis}; {kind}): "
                   + ". ".join(parts) + ".")
    return "\n\n".join(out) or "No measurable family: calibration left none to compare."


def _cells(rows: pd.DataFrame) -> str:
    """``family effect (low to high)`` for each row, as the findings print them."""
    return ", ".join(f"{r.family} {r.effect:.3f} ({r.ci_low:.3f} to {r.ci_high:.3f} {r.unit})"
                     for r in rows.itertuples())
