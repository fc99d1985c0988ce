"""Tests of :mod:`~gguf_fragility.stats.relevance` and :mod:`~gguf_fragility.stats.ranking`
(issue 25: verdicts against a relevance margin, ranking by effect, honest MDE).

Every simulation is seeded and vectorized; Monte-Carlo tolerances are three binomial
standard errors of the simulated rate. Units: correctness and fidelity in shares of items,
the continuous lens in percentage points of probability (bounded by ±100).

    PYTHONPATH=lib python -m pytest -q tests/test_verdicts.py
"""

import math

import numpy as np
import pytest
from scipy import stats

from gguf_fragility.stats import relevance as rel
from gguf_fragility.stats.lenses import mcnemar_test, paired_diff_ci
from gguf_fragility.stats.ranking import first_to_die, rank_sets, transfer_count

ALPHA = 0.05
M_ACC = rel.MARGINS.correctness  # 0.03
M_PP = rel.MARGINS.gold_prob_pp  # 3 points


def mc_tol(rate: float, reps: int) -> float:
    """Three binomial standard errors of a simulated rate."""
    return 3 * math.sqrt(rate * (1 - rate) / reps)


def trinomial(rng, reps, n, loss, psi):
    """Deaths and resurrections of ``reps`` cells with a true accuracy loss ``loss``."""
    t = rng.multinomial(n, [(psi + loss) / 2, (psi - loss) / 2, 1 - psi], size=reps)
    return t[:, 0], t[:, 1], np.full(reps, n)


def noise(rng, kind, reps, n, mean, share=0.03):
    """Per-item changes in points with true mean ``mean``: normal, t3, skewed, rare collapses.

    "collapse": a ``share`` of items lose 100 points, the others move around the value
    that makes the mean ``mean``.
    """
    if kind == "normal":
        x = mean + 6 * rng.standard_normal((reps, n))
    elif kind == "t3":
        x = mean + 4 * rng.standard_t(3, (reps, n))
    elif kind == "skewed":  # left-skewed: mean + 4 (1 - Exp(1))
        x = mean + 4 * (1 - rng.exponential(1.0, (reps, n)))
    elif kind == "collapse":
        rest = (mean + 100 * share) / (1 - share)
        drop = rng.random((reps, n)) < share
        x = np.where(drop, -100.0, rest + 2 * rng.standard_normal((reps, n)))
    else:
        raise AssertionError(kind)
    return np.clip(x, -100, 100)


def correctness_labels(b, c, n, margin=M_ACC, alpha=ALPHA):
    """Relevance labels of correctness cells as the grid computes them (no multiplicity)."""
    ci = paired_diff_ci(b, c, n, alpha=alpha)
    change = (mcnemar_test(b, c).pvalue <= alpha) & (b > c)
    beyond = rel.tango_beyond_p(b, c, n, margin) <= alpha
    return rel.decide(ci.low, ci.high, margin, beyond=beyond, change=change)


# --------------------------------------------------------------------------- worked examples


def test_labels_worked_examples():
    low = np.array([-10.0, -2.0, -5.0, -5.0, np.nan, -5.0, 1.0])
    high = np.array([-4.0, 1.0, -1.0, 2.0, np.nan, 2.0, 8.0])
    change = np.array([True, False, True, False, False, True, False])
    got = rel.decide(low, high, 3.0, change=change)
    assert list(got) == [rel.BEYOND, rel.EQUIVALENT, rel.CHANGE, rel.UNDECIDED, rel.UNDECIDED,
                         rel.CHANGE, rel.UNDECIDED]
    # an interval beyond the margin the family of tests did not reject stays a change
    assert rel.decide(-10.0, -4.0, 3.0, beyond=False, change=True)[()] == rel.CHANGE
    with pytest.raises(ValueError, match="margin must be positive"):
        rel.decide(-1.0, 1.0, 0.0)


