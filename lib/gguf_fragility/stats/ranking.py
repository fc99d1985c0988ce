"""Ranking families by effect, not significance (issue 25), and what counts as transfer.

A family's place in a fragility order is a *rank set*: the ranks it can hold given
simultaneous intervals of every pairwise difference of effects. Families whose
differences cannot be separated share ranks and are named as tied, never ordered by item
count or alphabetically. Usage::

    from gguf_fragility.stats.ranking import rank_sets, first_to_die, transfer_count
    r = rank_sets(effect, ci_low, ci_high)          # rank 1 = largest loss
    f = first_to_die(effects, lows, highs, beyond)  # families x rungs, highest bpw first
    t = transfer_count(death_a, death_b, lost_a, lost_b)

Tested by ``tests/test_verdicts.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats as sps


class RankSets(NamedTuple):
    """Result of :func:`rank_sets`; one entry per family (NaN where the effect is NaN)."""

    low: np.ndarray  # best (smallest) rank the family can hold; 1 = largest loss
    high: np.ndarray  # worst rank it can hold
    worse: np.ndarray  # bool (K, K): family i's loss shown larger than family j's
    level: float  # two-sided level of each pairwise interval (Bonferroni)


def rank_sets(effect, low, high, alpha: float = 0.05) -> RankSets:
    """
    Simultaneous rank sets of families by effect, 1 = largest loss (most negative effect).

    Parameters
    ----------
    effect, low, high : array_like of float, shape (K,)
        Each family's effect (rung minus reference; a loss is negative) and its ``1 -
        alpha`` interval, from independent items (one family's items are not another's).
    alpha : float, default 0.05
        Level of the interval inputs and the familywise level of the rank sets.

    Returns
    -------
    RankSets
        ``low = 1 + #(families shown to lose more)``, ``high = K' - #(families shown to
        lose less)``, ``K'`` the families with a finite effect.

    Notes
    -----
    Each family's interval gives its standard errors on either side (half-widths over
    ``z_{1 - alpha/2}``, so asymmetric Tango or bootstrap intervals keep their shape and
    a family without discordant items keeps the width its interval gives it). Every one
    of the ``P = K'(K'-1)/2`` differences ``e_i - e_j`` gets an interval with ``z_{1 -
    alpha/(2P)}`` (Bonferroni over all pairwise comparisons [1]_); when they all cover,
    every true rank lies in its rank set, so the sets hold simultaneously with
    probability about ``1 - alpha`` (the rank sets of [2]_, built from differences
    instead of non-overlapping single intervals, which separate far less). Two families
    with equal true effects are separated with probability at most about ``alpha``
    whatever their item counts: the ranks follow effect sizes, not significance.

    References
    ----------
    .. [1] Hsu, J. C. (1996). Multiple Comparisons: Theory and Methods. Chapman & Hall
       (ch. 5, all pairwise comparisons).
    .. [2] Klein, M., Wright, T., Wieczorek, J. (2020). A joint confidence region for an
       overall ranking of populations. JRSS C 69(3), 589-606.
    """
    e, lo, hi = (np.asarray(a, float) for a in (effect, low, high))
    if not (e.shape == lo.shape == hi.shape) or e.ndim != 1:
        raise ValueError(f"effect, low, high must be 1-D of one length; got {e.shape}, "
                         f"{lo.shape}, {hi.shape}")
    ok = np.isfinite(e) & np.isfinite(lo) & np.isfinite(hi)
    if np.any(ok & ((lo > e) | (hi < e))):
        raise ValueError("every interval must contain its effect (low <= effect <= high)")
    k = int(ok.sum())
    z = sps.norm.isf(alpha / 2)
    s_lo, s_hi = (e - lo) / z, (hi - e) / z
    pairs = max(k * (k - 1) // 2, 1)
    zb = sps.norm.isf(alpha / (2 * pairs))
    # worse[i, j]: the upper bound of e_i - e_j is below 0 (i loses more than j)
    with np.errstate(invalid="ignore"):
        upper = e[:, None] - e[None, :] + zb * np.sqrt(s_hi[:, None] ** 2 + s_lo[None, :] ** 2)
    worse = (upper < 0) & ok[:, None] & ok[None, :]
    return RankSets(np.where(ok, 1 + worse.sum(0), np.nan), np.where(ok, k - worse.sum(1), np.nan),
                    worse, alpha / pairs)


class FirstToDie(NamedTuple):
    """Result of :func:`first_to_die`."""

    rung: int  # column of the first rung (from the top) with a loss beyond the margin; -1: none
    named: np.ndarray  # bool (K,): families named first there (several = tied)
    tied: bool  # more than one family named
    possible: np.ndarray  # bool (K,): not shown beyond the margin there, yet as fragile as any


def first_to_die(effect, low, high, beyond, alpha: float = 0.05) -> FirstToDie:
    """
    The family (or tied families) that die first, from effects, not significance.

    Parameters
    ----------
    effect, low, high : array_like of float, shape (K, R)
        Effect and ``1 - alpha`` interval of each family at each rung, rungs ordered
        from the highest bits per weight down.
    beyond : array_like of bool, shape (K, R)
        The cell shows a loss beyond the margin (:data:`~gguf_fragility.stats.relevance.BEYOND`).
    alpha : float, default 0.05

    Returns
    -------
    FirstToDie
        The first rung where any family shows a loss beyond the margin, and, of the
        families that show one there, those whose rank set among them (:func:`rank_sets`)
        contains rank 1; none when no cell shows such a loss. ``possible`` marks the
        families that do not show a loss beyond the margin there but whose rank set among
        every family with an effect there contains rank 1: nothing shows them less
        fragile than the first to die.

    Notes
    -----
    Only a family whose own cell shows a loss beyond the margin dies, so only such
    families are named: one whose loss there may still lie within the margin ("change
    shown") is never named, even when its effect is the largest. Among the families that
    die at that rung the name goes by effect, not by which crossed with more items: every
    one that cannot be shown to lose less than another of them is named, tied. Two
    families with one true loss that both show it beyond the margin are named together
    (with probability about ``1 - alpha``) whatever their item counts; a family with too
    few items to show its loss beyond the margin is not named, but it is marked
    ``possible`` whenever its effect cannot be separated from the largest: equal true
    losses with 10 and 64 items are named or marked alike (``tests/test_verdicts.py``).
    """
    e, lo, hi = (np.asarray(a, float) for a in (effect, low, high))
    bey = np.asarray(beyond, bool)
    if e.ndim != 2 or not (e.shape == lo.shape == hi.shape == bey.shape):
        raise ValueError(f"effect, low, high, beyond must be (families, rungs) of one shape; "
                         f"got {e.shape}, {lo.shape}, {hi.shape}, {bey.shape}")
    cols = np.flatnonzero(bey.any(0))
    if cols.size == 0:
        none = np.zeros(e.shape[0], bool)
        return FirstToDie(-1, none, False, none)
    j = int(cols[0])
    dead = bey[:, j]
    only = (np.where(dead, a[:, j], np.nan) for a in (e, lo, hi))  # rank the dead ones only
    named = rank_sets(*only, alpha).low == 1
    possible = ~dead & (rank_sets(e[:, j], lo[:, j], hi[:, j], alpha).low == 1)
    return FirstToDie(j, named, bool(named.sum() > 1), possible)


class TransferCount(NamedTuple):
    """Result of :func:`transfer_count`."""

    n_counted: int  # families where at least one model shows a loss beyond the margin
    n_agree: int  # of those, the same death rung on both models
    counted: np.ndarray  # bool per family


def transfer_count(death_a, death_b, lost_a, lost_b) -> TransferCount:
    """
    Death-rung agreement counted only where at least one model shows a loss beyond the margin.

    Parameters
    ----------
    death_a, death_b : array_like of str, shape (F,)
        Death rung of each family on each model ("" where it does not die).
    lost_a, lost_b : array_like of bool, shape (F,)
        The family shows a loss beyond the margin on that model at some rung.

    Returns
    -------
    TransferCount
        Joint non-detection is never agreement: a family where neither model shows such a
        loss is not counted; with ``n_counted = 0`` transfer "cannot be shown".
    """
    da, db = np.asarray(death_a, object), np.asarray(death_b, object)
    la, lb = np.asarray(lost_a, bool), np.asarray(lost_b, bool)
    if not (da.shape == db.shape == la.shape == lb.shape):
        raise ValueError(f"death rungs and loss flags must align on families; got {da.shape}, "
                         f"{db.shape}, {la.shape}, {lb.shape}")
    counted = la | lb
    return TransferCount(int(counted.sum()), int((counted & (da == db)).sum()), counted)
