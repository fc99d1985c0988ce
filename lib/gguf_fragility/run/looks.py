"""A budgeted sweep: looks of a few items per undecided cell until the budget is spent (issue 27).

With a profile's ``budget`` (:class:`~gguf_fragility.profile.Budget`), the pipeline runs
:func:`run_looks` before chapter 4's notebooks. Every measurable family's cells (model ×
ladder rung × family, the noise floor included) first get the budget's ``first_items`` (at
most the profile's ``n_items``); each further look adds ``look_items`` to the undecided
cells (:func:`gguf_fragility.stats.sequential.decide_cells`) that the planner
(:func:`gguf_fragility.stats.sequential.items_to_decide`, with the run's own seconds per
item) projects to reach a lens verdict within the minutes left, cheapest first
(:func:`allocate`; every undecided cell when none is in reach), checking the clock before
each cell, until ``minutes`` or ``max_items`` per cell are spent. A cell
is only ever extended (:mod:`gguf_fragility.run.cells`), and each look's state is stored
before it extends (``RunLayout.looks_state``), so a killed run resumes the look it was in
and a later, larger budget continues the numbering; the statistics are valid at every
look. Chapter 4 then finds
every cell stored and measures the rest of each rung (cost, KL shift). Usage::

    from functools import partial
    from gguf_fragility.run.looks import run_looks
    from gguf_fragility.stats.sequential import judge_run
    from gguf_fragility.stats.settings import Settings
    profile = load_profile("mine")
    log = run_looks(profile, partial(judge_run, s=Settings.of(profile)))  # a line per look
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from itertools import accumulate
from typing import NamedTuple, Protocol

import pandas as pd

from gguf_fragility import probes
from gguf_fragility.artifacts import load_measurable
from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE, rung_spec
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.profile import Profile
from gguf_fragility.run.cells import LazyEngine, evaluate_cell
from gguf_fragility.run.plan import families_of, plan_rung
from gguf_fragility.run.sweep import gate
from gguf_fragility.store import read_result_json, report_rebuild, write_result_json, write_table_atomic


class Look(NamedTuple):
    """One look of :func:`run_looks` (a row of its log)."""

    look: int
    cells: int  # cells the looks steer (model × rung × family)
    decided: int
    undecided: int
    out_of_reach: int  # undecided cells no lens of which is projected to decide within their items
    verdicts: int  # cell x lens pairs that can be decided
    verdicts_decided: int  # of which decided (a loss beyond the margin, or equivalence, shown)
    items_scored: int  # items scored in this look, every rung (reference and floor included)
    minutes_left: float  # of the budget's minutes (inf without a clock limit)


def looked_rungs(profile: Profile, model: str) -> list[str]:
    """The rungs the looks steer: the reference, the floor (when swept) and every ladder rung
    (KV-cache rungs are compared with their controls in chapter 7 and keep ``n_items``)."""
    rungs = [r for r in profile.models[model].rungs if rung_spec(r).kv_cache is None]
    if profile.noise_floor_for(model):
        rungs.insert(rungs.index(REFERENCE) + 1, NOISE_FLOOR)
    return rungs


def _families(profile: Profile, model: str) -> list[str]:
    """The model's families in the profile that calibration found measurable; others keep
    ``n_items``."""
    m = load_measurable(profile.layout, [model])
    return sorted(set(m.family[m.measurable.astype(bool)]) & set(families_of(profile, model)))


Key = tuple[str, str, str]  # (model, rung, family): one cell


class Spent(NamedTuple):
    """What the looks spent scoring one cell (its measured cost per item), across resumes."""

    seconds: float  # wall seconds of the items scored (model loads excluded)
    items: int


class LookState(NamedTuple):
    """The state :func:`run_looks` persists (``RunLayout.looks_state``) before a look extends."""

    look: int  # the look about to extend (1 for the first)
    target: dict[Key, int]  # items each steered cell holds once the look is done
    first: dict[Key, int]  # the look that first decided each decided cell
    seconds: dict[Key, float]  # projected seconds to decide at the look's start (visit order)
    spent: dict[Key, Spent]


def _cost(spent: Mapping[Key, Spent]) -> dict[Key, float]:
    """Seconds per item of every cell this run scored."""
    return {k: s.seconds / s.items for k, s in spent.items() if s.items}


def _write(profile: Profile, lenses: pd.DataFrame, cells: pd.DataFrame, st: LookState) -> None:
    """
    Write ``tables/sequential.csv``: one row per cell and lens (and record in ``st.first``
    the look that decided each newly decided cell).

    Columns are :data:`~gguf_fragility.stats.sequential.DECIDED_COLUMNS` (items used ``n``,
    estimate, confidence sequence ``cs_low``/``cs_high``, margin, ``p_beyond``, label,
    ``can_decide``, ``decided``), then, the same on every lens row of a cell:

    - ``look_decided``: the look that first decided the cell (empty while undecided); kept
      across resumed and extended runs;
    - ``looks``: looks run so far (the numbering goes on across runs);
    - ``seconds_to_decide``: projected wall seconds of further items until the lens decides
      the cell (the judge's ``seconds``: 0 when decided, ``inf`` when it is not projected to
      decide within its item cap);
    - ``seconds_per_item``: the cell's measured wall seconds per item in the looks so far
      (kept across resumed and extended runs; model loads excluded; empty when the looks
      scored none of its items, e.g. a cell stored by a fixed sweep and decided at once).

    A site plans "a further N minutes" from the last two
    (:func:`~gguf_fragility.stats.sequential.budget_summary`).
    """
    cost = _cost(st.spent)
    keyed = cells.set_index(["model", "rung", "family"])
    for k in keyed.index[keyed.decided.astype(bool)]:
        st.first.setdefault(k, st.look)
    keys = list(zip(lenses.model, lenses.rung, lenses.family, strict=True))
    write_table_atomic(lenses.rename(columns={"seconds": "seconds_to_decide"}).assign(
        look_decided=[st.first.get(k) for k in keys], looks=st.look,
        seconds_per_item=[cost.get(k, math.nan) for k in keys]),
        profile.layout.table(Table.SEQUENTIAL))


class Judge(Protocol):
    """How the looks learn which cells are decided: the statistics side's
    :func:`gguf_fragility.stats.sequential.judge_run` with its settings bound (``run`` and
    ``stats`` never import each other; the command line joins them)."""

    def __call__(self, run: RunLayout, steered: Collection[Key],
                 positions: Mapping[tuple[str, str], int], *,
                 cost: Mapping[Key, float], cap: Mapping[Key, int]):
        """An object with ``lenses`` (one row per cell and lens) and ``cells`` (``model, rung,
        family, decided, seconds``: projected seconds to decide)."""


def run_looks(profile: Profile, judge: Judge, *,
              progress: Callable[[str], None] = print) -> pd.DataFrame:
    """
    Run a budgeted sweep's looks on every model whose calibration passed.

    Parameters
    ----------
    profile : Profile
        With ``budget`` set; calibration (chapter 3) done for its models.
    judge : Judge
        The sequential decisions and planner.
    progress : callable, default print
        Receives one line per look: cells decided / undecided, items scored, minutes left.

    Returns
    -------
    pandas.DataFrame
        One row per look of this run (:class:`Look`). ``tables/sequential.csv`` holds the
        decisions after the last one (:func:`_write`).

    Notes
    -----
    Before a look extends any cell its state (:class:`LookState`: look number, each cell's
    target, the look that decided each decided cell, the measured costs) is written
    atomically to ``RunLayout.looks_state``. A rerun resumes from it: it finishes that look
    with the same targets, so a run killed during a look ends with the cells and decisions
    of an uninterrupted one, and a later run with more minutes or a larger ``max_items``
    continues the numbering (its first look is the stored one, judged again: no items when it
    had finished) and keeps each cell's ``look_decided``. A state of other cells,
    another ``look_items`` or a smaller ``max_items`` is ignored (said in one line) and the
    looks start over from look 1 on the stored cells.

    After each look only the undecided cells :func:`allocate` picks grow: those projected to
    reach their next lens verdict (the judge's ``seconds``), cheapest first, within the
    minutes left; cells out of reach wait while any cell is in reach. Within a look the
    cells are visited cheapest projected decision first (out of reach last), each model's
    reference and floor first for the families extended (they must hold every item a rung
    is compared on). The clock is checked before each cell, so the minutes go where
    decisions are likely and a look overruns them by one cell's extension at most; the
    cells extended so far stay extended (every cell write is atomic). A cell's seconds per
    item are those of its own scoring in this run's looks, kept across resumes (cells not
    yet scored take the median of the others: :func:`~gguf_fragility.stats.sequential.
    judge_run`).
    """
    budget = profile.budget
    if budget is None:
        raise ValueError(f"profile {profile.name!r} has no budget; add e.g. "
                         "budget: {minutes: 30, look_items: 4} or run with --budget 30m")
    stop_at = time.monotonic() + (budget.minutes * 60 if budget.minutes else math.inf)
    models = [m for m in profile.models if _gate_ok(profile, m)]
    target: dict[Key, int] = {}
    cap: dict[Key, int] = {}
    families = {m: _families(profile, m) for m in models}
    positions = probes.item_positions({f for fs in families.values() for f in fs})
    sizes = Counter(f for f, _ in positions)  # items of each family
    for model in models:
        for family in families[model]:
            size = sizes[family]
            for rung in looked_rungs(profile, model):
                cap[(model, rung, family)] = min(size, budget.max_items or size)
                first = profile.items_for(model, family)  # the fixed design's count
                target[(model, rung, family)] = min(budget.first_items or first, first,
                                                    cap[(model, rung, family)])
    st = _resume(profile, target, cap) or LookState(1, _covered(profile, models, target), {}, {}, {})
    todo = set(st.target)  # a process's first look visits every cell
    log = []
    while True:
        _save(profile, st)
        scored = _extend(profile, models, st, todo, stop_at)
        dec = judge(profile.layout, list(st.target), positions, cost=_cost(st.spent), cap=cap)
        _write(profile, dec.lenses, dec.cells, st)
        cells = dec.cells.set_index(["model", "rung", "family"])
        open_ = [k for k in cells.index[~cells.decided] if k[1] not in (REFERENCE, NOISE_FLOOR)]
        left = (stop_at - time.monotonic()) / 60
        seconds = cells.seconds.astype(float)
        grow = allocate([k for k in open_ if st.target[k] < cap[k]], seconds, left * 60)
        can = dec.lenses.can_decide.astype(bool)
        row = Look(st.look, len(cells), int(cells.decided.sum()), len(open_),
                   sum(not math.isfinite(seconds[k]) for k in open_), int(can.sum()),
                   int(dec.lenses.decided.astype(bool).sum()), scored,
                   round(max(left, 0), 1) if math.isfinite(left) else math.inf)
        log.append(row)
        progress(f"look {st.look}: {row.verdicts_decided} of {row.verdicts} lens verdicts reached; "
                 f"{row.decided} of {row.cells} cells decided on every lens, {row.undecided} "
                 f"undecided ({row.out_of_reach} out of reach); {scored} items scored, "
                 + (f"{max(left, 0):.1f} min left" if math.isfinite(left) else "no clock limit"))
        if not grow or time.monotonic() >= stop_at:
            return pd.DataFrame(log)
        target = dict(st.target)
        for k in grow:
            target[k] = min(target[k] + budget.look_items, cap[k])
        todo = set(grow)
        st = st._replace(look=st.look + 1, target=_covered(profile, models, target),
                         seconds=dict(cells.seconds.astype(float)))


def allocate(open_: list[Key], seconds: Mapping[Key, float], budget_s: float) -> list[Key]:
    """
    The undecided cells (below their cap) the next look extends.

    Parameters
    ----------
    open_ : list of (model, rung, family)
    seconds : mapping
        Each cell's projected seconds to its next lens decision (the judge's ``seconds``;
        ``inf`` when no lens is projected to decide within the cell's items).
    budget_s : float
        Seconds left of the budget (``inf`` without a clock).

    Returns
    -------
    list of (model, rung, family)
        The cells projected to decide, cheapest first, while their projected seconds add
        up to at most ``budget_s`` (the cheapest always, so that a look makes progress
        for a later, larger budget); when none is projected to decide, every cell of
        ``open_`` (the projections may be wrong, and the minutes are the user's to spend).
    """
    reach = sorted((k for k in open_ if math.isfinite(seconds[k])), key=lambda k: (seconds[k], k))
    if not reach:
        return list(open_)
    spent = list(accumulate(seconds[k] for k in reach))
    return reach[:max(1, sum(s <= budget_s for s in spent))]


def _covered(profile: Profile, models: list[str], target: dict[Key, int]) -> dict[Key, int]:
    """``target`` with each model's reference and floor raised to the most items any of its
    rungs holds in that family (they must hold every item a rung is compared on)."""
    out = dict(target)
    for model in models:
        rungs = looked_rungs(profile, model)
        for f in {f for (m, _, f) in target if m == model}:
            need = max(target[(model, r, f)] for r in rungs)
            for r in (REFERENCE, NOISE_FLOOR):
                if (model, r, f) in out:
                    out[(model, r, f)] = need
    return out


def _save(profile: Profile, st: LookState) -> None:
    """Write the look state atomically (with its digest: an edited file is ignored)."""
    b = profile.budget
    write_result_json(profile.layout.looks_state, {
        "look": st.look, "look_items": b.look_items, "max_items": b.max_items,
        "cells": [{"model": m, "rung": r, "family": f, "target": n,
                   "look_decided": st.first.get((m, r, f)),
                   "seconds_to_decide": st.seconds.get((m, r, f)),
                   "spent_seconds": st.spent.get((m, r, f), Spent(0.0, 0)).seconds,
                   "spent_items": st.spent.get((m, r, f), Spent(0.0, 0)).items}
                  for (m, r, f), n in sorted(st.target.items())]})


def _resume(profile: Profile, target: Mapping[Key, int], cap: Mapping[Key, int]
            ) -> LookState | None:
    """The stored look state when it may be continued (its targets capped at ``cap``), else
    None, saying in one line why a stored one is ignored."""
    path, b = profile.layout.looks_state, profile.budget
    obj = read_result_json(path)  # an unreadable or edited file is reported there
    if obj is None:
        return None
    try:
        rows = {(c["model"], c["rung"], c["family"]): c for c in obj["cells"]}
        look, look_items, max_items = int(obj["look"]), obj["look_items"], obj["max_items"]
    except (KeyError, TypeError, ValueError) as exc:
        report_rebuild(path, f"not a look state ({type(exc).__name__}: {exc}); looks start over")
        return None
    why = ""
    if set(rows) != set(target):
        why = (f"it steers other cells ({len(set(rows) - set(target))} no longer steered, "
               f"{len(set(target) - set(rows))} new)")
    elif look_items != b.look_items:
        why = f"its looks added look_items {look_items}, now {b.look_items}"
    elif max_items is None and b.max_items is not None or (
            b.max_items is not None and b.max_items < max_items):
        why = f"its max_items was {max_items}, now {b.max_items} (a smaller cap)"
    if why:
        report_rebuild(path, f"{why}; looks start over from look 1 on the stored cells")
        return None
    return LookState(
        look, {k: min(int(c["target"]), cap[k]) for k, c in rows.items()},
        {k: int(c["look_decided"]) for k, c in rows.items() if c["look_decided"] is not None},
        {k: float(c["seconds_to_decide"]) for k, c in rows.items()
         if c["seconds_to_decide"] is not None},
        {k: Spent(float(c["spent_seconds"]), int(c["spent_items"])) for k, c in rows.items()
         if c["spent_items"]})


def _gate_ok(profile: Profile, model: str) -> bool:
    """Whether a model's calibration let its sweep run (its refusal is chapter 4's to print)."""
    try:
        gate(profile.layout, model)
    except RuntimeError:
        return False
    return True


class Visit(NamedTuple):
    """One rung load of a look: the cells of ``families`` at ``model`` x ``rung``, in order."""

    model: str
    rung: str
    families: list[str]


def _visits(profile: Profile, models: list[str], todo: Collection[Key],
            seconds: Mapping[Key, float]) -> list[Visit]:
    """The rung loads of a look, cheapest projected decision first: each rung when its
    cheapest cell's turn comes (cells that cannot be decided within their cap, ``inf``,
    last; unknown projections count 0, so a first look goes in ladder order), each model's
    reference and floor before its first rung, for every family it extends."""
    place = {(m, r): i for m in models for i, r in enumerate(looked_rungs(profile, m))}

    def key(k: Key) -> tuple:
        s = seconds.get(k, 0.0)
        return not math.isfinite(s), s if math.isfinite(s) else 0.0, place[k[:2]], k

    cells = sorted((k for k in todo if k[1] not in (REFERENCE, NOISE_FLOOR)), key=key)
    visits: list[Visit] = []
    for model, rung in dict.fromkeys(k[:2] for k in cells):
        if not any(v.model == model for v in visits):
            fams = list(dict.fromkeys(f for m, _, f in cells if m == model))
            visits += [Visit(model, r, fams) for r in (REFERENCE, NOISE_FLOOR)
                       if (model, r) in place]
        visits.append(Visit(model, rung, [f for m, r, f in cells if (m, r) == (model, rung)]))
    return visits


def _extend(profile: Profile, models: list[str], st: LookState, todo: Collection[Key],
            stop_at: float) -> int:
    """Bring the cells of ``todo`` (and their reference and floor) to their targets, one
    rung load each (:func:`_visits`), until the clock stops; returns the items scored and
    adds each cell's cost to ``st.spent``."""
    scored = 0
    for visit in _visits(profile, models, todo, st.seconds):
        plan = plan_rung(profile, visit.model, visit.rung, families=visit.families,
                         n_items={f: st.target[(visit.model, visit.rung, f)]
                                  for f in visit.families})
        with LazyEngine(plan) as engine:
            for cell in plan.cells:
                if time.monotonic() >= stop_at:  # the cells extended so far stay extended
                    return scored
                done = evaluate_cell(plan, cell, engine)
                if done.scored:
                    k = (visit.model, visit.rung, cell.family)
                    was = st.spent.get(k, Spent(0.0, 0))
                    st.spent[k] = Spent(was.seconds + done.seconds, was.items + done.scored)
                    scored += done.scored
    return scored


__all__ = ["Judge", "Look", "LookState", "allocate", "looked_rungs", "run_looks"]