def test_units_in_points():
    d = rel.gold_prob_change_pp(np.log([0.5, 0.9]), np.log([0.2, 0.9]))
    np.testing.assert_allclose(d, [-30.0, 0.0], atol=1e-12)
    # per-token probability 0.9 -> 0.6 over a 2-token reply is -30 points, however long
    r = rel.reply_prob_change_pp(np.array([2, 300]) * np.log(0.9),
                                 np.array([2, 300]) * np.log(0.6), [2, 300])
    np.testing.assert_allclose(r, [-30.0, -30.0], atol=1e-9)
    assert np.isnan(rel.reply_prob_change_pp(-1.0, -2.0, 0))
    with pytest.raises(ValueError, match="<= 0"):
        rel.gold_prob_change_pp(0.5, -1.0)


def test_tango_beyond_p_agrees_with_the_interval():
    rng = np.random.default_rng(1)
    n = rng.integers(5, 400, 3000)
    b = rng.binomial(n, 0.15)
    c = rng.binomial(n - b, 0.05)
    p = rel.tango_beyond_p(b, c, n, M_ACC)
    hi = paired_diff_ci(b, c, n, alpha=ALPHA).high
    clear = np.abs(hi + M_ACC) > 1e-6
    np.testing.assert_array_equal((p <= ALPHA)[clear], (hi < -M_ACC)[clear])
    assert 0.05 < np.mean(p <= ALPHA) < 0.95  # both sides exercised


