"""Paired statistics for one reference-vs-rung comparison, vectorized over a whole grid.

Every function here takes arrays (one entry per grid cell: model × family × rung ×
subset) and returns arrays of the same shape, so the sweep's whole grid is computed in
a handful of numpy calls. :mod:`gguf_fragility.stats.grid` builds the grid from item rows;
:mod:`gguf_fragility.stats.deathorder` and :mod:`gguf_fragility.stats.decision` read it.

Usage::

    from gguf_fragility.stats import paired
    ci = paired.wilson_ci(n_correct, n)                 # accuracy interval
    mc = paired.mcnemar_exact(deaths, resurrections)    # paired test
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize

TIERS = ("negligible", "acceptable", "concerning", "unacceptable")
TIER_FLOORS = (-0.03, -0.05, -0.10)  # accuracy difference (fraction) at the bottom of each tier
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "bonferroni": "bonferroni"}


class Interval(NamedTuple):
    """A confidence interval, one entry per grid cell."""

    low: np.ndarray
    high: np.ndarray


class McNemar(NamedTuple):
    """Result of :func:`mcnemar_exact`."""

    statistic: np.ndarray  # min(deaths, resurrections): the binomial tail's observed count
    pvalue: np.ndarray
    method: str


class Tost(NamedTuple):
    """Result of :func:`paired_tost`."""

    pvalue: np.ndarray  # max of the two one-sided p-values
    p_lower: np.ndarray  # H0: diff <= -margin
    p_upper: np.ndarray  # H0: diff >= +margin
    equivalent: np.ndarray  # pvalue < alpha
    margin: float


class Adjusted(NamedTuple):
    """Result of :func:`adjust_pvalues`."""

    pvalue: np.ndarray  # adjusted p-values
    reject: np.ndarray
    method: str


def _counts(*arrays):
    """Broadcast integer count arrays and check they are non-negative."""
    out = [np.asarray(a) for a in arrays]
    for a in out:
        if a.size and (np.any(a < 0) or not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"counts must be non-negative integers; got dtype {a.dtype}, "
                             f"min {a.min() if a.size else None}")
    return np.broadcast_arrays(*out)


def wilson_ci(n_correct, n, *, alpha=0.05) -> Interval:
    """
    Wilson score interval for an accuracy, vectorized.

    Parameters
    ----------
    n_correct, n : array_like of int
        Correct answers and items per cell; ``n == 0`` gives NaN.
    alpha : float, default 0.05
        1 - confidence level.

    Returns
    -------
    Interval
        ``low`` and ``high`` bounds (fractions).

    Notes
    -----
    Thin wrapper on ``statsmodels.stats.proportion.proportion_confint(method="wilson")``;
    Wilson keeps near-nominal coverage at small n and near 0 or 1, where the Wald
    interval fails [1]_.

    References
    ----------
    .. [1] Brown, L. D., Cai, T. T., DasGupta, A. (2001). Interval estimation for a
       binomial proportion. Statistical Science 16(2), 101-133.
    """
    k, n = _counts(n_correct, n)
    if np.any(k > n):
        raise ValueError("n_correct exceeds n in some cell")
    with np.errstate(invalid="ignore", divide="ignore"):
        low, high = proportion_confint(k, np.where(n > 0, n, 1), alpha=alpha, method="wilson")
    # statsmodels returns e.g. 2.8e-17 as the lower bound at k = 0; clamp the float noise
    # so the interval always contains the estimate (found by a hypothesis test).
    p_hat = k / np.where(n > 0, n, 1)
    low, high = np.minimum(low, p_hat), np.maximum(high, p_hat)
    empty = n == 0
    return Interval(np.where(empty, np.nan, low), np.where(empty, np.nan, high))


def mcnemar_exact(deaths, resurrections, *, method="exact") -> McNemar:
    """
    McNemar's test on the discordant pairs, exact binomial or mid-p, vectorized.

    Parameters
    ----------
    deaths, resurrections : array_like of int
        Discordant counts: right at the reference and wrong at the rung, and the reverse.
    method : {"exact", "midp"}, default "exact"
        ``"exact"``: two-sided conditional binomial test, ``min(1, 2 P(X <= k))`` with
        ``X ~ Bin(b + c, 1/2)`` and ``k = min(b, c)``. ``"midp"``: subtract ``P(X = k)``
        (Fagerland et al. recommend it: closer to nominal size, still conservative).

    Returns
    -------
    McNemar
        ``statistic = min(b, c)``, p-value and method. No discordant pairs gives p = 1.

    See Also
    --------
    statsmodels.stats.contingency_tables.mcnemar : the same exact test, one table at a time.

    Notes
    -----
    Concordant pairs carry no information; adding them never changes the p-value.

    References
    ----------
    .. [1] McNemar, Q. (1947). Psychometrika 12(2), 153-157.
    .. [2] Fagerland, M. W., Lydersen, S., Laake, P. (2013). The McNemar test for binary
       matched-pairs data: mid-p and asymptotic are better than exact conditional.
       BMC Medical Research Methodology 13, 91.
    """
    if method not in ("exact", "midp"):
        raise ValueError(f"method must be 'exact' or 'midp'; got {method!r}")
    b, c = _counts(deaths, resurrections)
    k, m = np.minimum(b, c), b + c
    p = 2.0 * sps.binom.cdf(k, m, 0.5)
    if method == "midp":
        p = p - sps.binom.pmf(k, m, 0.5)
    return McNemar(k, np.minimum(p, 1.0), method)


def paired_tost(deaths, resurrections, n, *, margin, alpha=0.05) -> Tost:
    """
    Paired two one-sided tests (TOST) for equivalence of two accuracies within ±margin.

    Parameters
    ----------
    deaths, resurrections, n : array_like of int
        Discordant counts and number of paired items per cell (n >= 2).
    margin : float
        Equivalence margin as a fraction (0.03 for ±3 pp).
    alpha : float, default 0.05
        Level of each one-sided test.

    Returns
    -------
    Tost
        Overall p (max of the two), the two one-sided p-values, ``equivalent`` and margin.

    See Also
    --------
    statsmodels.stats.weightstats.ttost_paired : the same test on raw arrays, one cell at a time.

    Notes
    -----
    The per-item difference ``d = rung - reference`` takes values in {-1, 0, 1}, so its
    mean and variance follow from the counts alone; this is the paired t-test TOST of
    Schuirmann [1]_ written on counts so a whole grid runs at once (``ttost_paired``
    needs the item arrays of one cell). With no discordant pair the sample variance is 0;
    we then use the variance of a single discordant pair, ``1/n``, rather than declare
    equivalence from a zero standard error. The t approximation is weak with very few
    discordant pairs; treat equivalence there with care.

    References
    ----------
    .. [1] Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure
       and the power approach for assessing the equivalence of average bioavailability.
       J. Pharmacokinetics and Biopharmaceutics 15(6), 657-680.
    """
    if not margin > 0:
        raise ValueError(f"margin must be a positive fraction (0.03 = 3 pp); got {margin!r}")
    b, c, n = _counts(deaths, resurrections, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        nf = n.astype(float)
        diff = (c - b) / nf
        s2 = ((b + c) - nf * diff**2) / (nf - 1.0)
        s2 = np.where(s2 > 0, s2, 1.0 / nf)
        se = np.sqrt(s2 / nf)
        df = np.where(n >= 2, nf - 1.0, np.nan)
        p_lower = sps.t.sf((diff + margin) / se, df)
        p_upper = sps.t.cdf((diff - margin) / se, df)
    p = np.maximum(p_lower, p_upper)
    return Tost(p, p_lower, p_upper, p < alpha, margin)


def mde_paired(discordant, n, *, alpha=0.05, power=0.8):
    """
    Minimum detectable accuracy difference for a paired (McNemar) design.

    Parameters
    ----------
    discordant, n : array_like
        Number of discordant pairs (deaths + resurrections) and of paired items.
    alpha : float, default 0.05
        Two-sided level.
    power : float, default 0.8

    Returns
    -------
    ndarray of float
        The smallest |difference| (fraction) detected with the given power.

    Notes
    -----
    Connor's sample size for McNemar's test [1]_ is
    ``n = (z_a sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2`` with ``psi`` the
    discordant proportion and ``delta`` the difference; we solve it for ``delta``:
    ``delta = (z_a sqrt(psi n) + z_b sqrt(psi (n + z_b^2) - z_a^2 psi)) / (n + z_b^2)``,
    planning with the observed ``psi``. A difference cannot exceed the discordance, so
    when the solution exceeds ``psi`` (few or no discordant pairs) we plan with
    ``psi = delta`` (all discordant pairs in one direction, the most favourable case)
    and solve ``delta = (z_a + z_b sqrt(1 - delta))^2 / n`` by fixed-point iteration.
    statsmodels and scipy offer power for independent proportions only, hence this.

    References
    ----------
    .. [1] Connor, R. J. (1987). Sample size for testing differences in proportions for
       the paired-sample design. Biometrics 43(1), 207-211.
    """
    d, n = np.broadcast_arrays(np.asarray(discordant, float), np.asarray(n, float))
    za, zb = sps.norm.ppf(1 - alpha / 2), sps.norm.ppf(power)
    with np.errstate(invalid="ignore", divide="ignore"):
        psi = d / n
        root = np.sqrt(np.maximum(psi * (n + zb**2) - za**2 * psi, 0.0))
        delta = (za * np.sqrt(psi * n) + zb * root) / (n + zb**2)
        one_way = np.full_like(n, (za + zb) ** 2) / n
        for _ in range(60):  # contraction: derivative ~ z_b (z_a+z_b) / (n sqrt(1-delta)) << 1
            one_way = (za + zb * np.sqrt(np.clip(1 - one_way, 0, 1))) ** 2 / n
        out = np.where((psi > 0) & (delta <= psi), delta, one_way)
    return np.where(n > 0, np.minimum(out, 1.0), np.nan)


def cohens_h(p_rung, p_ref):
    """Cohen's h = 2 asin sqrt(p_rung) - 2 asin sqrt(p_ref) (statsmodels proportion_effectsize)."""
    return proportion_effectsize(np.asarray(p_rung, float), np.asarray(p_ref, float))


def quality_tier(diff):
    """
    TR125 quality tier from the accuracy difference's point estimate (rung - reference).

    Parameters
    ----------
    diff : array_like of float
        Accuracy difference as a fraction (-0.04 = 4 pp worse).

    Returns
    -------
    ndarray of str
        ``"negligible"`` (>= -3 pp), ``"acceptable"`` (>= -5 pp), ``"concerning"``
        (>= -10 pp) or ``"unacceptable"``; ``""`` where ``diff`` is NaN.

    Notes
    -----
    A point-estimate guide, not a test: read it beside the CI, TOST and MDE columns.
    A tiny tolerance absorbs float error at the boundaries (e.g. -3/100 computed as
    -0.030000000000000002).
    """
    d = np.asarray(diff, float) + 1e-12
    tier = np.select([d >= TIER_FLOORS[0], d >= TIER_FLOORS[1], d >= TIER_FLOORS[2]],
                     TIERS[:3], TIERS[3]).astype(object)
    tier[np.isnan(d)] = ""
    return tier


def tier_rank(tier):
    """Tier as an integer, 0 = negligible ... 3 = unacceptable (NaN for unknown)."""
    order = {t: i for i, t in enumerate(TIERS)}
    return np.array([order.get(t, np.nan) for t in np.asarray(tier, object)], float)


def adjust_pvalues(pvalues, *, method="holm", alpha=0.05) -> Adjusted:
    """
    Correct a family of p-values for multiple comparisons.

    Parameters
    ----------
    pvalues : array_like of float
        Raw p-values; NaN entries are left NaN and do not count as tests.
    method : {"holm", "bh", "fdr_bh", "bonferroni"}, default "holm"
        Holm's step-down (controls the family-wise error rate) or Benjamini-Hochberg
        (controls the false discovery rate).
    alpha : float, default 0.05

    Returns
    -------
    Adjusted
        Adjusted p-values, rejections and the statsmodels method name.

    See Also
    --------
    statsmodels.stats.multitest.multipletests : the implementation used.

    References
    ----------
    .. [1] Holm, S. (1979). Scand. J. Statistics 6(2), 65-70.
    .. [2] Benjamini, Y., Hochberg, Y. (1995). JRSS B 57(1), 289-300.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}; got {method!r}")
    p = np.asarray(pvalues, float)
    adj, rej = np.full_like(p, np.nan), np.zeros(p.shape, bool)
    ok = np.isfinite(p)
    if ok.any():
        rej[ok], adj[ok] = multipletests(p[ok], alpha=alpha, method=CORRECTIONS[method])[:2]
    return Adjusted(adj, rej, CORRECTIONS[method])


def bootstrap_paired_diffs(ref, rungs, *, n_boot=10_000, rng):
    """
    Paired bootstrap replicates of accuracy differences, all rungs of one item set jointly.

    Parameters
    ----------
    ref : array_like of bool, shape (n_items,)
        Correctness at the reference.
    rungs : array_like of bool, shape (n_items, n_rungs)
        Correctness at each rung, rows aligned with ``ref``.
    n_boot : int, default 10000
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of float, shape (n_boot, n_rungs)
        Bootstrap replicates of ``mean(rung) - mean(ref)``.

    Notes
    -----
    The nonparametric paired bootstrap [1]_ resamples items with replacement, keeping
    each item's whole row (reference and every rung) together. Only the pattern of
    per-item differences (each in {-1, 0, 1}) matters, and resampling n items uniformly
    is exactly a multinomial draw over the distinct patterns with their observed
    frequencies; we draw that instead of ``n_boot x n_items`` indices. Same distribution,
    orders of magnitude less work (a sweep has tens of distinct patterns, not hundreds of
    items). Rungs share each replicate, so derived quantities across rungs (curves,
    areas, ranks) get a coherent bootstrap.

    References
    ----------
    .. [1] Efron, B., Tibshirani, R. J. (1993). An Introduction to the Bootstrap.
       Chapman & Hall, ch. 6 and 13.
    """
    ref = np.asarray(ref, bool)
    rungs = np.asarray(rungs, bool)
    if rungs.ndim != 2 or rungs.shape[0] != ref.shape[0]:
        raise ValueError(f"rungs must be (n_items, n_rungs) aligned with ref {ref.shape}; "
                         f"got {rungs.shape}")
    n = ref.shape[0]
    if n == 0:
        return np.full((n_boot, rungs.shape[1]), np.nan)
    d = rungs.astype(np.int8) - ref.astype(np.int8)[:, None]  # (n_items, n_rungs)
    patterns, counts = np.unique(d, axis=0, return_counts=True)  # (k, n_rungs), (k,)
    weights = rng.multinomial(n, counts / n, size=n_boot)  # (n_boot, k)
    return weights @ patterns.astype(float) / n
