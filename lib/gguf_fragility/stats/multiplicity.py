"""Multiplicity and planning for the lenses of :mod:`gguf_fragility.stats.lenses`.

The family of tests of issue 12: per model and per lens, over measurable families only,
Tarone's screen drops the cells that cannot reach significance at any outcome, then a
fixed-sequence test runs down each family's ladder (lowest rung first) and Holm-like
weight passing runs across families: one graph (Bretz et al. 2009). What a cell could
have shown (its planned MDE beyond the margin) is each lens's :meth:`~gguf_fragility.stats.
lens.base.Lens.mde`, planned for the verdict's own test (:mod:`gguf_fragility.stats.relevance`).

Usage::

    from gguf_fragility.stats.multiplicity import family_of_tests, fixed_sequence_graph
    seq = fixed_sequence_graph(p)            # p: (families, rungs), lowest rung first, NaN = out

Pure numpy/scipy; tested by ``tests/test_lenses.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


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


class FamilyTests(NamedTuple):
    """Result of :func:`family_of_tests`."""

    testable: np.ndarray  # bool (families, rungs): kept by Tarone's screen
    reject: np.ndarray  # bool (families, rungs): rejected by the graph
    level: float  # alpha / (families with a tested rung): the level of each first step
    tarone_k: int


def family_of_tests(p_seq, min_p, alpha: float = 0.05) -> FamilyTests:
    """
    The corrected family of tests of one model × lens: Tarone's screen, then the graph.

    Parameters
    ----------
    p_seq : array_like of float, shape (n_families, n_rungs)
        Loss-side p-values, rungs lowest bpw first; NaN where a family lacks the rung.
    min_p : array_like of float, same shape
        Smallest p-value each cell can reach (depends on its item count only).
    alpha : float, default 0.05

    Returns
    -------
    FamilyTests

    Notes
    -----
    Tarone's K is computed on each family's smallest reachable p; a cell stays in the
    family when its family passes and its own ``min_p <= alpha / K``. The exclusion depends
    on item counts only, never on outcomes, so any such choice keeps the graph's
    familywise error control over the cells that remain (the others are never rejected).
    Then :func:`~gguf_fragility.stats.fixed_sequence_graph`.
    """
    p, mp = np.asarray(p_seq, float), np.asarray(min_p, float)
    present = ~np.isnan(mp)
    fam_min = np.where(present, mp, 1.0).min(axis=1)
    tar = tarone_testable(fam_min, alpha=alpha)
    testable = present & tar.testable[:, None] & (np.where(present, mp, 1.0) <= tar.level)
    seq = fixed_sequence_graph(np.where(testable, p, np.nan), alpha=alpha)
    m = max(int(seq.tested.any(axis=1).sum()), 1)
    return FamilyTests(testable, seq.reject, alpha / m, tar.k)