def test_collapse_robust_ci_bad_input():
    with pytest.raises(ValueError, match="NaN or inf"):
        rel.collapse_robust_ci([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="within ±bound"):
        rel.collapse_robust_ci([1.0, -150.0, 2.0])


# --------------------------------------------------------------------------- null and sub-margin


@pytest.mark.parametrize("n", [20, 100])
def test_null_rates_of_a_loss_label_per_lens(n):
    rng = np.random.default_rng(n)
    reps = 4000
    # correctness and fidelity: exchangeable reference/rung (resp. floor/rung) per item
    p = rng.beta(0.3, 0.3, (reps, n))
    x0, x1 = rng.random((reps, n)) < p, rng.random((reps, n)) < p
    b, c = (x0 & ~x1).sum(1), (~x0 & x1).sum(1)
    lab = correctness_labels(b, c, np.full(reps, n))
    rate = np.isin(lab, [rel.BEYOND, rel.CHANGE]).mean()
    assert rate <= ALPHA + mc_tol(ALPHA, reps), f"correctness {rate}"
    u, v = b, c  # rung-only and floor-only flips have the same null law
    p1 = np.where(u + v == 0, 1.0, stats.binom.sf(u - 1, u + v, 0.5))
    ci = paired_diff_ci(u, v, np.full(reps, n))  # (v - u)/n: minus the excess flips
    lab = rel.decide(ci.low, ci.high, rel.MARGINS.fidelity, change=p1 <= ALPHA / 2,
                     beyond=rel.tango_beyond_p(u, v, n, rel.MARGINS.fidelity) <= ALPHA)
    rate = np.isin(lab, [rel.BEYOND, rel.CHANGE]).mean()
    assert rate <= ALPHA + mc_tol(ALPHA, reps), f"fidelity {rate}"
    for kind in ("normal", "t3"):
        ci = rel.collapse_robust_ci(noise(rng, kind, reps, n, 0.0), margin=M_PP)
        lab = rel.decide(ci.low, ci.high, M_PP, beyond=ci.beyond_p <= ALPHA)
        rate = np.isin(lab, [rel.BEYOND, rel.CHANGE]).mean()
        assert rate <= ALPHA + mc_tol(ALPHA, reps), f"margin lens {kind} {rate}"


@pytest.mark.parametrize("n", [20, 100, 1000])
def test_sub_margin_loss_is_rarely_called_beyond(n):
    rng = np.random.default_rng(7 + n)
    reps = 4000
    tol = mc_tol(ALPHA, reps)
    for share in (0.75, 1.0):  # below the margin and exactly at it
        b, c, nn = trinomial(rng, reps, n, share * M_ACC, psi=0.2)
        rate = (correctness_labels(b, c, nn) == rel.BEYOND).mean()
        assert rate <= ALPHA + tol, f"correctness loss {share}m: {rate}"
        for kind in ("normal", "t3", "collapse"):
            ci = rel.collapse_robust_ci(noise(rng, kind, reps, n, -share * M_PP), margin=M_PP)
            rate = (ci.beyond_p <= ALPHA).mean()
            assert rate <= ALPHA + tol, f"margin lens {kind} {share}m: {rate}"


@pytest.mark.parametrize("kind", ["normal", "t3", "collapse"])
def test_equivalence_size_at_the_margin(kind):
    """A true mean loss of exactly m is declared equivalent at most alpha of the time."""
    rng = np.random.default_rng(11)
    reps = 3000
    for n in (20, 100, 300, 1000):
        ci = rel.collapse_robust_ci(noise(rng, kind, reps, n, -M_PP))
        rate = (rel.decide(ci.low, ci.high, M_PP) == rel.EQUIVALENT).mean()
        assert rate <= ALPHA + mc_tol(ALPHA, reps), f"{kind} n={n}: {rate}"


def test_collapses_defeat_a_plain_interval_but_not_the_robust_one():
    """9% of items collapsing (a mean loss of 3m) hide from a t interval at n = 20."""
    rng = np.random.default_rng(12)
    x = noise(rng, "collapse", 3000, 20, -3 * M_PP, share=0.09)
    se = x.std(1, ddof=1) / math.sqrt(20)
    t = stats.t.isf(ALPHA / 2, 19)
    plain_equiv = ((x.mean(1) - t * se > -M_PP) & (x.mean(1) + t * se < M_PP)).mean()
    ci = rel.collapse_robust_ci(x)
    robust_equiv = (rel.decide(ci.low, ci.high, M_PP) == rel.EQUIVALENT).mean()
    assert plain_equiv > 0.1 and robust_equiv == 0.0


@pytest.mark.parametrize("kind", ["normal", "t3", "skewed", "collapse"])
def test_coverage_of_the_continuous_interval(kind):
    rng = np.random.default_rng(13)
    reps = 3000
    for n in (20, 64, 200):
        ci = rel.collapse_robust_ci(noise(rng, kind, reps, n, -2.0))
        cover = ((ci.low <= -2.0) & (ci.high >= -2.0)).mean()
        assert cover >= 0.93, f"{kind} n={n}: {cover}"


# --------------------------------------------------------------------------- ranking and transfer


def test_rank_sets_worked_example():
    r = rank_sets([-0.30, -0.10, 0.0], [-0.35, -0.13, -0.02], [-0.25, -0.07, 0.02])
    np.testing.assert_array_equal(r.low, [1, 2, 3])
    np.testing.assert_array_equal(r.high, [1, 2, 3])
    r = rank_sets([-0.30, -0.25, np.nan], [-0.50, -0.45, np.nan], [-0.10, -0.05, np.nan])
    np.testing.assert_array_equal(r.low[:2], [1, 1])
    np.testing.assert_array_equal(r.high[:2], [2, 2])
    assert np.isnan(r.low[2])
    with pytest.raises(ValueError, match="contain its effect"):
        rank_sets([0.0, 1.0], [0.5, 0.0], [1.0, 2.0])


def test_equal_losses_with_10_and_64_items_are_named_first_alike():
    """First to die follows effects among the families that die: 10- and 64-item families
    with one true loss, both shown beyond the margin, are named together; a family is
    named only where its own loss is shown beyond the margin, and one that cannot show it
    (too few items) is marked possible whenever it cannot be shown less fragile: the two
    item counts are named or marked alike."""
    rng = np.random.default_rng(21)
    reps = 2000
    named, possible = np.zeros((reps, 3), bool), np.zeros((reps, 3), bool)
    sizes, losses = (10, 64, 64), (0.25, 0.25, 0.0)
    cells = [trinomial(rng, reps, n, loss, psi=0.35) for n, loss in zip(sizes, losses, strict=True)]
    cis = [paired_diff_ci(*cell) for cell in cells]
    beyond = np.stack([rel.tango_beyond_p(*cell, M_ACC) <= ALPHA for cell in cells], 1)
    found = np.zeros(reps, bool)
    for i in range(reps):
        f = first_to_die(np.array([[ci.estimate[i]] for ci in cis]),
                         np.array([[ci.low[i]] for ci in cis]),
                         np.array([[ci.high[i]] for ci in cis]), beyond[i][:, None])
        named[i], possible[i], found[i] = f.named, f.possible, f.rung == 0
    assert not (named & ~beyond).any()  # only a family whose loss is beyond the margin
    assert not (named & possible).any()
    # named or marked possible: 10 and 64 items alike, whichever showed its loss
    either = (named | possible)[found]
    floor_any = 1 - ALPHA - mc_tol(ALPHA, int(found.sum()))
    assert either[:, 0].mean() >= floor_any and either[:, 1].mean() >= floor_any, either.mean(0)
    assert abs(either[:, 0].mean() - either[:, 1].mean()) <= ALPHA
    both = found & beyond[:, 0] & beyond[:, 1]
    small, large = named[both, 0].mean(), named[both, 1].mean()
    floor = 1 - ALPHA - mc_tol(ALPHA, int(both.sum()))
    assert small >= floor and large >= floor, (small, large)
    assert abs(small - large) <= ALPHA
    # the family without loss is never named (it never shows a loss beyond the margin)
    assert named[found, 2].mean() <= ALPHA


def test_first_to_die_none_and_transfer_counts():
    f = first_to_die(np.zeros((2, 3)), -np.ones((2, 3)), np.ones((2, 3)), np.zeros((2, 3), bool))
    assert f.rung == -1 and not f.named.any()
    t = transfer_count(["Q2_K", "", "Q4_K_M", ""], ["Q2_K", "", "", "Q2_K"],
                       [True, False, True, False], [True, False, False, True])
    assert (t.n_counted, t.n_agree) == (3, 1)
    assert list(t.counted) == [True, False, True, True]


# --------------------------------------------------------------------------- honest MDE


@pytest.mark.parametrize("n,level", [(64, ALPHA), (200, ALPHA / 6)])
def test_correctness_mde_has_its_power(n, level):
    mde = rel.beyond_mde(n, M_ACC, alpha=level, discordance=0.3)
    assert "discordance 30% of items" in mde.basis
    rng = np.random.default_rng(n)
    reps = 4000
    b, c, nn = trinomial(rng, reps, n, float(mde.loss), psi=0.3)
    power = (rel.tango_beyond_p(b, c, nn, M_ACC) <= level).mean()
    assert abs(power - 0.8) <= 0.05, (float(mde.loss), power)


@pytest.mark.parametrize("kind", ["normal", "t3"])
@pytest.mark.parametrize("n", [30, 200])
def test_continuous_mde_has_its_power(kind, n):
    """The simulated MDE has power 0.8 for the noise law it resamples (a 20,000-item pilot)."""
    rng = np.random.default_rng(n)
    pilot = noise(rng, kind, 1, 20_000, 0.0)[0]
    mde = float(rel.mean_beyond_mde(pilot, M_PP, rng=0, n=n).loss)
    ci = rel.collapse_robust_ci(noise(rng, kind, 4000, n, -mde), margin=M_PP)
    power = (ci.beyond_p <= ALPHA).mean()
    assert abs(power - 0.8) <= 0.05, (mde, power)
