"""Anytime-valid statistics under the executor's own behaviour (issue 27, stage 1): a
planner-driven adaptive allocation with interim looks, cells stopped once decided, and a
user who extends the undecided cells twice; per lens, with heavy tails and rare collapses
on the margin lens; and today's fixed-sample test of every lens failing the same
extension. Seeded, vectorized (the worked examples are in ``test_sequential.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_fragility.stats import lenses, relevance
from gguf_fragility.stats import sequential as sq
from gguf_fragility.stats.lens.base import ABOVE, BELOW
from gguf_fragility.stats.lens.correctness import correctness_p
from gguf_fragility.stats.lens.margin import margin_p

ALPHA = 0.05
MARGINS = {"correctness": relevance.MARGINS.correctness, "fidelity": relevance.MARGINS.fidelity,
           "margin": relevance.MARGINS.gold_prob_pp}
CAPS = (100, 250, 600)  # the user's first run, then two extensions of the undecided cells


def mc_ok(rate: float, sims: int, target: float = ALPHA) -> bool:
    """``rate`` is at most ``target`` up to three Monte Carlo standard errors."""
    return rate <= target + 3 * np.sqrt(target * (1 - target) / sims)


def draw(lens: str, mean, shape, rng) -> np.ndarray:
    """
    Per-item effects of ``lens`` with true mean ``mean`` (broadcast on ``shape[:-1]``).

    Paired binary lenses: -1/0/+1 with discordance 0.2. Margin lens: points of gold
    probability from a heavy-tailed pool (t3 x 4 points, 2% collapses losing 40 to 80
    points), centred, shifted to the mean, resampled.
    """
    mean = np.asarray(mean, float)[..., None]
    u = rng.random(shape)
    if lens != "margin":
        return np.where(u < (0.2 - mean) / 2, -1.0, np.where(u > 1 - (0.2 + mean) / 2, 1.0, 0.0))
    pool_rng = np.random.default_rng(99)
    pool = np.clip(4 * pool_rng.standard_t(3, 20_000), -30, 30)
    collapse = pool_rng.random(pool.size) < 0.02
    pool[collapse] = -pool_rng.uniform(40, 80, collapse.sum())
    pool = np.sort(pool - pool.mean())
    assert pool.min() + mean.min() >= -100 and pool.max() + mean.max() <= 100
    return pool[(u * pool.size).astype(int)] + mean


@pytest.mark.parametrize("lens", ["correctness", "fidelity", "margin"])
def test_every_sequence_covers_at_every_look(lens):
    rng, spec, sims, m = np.random.default_rng(2), sq.SPECS[lens], 2_000, MARGINS[lens]
    bound = np.log(2 / ALPHA)
    for mean in (-4 * m, -m, 0.0, m):
        x = draw(lens, mean, (sims, 600), rng)
        out = ((sq.log_capital(x, spec, mean, ABOVE).max(-1) >= bound)
               | (sq.log_capital(x, spec, mean, BELOW).max(-1) >= bound))
        assert out.mean() <= ALPHA, (lens, mean, out.mean())  # time-uniform miss rate


def run_family(lens: str, sims: int, rng, batch: int = 50):
    """
    One lens's family (3 families x 4 rungs; lowest rung a true loss of 4m, the rest at
    the null boundary ``-m``) under the planner's allocation: interim looks every
    ``batch`` items, only the cheapest half of the open cells (by
    :func:`~gguf_fragility.stats.sequential.items_to_decide`) gets items, a cell stops
    once decided, and the user extends the undecided cells twice (:data:`CAPS`).
    Returns the family's rejections (sims, 3, 4), items used and the true-null mask.
    """
    spec, m = sq.SPECS[lens], MARGINS[lens]
    truth = np.tile(np.array([-4 * m, -m, -m, -m]), (3, 1))  # loss side: a loss negative
    y = draw(lens, truth, (sims, 3, 4, CAPS[-1]), rng)
    below = sq.Spec(-spec.high, -spec.low, BELOW) if spec.loss_side == ABOVE else spec
    p_beyond = sq.anytime_p(sq.log_capital(y, below, -m, BELOW))
    p_low = sq.anytime_p(sq.log_capital(y, below, -m, ABOVE))
    p_high = sq.anytime_p(sq.log_capital(y, below, m, BELOW))
    n = np.full((sims, 3, 4), batch)

    def at(a):  # each cell's value after its own last item
        return np.take_along_axis(a, (n - 1)[..., None], -1)[..., 0]

    for cap in CAPS:
        while True:
            # beyond at the level of a family's first step (Holm's alpha / 3), or equivalent
            decided = (at(p_beyond) <= ALPHA / 3) | ((at(p_low) <= ALPHA) & (at(p_high) <= ALPHA))
            open_ = ~decided & (n < cap)
            if not open_.any():
                break
            need = np.full(n.shape, np.inf)
            need[open_] = sq.items_to_decide(y[open_], below, m, n=n[open_],
                                             n_max=cap).items
            cheap = need <= np.median(need[open_])
            n = np.where(open_ & cheap, np.minimum(n + batch, cap), n)
    reject = np.stack([sq.family_reject(p, ALPHA) for p in at(p_beyond)])
    return reject, n, np.broadcast_to(truth == -m, reject.shape)


@pytest.mark.parametrize("lens", ["correctness", "fidelity", "margin"])
def test_family_holds_alpha_with_adaptive_stopping_and_two_extensions(lens):
    sims = 600
    reject, n, null = run_family(lens, sims, np.random.default_rng(3))
    fwer = (reject & null).any((1, 2)).mean()
    assert mc_ok(fwer, sims), (lens, fwer)
    print(lens, "familywise false-loss rate", fwer, "power", reject[:, :, 0].mean())
    assert reject[:, :, 0].mean() > 0.5, reject[:, :, 0].mean()  # true losses are found
    assert len(np.unique(n)) > 3  # cells stopped at different, data-driven sizes


def fixed_vs_sequential(lens: str, sims: int, rng):
    """A single cell at the null of the lens's fixed test today, looked at after each of
    :data:`CAPS` items and extended while undecided: false-loss rates of the fixed test
    at the first look only, under extension, and of the anytime-valid p on the same data."""
    if lens == "margin":  # Wilcoxon's null: symmetric about zero (t3 x 4 points)
        x = np.clip(4 * rng.standard_t(3, (sims, CAPS[-1])), -100, 100)
    else:
        x = draw(lens, 0.0, (sims, CAPS[-1]), rng)
    fixed = np.zeros((len(CAPS), sims), bool)
    for i, k in enumerate(CAPS):
        if lens == "correctness":  # exact McNemar, loss side (the correctness lens)
            fixed[i] = correctness_p((x[:, :k] < 0).sum(1), (x[:, :k] > 0).sum(1))[1] <= ALPHA
        elif lens == "fidelity":  # exact one-sided, rung flips over floor flips (fidelity)
            fixed[i] = lenses.flip_vs_floor(x[:, :k] > 0, x[:, :k] < 0).pvalue <= ALPHA
        else:  # Wilcoxon signed rank, loss side (the margin lens)
            fixed[i] = margin_p(x[:, :k])[1] <= ALPHA
    spec = sq.SPECS[lens]
    y = -x if spec.loss_side == ABOVE else x
    below = sq.Spec(-spec.high, -spec.low, BELOW) if spec.loss_side == ABOVE else spec
    p = sq.anytime_p(sq.log_capital(y, below, 0.0, BELOW))[:, np.array(CAPS) - 1]
    return fixed[0].mean(), fixed.any(0).mean(), (p <= ALPHA).any(1).mean()


@pytest.mark.parametrize("lens", ["correctness", "fidelity", "margin"])
def test_fixed_sample_tests_fail_the_extension_that_sequences_survive(lens):
    sims = 4_000
    first, extended, seq = fixed_vs_sequential(lens, sims, np.random.default_rng(5))
    assert mc_ok(seq, sims)  # anytime-valid: extension is free
    assert extended >= 1.5 * first, (first, extended)  # looking and extending inflates
    if lens == "fidelity":  # one-sided at alpha: the inflation crosses alpha itself
        assert extended > ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / sims), extended
