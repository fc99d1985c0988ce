"""Issue 25 point 6: calibration's family gate selects on the reference answers it then compares.

A family is measurable when enough of the reference's own margins clear
``margin_threshold`` (:func:`gguf_fragility.run.calibrate.usable_flags`,
:func:`~gguf_fragility.run.calibrate.family_report`); every item of a measurable family is
then compared with the rung. A family that passes because its reference margins came out
high by chance regresses towards its mean at the rung: a small bias towards "loss". This
seeded, vectorized simulation runs the project's gate on exchangeable reference and rung
margins (no true change) and shows the margin lens's loss-side test and its
beyond-the-margin verdict keep their null rate at ``alpha`` on the gated families, at
Qwen's 12 items per family and with a gate far stricter than the default.

    PYTHONPATH=lib python -m pytest -q tests/test_verdicts_gate.py
"""

import math

import numpy as np
import pandas as pd
import pytest

from gguf_fragility.run.calibrate import family_report, usable_flags
from gguf_fragility.stats import relevance as rel
from gguf_fragility.stats.lens.margin import margin_p

ALPHA = 0.05
THRESHOLD = 0.5  # the default profile's margin_threshold, nats


def gated_null(rng, reps: int, n: int, min_usable: int, jitter: float):
    """
    Reference and rung margins of ``reps`` two-choice families with no true change.

    Item ``i`` of family ``f`` has a latent margin ``mu = offset_f + N(0.3, 1.5^2)`` nats;
    reference and rung each add their own ``N(0, jitter^2)``, so (reference, rung) are
    exchangeable. Returns the gate's verdict per family and both margin matrices.
    """
    mu = rng.normal(0, 1, (reps, 1)) + rng.normal(0.3, 1.5, (reps, n))
    ref = mu + jitter * rng.standard_normal((reps, n))
    rung = mu + jitter * rng.standard_normal((reps, n))
    fam = np.repeat(np.arange(reps), n)
    v0 = pd.DataFrame({"model": "m", "family": fam.astype(str),
                       "item_id": [f"{f}-{i}" for f, i in zip(fam, np.tile(np.arange(n), reps),
                                                              strict=True)],
                       "item_hash": "", "mode": "loglik", "correct": ref.ravel() > 0,
                       "margin": ref.ravel()})
    items = usable_flags(v0, v0.iloc[:0], THRESHOLD)
    rep = family_report(items, min_usable).set_index("family")
    measurable = rep.loc[np.arange(reps).astype(str), "measurable"].to_numpy(bool)
    return measurable, ref, rung


def gold_logprob(margin):
    """Log-probability of the gold answer of a two-choice item with this margin (nats)."""
    return -np.logaddexp(0.0, -margin)


@pytest.mark.parametrize("n,min_usable,jitter", [(12, 5, 1.0), (12, 9, 1.0), (12, 5, 3.0)])
def test_gate_keeps_the_margin_lens_null_rate(n, min_usable, jitter):
    rng = np.random.default_rng(n * 100 + min_usable)
    reps = 6000
    measurable, ref, rung = gated_null(rng, reps, n, min_usable, jitter)
    k = int(measurable.sum())
    assert 0.1 * reps < k < 0.95 * reps  # the gate does select
    tol = 3 * math.sqrt(ALPHA * (1 - ALPHA) / k)
    # the lens's change test (loss-side Wilcoxon) on the gated families ...
    shown = margin_p(rung[measurable] - ref[measurable])[1] <= ALPHA
    assert shown.mean() <= ALPHA + tol, shown.mean()
    # ... is biased towards loss by the selection (regression to the mean), but within alpha
    everyone = margin_p(rung - ref)[1] <= ALPHA
    assert shown.mean() >= everyone.mean() - 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)
    # the beyond-the-margin verdict, in gold-probability points, stays far below alpha
    d = rel.gold_prob_change_pp(gold_logprob(ref[measurable]), gold_logprob(rung[measurable]))
    ci = rel.collapse_robust_ci(d, margin=rel.MARGINS.gold_prob_pp)
    lab = rel.decide(ci.low, ci.high, rel.MARGINS.gold_prob_pp, beyond=ci.beyond_p <= ALPHA,
                     change=shown)
    assert (lab == rel.BEYOND).mean() <= ALPHA + tol
    assert np.isin(lab, [rel.BEYOND, rel.CHANGE]).mean() <= ALPHA + tol
