"""What a lens is: the one place where a lens's cell statistics, test, interval, MDE, unit,
margin and loss side live.

A lens compares a rung with its model's reference on one family's items and says, per
cell, how large the change is (``effect`` with ``ci_low``/``ci_high`` in ``unit``), how
surprising (``p_value``; ``p_seq``, the loss-side p-value the family of tests uses;
``min_p``, the smallest p its test can reach; ``p_beyond``, the p-value of "the loss is
at most the margin"), what it could have detected (:meth:`Lens.mde`) and the relevance
verdict (:meth:`Lens.decide`, labels of :mod:`gguf_fragility.stats.relevance`) against
its user margin (:meth:`Lens.margins`, one per row, in the row's unit). The grid
(:func:`gguf_fragility.stats.grid.lens_grid`) runs every lens of the registry
(:data:`gguf_fragility.stats.lens.registry.LENSES`) through the same family of tests;
no other module compares lens names. A new lens is one module with a :class:`Lens`
subclass, one line in the registry and its notebook cell.

Usage::

    from gguf_fragility.stats.lens.registry import LENSES
    lens = LENSES["margin"]
    lens.unit, lens.margin(settings), lens.loss_side
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import numpy as np
import pandas as pd

from gguf_fragility.stats import relevance
from gguf_fragility.stats.settings import Settings

ACCURACY = "accuracy"  # role: the effect is the paired accuracy change (deaths, resurrections)
CHANGE = "change"  # role: the effect is the mean per-item change of a continuous score
BELOW, ABOVE = "below", "above"  # loss side: the effect falls below zero / rises above it
STATISTICS = ("effect", "ci_low", "ci_high", "p_value", "p_seq", "min_p", "p_beyond")  # every lens's


class PlannedMde(NamedTuple):
    """Result of :meth:`Lens.mde`; one entry per row."""

    mde: np.ndarray  # smallest true loss shown beyond the margin with power 0.8, mde_unit
    basis: np.ndarray  # of str: the test, level and design assumption it was planned for


class Lens(ABC):
    """
    One lens of the grid.

    Attributes
    ----------
    name : str
        The ``lens`` value of every table row.
    unit, mde_unit : str
        Unit of ``effect`` and its interval; unit of ``planned_mde``.
    columns : tuple of str
        Statistics columns of ``comparisons`` only this lens fills (after :data:`STATISTICS`).
    loss_side : {"below", "above"}
        A loss is an effect below zero (accuracy falls) or above it (more flips).
    directional : bool
        A gain is the mirror of a loss; False where a change has no good side (flips).
    against_floor : bool
        The lens's rate is compared with the noise floor's, which the summaries report.
    display_scale, display_unit : float, str
        What the site multiplies an effect or MDE by, and the unit it then prints.
    item_range : tuple of float
        Bounds of one item's effect in :attr:`unit` (a paired 0/1 difference: -1 to 1),
        which the anytime-valid sequences of :mod:`gguf_fragility.stats.sequential` need.
    roles : frozenset of str
        :data:`ACCURACY` (the decision matrix's worst family, the planner, the landing
        page's chart and advice, transfer of decisions read this lens; it also gives
        ``interval(rows, alpha)``, its interval at another level) and/or
        :data:`CHANGE` (lesion shares, the first family to die and the recipe read it);
        at most one lens per role.
    """

    name: ClassVar[str]
    unit: ClassVar[str]
    mde_unit: ClassVar[str]
    columns: ClassVar[tuple[str, ...]] = ()
    loss_side: ClassVar[str] = BELOW
    directional: ClassVar[bool] = True
    against_floor: ClassVar[bool] = False
    display_scale: ClassVar[float] = 100.0
    display_unit: ClassVar[str] = "pp"
    item_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    roles: ClassVar[frozenset[str]] = frozenset()

    def margin(self, s: Settings) -> float:
        """The relevance margin of this lens, in :attr:`unit` (the correctness margin)."""
        return s.equivalence_margin

    def margins(self, rows: pd.DataFrame, s: Settings) -> np.ndarray:
        """Relevance margin of each row, in that row's unit (:meth:`units`); default :meth:`margin`."""
        return np.full(len(rows), self.margin(s))

    def room(self, rows: pd.DataFrame, s: Settings) -> np.ndarray:
        """Whether a loss beyond each row's margin can happen at all in its cell (rows: this
        lens's rows with :meth:`cell`'s fields); where not, :meth:`decide` says
        :data:`~gguf_fragility.stats.relevance.NO_ROOM`. Default: everywhere."""
        return np.ones(len(rows), bool)

    def units(self, rows: pd.DataFrame) -> np.ndarray:
        """Unit of each row's effect and interval; default :attr:`unit`."""
        return np.full(len(rows), self.unit, dtype=object)

    @abstractmethod
    def cell(self, wide: pd.DataFrame, ref: str, rung: str, floor: str | None) -> dict:
        """
        Raw quantities of one cell: ``n`` and what :meth:`statistics` needs.

        Parameters
        ----------
        wide : pandas.DataFrame
            One model × family: index ``(family, item_id)``, columns ``(value, rung)`` of
            :data:`gguf_fragility.stats.grid.ITEM_COLUMNS`' values.
        ref, rung : str
            The reference and the compared rung.
        floor : str or None
            The noise floor's pseudo-rung when it was swept.

        Returns
        -------
        dict
            Row fields; keys starting with ``_`` (per-item arrays) are dropped after
            :meth:`statistics`.
        """

    @abstractmethod
    def item_effects(self, wide: pd.DataFrame, ref: str, rung: str, floor: str | None) -> pd.Series:
        """Each compared item's effect in :attr:`unit`, within :attr:`item_range`, indexed by
        ``item_id`` (``wide`` as in :meth:`cell`; items the cell cannot score left out): the
        per-item sequence of :mod:`gguf_fragility.stats.sequential`, whose mean is the effect."""

    @abstractmethod
    def statistics(self, rows: pd.DataFrame, s: Settings) -> pd.DataFrame:
        """:data:`STATISTICS`, ``p_method`` and :attr:`columns` of this lens's rows (same index)."""

    @abstractmethod
    def mde(self, rows: pd.DataFrame, level: float, s: Settings) -> PlannedMde:
        """Planned minimum detectable effect (in :attr:`mde_unit`) of each row at ``level``: the
        smallest true loss the test of the verdict shows *beyond the row's margin* with power
        :data:`~gguf_fragility.stats.settings.MDE_POWER`, with its basis; ``rows`` are this
        lens's rows with ``n`` and :meth:`cell`'s per-item arrays."""

    def decide(self, rows: pd.DataFrame, reject, level, s: Settings) -> np.ndarray:
        """
        Relevance verdict per row (:func:`gguf_fragility.stats.relevance.decide`).

        Parameters
        ----------
        rows : pandas.DataFrame
            This lens's rows with :data:`STATISTICS` (and ``floor`` where
            :attr:`against_floor`).
        reject : array_like of bool
            The family of tests rejected "no change" on the loss side.
        level : float or array_like
            The corrected level of each row's test; "beyond the margin" needs
            ``p_beyond <= level`` as well as ``reject`` (a lens that leaves ``p_beyond``
            NaN never shows a loss beyond the margin).
        s : Settings

        Returns
        -------
        numpy.ndarray of str
            :data:`~gguf_fragility.stats.relevance.BEYOND`, ``EQUIVALENT``, ``CHANGE`` or
            ``UNDECIDED`` on the loss side of this lens, within :meth:`margins`; a lens
            compared with a noise floor says ``NO_FLOOR`` instead of ``BEYOND`` or ``CHANGE``
            where none was measured (its flips may be re-run noise), so that cell never
            enters a death rung or ranking; a cell without :meth:`room` for a loss beyond
            its margin says ``NO_ROOM`` whatever its interval (its equivalence would be
            the unit's, not the rung's).
        """
        lo, hi = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
        if self.loss_side == ABOVE:  # loss = a larger effect: mirror the interval
            lo, hi = -hi, -lo
        rej = np.asarray(reject, bool)
        with np.errstate(invalid="ignore"):
            beyond = rej & (rows["p_beyond"].to_numpy(float) <= np.asarray(level, float))
        out = relevance.decide(lo, hi, self.margins(rows, s), beyond=beyond, change=rej & (hi < 0))
        if self.against_floor:  # a shown change without a floor may be re-run noise
            no_floor = ~rows["floor"].astype(str).str.startswith("measured").to_numpy()
            out[no_floor & np.isin(out, [relevance.BEYOND, relevance.CHANGE])] = relevance.NO_FLOOR
        out[~self.room(rows, s)] = relevance.NO_ROOM
        return out
