"""Tests of :mod:`~gguf_fragility.stats.lenses` and :mod:`~gguf_fragility.stats.multiplicity`:
worked examples, null calibration, coverage, power.

Every simulation is seeded and vectorized (thousands of tables per numpy call). Monte-Carlo
tolerances are three binomial standard errors of the simulated rate.

    PYTHONPATH=lib python -m pytest -q tests/test_lenses.py
"""

import gc
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from gguf_fragility.stats.lenses import (
    flip_vs_floor,
    margin_test,
    mcnemar_min_pvalue,
    mcnemar_test,
    paired_diff_ci,
)
from gguf_fragility.stats.multiplicity import (
    fixed_sequence_graph,
    tarone_testable,
)
from gguf_fragility.stats.relevance import BEYOND, EQUIVALENT, UNDECIDED, decide
from gguf_fragility.stats.transfer import rank_agreement_exact

ALPHA = 0.05
Z = stats.norm.isf(ALPHA / 2)


def mc_tol(rate: float, reps: int) -> float:
    """Three binomial standard errors of a simulated rate."""
    return 3 * math.sqrt(rate * (1 - rate) / reps)


def paired_items(rng, reps, n, a, b):
    """Reference and rung correctness drawn from the same per-item probability (the null).

    Per-item probabilities ~ Beta(a, b): most items always right or always wrong, a few
    on a knife edge, as for a greedy-decoded model whose rung equals it in distribution.
    """
    p = rng.beta(a, b, size=(reps, n))
    return rng.random((reps, n)) < p, rng.random((reps, n)) < p


# --------------------------------------------------------------------------- Tango interval


def test_tango_worked_example_cavo():
    # Worked example of Fagerland, Lydersen & Laake (2017), "Statistical Analysis of
    # Contingency Tables", ch. 8 "The Paired 2x2 Table" (Cavo et al. 2012, complete response
    # before/after consolidation, table [[59, 6], [16, 80]], N = 161): Tango asymptotic score
    # interval -0.1240 to -0.0054 for estimate -0.0621; the same numbers are pinned in the
    # authors' R package contingencytables (tests/testthat/test-ch8.R).
    # Their difference is (n12 - n21)/N, i.e. c = 6 resurrections and b = 16 deaths here.
    ci = paired_diff_ci(16, 6, 161)
    assert round(float(ci.estimate), 4) == -0.0621
    assert round(float(ci.low), 4) == -0.1240
    assert round(float(ci.high), 4) == -0.0054
    flipped = paired_diff_ci(6, 16, 161)  # swapping deaths and resurrections mirrors it
    assert np.isclose(flipped.low, -ci.high) and np.isclose(flipped.high, -ci.low)


def test_tango_closed_form_at_no_discordance():
    # b = c = 0: the restricted MLE is q = |d0| for d0 < 0, so Z^2 = n |d0| / (1 - |d0|)
    # and the bounds are +-z^2 / (n + z^2) (derived by hand from Tango's eq. 3-5).
    n = np.array([1, 5, 10, 40, 200])
    ci = paired_diff_ci(np.zeros(5, int), np.zeros(5, int), n)
    expect = Z**2 / (n + Z**2)
    np.testing.assert_allclose(ci.high, expect, rtol=1e-9)
    np.testing.assert_allclose(ci.low, -expect, rtol=1e-9)
    assert np.all(ci.estimate == 0)


def test_tango_edges_all_deaths_and_empty():
    ci = paired_diff_ci(np.array([5, 20, 0]), np.array([0, 0, 0]), np.array([5, 20, 0]))
    assert ci.low[0] == -1 and ci.low[1] == -1 and ci.estimate[0] == -1
    assert -1 < ci.high[1] < ci.high[0] < 0  # 20 of 20 deaths bounds the loss further from 0
    assert np.isnan(ci.low[2]) and np.isnan(ci.high[2])
    with pytest.raises(ValueError, match="exceeds n"):
        paired_diff_ci(3, 3, 5)


