"""The paired statistics against independent references (statsmodels, scipy) and worked examples."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.weightstats import ttost_paired

from gguf_fragility.stats import paired

RNG = np.random.default_rng(20260101)


# --- Wilson ----------------------------------------------------------------------------------

def test_wilson_seed_002_tr125_n485():
    # TR125 (seed 002), llama3.1-8b Q8_0: 0.724 at N = 485 -> [0.682, 0.762].
    lo, hi = paired.wilson_ci(351, 485)  # 351/485 = 0.7237
    assert (round(float(lo), 3), round(float(hi), 3)) == (0.682, 0.762)
    # TR125 FP16 row: 0.384 (186/485) -> [0.342, 0.429]. 186/485 gives [0.3413, 0.4275];
    # no integer count reproduces 0.429 exactly (the report rounded a rescored mean), so
    # this one is checked to 1.5e-3.
    lo, hi = paired.wilson_ci(186, 485)
    assert abs(lo - 0.342) < 1.5e-3 and abs(hi - 0.429) < 1.5e-3


def test_wilson_empty_cell_is_nan_and_bad_counts_raise():
    lo, hi = paired.wilson_ci([0, 3], [0, 5])
    assert np.isnan(lo[0]) and np.isnan(hi[0]) and np.isfinite(lo[1])
    with pytest.raises(ValueError, match="exceeds"):
        paired.wilson_ci(6, 5)
    with pytest.raises(ValueError, match="non-negative integers"):
        paired.wilson_ci(-1, 5)


# --- McNemar ---------------------------------------------------------------------------------

def test_mcnemar_exact_matches_statsmodels_and_binomtest():
    b = RNG.integers(0, 60, 300)
    c = RNG.integers(0, 60, 300)
    p = paired.mcnemar_exact(b, c).pvalue
    for i in range(300):
        sm = mcnemar([[50, b[i]], [c[i], 40]], exact=True).pvalue
        assert p[i] == pytest.approx(sm, rel=1e-12, abs=1e-15)
        if b[i] + c[i]:
            bt = sps.binomtest(int(b[i]), int(b[i] + c[i]), 0.5).pvalue
            assert p[i] == pytest.approx(bt, rel=1e-9)


def test_mcnemar_fagerland_2013_worked_example():
    # Fagerland, Lydersen & Laake (2013), Table 1 (Bentur et al. 2009, AHR before/after
    # stem-cell transplantation, n = 21): discordant pairs b = 1, c = 7. The paper
    # reports exact p = 0.070, mid-p = 0.039 and asymptotic p = 0.034.
    assert float(paired.mcnemar_exact(1, 7).pvalue) == pytest.approx(18 / 256)  # 0.0703
    assert float(paired.mcnemar_exact(1, 7, method="midp").pvalue) == pytest.approx(10 / 256)
    chi2 = mcnemar([[1, 1], [7, 12]], exact=False, correction=False)
    assert chi2.pvalue == pytest.approx(0.034, abs=5e-4)


def test_mcnemar_midp_is_below_exact_and_no_discordance_gives_one():
    b, c = RNG.integers(0, 30, 200), RNG.integers(0, 30, 200)
    ex, mid = paired.mcnemar_exact(b, c).pvalue, paired.mcnemar_exact(b, c, method="midp").pvalue
    assert np.all(mid <= ex + 1e-15)
    assert paired.mcnemar_exact(0, 0).pvalue == 1.0
    assert paired.mcnemar_exact(0, 0, method="midp").pvalue == 1.0
    with pytest.raises(ValueError, match="'exact' or 'midp'"):
        paired.mcnemar_exact(1, 2, method="chi2")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(0, 200), st.integers(0, 10_000))
def test_mcnemar_ignores_concordant_pairs_and_is_symmetric(b, c, extra):
    # Adding concordant pairs never changes the test; swapping reference and rung
    # (deaths <-> resurrections) gives the same p.
    p = paired.mcnemar_exact(b, c).pvalue
    assert paired.mcnemar_exact(c, b).pvalue == p
    sm = mcnemar([[extra, b], [c, extra]], exact=True).pvalue
    assert p == pytest.approx(sm, rel=1e-12, abs=1e-15)


# --- multiple comparisons ---------------------------------------------------------------------

def test_holm_hand_worked_and_nan_passthrough():
    # Holm by hand, m = 4: sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06,
    # 0.04*1 = 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    adj = paired.adjust_pvalues([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(adj.pvalue[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adj.pvalue[4]) and not adj.reject[4]
    with pytest.raises(ValueError, match="correction must be one of"):
        paired.adjust_pvalues([0.1], method="sidak-ish")


# --- TOST --------------------------------------------------------------------------------------

def _pairs(b, c, n):
    """Reference and rung arrays with b deaths, c resurrections, the rest half right."""
    ref = np.r_[np.ones(b), np.zeros(c), np.ones((n - b - c) // 2), np.zeros(n - b - c
                                                                           - (n - b - c) // 2)]
    rung = np.r_[np.zeros(b), np.ones(c), ref[b + c:]]
    return ref, rung


@pytest.mark.parametrize("b,c,n,margin", [(10, 3, 200, 0.03), (4, 9, 500, 0.05),
                                          (30, 10, 300, 0.05), (1, 0, 50, 0.03),
                                          (25, 25, 400, 0.03)])
def test_tost_matches_statsmodels_ttost_paired(b, c, n, margin):
    ref, rung = _pairs(b, c, n)
    p_sm = ttost_paired(rung, ref, -margin, margin)[0]
    t = paired.paired_tost(b, c, n, margin=margin)
    assert float(t.pvalue) == pytest.approx(p_sm, rel=1e-9)
    assert bool(t.equivalent) == (p_sm < 0.05)


def test_tost_no_discordance_uses_one_pair_variance():
    t = paired.paired_tost(0, 0, 500, margin=0.03)
    ref, rung = _pairs(1, 0, 500)  # the floor is the variance of one discordant pair
    s = np.std(rung - ref, ddof=1)
    assert s**2 == pytest.approx(1 / 500)
    assert float(t.pvalue) == pytest.approx(sps.t.sf(0.03 / np.sqrt(1 / 500 / 500), 499))
    assert bool(t.equivalent)
    assert not bool(paired.paired_tost(0, 0, 10, margin=0.03).equivalent)
    with pytest.raises(ValueError, match="margin"):
        paired.paired_tost(1, 1, 10, margin=-0.03)


# --- MDE ---------------------------------------------------------------------------------------

def test_mde_inverts_connor_sample_size():
    za, zb = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    for disc, n in [(60, 500), (150, 1000), (40, 300)]:
        psi, delta = disc / n, float(paired.mde_paired(disc, n))
        n_connor = (za * np.sqrt(psi) + zb * np.sqrt(psi - delta**2)) ** 2 / delta**2
        assert n_connor == pytest.approx(n, rel=1e-9)


def test_mde_has_nominal_power_by_simulation():
    # Independent check: simulate paired data at the MDE and count rejections of the
    # (uncorrected) asymptotic McNemar test, which Connor's formula targets.
    n, disc = 500, 60
    delta = float(paired.mde_paired(disc, n))
    psi = disc / n
    p10, p01 = (psi + delta) / 2, (psi - delta) / 2
    rng = np.random.default_rng(1)
    counts = rng.multinomial(n, [p10, p01, 1 - psi], size=20_000)
    b, c = counts[:, 0], counts[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        z2 = (b - c) ** 2 / (b + c)
    power = np.mean(sps.chi2.sf(z2, 1) < 0.05)
    assert power == pytest.approx(0.8, abs=0.02)


def test_mde_one_way_fallback_and_shape():
    mde = paired.mde_paired([0, 1, 60], [500, 500, 500])
    za, zb = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    d = mde[0]
    assert d == pytest.approx((za + zb * np.sqrt(1 - d)) ** 2 / 500, rel=1e-9)
    assert mde[1] == pytest.approx(d)  # psi = 1/500 cannot contain the effect either
    assert mde[0] < mde[2] < 1 and np.isnan(paired.mde_paired(0, 0))


# --- effect size and tier ----------------------------------------------------------------------

def test_cohens_h_and_tiers():
    assert float(paired.cohens_h(0.5, 0.7)) == pytest.approx(
        2 * np.arcsin(np.sqrt(0.5)) - 2 * np.arcsin(np.sqrt(0.7)))
    tiers = paired.quality_tier([0.01, -0.03, -0.0301, -0.05, -0.10, -0.1001, np.nan])
    assert list(tiers) == ["negligible", "negligible", "acceptable", "acceptable",
                           "concerning", "unacceptable", ""]
    assert list(paired.tier_rank(["acceptable", "unacceptable"])) == [1, 3]


# --- paired bootstrap --------------------------------------------------------------------------

def test_bootstrap_matches_normal_ci_agresti_example():
    # Agresti (2002), Categorical Data Analysis, Table 10.1: presidential approval of the
    # same 1600 people in two surveys, 794 / 150 / 86 / 570. Difference -0.04, and the
    # Wald interval for a paired difference is (-0.06, -0.02).
    ref = np.r_[np.ones(794 + 150), np.zeros(86 + 570)].astype(bool)
    rung = np.r_[np.ones(794), np.zeros(150), np.ones(86), np.zeros(570)].astype(bool)
    boot = paired.bootstrap_paired_diffs(ref, rung[:, None], n_boot=20_000,
                                        rng=np.random.default_rng(0))[:, 0]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    b, c, n = 150, 86, 1600
    se = np.sqrt((b + c) - (b - c) ** 2 / n) / n
    assert (round(-0.04 - 1.96 * se, 2), round(-0.04 + 1.96 * se, 2)) == (-0.06, -0.02)
    assert lo == pytest.approx(-0.04 - 1.96 * se, abs=1.5e-3)
    assert hi == pytest.approx(-0.04 + 1.96 * se, abs=1.5e-3)
    assert boot.std() == pytest.approx(se, rel=0.03)


def test_bootstrap_equals_item_resampling_in_distribution():
    rng = np.random.default_rng(3)
    ref = rng.random(120) < 0.7
    rungs = np.stack([ref ^ (rng.random(120) < p) for p in (0.05, 0.2)], axis=1)
    fast = paired.bootstrap_paired_diffs(ref, rungs, n_boot=40_000, rng=rng)
    idx = rng.integers(0, 120, (40_000, 120))
    slow = rungs[idx].mean(1) - ref[idx].mean(1)[:, None]
    np.testing.assert_allclose(fast.mean(0), slow.mean(0), atol=1e-3)
    np.testing.assert_allclose(fast.std(0), slow.std(0), rtol=0.03)
    np.testing.assert_allclose(np.corrcoef(fast.T)[0, 1], np.corrcoef(slow.T)[0, 1], atol=0.03)


def test_bootstrap_is_seeded_and_checks_shapes():
    ref = np.array([1, 1, 0, 1, 0], bool)
    rung = np.array([[1, 0, 0, 1, 1]], bool).T
    a = paired.bootstrap_paired_diffs(ref, rung, n_boot=100, rng=np.random.default_rng(5))
    b = paired.bootstrap_paired_diffs(ref, rung, n_boot=100, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="aligned"):
        paired.bootstrap_paired_diffs(ref, rung[:3], rng=np.random.default_rng(0))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=300),
       st.integers(0, 2**31))
def test_intervals_contain_estimate_and_swap_mirrors(pairs, seed):
    ref = np.array([p[0] for p in pairs])
    rung = np.array([p[1] for p in pairs])
    n, k = len(pairs), int(rung.sum())
    lo, hi = paired.wilson_ci(k, n)
    assert lo <= k / n <= hi
    fwd = paired.bootstrap_paired_diffs(ref, rung[:, None], n_boot=2000,
                                       rng=np.random.default_rng(seed))[:, 0]
    rev = paired.bootstrap_paired_diffs(rung, ref[:, None], n_boot=2000,
                                       rng=np.random.default_rng(seed))[:, 0]
    diff = rung.mean() - ref.mean()
    assert np.percentile(fwd, 0) <= diff <= np.percentile(fwd, 100)
    # Swapping reference and rung negates the difference (up to Monte Carlo error: the
    # two calls draw over differently ordered patterns).
    tol = 5 * fwd.std() / np.sqrt(2000) + 1e-12
    assert np.mean(fwd) == pytest.approx(diff, abs=tol)
    assert np.mean(rev) == pytest.approx(-diff, abs=tol)
    b, c = int((ref & ~rung).sum()), int((~ref & rung).sum())
    assert paired.mcnemar_exact(b, c).pvalue == paired.mcnemar_exact(c, b).pvalue
    t_fwd = paired.paired_tost(b, c, n, margin=0.05)
    t_rev = paired.paired_tost(c, b, n, margin=0.05)
    assert float(t_fwd.pvalue) == pytest.approx(float(t_rev.pvalue), rel=1e-9, abs=1e-300)
