"""A budgeted sweep: looks of a few items per undecided cell until the budget is spent (issue 27).

With a profile's ``budget`` (:class:`~gguf_fragility.profile.Budget`), the pipeline runs
:func:`run_looks` before chapter 4's notebooks. Every measurable family's cells (model ×
ladder rung × family, the noise floor included) first get the profile's ``n_items``; each
further look adds ``look_items`` to every cell that the sequential statistics
(:func:`gguf_fragility.stats.sequential.decide_cells`) have not decided, cheapest projected
decision first (:func:`gguf_fragility.stats.sequential.items_to_decide` with the run's own
seconds per item), until ``minutes`` or ``max_items`` per cell are spent. A cell is only ever
extended (:mod:`gguf_fragility.run.cells`), so a killed, resumed or later larger budget
continues the same sequences; the statistics are valid at every look. Chapter 4 then finds
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
from collections.abc import Callable, Collection, Mapping
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
from gguf_fragility.store import write_table_atomic


class Look(NamedTuple):
    """One look of :func:`run_looks` (a row of its log)."""

    look: int
    cells: int  # cells the looks steer (model × rung × family)
    decided: int
    undecided: int
    exhausted: int  # undecided cells at max_items (or every item of their family)
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


def _write(profile: Profile, lenses: pd.DataFrame, cells: pd.DataFrame, look: int,
           first: dict) -> None:
    """``tables/sequential.csv``: per cell and lens, items used, the look that decided the
    cell, the label and the confidence sequence."""
    for c in cells.itertuples():
        if c.decided:
            first.setdefault((c.model, c.rung, c.family), look)
    keys = zip(lenses.model, lenses.rung, lenses.family, strict=True)
    write_table_atomic(lenses.assign(look_decided=[first.get(k) for k in keys], looks=look),
                       profile.layout.table(Table.SEQUENTIAL))


class Judge(Protocol):
    """How the looks learn which cells are decided: the statistics side's
    :func:`gguf_fragility.stats.sequential.judge_run` with its settings bound (``run`` and
    ``stats`` never import each other; the command line joins them)."""

    def __call__(self, run: RunLayout, steered: Collection[tuple[str, str, str]],
                 positions: Mapping[tuple[str, str], int], *,
                 cost: Mapping[tuple[str, str, str], float],
                 cap: Mapping[tuple[str, str, str], int]):
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
        One row per look (:class:`Look`). ``tables/sequential.csv`` holds the decisions
        after the last one.

    Notes
    -----
    The clock is checked before each rung of a look (the reference first, then the floor,
    then the rungs), so a look may end early when the minutes are spent; the cells it
    extended stay extended (every cell write is atomic), and a rerun continues from the
    stored cells. A cell's seconds per item are those of its own scoring so far (cells not
    yet scored in this run take the median of the others: :func:`~gguf_fragility.stats.
    sequential.judge_run`).
    """
    budget = profile.budget
    if budget is None:
        raise ValueError(f"profile {profile.name!r} has no budget; add e.g. "
                         "budget: {minutes: 30, look_items: 4} or run with --budget 30m")
    stop_at = time.monotonic() + (budget.minutes * 60 if budget.minutes else math.inf)
    models = [m for m in profile.models if _gate_ok(profile, m)]
    target: dict[tuple[str, str, str], int] = {}
    cap: dict[tuple[str, str, str], int] = {}
    order: dict[str, list[dict]] = {}  # each family's items in their pre-registered order
    for model in models:
        for family in _families(profile, model):
            if family not in order:
                order[family] = probes.load_family(family, validate=False).items
            size = len(order[family])
            for rung in looked_rungs(profile, model):
                cap[(model, rung, family)] = min(size, budget.max_items or size)
                target[(model, rung, family)] = min(profile.items_for(model, family),
                                                    cap[(model, rung, family)])
    positions = {(f, it["item_id"]): i for f, items in order.items() for i, it in enumerate(items)}
    cost: dict = {}
    log, first, look = [], {}, 0
    while True:
        look += 1
        scored = _extend(profile, models, target, cost, stop_at)
        dec = judge(profile.layout, list(target), positions, cost=cost, cap=cap)
        _write(profile, dec.lenses, dec.cells, look, first)
        cells = dec.cells.set_index(["model", "rung", "family"])
        open_ = [k for k in cells.index[~cells.decided] if k[1] not in (REFERENCE, NOISE_FLOOR)]
        grow = [k for k in open_ if target[k] < cap[k]]
        left = (stop_at - time.monotonic()) / 60
        row = Look(look, len(cells), int(cells.decided.sum()), len(open_), len(open_) - len(grow),
                   scored, round(max(left, 0), 1) if math.isfinite(left) else math.inf)
        log.append(row)
        progress(f"look {look}: {row.decided} of {row.cells} cells decided, {row.undecided} "
                 f"undecided ({row.exhausted} at their item cap), {scored} items scored, "
                 + (f"{max(left, 0):.1f} min left" if math.isfinite(left) else "no clock limit"))
        if not grow or time.monotonic() >= stop_at:
            return pd.DataFrame(log)
        for k in sorted(grow, key=lambda k: (cells.seconds.get(k, math.inf), k)):  # cheapest first
            target[k] = min(target[k] + budget.look_items, cap[k])


def _gate_ok(profile: Profile, model: str) -> bool:
    """Whether a model's calibration let its sweep run (its refusal is chapter 4's to print)."""
    try:
        gate(profile.layout, model)
    except RuntimeError:
        return False
    return True


def _extend(profile: Profile, models: list[str], target: dict, cost: dict, stop_at: float) -> int:
    """Bring every steered cell to its target items, reference and floor first (they must
    hold every item a rung is compared on), one rung load each; returns the items scored."""
    scored = 0
    for model in models:
        rungs = looked_rungs(profile, model)
        fams = sorted({f for (m, _, f) in target if m == model})
        for f in fams:  # the reference and floor cover every item of the family's rungs
            need = max(target[(model, r, f)] for r in rungs)
            for r in (REFERENCE, NOISE_FLOOR):
                if (model, r, f) in target:
                    target[(model, r, f)] = need
        for rung in rungs:
            if time.monotonic() >= stop_at:  # the cells extended so far stay extended
                return scored
            plan = plan_rung(profile, model, rung, families=fams,
                             n_items={f: target[(model, rung, f)] for f in fams})
            with LazyEngine(plan) as engine:
                for cell in plan.cells:
                    done = evaluate_cell(plan, cell, engine)
                    if done.scored:
                        scored += done.scored
                        cost[(model, rung, cell.family)] = done.seconds / done.scored
    return scored


__all__ = ["Judge", "Look", "looked_rungs", "run_looks"]