def test_tango_close_to_wald_for_large_n():
    # for large n every consistent interval approaches the Wald interval
    b, c, n = 300, 200, 5000
    d = (c - b) / n
    se = math.sqrt(((b + c) / n - d**2) / n)
    ci = paired_diff_ci(b, c, n)
    assert abs(ci.low - (d - Z * se)) < 5e-4 and abs(ci.high - (d + Z * se)) < 5e-4


@pytest.mark.parametrize("p_death,p_res", [(0.05, 0.0), (0.05, 0.02), (0.15, 0.05), (0.02, 0.02), (0.3, 0.1)])
def test_tango_coverage(p_death, p_res):
    rng = np.random.default_rng(20261126)
    reps = 4000
    for n in (20, 50, 100):
        m = rng.multinomial(n, [p_death, p_res, 1 - p_death - p_res], size=reps)
        ci = paired_diff_ci(m[:, 0], m[:, 1], n)
        truth = p_res - p_death
        cover = np.mean((ci.low <= truth) & (truth <= ci.high))
        assert cover >= 0.93, (n, cover)  # measured 0.936-1.000


# --------------------------------------------------------------------------- McNemar, correctness lens


def test_mcnemar_exact_matches_statsmodels():
    b, c = np.meshgrid(np.arange(16), np.arange(16))
    ours = mcnemar_test(b.ravel(), c.ravel()).pvalue
    pairs = zip(b.ravel(), c.ravel(), strict=True)
    ref = [mcnemar([[10, bi], [ci, 10]], exact=True).pvalue for bi, ci in pairs]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_mcnemar_midp_hand_computed():
    # b = 5, c = 0: exact 2 * 0.5**5 = 0.0625; mid-p 2 * (0.5**5 - 0.5 * 0.5**5) = 0.03125
    assert np.isclose(mcnemar_test(5, 0).pvalue, 0.0625)
    assert np.isclose(mcnemar_test(5, 0, "midp").pvalue, 0.03125)
    assert mcnemar_test(0, 0).pvalue == 1 and mcnemar_test(0, 0, "midp").pvalue == 1
    with pytest.raises(ValueError, match="method"):
        mcnemar_test(1, 2, method="chi2")


@pytest.mark.parametrize("a,b", [(0.1, 0.1), (0.4, 0.1)])  # reference right on ~50% / ~80% of items
def test_null_all_items_keeps_alpha_usable_subset_does_not(a, b):
    """Regression-to-the-mean trap of issue 12: selecting items the reference got right."""
    rng = np.random.default_rng(12)
    reps = 4000
    for n in (10, 30, 100):
        ref, rung = paired_items(rng, reps, n, a, b)
        deaths, res = (ref & ~rung).sum(1), (~ref & rung).sum(1)
        rate = np.mean(mcnemar_test(deaths, res).pvalue <= ALPHA)
        assert rate <= ALPHA + mc_tol(ALPHA, reps), (n, rate)  # measured 0.000-0.023
        # the old design: usable subset = items the reference got right, so c = 0 by
        # construction and its accuracy difference is -deaths / usable
        old_rate = np.mean(mcnemar_test(deaths, np.zeros_like(deaths)).pvalue <= ALPHA)
        old_diff = np.mean(-deaths / np.maximum(ref.sum(1), 1))
        all_diff = np.mean((res - deaths) / n)
        assert old_diff < -0.05 and abs(all_diff) < 0.005, (old_diff, all_diff)
        if n == 100:  # measured 0.25 and 0.45 against 0.016 and 0.023 (n = 30: < 0.01 both)
            assert old_rate > 4 * ALPHA and old_rate > 8 * rate, (old_rate, rate)


# --------------------------------------------------------------------------- fidelity lens


