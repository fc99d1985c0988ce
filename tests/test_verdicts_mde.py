"""Issue 25 point 4, as the grid plans it: the margin lens's planned MDE is the mean loss (points)
its beyond-the-margin verdict shows with power 0.8 at the cell's corrected level, in the
margin of the cell's own scale (gold-answer or reply probability).

    PYTHONPATH=lib python -m pytest -q tests/test_verdicts_mde.py
"""

import numpy as np
import pandas as pd

from gguf_fragility.stats import relevance as rel
from gguf_fragility.stats.lens.registry import LENSES
from gguf_fragility.stats.settings import Settings

LEVEL = 0.05 / 4  # a first step's corrected level with four families
S = Settings(gold_prob_margin_pp=3.0, reply_prob_margin_pp=5.0)


def test_margin_lens_mde_has_its_power_in_points():
    rng = np.random.default_rng(3)
    n, sd = 200, 6.0
    cell = np.clip(sd * rng.standard_normal(n), -100, 100)
    rows = pd.DataFrame({"model": "m", "family": ["a", "b"], "rung": "Q4_K_M", "n": n,
                         "scale": ["gold", "reply"], "_delta": [cell, cell]})
    mde, basis = LENSES["margin"].mde(rows, LEVEL, S)
    assert all("beyond" in b and f"{LEVEL:.3g}" in b for b in basis)
    assert np.isfinite(mde).all()
    np.testing.assert_allclose(mde[1] - mde[0], 2.0, atol=0.05)  # the reply margin is 2 larger
    reps = 4000
    fresh = np.clip(-mde[0] + sd * rng.standard_normal((reps, n)), -100, 100)
    ci = rel.collapse_robust_ci(fresh, margin=S.gold_prob_margin_pp)
    power = (ci.beyond_p <= LEVEL).mean()
    assert abs(power - 0.8) <= 0.05, (float(mde[0]), power)


def test_margin_lens_mde_is_nan_below_three_items():
    rows = pd.DataFrame({"model": "m", "family": "a", "rung": "Q2_K", "n": 2, "scale": "gold",
                         "_delta": [np.array([-1.0, 2.0])]})
    assert np.isnan(LENSES["margin"].mde(rows, LEVEL, S)[0]).all()
