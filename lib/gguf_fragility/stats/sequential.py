"""Anytime-valid statistics of a cell: betting confidence sequences and e-processes (issue 27).

Each lens's per-item effect is bounded in its user unit (an accuracy change or an excess
flip in ``[-1, 1]``, a change of the gold answer's probability in ``[-100, 100]`` points),
so one method serves every lens: the predictable-plug-in empirical-Bernstein betting
capital of Waudby-Smith & Ramdas (2024) for a bounded mean. Its confidence sequence
covers at every look at once and its e-processes stay valid however items are added,
stopped or extended, so a user may run longer after seeing "undecided". The family of
tests is the project's graph (fixed sequence down the ladder, Holm across families) fed
with anytime-valid p-values (:func:`family_reject`). Usage::

    from gguf_fragility.stats import sequential as sq
    spec = sq.SPECS["correctness"]
    ev = sq.evidence(d, spec, margin=0.03)      # d: (..., n_items) per-item changes
    cs = sq.confidence_sequence(d, spec)        # running-intersection CS at the last item
    reject = sq.family_reject(ev.p_beyond)      # (families, rungs), lowest rung first
    label = sq.label(cs, reject, 0.03, spec)    # issue 25's labels (one family row here)
    plan = sq.items_to_decide(d, spec, 0.03, n_max=300)  # further items, replaying d's

A budgeted sweep (:mod:`gguf_fragility.run.looks`) decides every cell of a run at each
look with :func:`decide_cells`. Pure numpy and pandas; tested by
``tests/test_sequential.py`` (worked example, seeded simulations) and ``tests/test_looks.py``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

from gguf_fragility.artifacts import load_items, read_ladder
from gguf_fragility.engine.rungs import NOISE_FLOOR
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.stats import relevance
from gguf_fragility.stats.grid import ITEM_COLUMNS, OPTIONAL_COLUMNS, validate_items
from gguf_fragility.stats.lens.base import ABOVE, BELOW, Lens
from gguf_fragility.stats.lens.registry import LENSES
from gguf_fragility.stats.multiplicity import fixed_sequence_graph
from gguf_fragility.stats.settings import Settings

TRUNCATION = 0.75  # bets capped at this share of the most the capital can lose (WSR 2024, sec. 5:
# any value below 1 keeps validity; 3/4 rather than 1/2 narrows low-variance sequences, e.g. the
# margin lens on items that barely move, about 1.5x: measurements.qmd)


class Spec(NamedTuple):
    """The bounded per-item effect of one lens: its range in the user unit and its loss side."""

    low: float
    high: float
    loss_side: str  # BELOW: a loss is a negative effect; ABOVE: a positive one (extra flips)


def spec_of(lens: Lens) -> Spec:
    """The bounded per-item effect of ``lens``: its :attr:`~Lens.item_range` and loss side
    (correctness: rung right minus reference right; fidelity: rung flipped minus floor
    flipped; margin: gold or per-token reply probability change in points)."""
    return Spec(*lens.item_range, lens.loss_side)


SPECS: dict[str, Spec] = {name: spec_of(lens) for name, lens in LENSES.items()}


def _check(x, spec: Spec) -> np.ndarray:
    """Per-item effects as floats, or a ValueError naming the bound they break."""
    x = np.asarray(x, float)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError("need at least one item along the last axis")
    if np.isnan(x).any():
        raise ValueError("per-item effects contain NaN; drop unscorable items before the sequence")
    if (x < spec.low).any() or (x > spec.high).any():
        raise ValueError(f"per-item effects must lie in [{spec.low:g}, {spec.high:g}] (the lens's "
                         f"unit); got [{x.min():g}, {x.max():g}]: pass the bounded user unit, "
                         "e.g. relevance.gold_prob_change_pp, not nats")
    return x


def _bets(y: np.ndarray, alpha: float) -> np.ndarray:
    """Predictable plug-in bets of WSR (2024) eq. (26) at level ``alpha``, ``y`` in [0, 1] (last axis)."""
    t = np.arange(1, y.shape[-1] + 1)
    mu = (0.5 + np.cumsum(y, -1)) / (t + 1)
    var = (0.25 + np.cumsum((y - mu) ** 2, -1)) / (t + 1)
    var_prev = np.concatenate([np.full(y.shape[:-1] + (1,), 0.25), var[..., :-1]], -1)
    return np.sqrt(2 * np.log(1 / alpha) / (t * np.log1p(t) * var_prev))


def log_capital(x, spec: Spec, null, side: str, alpha: float = 0.05,
                truncation: float = TRUNCATION) -> np.ndarray:
    """
    Log of the betting capital against a null mean, after each item.

    Parameters
    ----------
    x : array_like of float, shape (..., n_items)
        Per-item effects in ``[spec.low, spec.high]``, in the order they were drawn.
    spec : Spec
    null : float or array_like
        Null mean ``theta`` (broadcast against ``x``'s leading axes).
    side : {"below", "above"}
        ``"below"`` tests ``H0: mean >= theta`` (evidence that the mean is below it);
        ``"above"`` tests ``H0: mean <= theta``.
    alpha : float, default 0.05
        Level the bets are tuned for (any value keeps validity).
    truncation : float, default :data:`TRUNCATION`
        Share in ``(0, 1)`` of the largest bet that keeps the capital nonnegative; any
        value keeps validity (confseq's ``trunc_scale``, 1/2 there).

    Returns
    -------
    numpy.ndarray, shape (..., n_items)
        ``log K_t``; ``K`` is a nonnegative supermartingale under the null, so
        ``P(sup_t K_t >= 1/a) <= a`` (Ville's inequality).

    Notes
    -----
    ``K_t = prod_i (1 + s lambda_i (y_i - theta'))`` on ``y = (x - low)/(high - low)``
    with ``s = +1`` (above) or ``-1`` (below), ``lambda_i`` the predictable plug-in
    empirical-Bernstein bet at ``alpha / 2`` capped at ``truncation / theta'`` (above) or
    ``truncation / (1 - theta')`` (below): the hedged capital of [1]_ (Sec. 4.2, 5.1), as in
    the authors' ``confseq.betting.betting_mart``.

    References
    ----------
    .. [1] Waudby-Smith, I., Ramdas, A. (2024). Estimating means of bounded random
       variables by betting. J. R. Stat. Soc. B 86(1), 1-27.
    """
    x = _check(x, spec)
    if not 0 < truncation < 1:
        raise ValueError(f"truncation must lie in (0, 1) (1 lets one item take all the capital); "
                         f"got {truncation}")
    if side not in (BELOW, ABOVE):
        raise ValueError(f"side must be {BELOW!r} or {ABOVE!r}; got {side!r}")
    width = spec.high - spec.low
    y = (x - spec.low) / width
    th = (np.asarray(null, float)[..., None] - spec.low) / width
    sign, room = (1.0, th) if side == ABOVE else (-1.0, 1.0 - th)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.minimum(_bets(y, alpha / 2), truncation / room)
        step = np.where(lam == np.inf, np.where(y == th, 0.0, np.inf),
                        np.log1p(sign * lam * (y - th)))
    out = np.cumsum(np.nan_to_num(step, nan=np.inf, neginf=-np.inf), -1)
    return np.where((th < 0) | (th > 1), np.inf, out)  # a null outside the range is false


def anytime_p(log_k: np.ndarray) -> np.ndarray:
    """Anytime-valid p-value after each item, ``min(1, 2 / max_{s <= t} K_s)`` (two-sided scale)."""
    return np.minimum(1.0, 2 * np.exp(-np.maximum.accumulate(log_k, -1)))


class Evidence(NamedTuple):
    """Result of :func:`evidence`: anytime-valid p-values at the last item, loss side first."""

    n: np.ndarray  # items seen
    estimate: np.ndarray  # mean effect, lens unit, a loss negative (fidelity mirrored)
    p_beyond: np.ndarray  # H0: loss at most m (loss side); the family of tests reads this
    p_change: np.ndarray  # H0: no loss (loss side, against zero)
    p_equivalent: np.ndarray  # H0: |change| >= m (two one-sided tests: the larger of their p)


def evidence(x, spec: Spec, margin: float, alpha: float = 0.05) -> Evidence:
    """
    Anytime-valid p-values of a cell's loss tests (beyond the margin, against zero).

    Parameters
    ----------
    x : array_like of float, shape (..., n_items)
        Per-item effects in the lens's unit, in drawing order.
    spec : Spec
        From :data:`SPECS`; a lens whose loss is positive is mirrored so that a loss
        is always a negative effect below.
    margin : float
        Relevance margin ``m > 0`` in the lens unit
        (:data:`gguf_fragility.stats.relevance.MARGINS`).
    alpha : float, default 0.05

    Returns
    -------
    Evidence
        p-values ``min(1, 2 / sup K)`` (:func:`anytime_p`): each is valid at any
        stopping time, so ``p <= alpha`` is the whole ``1 - alpha`` confidence sequence
        beyond the null, as :func:`gguf_fragility.stats.relevance.tango_beyond_p` is for
        the fixed interval. ``p_equivalent`` is the larger of the capitals' p-values against
        ``-m`` (the mean above it) and ``m`` (below it): Schuirmann's two one-sided tests,
        an intersection-union test, so ``p_equivalent <= alpha`` is the ``1 - alpha``
        sequence inside ``(-m, m)`` read at the margins themselves rather than at
        :func:`confidence_sequence`'s grid (whose outward rounding would put a bound on the
        margin the moment the sequence excludes it), the rule :func:`items_to_decide`
        projects.
    """
    if not margin > 0:
        raise ValueError(f"margin must be positive; got {margin}")
    x = _check(x, spec)
    if spec.loss_side == ABOVE:  # mirror: a loss is then a negative effect
        x, spec = -x, Spec(-spec.high, -spec.low, BELOW)

    def p(null: float, side: str) -> np.ndarray:
        return anytime_p(log_capital(x, spec, np.full(x.shape[:-1], null), side, alpha))[..., -1]

    return Evidence(np.full(x.shape[:-1], x.shape[-1]), x.mean(-1),
                    p(-margin, BELOW), p(0.0, BELOW), np.maximum(p(-margin, ABOVE), p(margin, BELOW)))


class ConfidenceSequence(NamedTuple):
    """Result of :func:`confidence_sequence`, in the lens's unit (not mirrored)."""

    n: np.ndarray
    estimate: np.ndarray  # mean effect
    low: np.ndarray  # running-intersection bounds after the last item, level 1 - alpha
    high: np.ndarray


def confidence_sequence(x, spec: Spec, alpha: float = 0.05, grid: int = 801) -> ConfidenceSequence:
    """
    Betting confidence sequence of a cell's mean effect, after its last item.

    Parameters
    ----------
    x : array_like of float, shape (..., n_items)
        Per-item effects in ``[spec.low, spec.high]``, in drawing order.
    spec : Spec
    alpha : float, default 0.05
        ``P(mean outside the sequence at any item) <= alpha``.
    grid : int, default 801
        Candidate means, evenly spaced over the range; bounds are rounded outwards to it.

    Returns
    -------
    ConfidenceSequence
        The means no capital process rejected at any item so far (``sup_t K_t < 2/alpha``
        on both sides): the running intersection, so the bounds never widen.

    Notes
    -----
    The hedged capital confidence sequence of Waudby-Smith & Ramdas [1]_ (Theorem 3,
    ``theta = 1/2``, predictable plug-in empirical-Bernstein bets, truncation :data:`TRUNCATION`); see
    :func:`log_capital`. Unlike a bootstrap interval its coverage needs nothing but the
    bounds, so rare collapses (a few items losing 100 points) widen it instead of
    breaking it; and unlike a fixed-sample interval it may be read after every look.

    References
    ----------
    .. [1] Waudby-Smith, I., Ramdas, A. (2024). Estimating means of bounded random
       variables by betting. J. R. Stat. Soc. B 86(1), 1-27.
    .. [2] Howard, S. R., Ramdas, A., McAuliffe, J., Sekhon, J. (2021). Time-uniform,
       nonparametric, nonasymptotic confidence sequences. Ann. Statist. 49(2), 1055-1080.
    """
    x = _check(x, spec)
    theta = np.linspace(spec.low, spec.high, grid)
    xs = x[..., None, :]  # (..., grid, n)
    bound = np.log(2 / alpha)
    keep = ((log_capital(xs, spec, theta, ABOVE, alpha).max(-1) < bound)
            & (log_capital(xs, spec, theta, BELOW, alpha).max(-1) < bound))
    first = np.argmax(keep, -1)
    last = grid - 1 - np.argmax(keep[..., ::-1], -1)
    lo = np.where(keep.any(-1), theta[np.maximum(first - 1, 0)], np.nan)
    hi = np.where(keep.any(-1), theta[np.minimum(last + 1, grid - 1)], np.nan)
    return ConfidenceSequence(np.full(x.shape[:-1], x.shape[-1]), x.mean(-1), lo, hi)


def family_reject(p_beyond, alpha: float = 0.05) -> np.ndarray:
    """
    The family of tests of one model x lens on anytime-valid p-values: rejected cells.

    Parameters
    ----------
    p_beyond : array_like of float, shape (n_families, n_rungs)
        :attr:`Evidence.p_beyond` of each cell, rungs lowest bpw first; NaN where absent.
    alpha : float, default 0.05

    Returns
    -------
    numpy.ndarray of bool
        :func:`~gguf_fragility.stats.multiplicity.fixed_sequence_graph`'s rejections.

    Notes
    -----
    The graph (fixed sequence down each ladder, Holm across families) is a
    closed test whose intersection tests are weighted Bonferroni tests [1]_, which need
    only ``P(p_i <= u) <= u`` under ``H_i``, with no condition on the dependence. An
    anytime-valid p-value satisfies this at any data-dependent time, Ville's inequality
    bounding ``P(inf_t p_t <= u)`` [2]_, so each cell may stop, be extended, or get items
    in any adaptive order, and the familywise error rate stays at ``alpha``; this is the
    graphical approach with sequential tests of Maurer & Bretz [3]_, with p = 2 / e
    (Bonferroni on e-values, as e-Holm of Vovk & Wang [4]_). Since running p-values only
    fall and the graph is monotone in them, a rejection made at one look stands at every
    later look.

    References
    ----------
    .. [1] Bretz, F. et al. (2009). A graphical approach to sequentially rejective
       multiple test procedures. Statistics in Medicine 28(4), 586-604.
    .. [2] Howard, S. R. et al. (2021). Time-uniform, nonparametric, nonasymptotic
       confidence sequences. Ann. Statist. 49(2), 1055-1080.
    .. [3] Maurer, W., Bretz, F. (2013). Multiple testing in group sequential trials using
       graphical approaches. Statistics in Biopharmaceutical Research 5(4), 311-320.
    .. [4] Vovk, V., Wang, R. (2021). E-values: calibration, combination and applications.
       Ann. Statist. 49(3), 1736-1754.
    """
    return fixed_sequence_graph(p_beyond, alpha=alpha).reject


def label(cs: ConfidenceSequence, beyond, margin: float, spec: Spec, change=None,
          equivalent=None) -> np.ndarray:
    """
    Issue 25's label of each cell from its sequence and the family's rejections.

    :data:`~gguf_fragility.stats.relevance.BEYOND` where :func:`family_reject` rejected
    "the loss is at most the margin"; else EQUIVALENT where ``equivalent``
    (:attr:`Evidence.p_equivalent` ``<= alpha``; without it, where the grid sequence lies
    inside ``(-m, m)``); else CHANGE where ``change`` (the family of tests rejected "no loss") and
    the sequence lies on the loss side of zero (without ``change``: where it lies there);
    else UNDECIDED (:func:`gguf_fragility.stats.relevance.decide` on the sequence, mirrored
    for a lens whose loss is positive). Valid at any look.
    """
    lo, hi = (-cs.high, -cs.low) if spec.loss_side == ABOVE else (cs.low, cs.high)
    if change is not None:
        change = np.asarray(change, bool) & (np.asarray(hi, float) < 0)
    return relevance.decide(lo, hi, margin, beyond=beyond, change=change, equivalent=equivalent)


class Plan(NamedTuple):
    """Result of :func:`items_to_decide` and of :func:`first_decision`."""

    items: np.ndarray  # items_to_decide: further items the cell is projected to need (0: decided;
    # inf: not within n_max); first_decision: the item that decides (inf: none)
    label: np.ndarray  # the projected verdict: relevance.BEYOND, relevance.EQUIVALENT or "" (none)


PROJECTION_HORIZON = 2_000  # items a projection looks ahead when a family's size is not given


def items_to_decide(x, spec: Spec, margin, *, n=None, n_max=np.inf, level=None,
                    alpha: float = 0.05) -> Plan:
    """
    Projected further items until a lens's sequence decides a cell.

    Parameters
    ----------
    x : array_like of float, shape (..., k)
        Per-item effects of each cell in the lens's unit, in drawing order (a row's entries
        after its ``n`` are ignored).
    spec : Spec
    margin : float or array_like
        Relevance margin ``m > 0`` of each cell, lens unit.
    n : array_like of int, optional
        Items observed in each row (default ``k``).
    n_max : float or array_like, default inf
        Items the cell may reach (its family's size or the budget's cap); a decision
        projected beyond it is ``inf``.
    level : float or array_like, optional
        Level the cell's ``p_beyond`` must reach to be rejected in its family of tests
        (default ``alpha``; Holm's first step is ``alpha`` over the families).
    alpha : float, default 0.05
        Level of the confidence sequence (equivalence).

    Returns
    -------
    Plan
        ``items`` is 0 where the cell is decided now.

    Notes
    -----
    A plug-in projection by replay: the cell's observed effects are taken as the
    distribution of the items to come and repeated in their order, and the betting capitals
    the decisions read (:func:`log_capital`; beyond: ``p_beyond`` at ``level``; equivalence:
    both sides of the ``1 - alpha`` sequence inside ``(-m, m)``) are run on the
    replayed sequence up to ``n_max``; the first item at which one decides is the projection.
    It inherits the method's own rates, a width shrinking like ``1/n`` on items that
    barely move and like ``sqrt(log n / n)`` on noisy ones (Waudby-Smith & Ramdas 2024,
    Sec. 5.1), which a single-rate formula misses by a factor of ten on the first. For
    ordering cells and pricing further minutes, not a power calculation.
    """
    x = _check(x, spec)
    if spec.loss_side == ABOVE:  # mirror: a loss is then a negative effect
        x, spec = -x, Spec(-spec.high, -spec.low, BELOW)
    level = alpha if level is None else level
    lead = np.broadcast_shapes(x.shape[:-1], *(np.shape(a) for a in (margin, n, n_max, level)))
    x = np.broadcast_to(x, (*lead, x.shape[-1]))
    n = np.broadcast_to(np.asarray(x.shape[-1] if n is None else n, int), lead)
    if np.any(n < 1) or np.any(n > x.shape[-1]):
        raise ValueError(f"n must lie in [1, {x.shape[-1]}] (items observed in each row)")
    m = np.broadcast_to(np.asarray(margin, float), lead)
    if not np.all(m > 0):
        raise ValueError(f"margin must be positive; got {margin}")
    n_max = np.broadcast_to(np.asarray(n_max, float), lead)
    finite = n_max[np.isfinite(n_max)]
    horizon = int(max(finite.max() if finite.size else PROJECTION_HORIZON, n.max()))
    y = np.take_along_axis(x, np.arange(horizon) % n[..., None], -1)  # replayed in order
    at = first_decision(y, spec, m, level=level, alpha=alpha)
    more = np.where(at.items <= n_max, np.maximum(at.items - n, 0.0), np.inf)
    return Plan(more, np.where(np.isfinite(more), at.label, ""))


def first_decision(x, spec: Spec, margin, *, level=None, alpha: float = 0.05) -> Plan:
    """
    The item at which a cell's sequence first decides, along its items in drawing order.

    Parameters
    ----------
    x : array_like of float, shape (..., k)
        Per-item effects in the lens unit, in drawing order.
    spec : Spec
    margin, level, alpha
        As in :func:`items_to_decide`.

    Returns
    -------
    Plan
        ``items``: the first item (1-based) at which the capitals the decisions read reach
        their bounds (beyond: ``p_beyond`` at ``level``; equivalence: both of
        :func:`evidence`'s one-sided p-values at ``alpha``), ``inf`` when none within ``k``;
        ``label``: which verdict (beyond where both come at once), "" when none. On
        replayed items it is :func:`items_to_decide`'s projection; on a cell's measured
        items, hindsight (``benchmarks/bench_planner.py``).
    """
    x = _check(x, spec)
    if spec.loss_side == ABOVE:  # mirror: a loss is then a negative effect
        x, spec = -x, Spec(-spec.high, -spec.low, BELOW)
    m = np.asarray(margin, float)
    level = np.asarray(alpha if level is None else level, float)

    def first(log_k, bound):  # the first item (1-based) at which the capital reaches bound
        hit = log_k >= np.asarray(bound)[..., None]
        return np.where(hit.any(-1), hit.argmax(-1) + 1.0, np.inf)

    beyond = first(log_capital(x, spec, -m, BELOW, alpha), np.log(2 / level))
    equiv = np.maximum(first(log_capital(x, spec, -m, ABOVE, alpha), np.log(2 / alpha)),
                       first(log_capital(x, spec, m, BELOW, alpha), np.log(2 / alpha)))
    at = np.minimum(beyond, equiv)
    return Plan(at, np.where(~np.isfinite(at), "",
                             np.where(beyond <= equiv, relevance.BEYOND, relevance.EQUIVALENT)))


DECIDED_COLUMNS = ("model", "rung", "family", "lens", "n", "estimate", "cs_low", "cs_high",
                   "margin", "p_beyond", "p_change", "p_equivalent", "label", "can_decide",
                   "decided")


DECIDED_LABELS = (relevance.BEYOND, relevance.EQUIVALENT)  # what stops a cell (and counts as
# decided on the site): a loss beyond the margin shown, or equivalence within it shown


def _family(b: pd.DataFrame, column: str, fi: Mapping[str, int], rj: Mapping[str, int],
            alpha: float) -> np.ndarray:
    """:func:`family_reject` on one p-value column of a model × lens block (a cell that cannot
    decide, e.g. fidelity without a floor, enters with p = 1)."""
    pm = np.full((len(fi), len(rj)), np.nan)
    pm[b.family.map(fi), b.rung.map(rj)] = b[column].where(b.can_decide, 1.0).fillna(1.0)
    return family_reject(pm, alpha)[b.family.map(fi), b.rung.map(rj)] & b.can_decide.to_numpy()


class CellDecisions(NamedTuple):
    """Result of :func:`decide_cells`."""

    lenses: pd.DataFrame  # model × rung × family × lens: DECIDED_COLUMNS (judge_run: items, against_floor)
    cells: pd.DataFrame  # model × rung × family: n, decided, undecided_lenses
    effects: dict  # (model, rung, family, lens) -> per-item effects in drawing order


def decide_cells(items: pd.DataFrame, reference: Mapping[str, str], bpw: Mapping,
                 positions: Mapping[tuple[str, str], int], s: Settings) -> CellDecisions:
    """
    The sequential decision of every cell of a run at this look.

    Parameters
    ----------
    items : pandas.DataFrame
        The sweep's item rows (:func:`gguf_fragility.stats.grid.validate_items`), cells of
        any length; the pseudo-rung :data:`~gguf_fragility.engine.rungs.NOISE_FLOOR` is the floor.
    reference : mapping of str to str
        Reference rung of each model.
    bpw : mapping of (model, rung) to float
        Orders each family's fixed sequence (lowest first).
    positions : mapping of (family, item_id) to int
        Each item's place in its family's pre-registered order: the sequences read the
        items in this order, the order they were drawn in.
    s : Settings
        ``alpha`` and the lens margins.

    Returns
    -------
    CellDecisions
        Per lens: :func:`confidence_sequence`, :func:`evidence`'s ``p_beyond``, ``p_change``
        and ``p_equivalent``, :func:`family_reject` on each per model × lens, and :func:`label`
        (``NO_FLOOR`` for a shown change of a lens compared with a floor that was not
        measured; ``NO_ROOM`` where the lens's :meth:`~gguf_fragility.stats.lens.base.Lens.room`
        says no rung could lose the margin). ``can_decide``: the lens has items in the cell,
        room for a loss beyond its margin and, if it is compared with a floor, a measured
        floor. ``decided`` (per lens): a label of :data:`DECIDED_LABELS` (a loss beyond
        the margin shown, or equivalence within it), the site's count of decided cells. A
        cell is decided when every lens that can decide it has, and at least one can.

    Notes
    -----
    Valid at every look: the sequences and the anytime-valid p-values hold at any stopping
    time, and the family of tests on them keeps its familywise rate (:func:`family_reject`),
    so a cell may stop when decided and a later, larger budget may extend any other.
    """
    df = validate_items(items, reference)
    values = [c for c in (*ITEM_COLUMNS, *OPTIONAL_COLUMNS)
              if c not in ("model", "rung", "family", "item_id")]
    rows, effects = [], {}
    for model, sub in df.groupby("model", sort=True):
        ref = reference[model]
        floor = NOISE_FLOOR if NOISE_FLOOR in set(sub["rung"]) else None
        rungs = sorted((r for r in set(sub["rung"]) if r not in (ref, NOISE_FLOOR)),
                       key=lambda r: (float(bpw[(model, r)]), r))
        wide = sub.set_index(["family", "item_id", "rung"])[values].unstack("rung")
        fams = wide.index.get_level_values("family")
        for name, lens in LENSES.items():
            spec = spec_of(lens)
            block = []
            for family in sorted(set(fams)):
                w = wide[fams == family]
                for rung in rungs:
                    x = lens.item_effects(w, ref, rung, floor)
                    x = x.iloc[np.argsort([positions[(family, i)] for i in x.index], kind="stable")]
                    c = pd.DataFrame([lens.cell(w, ref, rung, floor)])
                    m, room = float(lens.margins(c, s)[0]), bool(lens.room(c, s)[0])
                    can = len(x) > 0 and (floor is not None or not lens.against_floor) and room
                    effects[(model, rung, family, name)] = x.to_numpy(float)
                    if len(x):
                        cs = confidence_sequence(x.to_numpy(float), spec, s.alpha)
                        ev = evidence(x.to_numpy(float), spec, m, s.alpha)
                        p, pc, pe = float(ev.p_beyond), float(ev.p_change), float(ev.p_equivalent)
                        est, lo, hi = float(cs.estimate), float(cs.low), float(cs.high)
                    else:
                        est = lo = hi = p = pc = pe = np.nan
                    block.append({"model": model, "rung": rung, "family": family, "lens": name,
                                  "n": len(x), "estimate": est, "cs_low": lo, "cs_high": hi,
                                  "margin": m, "p_beyond": p, "p_change": pc, "p_equivalent": pe,
                                  "can_decide": can, "room": room})
            if not block:
                continue
            b = pd.DataFrame(block)
            fi = {f: i for i, f in enumerate(sorted(set(b.family)))}
            rj = {r: j for j, r in enumerate(rungs)}
            beyond, change = (_family(b, col, fi, rj, s.alpha) for col in ("p_beyond", "p_change"))
            cs = ConfidenceSequence(b.n.to_numpy(), b.estimate.to_numpy(float),
                                    b.cs_low.to_numpy(float), b.cs_high.to_numpy(float))
            b["label"] = label(cs, beyond, b.margin.to_numpy(float), spec, change=change,
                               equivalent=(b.p_equivalent <= s.alpha).to_numpy())
            if lens.against_floor:  # a shown change without a floor may be re-run noise
                b.loc[~b.can_decide & b.label.isin([relevance.BEYOND, relevance.CHANGE]),
                      "label"] = relevance.NO_FLOOR
            b.loc[~b.room, "label"] = relevance.NO_ROOM  # equivalent whatever the rung does
            b["decided"] = b.can_decide & b.label.isin(list(DECIDED_LABELS))
            rows.append(b)
    key = ["model", "rung", "family"]
    if not rows:  # no rung has items beside its reference yet (e.g. the clock ran out first)
        return CellDecisions(pd.DataFrame(columns=list(DECIDED_COLUMNS)),
                             pd.DataFrame(columns=[*key, "n", "decided", "undecided_lenses"]),
                             effects)
    out = pd.concat(rows, ignore_index=True)[list(DECIDED_COLUMNS)]
    return CellDecisions(out, _cell_status(out, sort=False), effects)


def _open(lenses: pd.DataFrame) -> pd.Series:
    """The lens rows still open: the lens can decide the cell and has not."""
    return lenses.can_decide.astype(bool) & ~lenses.decided.astype(bool)


def next_decision(seconds: pd.Series, lenses: pd.DataFrame) -> float:
    """A cell's projected seconds to its next lens verdict from its lens rows: 0 when decided
    (every lens that can decide it has), else the least of its open lenses' (inf if none)."""
    open_ = _open(lenses)
    if lenses.can_decide.astype(bool).any() and not open_.any():
        return 0.0
    return float(seconds[open_].min()) if open_.any() else np.inf


def _cell_status(lenses: pd.DataFrame, sort: bool, **extra) -> pd.DataFrame:
    """One row per cell of per-lens decisions: ``n`` (items), ``decided`` (every lens that can
    decide it has, and one can), ``undecided_lenses``, and ``extra`` columns, each a function of
    the cell's lens rows."""
    def status(g: pd.DataFrame) -> pd.Series:
        can, done = g.can_decide.astype(bool), g.decided.astype(bool)
        return pd.Series({"n": int(g.n.max()), "decided": bool(can.any() and done[can].all()),
                          "undecided_lenses": ", ".join(g.lens[can & ~done]),
                          **{k: f(g) for k, f in extra.items()}})
    return lenses.groupby(["model", "rung", "family"], sort=sort).apply(
        status, include_groups=False).reset_index()


ANYTIME_METHOD = "anytime-valid betting (Waudby-Smith & Ramdas 2024)"
SEQUENTIAL_BASIS = "sequential design: no fixed-sample MDE (Budgeted sweep: minutes to decide)"


def anytime_comparisons(comparisons: pd.DataFrame, decisions: pd.DataFrame,
                        s: Settings) -> pd.DataFrame:
    """
    The grid's comparisons of a budgeted run, with its sequential statistics in place of the
    fixed-sample ones.

    Parameters
    ----------
    comparisons : pandas.DataFrame
        :func:`gguf_fragility.stats.grid.lens_grid`'s ``comparisons``.
    decisions : pandas.DataFrame
        :attr:`CellDecisions.lenses` of the same items (:func:`decide_cells`), measurable
        families only.
    s : Settings

    Returns
    -------
    pandas.DataFrame
        ``comparisons`` where every measurable row's ``ci_low, ci_high`` is its confidence
        sequence, ``p_value`` / ``p_beyond`` its anytime-valid p-values against no loss and
        against a loss of the margin, ``decision`` :func:`decide_cells`'s label, ``reject``
        whether the family of tests showed a loss (``BEYOND`` or ``CHANGE``), ``testable``
        whether the lens can decide the cell, ``level`` Holm's first step (``alpha`` over the
        model × lens's families), ``p_method`` :data:`ANYTIME_METHOD`; ``planned_mde``,
        ``min_p`` and ``tarone_k`` are NaN (the fixed design's power and screen do not apply;
        the budgeted sweep's planner gives minutes instead).

    Notes
    -----
    A run whose cells grew look by look is read only by these statistics: a fixed-sample
    test applied after looking and extending no longer keeps its error rate
    (``tests/test_sequential.py`` shows both).
    """
    key = ["model", "lens", "family", "rung"]
    d = decisions.assign(level=decisions.groupby(["model", "lens"]).family.transform(
        lambda f: s.alpha / max(f.nunique(), 1))).set_index(key)
    out = comparisons.copy()
    idx = pd.MultiIndex.from_frame(out[key])
    hit = out["measurable"].astype(bool).to_numpy() & idx.isin(d.index)
    r = d.reindex(idx[hit])
    for col, value in (("ci_low", r.cs_low), ("ci_high", r.cs_high), ("p_value", r.p_change),
                       ("p_beyond", r.p_beyond), ("decision", r.label),
                       ("reject", r.label.isin([relevance.BEYOND, relevance.CHANGE])),
                       ("testable", r.can_decide), ("level", r.level),
                       ("planned_mde", np.nan), ("min_p", np.nan), ("tarone_k", np.nan),
                       ("p_method", ANYTIME_METHOD), ("mde_basis", SEQUENTIAL_BASIS)):
        out.loc[hit, col] = value.to_numpy() if isinstance(value, pd.Series) else value
    return out


FURTHER_MINUTES = (10, 30, 60)  # the further budgets the planner prices


class BudgetSummary(NamedTuple):
    """Result of :func:`budget_summary`."""

    cells: pd.DataFrame  # model × rung × family: n, decided, look_decided, seconds_to_decide
    further: pd.DataFrame  # model × further minutes: verdicts, decided, likely decided, not within items


def budget_summary(sequential: pd.DataFrame, minutes=FURTHER_MINUTES) -> BudgetSummary:
    """
    Per cell, what a budgeted sweep spent and decided; per model, the lens verdicts it reached
    and what further minutes would settle.

    Parameters
    ----------
    sequential : pandas.DataFrame
        ``tables/sequential.csv`` (:mod:`gguf_fragility.run.looks`): one row per cell and
        lens with ``n, can_decide, decided, look_decided, looks, seconds_to_decide``.
    minutes : sequence of float, default :data:`FURTHER_MINUTES`

    Returns
    -------
    BudgetSummary
        ``cells``: ``model, rung, family, n`` (items used), ``decided`` (every lens that can
        decide it has), ``look_decided`` (NaN while undecided), ``undecided_lenses``,
        ``seconds_to_decide`` (projected seconds to its next lens decision; 0 when decided,
        inf when none is projected within the family's items). ``further``: per model its
        ``verdicts`` (cell × lens pairs that can be decided), ``decided`` (a loss beyond the
        margin or equivalence shown), ``items_min``, ``items_max`` (items per cell), and per
        ``minutes``, ``likely_decided`` (undecided verdicts the looks' plan settles within a
        further budget of those minutes: ``seconds_to_decide`` at most that), ``undecided``
        and ``not_within_items`` (verdicts whose projection needs more items than their family
        has, or that the plan never reaches).

    Notes
    -----
    ``seconds_to_decide`` is the looks' own plan
    (:func:`gguf_fragility.run.looks.projected_seconds`: :func:`items_to_decide` on each
    cell's own items, priced at the run's measured seconds per item, cheapest verdicts per
    second first, every model in one budget), for choosing a further budget, not a power
    calculation.
    """
    need = {"model", "rung", "family", "lens", "n", "can_decide", "decided", "look_decided",
            "seconds_to_decide"}
    missing = need - set(sequential.columns)
    if missing:
        raise ValueError(f"{Table.SEQUENTIAL.file_name} lacks {sorted(missing)}: it was written by an older "
                         "version; rerun the budgeted sweep (gguf-fragility run --budget ...)")
    can = sequential.can_decide.astype(bool)
    cells = _cell_status(sequential, sort=True, look_decided=lambda g: g.look_decided.min(),
                         seconds_to_decide=lambda g: next_decision(g.seconds_to_decide, g))
    rows = []
    for model, g in sequential[can].groupby("model", sort=True):
        open_ = g[~g.decided.astype(bool)]
        secs = open_.seconds_to_decide.astype(float)
        n = cells[cells.model == model].n
        for m in minutes:
            rows.append({"model": model, "verdicts": len(g), "decided": len(g) - len(open_),
                         "items_min": int(n.min()), "items_max": int(n.max()), "minutes": m,
                         "likely_decided": int((secs <= 60 * m).sum()),
                         "undecided": len(open_), "not_within_items": int((~np.isfinite(secs)).sum())})
    return BudgetSummary(cells, pd.DataFrame(rows, columns=[
        "model", "verdicts", "decided", "items_min", "items_max", "minutes", "likely_decided",
        "undecided", "not_within_items"]))


def first_level(lenses: pd.DataFrame, alpha: float) -> np.ndarray:
    """Each lens row's level at Holm's first step over its model's families on that lens,
    ``alpha / families``: the level the planner projects ``p_beyond`` to (:func:`items_to_decide`)."""
    return alpha / lenses.groupby(["model", "lens"]).family.transform("nunique").to_numpy()


def judge_run(run: RunLayout, steered: Collection[tuple[str, str, str]],
              positions: Mapping[tuple[str, str], int], s: Settings,
              cap: Mapping[tuple[str, str, str], int]) -> CellDecisions:
    """
    :func:`decide_cells` on a run's stored cells, with each open lens's projected items to decide.

    Parameters
    ----------
    run : RunLayout
    steered : collection of (model, rung, family)
        The cells a budgeted sweep steers (reference and floor included); others are ignored.
    positions : mapping (family, item_id) -> int
        The pre-registered order (:func:`decide_cells`).
    s : Settings
    cap : mapping (model, rung, family) -> int
        Items a cell may reach (``n_max`` of :func:`items_to_decide`).

    Returns
    -------
    CellDecisions
        ``lenses`` gains ``items``: :func:`items_to_decide`'s further items of the lens in the
        cell (0 when decided, ``inf`` when not projected to decide within ``cap``), and
        ``against_floor``: whether the lens compares the cell with the noise floor (its items
        then need the floor's too). The looks price them
        (:func:`gguf_fragility.run.looks.allocate`).
    """
    models = sorted({m for m, _, _ in steered})
    return judge_items(load_items(run, models), read_ladder(run, models), steered, positions,
                       s, cap)


def judge_items(items: pd.DataFrame, ladder: pd.DataFrame,
                steered: Collection[tuple[str, str, str]],
                positions: Mapping[tuple[str, str], int], s: Settings,
                cap: Mapping[tuple[str, str, str], int]) -> CellDecisions:
    """:func:`judge_run` on item rows (:func:`~gguf_fragility.artifacts.load_items`) and a
    ladder (:func:`~gguf_fragility.artifacts.read_ladder`) in hand, e.g. a prefix of each
    stored cell (``benchmarks/bench_planner.py``)."""
    steered = set(steered)
    key = list(zip(items.model, items.rung, items.family, strict=True))
    items = items[[k in steered for k in key]]
    bpw = dict(zip(zip(ladder.model.astype(str), ladder.rung.astype(str), strict=True),
                   ladder.bpw.astype(float), strict=True))
    refs = ladder[ladder.is_reference.astype(bool)]
    reference = dict(zip(refs.model, refs.rung, strict=True))
    dec = decide_cells(items, reference, bpw, positions, s)
    lenses = dec.lenses
    further = np.where(lenses.decided.astype(bool), 0.0, np.inf)
    level = first_level(lenses, s.alpha)
    for name, spec in SPECS.items():
        rows = np.flatnonzero(((lenses.lens == name) & _open(lenses)).to_numpy())
        if not rows.size:
            continue
        keys = list(zip(*(lenses[c].to_numpy()[rows] for c in ("model", "rung", "family")),
                        strict=True))
        xs = [dec.effects[(*k, name)] for k in keys]
        padded = np.zeros((len(xs), max(map(len, xs))))
        for i, x in enumerate(xs):
            padded[i, :len(x)] = x
        further[rows] = items_to_decide(padded, spec, lenses.margin.to_numpy(float)[rows],
                                        n=[len(x) for x in xs],
                                        n_max=[cap.get(k, np.inf) for k in keys],
                                        level=level[rows], alpha=s.alpha).items
    lenses = lenses.assign(items=further,
                           against_floor=[LENSES[name].against_floor for name in lenses.lens])
    return CellDecisions(lenses, dec.cells, dec.effects)