def test_flip_vs_floor_hand_computed():
    rung = np.array([1, 1, 1, 1, 1, 0, 0, 0, 1, 0], bool)
    floor = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 0], bool)
    r = flip_vs_floor(rung, floor)
    assert (r.rung_only, r.floor_only) == (5, 0)
    assert np.isclose(r.pvalue, 0.5**5)  # P(X >= 5), X ~ Bin(5, 1/2)
    assert np.isclose(r.pvalue, stats.binomtest(5, 5, alternative="greater").pvalue)
    lo, hi = proportion_confint(6, 10, alpha=0.05, method="wilson")
    assert np.isclose(r.rung_low, lo) and np.isclose(r.rung_high, hi) and r.rung_rate == 0.6
    assert flip_vs_floor(floor, rung).pvalue == 1.0  # the floor flipping more is never "damage"
    assert flip_vs_floor(floor, floor).pvalue == 1.0  # no discordant items
    with pytest.raises(ValueError, match="aligned"):
        flip_vs_floor(rung, floor[:5])


def test_flip_vs_floor_null_and_power():
    rng = np.random.default_rng(7)
    reps = 4000
    for n in (10, 30, 100):
        f = rng.beta(0.3, 3.0, size=(reps, n))  # per-item flip propensity, mean 9%
        same = flip_vs_floor(rng.random((reps, n)) < f, rng.random((reps, n)) < f)
        rate = np.mean(same.pvalue <= ALPHA)
        assert rate <= ALPHA + mc_tol(ALPHA, reps), (n, rate)  # measured 0.000-0.024
    worse = flip_vs_floor(rng.random((reps, 100)) < 0.3, rng.random((reps, 100)) < 0.05)
    assert np.mean(worse.pvalue <= ALPHA) > 0.95


# --------------------------------------------------------------------------- margin lens


def test_margin_matches_scipy_and_flags_degenerate():
    rng = np.random.default_rng(1)
    d = rng.normal(-0.2, 1, size=25)
    r = margin_test(d, n_resamples=999, rng=0)
    ref = stats.wilcoxon(d, zero_method="wilcox")
    assert np.isclose(r.pvalue, ref.pvalue) and np.isclose(r.statistic, ref.statistic)
    assert r.ci_low < d.mean() < r.ci_high and not r.degenerate
    plain = margin_test(d, n_resamples=999, rng=0, expand=False)
    assert r.ci_low < plain.ci_low < plain.ci_high < r.ci_high  # expanded is wider
    for bad in (np.zeros(12), np.array([0.3, -0.1])):  # all zeros; n < 3
        z = margin_test(bad)
        assert z.degenerate and np.isnan(z.pvalue) and np.isnan(z.ci_low) and np.isnan(z.ci_high)
    const = margin_test(np.full(8, -0.5))  # no spread: p exists, BCa does not
    assert not const.degenerate and const.pvalue < 0.05 and np.isnan(const.ci_low)
    rows = margin_test(np.vstack([np.zeros(10), d[:10]]), n_resamples=0)
    assert list(rows.degenerate) == [True, False] and np.isnan(rows.pvalue[0]) and rows.pvalue[1] > 0


def test_margin_wilcoxon_null_symmetric_noise():
    rng = np.random.default_rng(3)
    reps = 4000
    for n in (10, 30, 100):
        # symmetric heavy-tailed noise with item-specific scale (some items barely move)
        d = rng.laplace(size=(reps, n)) * rng.gamma(2.0, 0.5, size=(reps, n))
        rate = np.mean(margin_test(d, n_resamples=0).pvalue <= ALPHA)
        assert rate <= ALPHA + mc_tol(ALPHA, reps), (n, rate)  # measured 0.048-0.056


@pytest.mark.parametrize("n", [20, 40])
def test_margin_bca_coverage_skewed(n):
    rng = np.random.default_rng(100 + n)
    reps, truth, shape = 300, -0.3, 4.0
    noise = rng.gamma(shape, 1 / math.sqrt(shape), size=(reps, n)) - math.sqrt(shape)  # sd 1, skew 1
    r = margin_test(truth + 0.5 * noise, n_resamples=999, rng=rng)
    cover = np.mean((r.ci_low <= truth) & (truth <= r.ci_high))
    assert cover >= 0.93, cover  # measured 0.953 (n=20) and 0.953 (n=40)


