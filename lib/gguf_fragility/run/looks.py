"""A budgeted sweep: looks that grow the undecided cells whose verdicts are cheapest (issue 27).

With a profile's ``budget`` (:class:`~gguf_fragility.profile.Budget`), the pipeline runs
:func:`run_looks` before chapter 4's notebooks. Every measurable family's cells (model ×
ladder rung × family, the noise floor included) first get the budget's ``first_items`` (at
most the profile's ``n_items``; a cell stored with more, such as the reference's calibration
items, holds those); after each look the planner
(:func:`gguf_fragility.stats.sequential.items_to_decide`, with the run's own seconds per
item) projects each undecided lens verdict (:func:`gguf_fragility.stats.sequential.
decide_cells`) to a number of items, and :func:`allocate` grows the cells whose verdicts
are cheapest per verdict to those counts, within half the minutes left (the rest waits for
the next look's plan), checking the clock
before each cell, until ``minutes`` or ``max_items`` per cell are spent. A cell
is only ever extended (:mod:`gguf_fragility.run.cells`), and each look's state is stored
before it extends (``RunLayout.looks_state``), so a killed run resumes the look it was in
and a later, larger budget continues the numbering; the statistics are valid at every
look. Chapter 4 then takes every steered cell as the looks left it
(:func:`gguf_fragility.run.sweep.budgeted_items`) and measures the rest of each rung
(cost, KL shift). Usage::

    from functools import partial
    from gguf_fragility.run.looks import run_looks
    from gguf_fragility.stats.sequential import judge_run
    from gguf_fragility.stats.settings import Settings
    profile = load_profile("mine")
    log = run_looks(profile, partial(judge_run, s=Settings.of(profile)))  # a line per look
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import NamedTuple, Protocol

import pandas as pd

from gguf_fragility import probes
from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.profile import Profile
from gguf_fragility.run.cells import LazyEngine, evaluate_cell
from gguf_fragility.run.plan import looked_families, looked_rungs, plan_rung
from gguf_fragility.run.sweep import budgeted_items, gate
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
    estimate, confidence sequence ``cs_low``/``cs_high``, margin, ``p_beyond``, ``p_change``,
    ``p_equivalent``, label, ``can_decide``, ``decided``), the judge's ``items`` (further
    items projected to the lens's verdict) and ``against_floor``, then per lens row:

    - ``seconds_to_decide``: seconds of further looks until the lens's verdict in the looks'
      own plan (:func:`projected_seconds`: 0 when decided, ``inf`` when not projected within
      its item cap);

    and, the same on every lens row of a cell:

    - ``look_decided``: the look that first decided the cell (empty while undecided); kept
      across resumed and extended runs;
    - ``looks``: looks run so far (the numbering goes on across runs);
    - ``seconds_per_item``: the cell's measured wall seconds per item in the looks so far
      (kept across resumed and extended runs; model loads excluded; empty when the looks
      scored none of its items, e.g. a cell stored by a fixed sweep and decided at once).

    A site reads "a further N minutes" from ``seconds_to_decide``
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
                 positions: Mapping[tuple[str, str], int], *, cap: Mapping[Key, int]):
        """An object with ``lenses`` (one row per cell and lens, with ``n``, ``items``: further
        items projected to its verdict, and ``against_floor``) and ``cells`` (``model, rung,
        family, decided``)."""


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

    After each look only the undecided cells :func:`allocate` picks grow: to the items their
    lens verdicts are projected at, cheapest per verdict first (a reference's and floor's
    items shared by the rungs of a family), within half the minutes left;
    cells out of reach wait while any cell is in reach. Within a look the cells are visited
    cheapest projected decision first (out of reach last), each model's reference and floor
    first for the families extended (the reference must hold every item a rung is compared
    on; the floor grows only with a fidelity verdict the look pays for). The clock is
    checked before each cell, so the minutes go where decisions are likely and a look
    overruns them by one cell's extension at most; the cells extended so far stay extended
    (every cell write is atomic). A cell's seconds per item are those of its own scoring in
    this run's looks, kept across resumes (cells not yet scored take their model's median:
    :func:`filled_costs`).
    """
    budget = profile.budget
    if budget is None:
        raise ValueError(f"profile {profile.name!r} has no budget; add e.g. "
                         "budget: {minutes: 30, look_items: 4} or run with --budget 30m")
    stop_at = time.monotonic() + (budget.minutes * 60 if budget.minutes else math.inf)
    models = [m for m in profile.models if _gate_ok(profile, m)]
    target: dict[Key, int] = {}
    cap: dict[Key, int] = {}
    families = {m: looked_families(profile, m) for m in models}
    positions = probes.item_positions({f for fs in families.values() for f in fs})
    sizes = Counter(f for f, _ in positions)  # items of each family
    for model in models:
        for rung in looked_rungs(profile, model):
            stored = budgeted_items(profile, model, rung)  # e.g. the reference's calibration items
            for family in families[model]:
                k = (model, rung, family)
                cap[k] = min(sizes[family], budget.max_items or sizes[family])
                target[k] = min(max(profile.first_items_for(model, family), stored[family]), cap[k])
    st = _resume(profile, target, cap) or LookState(1, target, {}, {}, {})
    todo = set(st.target)  # a process's first look visits every cell
    log = []
    while True:
        _save(profile, st)
        scored = _extend(profile, models, st, todo, stop_at)
        cost = filled_costs(st.target, _cost(st.spent))
        dec = judge(profile.layout, list(st.target), positions, cap=cap)
        lenses = dec.lenses.assign(seconds=projected_seconds(dec.lenses, st.target, cost, cap,
                                                             budget.look_items))
        _write(profile, lenses, dec.cells, st)
        cells = dec.cells.set_index(["model", "rung", "family"])
        open_ = [k for k in cells.index[~cells.decided] if k[1] not in (REFERENCE, NOISE_FLOOR)]
        left = (stop_at - time.monotonic()) / 60
        seconds = _next_verdict(lenses, cells.decided)
        target = allocate(dec.lenses, st.target, cost, cap, left * 60, budget.look_items)
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
        todo = {k for k in target if target[k] > st.target[k]}
        if not todo or time.monotonic() >= stop_at:
            return pd.DataFrame(log)
        st = st._replace(look=st.look + 1, target=target, seconds=dict(seconds))


