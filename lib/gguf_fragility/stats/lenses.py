"""The three lenses (correctness, fidelity, margin) and the multiplicity design of issue 12.

Pure statistics: numpy, scipy, statsmodels and the standard library only, no project module,
so the file can move to ``gguf_fragility/stats/lenses.py`` unchanged. Every comparison uses
every item the reference and the rung both saw; nothing selects on reference-correctness.

Usage::

    from gguf_fragility.stats.lenses import paired_diff_ci, mcnemar_test, decide
    ci = paired_diff_ci(deaths, resurrections, n)          # Tango score interval
    mc = mcnemar_test(deaths, resurrections)               # exact McNemar
    label = decide(ci.low, ci.high, reject, margin=0.05)   # loss / equivalence / undecided

Tested by ``tests/test_lenses.py`` (worked examples, null simulations, coverage, power).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy import special
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

LOSS = "loss shown"
EQUIVALENT = "equivalent within ±m shown"
UNDECIDED = "undecided"


def _counts(*arrays) -> list[np.ndarray]:
    """Broadcast non-negative integer count arrays; raise on anything else."""
    out = [np.asarray(a) for a in arrays]
    for a in out:
        if a.size and (not np.issubdtype(a.dtype, np.integer) or np.any(a < 0)):
            raise ValueError(f"counts must be non-negative integers; got dtype {a.dtype}, "
                             f"min {a.min() if a.size else None}")
    return [np.asarray(a, dtype=np.int64) for a in np.broadcast_arrays(*out)]


# --------------------------------------------------------------------------- correctness


class PairedDiffCI(NamedTuple):
    """Result of :func:`paired_diff_ci` (fractions; rung minus reference)."""

    estimate: np.ndarray  # (c - b) / n
    low: np.ndarray
    high: np.ndarray
    method: str


def _tango_z(b, c, n, d0):
    """Tango's score statistic for H0: (c - b)/n = d0, with the restricted MLE of p(death)."""
    # Tango (1998) eq. 3-5 with x12 = c (resurrections), x21 = b (deaths): under H0 the
    # MLE q of p(death) is the positive root of 2n q^2 + B q + C = 0.
    bb = -(b + c) + (2 * n - c + b) * d0
    cc = -b * d0 * (1 - d0)
    q = (np.sqrt(np.maximum(bb * bb - 8 * n * cc, 0.0)) - bb) / (4 * n)
    var = n * (2 * np.maximum(q, 0.0) + d0 * (1 - d0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (c - b - n * d0) / np.sqrt(var)


def paired_diff_ci(b, c, n, alpha: float = 0.05) -> PairedDiffCI:
    """
    Tango's score interval for the difference of two paired proportions, vectorized.

    Parameters
    ----------
    b, c, n : array_like of int
        Deaths (reference right, rung wrong), resurrections (reference wrong, rung right)
        and items per cell; ``b + c <= n``.
    alpha : float, default 0.05
        1 - confidence level (two-sided).

    Returns
    -------
    PairedDiffCI
        ``estimate = (c - b) / n`` (rung accuracy minus reference accuracy) and the
        interval ``[low, high]`` within ``[-1, 1]``; ``n == 0`` gives NaN.

    Notes
    -----
    The interval is the set of ``d0`` whose score statistic
    ``Z(d0) = (c - b - n d0) / sqrt(n (2 q(d0) + d0 (1 - d0)))`` satisfies
    ``|Z| <= z_{1 - alpha/2}``, ``q(d0)`` being the maximum likelihood of P(death) under
    ``d0`` [1]_. ``Z`` decreases in ``d0``, so each bound is found by bisection to 1e-12.
    It depends only on the discordant counts and ``n``, stays inside ``[-1, 1]``, is
    non-degenerate at ``b = c = 0`` and reaches -1 at ``b = n``. Fagerland et al. [2]_
    recommend it for paired differences (coverage close to nominal for small n, unlike
    the Wald and percentile-bootstrap intervals). Checked against the worked example of
    [3]_, ch. 8 (Cavo et al. 2012 data: b = 16, c = 6, n = 161 gives -0.1240 to -0.0054).

    References
    ----------
    .. [1] Tango, T. (1998). Equivalence test and confidence interval for the difference
       in proportions for the paired-sample design. Statistics in Medicine 17, 891-908.
    .. [2] Fagerland, M. W., Lydersen, S., Laake, P. (2014). Recommended tests and
       confidence intervals for paired binomial proportions. Statistics in Medicine 33,
       2850-2875.
    .. [3] Fagerland, M. W., Lydersen, S., Laake, P. (2017). Statistical Analysis of
       Contingency Tables. Chapman & Hall/CRC.
    """
    b, c, n = _counts(b, c, n)
    if np.any(b + c > n):
        raise ValueError("b + c exceeds n in some cell")
    z = sps.norm.isf(alpha / 2)
    nn = np.where(n > 0, n, 1).astype(float)
    est = (c - b) / nn
    bf, cf = b.astype(float), c.astype(float)

    def bound(lo, hi, target):
        # keep Z(lo) > target >= Z(hi); NaN (only at d0 = est with b = c = 0) counts as below
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = _tango_z(bf, cf, nn, mid) > target
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return 0.5 * (lo + hi)

    low = bound(np.full_like(est, -1.0), est.copy(), z)
    high = bound(est.copy(), np.full_like(est, 1.0), -z)
    low = np.where(b == n, -1.0, np.minimum(low, est))
    high = np.where(c == n, 1.0, np.maximum(high, est))
    empty = n == 0
    return PairedDiffCI(np.where(empty, np.nan, est), np.where(empty, np.nan, low),
                        np.where(empty, np.nan, high), "tango")


class McNemarResult(NamedTuple):
    """Result of :func:`mcnemar_test`."""

    statistic: np.ndarray  # min(b, c)
    pvalue: np.ndarray
    method: str


def mcnemar_test(b, c, method: str = "exact") -> McNemarResult:
    """
    McNemar's test of equal paired accuracy from the discordant counts, vectorized.

    Parameters
    ----------
    b, c : array_like of int
        Deaths and resurrections on all items (no selection on reference-correctness).
    method : {"exact", "midp"}, default "exact"
        ``"exact"``: two-sided conditional binomial test ``min(1, 2 P(X <= min(b, c)))``,
        ``X ~ Bin(b + c, 1/2)``, identical to ``statsmodels.stats.contingency_tables.
        mcnemar(table, exact=True)``. ``"midp"``: the mid-p variant, a labelled option
        only (less conservative, not guaranteed to keep the level).

    Returns
    -------
    McNemarResult
        ``statistic = min(b, c)``, p-value, method. ``b = c = 0`` gives p = 1.

    Notes
    -----
    Valid under the null "rung = reference in distribution" only when computed on all
    items: restricting to items the reference got right forces ``c = 0`` and makes the
    test reject on regression to the mean (issue 12).

    References
    ----------
    .. [1] McNemar, Q. (1947). Psychometrika 12(2), 153-157.
    .. [2] Fagerland, M. W., Lydersen, S., Laake, P. (2013). The McNemar test for binary
       matched-pairs data: mid-p and asymptotic are better than exact conditional.
       BMC Medical Research Methodology 13, 91.
    """
    if method not in ("exact", "midp"):
        raise ValueError(f"method must be 'exact' or 'midp'; got {method!r}")
    b, c = _counts(b, c)
    k, d = np.minimum(b, c), b + c
    p = 2 * sps.binom.cdf(k, d, 0.5)
    if method == "midp":
        p = p - sps.binom.pmf(k, d, 0.5)
    return McNemarResult(k, np.minimum(1.0, np.where(d == 0, 1.0, p)), method)


def mcnemar_min_pvalue(n) -> np.ndarray:
    """Smallest two-sided exact McNemar p-value reachable with ``n`` items: ``min(1, 2 * 0.5**n)``."""
    (n,) = _counts(n)
    return np.minimum(1.0, 2.0 * 0.5 ** n.astype(float))


# --------------------------------------------------------------------------- fidelity


class FlipResult(NamedTuple):
    """Result of :func:`flip_vs_floor`; one entry per row of the inputs."""

    n: np.ndarray  # items
    rung_rate: np.ndarray  # share of items where the rung's answer differs from the reference's
    rung_low: np.ndarray
    rung_high: np.ndarray
    floor_rate: np.ndarray  # same for the perturbed reference re-run (the noise floor)
    floor_low: np.ndarray
    floor_high: np.ndarray
    rung_only: np.ndarray  # items flipped by the rung but not by the floor
    floor_only: np.ndarray  # items flipped by the floor but not by the rung
    pvalue: np.ndarray  # one-sided exact: H1 rung flip rate > floor flip rate
    ci_method: str


def flip_vs_floor(flips_rung, flips_floor, alpha: float = 0.05, ci_method: str = "wilson") -> FlipResult:
    """
    Fidelity lens: is the rung's flip rate above the measured floating-point noise floor?

    Parameters
    ----------
    flips_rung, flips_floor : array_like of bool, shape (..., n_items)
        Per item: the rung's answer differs from the reference's; the reference re-run
        under a floating-point-only perturbation differs from the reference. Aligned on
        the same items along the last axis; leading axes are independent cells.
    alpha : float, default 0.05
        1 - confidence level of the flip-rate intervals.
    ci_method : {"wilson", "beta"}, default "wilson"
        Passed to ``statsmodels.stats.proportion.proportion_confint`` ("beta" is
        Clopper-Pearson).

    Returns
    -------
    FlipResult
        Flip rates with intervals, the discordant flip counts and the one-sided p-value.

    Notes
    -----
    The test is exact McNemar on the paired flip indicators, one-sided:
    ``p = P(X >= rung_only)``, ``X ~ Bin(rung_only + floor_only, 1/2)``; no discordant
    items gives p = 1. The floor is a measured control, so a rung is "damaged" on
    fidelity only when it flips more items than the floor does on the same items [1]_.

    References
    ----------
    .. [1] Dutta, A. et al. (2024). Accuracy is not all you need. arXiv:2407.09141.
    .. [2] McNemar, Q. (1947). Psychometrika 12(2), 153-157.
    """
    r, f = np.asarray(flips_rung), np.asarray(flips_floor)
    if r.shape != f.shape:
        raise ValueError(f"flips_rung {r.shape} and flips_floor {f.shape} must be aligned on items")
    if r.dtype != bool or f.dtype != bool:
        raise ValueError("flip indicators must be boolean arrays")
    n = np.full(r.shape[:-1], r.shape[-1])
    kr, kf = r.sum(-1), f.sum(-1)
    u, v = (r & ~f).sum(-1), (f & ~r).sum(-1)
    nn = np.maximum(n, 1)
    rl, rh = proportion_confint(kr, nn, alpha=alpha, method=ci_method)
    fl, fh = proportion_confint(kf, nn, alpha=alpha, method=ci_method)
    p = np.where(u + v == 0, 1.0, sps.binom.sf(u - 1, u + v, 0.5))
    return FlipResult(n, kr / nn, np.minimum(rl, kr / nn), np.maximum(rh, kr / nn), kf / nn,
                      np.minimum(fl, kf / nn), np.maximum(fh, kf / nn), u, v, p, ci_method)


# --------------------------------------------------------------------------- margin


class MarginResult(NamedTuple):
    """Result of :func:`margin_test`; one entry per row of ``delta``."""

    n: int  # items per row
    mean: np.ndarray  # mean paired change (nats)
    median: np.ndarray
    statistic: np.ndarray  # Wilcoxon signed-rank statistic
    pvalue: np.ndarray  # two-sided Wilcoxon p-value; NaN when degenerate
    ci_low: np.ndarray  # BCa bootstrap interval of the mean (nats); NaN when degenerate
    ci_high: np.ndarray
    degenerate: np.ndarray  # bool: fewer than 3 items or fewer than 1 nonzero change
    zero_method: str


def _expanded_level(n: int, alpha: float) -> float:
    """Confidence level whose normal quantile is sqrt(n/(n-1)) t_{1-alpha/2, n-1} (Hesterberg 2015)."""
    z = np.sqrt(n / (n - 1)) * sps.t.isf(alpha / 2, n - 1)
    return float(1 - 2 * sps.norm.sf(z))


def margin_test(delta, n_resamples: int = 999, rng=None, alpha: float = 0.05,
                zero_method: str = "wilcox", expand: bool = True) -> MarginResult:
    """
    Margin lens: Wilcoxon signed-rank test and BCa interval of the mean paired change.

    Parameters
    ----------
    delta : array_like of float, shape (..., n_items)
        Per-item paired change (rung minus reference, nats) of the gold answer's
        log-probability margin; leading axes are independent cells.
    n_resamples : int, default 999
        Bootstrap resamples; 0 skips the interval (NaN), for fast null simulations.
    rng : numpy.random.Generator or int, optional
        Seed for the bootstrap.
    alpha : float, default 0.05
        1 - confidence level of the interval.
    zero_method : {"wilcox", "pratt", "zsplit"}, default "wilcox"
        Passed to ``scipy.stats.wilcoxon``. ``"wilcox"`` drops items whose margin did
        not move at all (they carry no sign); ``"pratt"`` ranks them and then drops them.
    expand : bool, default True
        Run BCa at the expanded level of Hesterberg [3]_ (normal quantile
        ``sqrt(n/(n-1)) t_{1-alpha/2, n-1}``), which corrects the bootstrap's narrowness
        bias at small n. In 3,000-replicate simulations with gamma noise of skewness 1-1.4,
        plain BCa (``expand=False``) covered 0.919-0.933 at n = 20 and 0.929-0.938 at
        n = 30; the expanded one 0.938-0.954.

    Returns
    -------
    MarginResult
        Mean and median change, Wilcoxon statistic and p-value, BCa interval, and a
        ``degenerate`` flag instead of an exception.

    Notes
    -----
    ``scipy.stats.wilcoxon(method="auto")``: exact null distribution for n <= 50 without
    zeros or ties, normal approximation otherwise. The interval is
    ``scipy.stats.bootstrap(..., method="BCa")`` on the one-sample paired differences,
    the same as ``paired=True`` on the two margins [2]_, at the expanded level unless
    ``expand=False``. Rows with n < 3, or with every
    change exactly zero, are degenerate: NaN p-value and interval, ``degenerate=True``.
    A row whose changes are all equal but nonzero keeps its Wilcoxon p-value and gets a
    NaN interval (BCa is undefined without spread) but is not flagged.

    References
    ----------
    .. [1] Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics
       Bulletin 1(6), 80-83.
    .. [2] Efron, B. (1987). Better bootstrap confidence intervals. JASA 82(397), 171-185.
    .. [3] Hesterberg, T. C. (2015). What teachers should know about the bootstrap.
       The American Statistician 69(4), 371-386 (the expanded percentile interval).
    """
    x = np.asarray(delta, dtype=float)
    if x.ndim == 0:
        raise ValueError("delta must have an item axis; got a scalar")
    if np.any(~np.isfinite(x)):
        raise ValueError("delta contains NaN or inf; drop the items the lens cannot score first")
    shape, n = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, n)
    degenerate = (n < 3) | np.all(rows == 0, axis=-1)
    nan = np.full(rows.shape[0], np.nan)
    stat, p, lo, hi = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    ok = ~degenerate
    if ok.any():
        w = sps.wilcoxon(rows[ok], zero_method=zero_method, axis=-1)
        stat[ok], p[ok] = w.statistic, w.pvalue
        spread = ok & (np.ptp(rows, axis=-1) > 0)
        if n_resamples > 0 and spread.any():
            level = _expanded_level(n, alpha) if expand else 1 - alpha
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", sps.DegenerateDataWarning)
                res = sps.bootstrap((rows[spread],), np.mean, n_resamples=n_resamples, axis=-1,
                                    confidence_level=level, method="BCa", vectorized=True,
                                    rng=rng, batch=max(1, 2_000_000 // (n * spread.sum())))
            lo[spread], hi[spread] = res.confidence_interval
    mean = np.mean(rows, axis=-1) if n else nan
    median = np.median(rows, axis=-1) if n else nan
    return MarginResult(n, *(a.reshape(shape) for a in (mean, median, stat, p, lo, hi, degenerate)),
                        zero_method)


# --------------------------------------------------------------------------- multiplicity


class SequenceResult(NamedTuple):
    """Result of :func:`fixed_sequence_graph`."""

    reject: np.ndarray  # bool, shape (n_families, n_rungs); False where excluded
    death_rung: np.ndarray  # per family: index of the highest rung rejected from the bottom, -1 if none
    tested: np.ndarray  # bool, shape (n_families, n_rungs): in the graph (not NaN)


def _graph_test(p: np.ndarray, w: np.ndarray, g: np.ndarray, alpha: float) -> np.ndarray:
    """Bretz et al. (2009) Algorithm 1: sequentially rejective graph, weights ``w``, transitions ``g``."""
    m = len(p)
    w, g = w.astype(float).copy(), g.astype(float).copy()
    active = np.ones(m, bool)
    reject = np.zeros(m, bool)
    eps = 1e-12  # relative slack so that e.g. p = alpha/2 at weight 1/2 is rejected despite rounding
    while True:
        cand = np.flatnonzero(active & (p <= w * alpha * (1 + eps)))
        if cand.size == 0:
            return reject
        j = cand[0]
        reject[j], active[j] = True, False
        w[active] += w[j] * g[j, active]
        w[j] = 0.0
        gl_j, gj_k = g[:, j].copy(), g[j, :].copy()
        # g_lk <- (g_lk + g_lj g_jk) / (1 - g_lj g_jl), for l != k both active
        denom = 1.0 - gl_j * gj_k  # indexed by l: 1 - g_lj g_jl
        with np.errstate(divide="ignore", invalid="ignore"):
            new = (g + np.outer(gl_j, gj_k)) / denom[:, None]
        new[~np.isfinite(new)] = 0.0
        keep = np.outer(active, active)
        np.fill_diagonal(keep, False)
        g = np.where(keep, new, 0.0)


def fixed_sequence_graph(pvalues, alpha: float = 0.05) -> SequenceResult:
    """
    Fixed-sequence testing down each family's ladder, Holm-like across families (a graph).

    Parameters
    ----------
    pvalues : array_like of float, shape (n_families, n_rungs)
        One row per family, rungs ordered lowest precision first (Q2_K before Q8_0). NaN
        marks a hypothesis outside the family of tests (missing, or untestable by
        :func:`tarone_testable`); it is removed and the sequence continues past it.
    alpha : float, default 0.05
        Familywise error rate over all hypotheses in the graph.

    Returns
    -------
    SequenceResult
        Rejection mask, each family's death rung (index of the highest-precision rung
        rejected in the unbroken run from the bottom; -1 if none) and the tested mask.

    Notes
    -----
    The graphical approach of Bretz et al. [1]_ (their Algorithm 1), with this graph:
    initial weight ``1/m`` on the first (lowest-precision) tested rung of each of the ``m``
    families that have one; a rejected rung passes its whole weight to the next tested
    rung of its family; a family's last tested rung passes its weight equally to the
    first tested rung of every other family (Algorithm 1's transition update then routes
    it to each family's current hypothesis). A rung can be rejected only after every
    rung below it, so the death rung is monotone by construction and no alpha is spent
    on the order within a family. With one rung per family the graph is Holm's
    procedure, as [1]_ shows. Controls the familywise error rate strongly.

    References
    ----------
    .. [1] Bretz, F., Maurer, W., Brannath, W., Posch, M. (2009). A graphical approach to
       sequentially rejective multiple test procedures. Statistics in Medicine 28(4),
       586-604.

    See Also
    --------
    statsmodels.stats.multitest.multipletests : Holm, the one-rung special case.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"pvalues must be 2-D (families x rungs); got shape {p.shape}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1] (NaN marks an excluded hypothesis)")
    tested = ~np.isnan(p)
    fam, rung = np.nonzero(tested)  # row-major: families in order, rungs bottom-up
    m_h = len(fam)
    reject = np.zeros(p.shape, bool)
    if m_h == 0:
        return SequenceResult(reject, np.full(p.shape[0], -1), tested)
    first = np.r_[True, fam[1:] != fam[:-1]]
    last = np.r_[fam[1:] != fam[:-1], True]
    m = int(first.sum())
    w = np.where(first, 1.0 / m, 0.0)
    g = np.zeros((m_h, m_h))
    for i in range(m_h):
        if not last[i]:
            g[i, i + 1] = 1.0
        elif m > 1:
            others = np.flatnonzero(first & (fam != fam[i]))
            g[i, others] = 1.0 / (m - 1)
    reject[fam, rung] = _graph_test(p[fam, rung], w, g, alpha)
    # unbroken run from the bottom over tested rungs (the whole run, by construction)
    death = np.full(p.shape[0], -1)
    for f in range(p.shape[0]):
        idx = np.flatnonzero(tested[f])
        run = np.cumprod(reject[f, idx]).astype(bool)
        if run.any():
            death[f] = idx[run][-1]
    return SequenceResult(reject, death, tested)


class TaroneResult(NamedTuple):
    """Result of :func:`tarone_testable`."""

    testable: np.ndarray  # bool mask: min achievable p <= alpha / K
    k: int  # Tarone's K: the Bonferroni divisor used
    level: float  # alpha / K


def tarone_testable(min_p, alpha: float = 0.05) -> TaroneResult:
    """
    Tarone's screen: which hypotheses can reach significance at any outcome.

    Parameters
    ----------
    min_p : array_like of float
        Smallest p-value each test can produce (for exact McNemar on n items,
        :func:`mcnemar_min_pvalue`, ``2 * 0.5**n``).
    alpha : float, default 0.05
        Familywise level.

    Returns
    -------
    TaroneResult
        ``testable`` mask, ``k`` and ``level = alpha / k``. Untestable hypotheses are
        left out of the multiplicity family and reported as untestable, never as safe.

    Notes
    -----
    ``K`` is the smallest integer with ``#{i : min_p_i <= alpha / K} <= K`` [1]_; the
    testable set is ``{i : min_p_i <= alpha / K}``. Excluding the others cannot raise
    the familywise error, because they can never be rejected at level ``alpha / K``.

    References
    ----------
    .. [1] Tarone, R. E. (1990). A modified Bonferroni method for discrete data.
       Biometrics 46(2), 515-522.
    """
    mp = np.asarray(min_p, dtype=float)
    if np.any(np.isnan(mp)):
        raise ValueError("min_p contains NaN")
    for k in range(1, max(mp.size, 1) + 1):
        mask = mp <= alpha / k
        if mask.sum() <= k:
            return TaroneResult(mask, k, alpha / k)
    raise AssertionError("unreachable: at k = size the count is at most k")


# --------------------------------------------------------------------------- planning


@lru_cache(maxsize=4096)
def _rejection_region(n: int, alpha: float, discordance: float) -> tuple[np.ndarray, ...]:
    """Discordant counts D with non-negligible P(D), their probabilities and critical death counts."""
    lo = int(sps.binom.ppf(1e-13, n, discordance))
    hi = int(sps.binom.isf(1e-13, n, discordance))
    d = np.arange(max(lo, 0), min(hi, n) + 1)
    # loss side of the two-sided exact test: reject at deaths >= k with 2 P(X >= k) <= alpha,
    # X ~ Bin(D, 1/2); ppf gives k, then one step either way absorbs floating-point ties
    k = sps.binom.ppf(1 - alpha / 2, d, 0.5) + 1

    def rejects(kk):
        return (2 * sps.binom.sf(kk - 1, d, 0.5) <= alpha * (1 + 1e-12)) & (kk <= d)

    k = np.where(rejects(k - 1) & (2 * (k - 1) > d), k - 1, k)
    k = np.where(rejects(k), k, k + 1)
    k = np.where(rejects(k), k, n + 1)  # n + 1: this D can never reject
    return d, sps.binom.pmf(d, n, discordance), k


def mcnemar_power(n: int, delta, alpha: float = 0.05, discordance: float = 0.2) -> np.ndarray:
    """
    Power of the two-sided exact McNemar test to show an accuracy loss ``delta``.

    ``D ~ Bin(n, discordance)``, deaths ``| D ~ Bin(D, (discordance + delta) / (2 discordance))``;
    power = sum over D of P(D) P(deaths >= critical(D)), loss side only [1]_.

    References
    ----------
    .. [1] Miettinen, O. S. (1968). The matched pairs design in the case of all-or-none
       responses. Biometrics 24(2), 339-352.
    """
    d, pd, crit = _rejection_region(int(n), float(alpha), float(discordance))
    theta = (discordance + np.asarray(delta, dtype=float)) / (2 * discordance)
    # scipy.special.bdtrc(k, D, t) = P(X > k), X ~ Bin(D, t): binom.sf without its overhead
    k = np.minimum(crit - 1.0, d)  # bdtrc is NaN for k > D; k = D gives the 0 wanted
    tail = special.bdtrc(k[:, None], d[:, None], np.atleast_1d(theta)[None, :])
    return (pd @ tail).reshape(np.shape(theta))


@lru_cache(maxsize=4096)
def _mde_one(n: int, alpha: float, power: float, discordance: float) -> float:
    """Smallest loss with power >= target, to psi / 16**5 (about 2e-7); NaN if delta = psi fails."""
    lo, hi = 0.0, discordance
    if mcnemar_power(n, hi, alpha, discordance) < power:
        return math.nan
    for _ in range(5):  # invariant: power(lo) < target <= power(hi); shrinks 16-fold per step
        grid = np.linspace(lo, hi, 17)
        i = int(np.argmax(mcnemar_power(n, grid, alpha, discordance) >= power))
        if i == 0:  # only if power(lo) already reaches the target (lo = 0 never does)
            return float(lo)
        lo, hi = grid[i - 1], grid[i]
    return float(hi)


def planned_mde(n, alpha: float = 0.05, power: float = 0.8, discordance: float = 0.2) -> np.ndarray:
    """
    Planned minimum detectable accuracy loss of the exact McNemar test.

    Parameters
    ----------
    n : array_like of int
        Items per cell (all items the reference and the rung both saw).
    alpha : float, default 0.05
        The corrected two-sided level the cell is tested at (e.g. ``alpha / m`` for the
        first step of :func:`fixed_sequence_graph` with ``m`` families).
    power : float, default 0.8
        Target power.
    discordance : float, default 0.2
        Design discordance ``psi = P(death) + P(resurrection)``, stated in advance, not
        taken from the observed table.

    Returns
    -------
    numpy.ndarray of float
        Smallest loss ``delta`` (fraction; rung accuracy ``delta`` below the reference)
        with power >= ``power``; NaN where even ``delta = psi`` (every discordant item a
        death) is not detectable.

    Notes
    -----
    Exact power from the conditional-binomial model of the paired design [1]_: the
    discordant count ``D ~ Bin(n, psi)``, deaths given ``D`` ~ ``Bin(D, (psi + delta) /
    (2 psi))``, and the exact test's rejection region at each ``D``. Cached per
    ``(n, alpha, power, psi)``, so a grid of cells costs one computation per distinct n.

    References
    ----------
    .. [1] Miettinen, O. S. (1968). The matched pairs design in the case of all-or-none
       responses. Biometrics 24(2), 339-352.
    """
    (n,) = _counts(n)
    if not 0 < discordance <= 1:
        raise ValueError(f"discordance must be in (0, 1]; got {discordance}")
    out = np.array([_mde_one(int(k), float(alpha), float(power), float(discordance)) for k in n.ravel()])
    return out.reshape(n.shape)


def items_needed(target_mde: float, alpha: float = 0.05, power: float = 0.8,
                 discordance: float = 0.2, n_max: int = 100_000) -> int:
    """
    Items needed for the exact McNemar test to detect ``target_mde`` with ``power``.

    Returns the ``n`` found by bisection with ``planned_mde(n) <= target_mde`` and
    ``planned_mde(n - 1) > target_mde`` (exact power saw-tooths in n, so a smaller ``n``
    can occasionally also suffice); raises ``ValueError`` when ``target_mde`` exceeds the
    design discordance or ``n_max`` is not enough. See :func:`planned_mde`.
    """
    if not 0 < target_mde <= discordance:
        raise ValueError(f"target_mde must be in (0, discordance={discordance}]; got {target_mde}")

    def ok(k: int) -> bool:
        m = _mde_one(k, float(alpha), float(power), float(discordance))
        return not math.isnan(m) and m <= target_mde

    lo, hi = 1, 2
    while not ok(hi):  # doubling, then bisection: ok(hi) holds, ok(lo) does not
        if hi >= n_max:
            raise ValueError(f"more than n_max={n_max} items needed")
        lo, hi = hi, min(2 * hi, n_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def decide(ci_low, ci_high, p_adj_reject, margin: float) -> np.ndarray:
    """
    Decision per cell: "loss shown", "equivalent within ±m shown" or "undecided".

    Parameters
    ----------
    ci_low, ci_high : array_like of float
        Interval of rung minus reference (e.g. :func:`paired_diff_ci`).
    p_adj_reject : array_like of bool
        Rejected after the multiplicity procedure (e.g. :func:`fixed_sequence_graph`).
    margin : float
        Equivalence margin ``m`` (> 0), same units as the interval.

    Returns
    -------
    numpy.ndarray of str
        ``"equivalent within ±m shown"`` where ``-m < low`` and ``high < m`` (checked
        first: a loss smaller than the margin is practically equivalent); ``"loss shown"``
        where rejected and ``high < 0``; ``"undecided"`` otherwise, including NaN
        intervals. "Not significant" alone is never a decision: it stays undecided.

    Notes
    -----
    Equivalence by interval inclusion is the two one-sided tests procedure at level
    alpha/2 per side when the interval is a 1 - alpha interval [1]_.

    References
    ----------
    .. [1] Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure
       and the power approach for assessing the equivalence of average bioavailability.
       J. Pharmacokinetics and Biopharmaceutics 15(6), 657-680.
    """
    if not margin > 0:
        raise ValueError(f"margin must be positive; got {margin}")
    lo, hi = np.broadcast_arrays(np.asarray(ci_low, float), np.asarray(ci_high, float))
    rej = np.broadcast_to(np.asarray(p_adj_reject, bool), lo.shape)
    with np.errstate(invalid="ignore"):
        equiv = (lo > -margin) & (hi < margin)
        loss = rej & (hi < 0)
    out = np.where(equiv, EQUIVALENT, np.where(loss, LOSS, UNDECIDED))
    return out.astype(object)


# --------------------------------------------------------------------------- transfer


class RankAgreement(NamedTuple):
    """Result of :func:`rank_agreement_exact`."""

    n: int
    tau_b: float
    tau_pvalue: float
    spearman: float
    spearman_pvalue: float
    exact: bool  # all n! pairings enumerated
    can_show: bool  # n >= 5: otherwise the site says transfer "cannot be shown"


def _tau_b(x, y, axis=-1):
    """Kendall's tau-b along ``axis`` (vectorized for permutation_test)."""
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    x, y = np.broadcast_arrays(x, y)
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum((-1, -2)) / np.sqrt((sx * sx).sum((-1, -2)) * (sy * sy).sum((-1, -2)))


def _spearman(x, y, axis=-1):
    """Spearman's rho (Pearson on average ranks) along ``axis`` (vectorized)."""
    rx = sps.rankdata(np.asarray(x, float), axis=axis)
    ry = sps.rankdata(np.asarray(y, float), axis=axis)
    rx, ry = np.broadcast_arrays(np.moveaxis(rx, axis, -1), np.moveaxis(ry, axis, -1))
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))


def rank_agreement_exact(x, y, alternative: str = "two-sided", max_exact: int = 40_320,
                         n_resamples: int = 9_999, rng=None) -> RankAgreement:
    """
    Kendall tau-b and Spearman rank agreement with permutation p-values.

    Parameters
    ----------
    x, y : array_like of float, shape (n,)
        Per-family scores of two models on their common measurable families.
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
    max_exact : int, default 40320 (8!)
        Enumerate all ``n!`` pairings when ``n! <= max_exact``; otherwise draw
        ``n_resamples`` random pairings (``exact=False``).
    n_resamples : int, default 9999
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    RankAgreement
        Statistics, permutation p-values, whether they are exact, and ``can_show``
        (n >= 5; below that even perfect agreement has a two-sided p >= 2/24).

    Notes
    -----
    ``scipy.stats.permutation_test(permutation_type="pairings")`` with vectorized tau-b
    and Spearman statistics (ties: tau-b's tie correction, average ranks). Valid under
    ties, unlike the normal approximations of ``kendalltau``/``spearmanr`` at small n.

    References
    ----------
    .. [1] Kendall, M. G. (1945). The treatment of ties in ranking problems. Biometrika
       33(3), 239-251.
    .. [2] Pitman, E. J. G. (1937). Significance tests which may be applied to samples
       from any populations. II. The correlation coefficient test. JRSS Suppl. 4, 225-232.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D and aligned; got {x.shape} and {y.shape}")
    if np.any(~np.isfinite(x) | ~np.isfinite(y)):
        raise ValueError("x or y contains NaN or inf; keep only common measurable families")
    n = x.size
    if n < 2:
        return RankAgreement(n, math.nan, math.nan, math.nan, math.nan, False, False)
    exact = math.factorial(n) <= max_exact
    out = []
    for stat in (_tau_b, _spearman):
        # one sample with y held fixed: "pairings" then permutes x against y, n! pairings in
        # all (passing (x, y) would permute both samples, (n!)**2 resamples)
        res = sps.permutation_test((x,), lambda xs, axis=-1, stat=stat: stat(xs, y, axis=axis),
                                   permutation_type="pairings", vectorized=True,
                                   n_resamples=np.inf if exact else n_resamples,
                                   alternative=alternative, rng=rng)
        out += [float(res.statistic), float(res.pvalue)]
    return RankAgreement(n, *out, exact, n >= 5)