# --------------------------------------------------------------------------- multiplicity


def test_graph_reduces_to_holm_with_one_rung_per_family():
    rng = np.random.default_rng(9)
    # multipletests' Holm runs gc.collect() on every call, a walk of the session's whole heap
    # (this test took 12 s late in the whole suite, 2026-12-04); frozen objects are not walked
    gc.freeze()
    try:
        for i in range(48):
            m = 1 + i % 8
            p = np.where(rng.random(m) < 0.5, rng.uniform(0, 0.02, m), rng.uniform(0, 1, m))
            alpha = float(rng.choice([0.01, 0.05, 0.1]))
            got = fixed_sequence_graph(p[:, None], alpha).reject[:, 0]
            want = multipletests(p, alpha=alpha, method="holm")[0]
            np.testing.assert_array_equal(got, want)
    finally:
        gc.unfreeze()


def test_graph_two_families_three_rungs_hand_computed():
    # alpha = .05, two families -> weight 1/2 on each bottom rung (local level .025).
    # A1 .001 <= .025 rejected -> A2 gets 1/2: .04 > .025 stays. B1 .02, B2 .01, B3 .02 each
    # <= .025 rejected in turn; B's last rung passes its 1/2 to A's current rung A2, whose
    # level becomes .05: .04 rejected -> A3 at .05: .5 stays.
    r = fixed_sequence_graph([[0.001, 0.04, 0.5], [0.02, 0.01, 0.02]], 0.05)
    assert r.reject.tolist() == [[True, True, False], [True, True, True]]
    assert r.death_rung.tolist() == [1, 2]
    # A runs through (.001, .01, .02 all <= .025) and hands 1/2 to B1 -> level .05:
    # B1 .04, B2 .045 rejected, B3 .3 not. Holm on all six would stop after two rejections.
    r = fixed_sequence_graph([[0.001, 0.01, 0.02], [0.04, 0.045, 0.3]], 0.05)
    assert r.reject.tolist() == [[True, True, True], [True, True, False]]
    assert multipletests([0.001, 0.01, 0.02, 0.04, 0.045, 0.3], 0.05, "holm")[0].sum() == 2
    # a tiny p-value above a surviving rung is never rejected: the sequence stops at B1
    r = fixed_sequence_graph([[0.01, 0.02, 0.2], [0.03, 0.04, 0.001]], 0.05)
    assert r.reject.tolist() == [[True, True, False], [False, False, False]]
    assert r.death_rung.tolist() == [1, -1]


def test_graph_finished_family_splits_its_weight_equally():
    # alpha = .06, three families -> local level .02 each. A1, A2 (.001) fall; A's last rung
    # passes .02 split equally: B1 and C1 rise to .03. B1 .025 falls (it would not at .02),
    # B2 .5 stays at .03; C1 .031 > .03 stays.
    r = fixed_sequence_graph([[0.001, 0.001], [0.025, 0.5], [0.031, 0.9]], 0.06)
    assert r.reject.tolist() == [[True, True], [True, False], [False, False]]
    assert r.death_rung.tolist() == [1, 0, -1]


def test_graph_excluded_rungs_and_monotone_death_rung():
    # NaN (untestable) rungs leave the graph; the sequence steps over them
    r = fixed_sequence_graph([[0.001, np.nan, 0.01], [np.nan, np.nan, np.nan]], 0.05)
    assert r.reject.tolist() == [[True, False, True], [False, False, False]]
    assert r.death_rung.tolist() == [2, -1]  # one family in the graph: full alpha
    rng = np.random.default_rng(4)
    for _ in range(200):
        p = rng.uniform(0, 0.08, size=(4, 5)) ** rng.uniform(0.5, 2, size=(4, 1))
        r = fixed_sequence_graph(p, 0.05)
        prefix = np.cumprod(r.reject, axis=1).astype(bool)
        np.testing.assert_array_equal(r.reject, prefix)  # only unbroken runs from the bottom
        np.testing.assert_array_equal(r.death_rung, prefix.sum(1) - 1)