def _next_verdict(lenses: pd.DataFrame, decided: pd.Series) -> pd.Series:
    """Each cell's seconds to its next lens verdict in the looks' plan: 0 when decided, else the
    least of its open lenses' ``seconds`` (inf when none is projected)."""
    open_ = lenses[lenses.can_decide.astype(bool) & ~lenses.decided.astype(bool)]
    nxt = open_.groupby(["model", "rung", "family"]).seconds.min().reindex(decided.index)
    return nxt.fillna(math.inf).where(~decided.astype(bool), 0.0).astype(float)


def filled_costs(cells: Collection[Key], cost: Mapping[Key, float]) -> dict[Key, float]:
    """Seconds per item of every cell of ``cells``: its measured ``cost``, else the median of
    its model's measured cells (of every model's when its model has none; 1 s when none is
    measured): a model's cells share its speed, another model's may be ten times slower (a
    reference the looks found stored, e.g., takes its model's)."""
    anywhere = statistics.median(cost.values()) if cost else 1.0
    by_model: dict[str, list[float]] = {}
    for (m, _, _), c in cost.items():
        by_model.setdefault(m, []).append(c)
    return {k: cost[k] if k in cost else statistics.median(by_model[k[0]])
            if k[0] in by_model else anywhere for k in cells}


