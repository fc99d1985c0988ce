"""Fidelity lens: does the rung give the reference's answer, more often than the noise floor?

Flips (the rung's extracted answer differs from the reference's) are tested against the
floor's flips on the same items (:func:`gguf_fragility.stats.lenses.flip_vs_floor`, exact
paired, one-sided); the effect is the excess flip rate with Tango's interval, judged
against the profile's ``fidelity_margin`` (default 3 points of excess flips). Without a
floor, flips are tested against zero and the verdict is "answers changed (no floor)",
never a loss: re-run noise alone would make it one with enough items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gguf_fragility.stats import lenses, relevance
from gguf_fragility.stats.lens.base import ABOVE, Lens, PlannedMde
from gguf_fragility.stats.lens.correctness import paired_binary_mde
from gguf_fragility.stats.settings import Settings


class Fidelity(Lens):
    """Excess flip rate over the floor (fraction); loss = the rung flips more."""

    name = "fidelity"
    unit = mde_unit = "flip rate (fraction)"
    columns = ("flips", "flip_rate", "flip_ci_low", "flip_ci_high", "floor_flips",
               "floor_flip_rate", "rung_only", "floor_only")
    loss_side = ABOVE
    directional = False  # a flip has no good side
    against_floor = True

    def margin(self, s: Settings) -> float:
        """Excess flips over the floor that matter (``fidelity_margin``, share of items)."""
        return s.fidelity_margin

    def cell(self, wide: pd.DataFrame, ref: str, rung: str, floor: str | None) -> dict:
        """``n`` and the flip indicators of the rung and of the floor on the items all three saw."""
        present, ext = wide["correct"].notna(), wide["extracted"]
        fl = (present[ref] & present[rung]).to_numpy()
        if floor is not None:
            fl = fl & present[floor].to_numpy()
        e0 = ext[ref].to_numpy(object)[fl]
        f_r = ext[rung].to_numpy(object)[fl] != e0
        f_f = (ext[floor].to_numpy(object)[fl] != e0) if floor is not None else np.zeros(len(e0), bool)
        return {"n": int(fl.sum()), "_flips": f_r.astype(bool), "_floor_flips": f_f.astype(bool),
                "floor": "measured" if floor is not None else "absent: tested against zero"}

    def item_effects(self, wide: pd.DataFrame, ref: str, rung: str, floor: str | None) -> pd.Series:
        """Rung flipped minus floor flipped (-1, 0 or 1; no floor: 0) on the items all saw."""
        c = self.cell(wide, ref, rung, floor)
        present = wide["correct"].notna()
        seen = present[ref] & present[rung] & (present[floor] if floor is not None else True)
        ids = seen[seen].index
        ids = ids.droplevel("family") if "family" in ids.names else ids
        return pd.Series(c["_flips"].astype(float) - c["_floor_flips"], index=ids)

    def statistics(self, rows: pd.DataFrame, s: Settings) -> pd.DataFrame:
        """Flip rates with Wilson intervals, excess flips with Tango's, the exact one-sided p."""
        out = []
        for fr, ff in zip(rows["_flips"], rows["_floor_flips"], strict=True):
            if len(fr) == 0:
                out.append({"p_value": 1.0, "p_seq": 1.0, "min_p": 1.0, "p_beyond": 1.0,
                            "p_method": ""})
                continue
            f = lenses.flip_vs_floor(fr, ff, alpha=s.alpha)
            u, v, nn = int(f.rung_only), int(f.floor_only), int(f.n)
            ci = lenses.paired_diff_ci(v, u, nn, alpha=s.alpha)  # (u - v) / n: excess flips
            out.append({
                "flips": int(fr.sum()), "flip_rate": float(f.rung_rate),
                "flip_ci_low": float(f.rung_low), "flip_ci_high": float(f.rung_high),
                "floor_flips": int(ff.sum()), "floor_flip_rate": float(f.floor_rate),
                "rung_only": u, "floor_only": v, "effect": float(ci.estimate),
                "ci_low": float(ci.low), "ci_high": float(ci.high), "p_value": float(f.pvalue),
                "p_seq": float(f.pvalue), "min_p": 0.5 ** nn,
                "p_beyond": float(relevance.tango_beyond_p(u, v, nn, self.margin(s))),
                "p_method": "exact paired, one-sided (rung flips more than the floor)"})
        return pd.DataFrame(out, index=rows.index)

    def mde(self, rows: pd.DataFrame, level: float, s: Settings) -> PlannedMde:
        """Exact planned MDE of excess flips beyond the margin, as for correctness (the design
        discordance is the share of items where rung and floor disagree on flipping)."""
        return paired_binary_mde(rows["n"].to_numpy(np.int64), self.margin(s), level, s)


LENS = Fidelity()