def test_graph_familywise_error_under_global_null():
    rng = np.random.default_rng(5)
    reps = 2000
    any_rej = [fixed_sequence_graph(rng.random((4, 3)), ALPHA).reject.any() for _ in range(reps)]
    assert np.mean(any_rej) <= ALPHA + mc_tol(ALPHA, reps)


def test_tarone_hand_computed():
    # items 3, 4, 5, 6, 10 -> min p 2 * 0.5**n = .25, .125, .0625, .03125, .00195.
    # K = 1: two cells reach .05 (> 1). K = 2: only n = 10 reaches .025 (<= 2) -> K = 2.
    mp = mcnemar_min_pvalue([3, 4, 5, 6, 10])
    r = tarone_testable(mp, 0.05)
    assert r.k == 2 and r.testable.tolist() == [False, False, False, False, True]
    for n in (1, 4, 9):  # min achievable p is the p of the most extreme table
        assert np.isclose(mcnemar_min_pvalue(n), mcnemar([[0, n], [0, 0]], exact=True).pvalue)
    assert tarone_testable(np.full(3, 0.001), 0.05).testable.all()


# --------------------------------------------------------------------------- decisions


def test_decide_never_calls_not_significant_safe():
    lo = np.array([-0.20, -0.02, -0.20, -0.20, np.nan, -0.04, 0.01])
    hi = np.array([-0.10, 0.02, 0.10, -0.01, np.nan, -0.01, 0.08])
    rej = np.array([True, False, False, False, True, True, True])
    got = decide(lo, hi, 0.05, beyond=rej & (hi < -0.05), change=rej & (hi < 0)).tolist()
    assert got == [BEYOND, EQUIVALENT, UNDECIDED,  # wide non-significant interval: undecided
                   UNDECIDED,  # interval below 0 but not rejected after correction
                   UNDECIDED,  # no interval
                   EQUIVALENT,  # a shown loss smaller than the margin
                   UNDECIDED]  # significant gain: not a loss, not inside the margin
    with pytest.raises(ValueError, match="margin"):
        decide(lo, hi, 0)


def test_decide_with_tango_interval_at_small_n():
    # 0 deaths out of 10 items: Tango bounds +-0.278, so +-5 pp equivalence is not shown
    ci = paired_diff_ci(0, 0, 10)
    assert decide(ci.low, ci.high, 0.05, beyond=False, change=False) == UNDECIDED


# --------------------------------------------------------------------------- transfer


def test_rank_agreement_statistics_match_scipy_with_ties():
    x = np.array([1, 2, 3, 4, 5, 6, 7, 8.0])
    y = np.array([2, 1, 3, 3, 5, 8, 7, 6.0])
    r = rank_agreement_exact(x, y)
    assert np.isclose(r.tau_b, stats.kendalltau(x, y).statistic)
    assert np.isclose(r.spearman, stats.spearmanr(x, y).statistic)
    assert r.exact and r.can_show


def test_rank_agreement_exact_pvalues():
    # n = 5, identical order: of 120 pairings one gives tau = 1 and one tau = -1 -> p = 2/120
    r = rank_agreement_exact([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert np.isclose(r.tau_pvalue, 2 / 120) and np.isclose(r.spearman_pvalue, 2 / 120)
    # without ties the permutation distribution of tau is Kendall's exact distribution
    x, y = np.arange(7.0), np.array([1, 0, 3, 2, 6, 4, 5.0])
    r = rank_agreement_exact(x, y)
    assert np.isclose(r.tau_pvalue, stats.kendalltau(x, y, method="exact").pvalue)
    small = rank_agreement_exact([1, 2, 3, 4], [1, 2, 3, 4])
    assert not small.can_show and small.tau_pvalue > 0.05  # 2/24: perfect agreement, no evidence
    big = rank_agreement_exact(np.arange(12.0), np.arange(12.0), rng=0)
    assert not big.exact and big.tau_pvalue < 0.001