class _Option(NamedTuple):
    """A way to grow one cell (:func:`allocate`): to ``items``, settling the lenses ``settles``."""

    per_verdict: float  # seconds per lens verdict
    seconds: float
    cell: Key
    items: int
    floor: bool  # the floor grows with it (a lens compared with the floor is among those settled)
    settles: tuple[str, ...]


class _Want(NamedTuple):
    """An open lens verdict of a cell: the items it is projected at."""

    items: float  # inf: not within the cell's cap
    floor: bool  # the lens compares the cell with the floor
    lens: str


def _wants(lenses: pd.DataFrame, held: Mapping[Key, int], cap: Mapping[Key, int],
           step: int) -> dict[Key, list[_Want]]:
    """The open lens verdicts of every undecided cell below its cap, each at ``n + items``
    items (at least ``n + step``, at most the cap)."""
    out: dict[Key, list[_Want]] = {}
    rows = lenses[lenses.can_decide.astype(bool) & ~lenses.decided.astype(bool)
                  & ~lenses.rung.isin([REFERENCE, NOISE_FLOOR])]
    for r in rows.itertuples():
        k = (r.model, r.rung, r.family)
        if held[k] < cap[k]:
            at = r.n + r.items
            out.setdefault(k, []).append(_Want(
                min(max(math.ceil(at), r.n + step), cap[k]) if math.isfinite(at) else math.inf,
                bool(r.against_floor), r.lens))
    return out


def _options(wants: Mapping[Key, list[_Want]], held: Mapping[Key, int],
             cost: Mapping[Key, float]) -> list[_Option]:
    """Every way to grow a cell of ``wants``: to each count one of its verdicts is projected
    at, priced at the items the cell, its reference and (for a lens compared with the floor)
    its floor lack of it."""
    out = []
    for k, ws in wants.items():
        for items in sorted({w.items for w in ws if math.isfinite(w.items)}):
            settled = [w for w in ws if w.items <= items]
            floor = any(w.floor for w in settled)
            sec = sum(cost[c] * max(0, items - held[c]) for c in _grown(k, floor) if c in held)
            out.append(_Option(sec / len(settled), sec, k, items, floor,
                               tuple(w.lens for w in settled)))
    return out


def _greedy(wants: dict[Key, list[_Want]], held: dict[Key, int], cost: Mapping[Key, float],
            budget_s: float) -> list[tuple[_Option, float]]:
    """Take the options of ``wants`` cheapest per verdict first while they fit in
    ``budget_s``, repricing after each (``held`` is raised as they are taken); returns each
    taken option with the seconds taken so far."""
    taken, total = [], 0.0
    while True:
        fit = [o for o in _options(wants, held, cost) if total + o.seconds <= budget_s]
        if not fit:
            return taken
        best = min(fit)
        total += best.seconds
        _grow(held, best)
        del wants[best.cell]
        taken.append((best, total))


def _grown(cell: Key, with_floor: bool) -> tuple[Key, ...]:
    """The cell, its reference and (``with_floor``) its floor: what growing it extends."""
    m, _, f = cell
    return (cell, (m, REFERENCE, f), *(((m, NOISE_FLOOR, f),) if with_floor else ()))


def _grow(held: dict[Key, int], o: _Option) -> None:
    """Raise the cell of ``o`` (its reference, and its floor when ``o.floor``) to ``o.items``."""
    for c in _grown(o.cell, o.floor):
        if c in held:
            held[c] = max(held[c], o.items)


def allocate(lenses: pd.DataFrame, holds: Mapping[Key, int], cost: Mapping[Key, float],
             cap: Mapping[Key, int], budget_s: float, step: int) -> dict[Key, int]:
    """
    The items every steered cell holds after the next look: the undecided cells whose lens
    verdicts are projected cheapest, per verdict, grow to those verdicts.

    Parameters
    ----------
    lenses : pandas.DataFrame
        The judge's lens rows (one per cell and lens): ``model, rung, family, lens, n``
        (items the lens read), ``items`` (further items projected to its verdict: 0 when
        decided, inf when not within the cell's cap), ``against_floor``, ``can_decide``,
        ``decided``.
    holds : mapping (model, rung, family) -> int
        Items each steered cell holds (the reference and floor included).
    cost : mapping (model, rung, family) -> float
        Seconds per item of each steered cell (:func:`filled_costs`).
    cap : mapping (model, rung, family) -> int
        Items each cell may reach.
    budget_s : float
        Seconds left of the budget (``inf`` without a clock); the look plans to spend half.
    step : int
        The budget's ``look_items``: the least a growing cell gains.

    Returns
    -------
    dict
        ``holds`` with the cells that grow raised, and each model's reference (and floor) in
        those families raised to cover them.

    Notes
    -----
    A greedy fill by seconds per verdict. An undecided lens verdict of a cell is projected at
    ``n + items`` items (at least ``n + step``); growing the cell to one such count settles
    every open lens projected within it, and costs the cell's new items plus the reference's
    beyond what it holds, and the floor's when a lens compared with the floor is settled
    (the fidelity lens: correctness and margin need only the reference). The cheapest
    option per verdict that fits in the seconds left is taken, its items counted as held by
    the reference and floor (a sibling rung of the same family then costs less), and the
    options priced again, until they fill half of ``budget_s`` (all of it when not even one
    fits in half): the projections replay few items and are optimistic, so the other half
    waits for the next look's plan, made on the items this one adds (a cell whose new items
    disagree then gives its minutes back, one a few items short gets them), and the looks
    shrink geometrically towards the end of the budget. Each cell taken grows to its count
    at once. When none fits at all, the cheapest grows by ``step`` only (a look always makes
    progress for a later, larger budget); when no verdict is projected within any cell's
    cap, every undecided cell grows by ``step`` (the projections may be wrong, and the
    minutes are the user's). :func:`projected_seconds` is the same fill without a budget.
    """
    held = dict(holds)
    wants = _wants(lenses, held, cap, step)
    if not any(math.isfinite(w.items) for ws in wants.values() for w in ws):  # none in reach
        for k in wants:
            _grow(held, _Option(0.0, 0.0, k, min(held[k] + step, cap[k]), True, ()))
        return held
    taken = [o for o, _ in _greedy(dict(wants), dict(held), cost, budget_s / 2)
             or _greedy(dict(wants), dict(held), cost, budget_s)]
    if not taken:  # nothing fits: the cheapest, by one step
        least = min(_options(wants, held, cost))
        taken = [least._replace(items=min(held[least.cell] + step, least.items))]
    for o in taken:
        _grow(held, o)
    return held


def projected_seconds(lenses: pd.DataFrame, holds: Mapping[Key, int],
                      cost: Mapping[Key, float], cap: Mapping[Key, int], step: int) -> list[float]:
    """
    Seconds of further looks until each lens row's verdict, in the looks' own plan.

    :func:`allocate`'s fill without a budget: the verdicts are taken cheapest per verdict
    first (a family's reference and floor items shared, every model in one plan), and each
    lens row gets the seconds spent when its option is taken; 0 when decided, ``inf`` when
    not projected within its cell's cap (or it cannot decide). A plug-in projection at the
    run's measured seconds per item, for pricing further minutes, not a power calculation.
    """
    taken = _greedy(_wants(lenses, dict(holds), cap, step), dict(holds), cost, math.inf)
    when = {(*o.cell, lens): total for o, total in taken for lens in o.settles}
    return [0.0 if d else when.get(k, math.inf) for d, k in zip(
        lenses.decided.astype(bool), zip(lenses.model, lenses.rung, lenses.family, lenses.lens,
                                         strict=True), strict=True)]


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


__all__ = ["Judge", "Look", "LookState", "allocate", "filled_costs", "projected_seconds",
           "run_looks"]
