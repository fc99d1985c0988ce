"""The looks' planner against hindsight, on items already measured (issue 27).

Run after budgeted runs of one profile on this machine, e.g. two of
``benchmarks/bench_sequential.py``, with their run folders (no model runs here)::

    .venv/bin/python benchmarks/bench_planner.py --profile default \\
        --runs /tmp/s3/sequential/default /tmp/s4/sequential/default [--seconds 580]

It pools, per cell (model × rung × family), the longest stored prefix over the runs (items
come in one pre-registered order and score the same each run: the overlaps are checked), and
replays a budgeted sweep's looks on them: every steered cell starts at its first items (the
reference at the items calibration scored), each look grows the cells the planner allocates
(:func:`gguf_fragility.run.looks.allocate` on
:func:`gguf_fragility.stats.sequential.judge_items`, within half the seconds left), each new
item costing its row's measured ``seconds``, until ``--seconds`` of scoring are spent (default:
what the first run's looks spent scoring). A cell grows only as far as the runs measured it.
Two planners fill the same way:

* **replay**: the looks' own projection (each cell's items replayed as the items to come);
* **hindsight**: each open lens told its true first decision on the pooled items
  (:func:`gguf_fragility.stats.sequential.first_decision` on all of them): the most a planner
  of this kind reaches with these seconds on these items;

and a bound for both, **best**: the most verdicts any allocation of the same seconds reaches
when it knows every verdict's item beforehand (:func:`best`, an integer programme; the first
look's items paid as the looks pay them).

Prints the lens verdicts after each look and in all for both, the bound, and how many the
pooled items hold at all: how far the planner is from the best one on what the runs measured
(not on items no run measured; a cell the runs grew far is one the planner already favoured).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp

from gguf_fragility import probes
from gguf_fragility.artifacts import load_items, read_ladder
from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE
from gguf_fragility.layout import RunLayout
from gguf_fragility.profile import Profile, load_profile
from gguf_fragility.run.looks import allocate
from gguf_fragility.run.plan import looked_rungs
from gguf_fragility.stats import sequential as sq
from gguf_fragility.stats.settings import Settings
from gguf_fragility.store import read_result_json

Key = tuple[str, str, str]
COMPARED = ["correct", "gold_logprob"]  # what must agree where two runs scored the same item
DIFFER = 0.1  # the share of a cell's overlap that may differ (generative families' batch noise)


class Pooled(NamedTuple):
    """The runs' items, one longest prefix per cell, in the pre-registered order."""

    items: pd.DataFrame  # load_items rows with ``rank``: the place in its cell
    spent: dict[Key, np.ndarray]  # measured seconds of each cell's first 1, 2, ... items
    ladder: pd.DataFrame
    positions: dict
    steered: list[Key]
    cap: dict[Key, int]  # items the runs measured per cell


def pool(runs: list[Path], profile: Profile) -> Pooled:
    """The longest stored prefix of every steered cell over ``runs``. Items scored by two runs
    must agree, but for a few of a generative family's (decoded in groups, whose batch shapes
    differ between runs: the noise floor's subject), which are counted and said; more than
    :data:`DIFFER` of a cell's overlap differing exits (another probe set or build)."""
    models = list(profile.models)
    best: dict[Key, pd.DataFrame] = {}
    differ = 0
    for root in runs:
        for key, rows in load_items(RunLayout(root), models).groupby(["model", "rung", "family"]):
            held = best.get(key)
            if held is not None:
                both = held.merge(rows, on="item_id", suffixes=("", "_other"))
                odd = np.zeros(len(both), bool)
                for c in COMPARED:
                    odd |= ~np.isclose(both[c], both[f"{c}_other"], equal_nan=True)
                if odd.mean() > DIFFER:
                    raise SystemExit(f"{root}: cell {key} scores {odd.sum()} of {len(both)} items "
                                     "otherwise than an earlier run: pool only runs of one setup "
                                     "(probe set, build)")
                differ += int(odd.sum())
            if held is None or len(rows) > len(held):
                best[key] = rows
    if differ:
        print(f"{differ} items scored differently by two runs (grouped decoding's batch shapes); "
              "each cell keeps its longest run's", flush=True)
    items = pd.concat(best.values(), ignore_index=True)
    positions = probes.item_positions(set(items.family))
    items = items.assign(pos=[positions[k] for k in zip(items.family, items.item_id, strict=True)])
    items = items.sort_values("pos", kind="stable")
    items["rank"] = items.groupby(["model", "rung", "family"]).cumcount()
    measurable = items[items.measurable.astype(bool)]
    steered = [(m, r, f) for m in models for r in looked_rungs(profile, m)
               for f in sorted(set(measurable.family[measurable.model == m])
                               & set(profile.families_for(m)))]
    spent = {k: np.cumsum(g["seconds"].to_numpy(float))
             for k, g in items.groupby(["model", "rung", "family"])}
    return Pooled(items, spent, read_ladder(RunLayout(runs[0]), models), positions, steered,
                  {k: len(spent.get(k, ())) for k in steered})


def start(p: Pooled, profile: Profile) -> dict[Key, int]:
    """Items each steered cell holds before the first look (the looks' rule)."""
    return {k: min(profile.items_for(k[0], k[2]) if k[1] == REFERENCE
                   else profile.first_items_for(k[0], k[2]), p.cap[k]) for k in p.steered}


def seconds_of(p: Pooled, held: dict[Key, int]) -> float:
    """Measured seconds of the first ``held[k]`` items of every cell."""
    return float(sum(p.spent[k][n - 1] for k, n in held.items() if n))


class Replay(NamedTuple):
    """One planner's replayed sweep."""

    verdicts: list[int]  # lens verdicts after each look
    seconds: float  # scoring seconds spent (the first look's included)


def replay(p: Pooled, s: Settings, profile: Profile, budget_s: float,
           told: Mapping[tuple[str, str, str, str], float] | None = None) -> Replay:
    """Looks on the pooled items: judge the prefixes held, allocate within the seconds left,
    grow (the clock checked before each cell, references and floors first), until the
    seconds are spent or no cell grows. With ``told`` (:class:`Hindsight`'s ``first``), each
    lens row's projected ``items`` are the further items to its first decision there."""
    held = start(p, profile)
    stored = seconds_of(p, {k: n for k, n in held.items() if k[1] == REFERENCE})  # calibration's
    step = profile.budget.look_items
    key = list(zip(p.items.model, p.items.rung, p.items.family, strict=True))
    cost = {k: p.spent[k][-1] / p.cap[k] if p.cap[k] else math.inf for k in p.steered}
    verdicts = []
    while True:
        prefix = p.items[p.items["rank"].to_numpy() < np.array([held.get(k, 0) for k in key])]
        dec = sq.judge_items(prefix, p.ladder, p.steered, p.positions, s, p.cap)
        lenses = dec.lenses
        if told is not None:
            at = [told.get(k, math.inf) for k in zip(lenses.model, lenses.rung, lenses.family,
                                                     lenses.lens, strict=True)]
            lenses = lenses.assign(items=np.maximum(np.array(at) - lenses.n.to_numpy(), 0.0))
        verdicts.append(int(lenses.decided.astype(bool)[
            ~lenses.rung.isin([REFERENCE, NOISE_FLOOR])].sum()))
        used = seconds_of(p, held) - stored
        target = allocate(lenses, held, cost, p.cap, budget_s - used, step)
        grow = sorted((k for k in p.steered if min(target[k], p.cap[k]) > held[k]),
                      key=lambda k: k[1] not in (REFERENCE, NOISE_FLOOR))
        if used >= budget_s or not grow:
            return Replay(verdicts, used)
        for k in grow:
            if seconds_of(p, held) - stored >= budget_s:
                break
            held[k] = min(target[k], p.cap[k])  # a reference or floor the runs grew less


class Hindsight(NamedTuple):
    """Each lens row's first decision on every pooled item of its cell."""

    first: dict[tuple[str, str, str, str], float]  # (model, rung, family, lens) -> item; inf: none
    reachable: int  # lens verdicts (reference and floor aside) the pooled items hold


def hindsight(p: Pooled, s: Settings) -> Hindsight:
    """:func:`~gguf_fragility.stats.sequential.first_decision` of every lens row that can decide
    its cell on all of the cell's pooled items (at its family's first Holm level, as the
    planner projects); ``inf`` for the others (no floor, no room, no items)."""
    whole = sq.judge_items(p.items, p.ladder, p.steered, p.positions, s, p.cap)
    level = sq.first_level(whole.lenses, s.alpha)
    first = {}
    for r, lv in zip(whole.lenses.itertuples(), level, strict=True):
        x = whole.effects[(r.model, r.rung, r.family, r.lens)]
        first[(r.model, r.rung, r.family, r.lens)] = float(sq.first_decision(
            x, sq.SPECS[r.lens], r.margin, level=lv, alpha=s.alpha).items) if r.can_decide else math.inf
    return Hindsight(first, sum(math.isfinite(v) for k, v in first.items()
                                if k[1] not in (REFERENCE, NOISE_FLOOR)))


def best(p: Pooled, known: Hindsight, profile: Profile, budget_s: float) -> int:
    """
    The most lens verdicts any allocation of ``budget_s`` scoring seconds reaches on the
    pooled items: a 0-1 integer programme (``scipy.optimize.milp``, HiGHS) on the hindsight's
    first decisions.

    A verdict at ``a`` items needs its cell, its reference and (fidelity) its floor grown to at
    least ``a``; growing a cell from the items it starts with (:func:`start`) to ``n`` costs
    its first ``n`` items' measured seconds less those it held. Each cell picks at most one
    of the counts its family's verdicts need (binary ``z``), each verdict is counted (binary
    ``y``) only when every cell it needs picked at least its count, and the seconds stay
    within ``budget_s`` less the first look's (every cell's first items, as :func:`replay`
    pays them). An upper bound for every planner of these looks on these items: it knows each
    verdict's item beforehand and pays no look twice.
    """
    held = start(p, profile)
    first = seconds_of(p, held) - seconds_of(p, {k: n for k, n in held.items() if k[1] == REFERENCE})
    need = {}  # verdict -> (items, cells it needs)
    for (m, r, f, lens), a in known.first.items():
        if math.isfinite(a) and r not in (REFERENCE, NOISE_FLOOR):
            cells = [(m, r, f), (m, REFERENCE, f)] + ([(m, NOISE_FLOOR, f)] if (
                lens == "fidelity" and (m, NOISE_FLOOR, f) in held) else [])
            need[(m, r, f, lens)] = (int(a), cells)
    levels = sorted({(k, a) for a, cells in need.values() for k in cells if a > held[k]})
    z = {kl: i for i, kl in enumerate(levels)}
    y = {v: len(z) + j for j, v in enumerate(need)}
    cost = np.zeros(len(z) + len(y))
    for (k, a), i in z.items():
        cost[i] = p.spent[k][a - 1] - (p.spent[k][held[k] - 1] if held[k] else 0.0)
    constraints = [LinearConstraint(cost, 0.0, budget_s - first)]  # the seconds
    for k in {k for k, _ in levels}:  # one count per cell
        row = np.zeros(len(cost))
        row[[i for (c, _), i in z.items() if c == k]] = 1.0
        constraints.append(LinearConstraint(row, 0.0, 1.0))
    for v, (a, cells) in need.items():  # y_v <= (cell k picked a count >= a), every k it needs
        for k in (k for k in cells if a > held[k]):
            row = np.zeros(len(cost))
            row[y[v]] = 1.0
            row[[i for (c, n), i in z.items() if c == k and n >= a]] = -1.0
            constraints.append(LinearConstraint(row, -np.inf, 0.0))
    c = np.zeros(len(cost))
    c[list(y.values())] = -1.0
    res = milp(c, constraints=constraints, integrality=np.ones(len(cost)), bounds=Bounds(0, 1))
    if not res.success:
        raise SystemExit(f"the integer programme failed: {res.message}")
    return round(-res.fun)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default", help="the runs' profile (params/), with a budget")
    ap.add_argument("--runs", nargs="+", required=True, type=Path,
                    help="run folders (outputs/<profile> of each run) to pool")
    ap.add_argument("--seconds", type=float, default=None,
                    help="scoring seconds to spend (default: what the first run's looks spent)")
    args = ap.parse_args()
    profile = load_profile(args.profile)
    if profile.budget is None:
        raise SystemExit(f"profile {args.profile!r} has no budget: give the runs' budgeted profile")
    s = Settings.of(profile)
    p = pool(args.runs, profile)
    budget = args.seconds
    if budget is None:
        state = RunLayout(args.runs[0]).looks_state
        if not state.is_file():
            raise SystemExit(f"{state} is missing: give --seconds")
        budget = sum(c["spent_seconds"] for c in read_result_json(state)["cells"])
    print(f"pooled {len(args.runs)} runs: {len(p.steered)} steered cells, "
          f"{int(sum(p.cap.values()))} items measured; {budget:.0f} s of scoring to spend",
          flush=True)
    known = hindsight(p, s)
    for name, how in (("replay", None), ("hindsight", known.first)):
        r = replay(p, s, profile, budget, how)
        print(f"{name:>9}: lens verdicts after each look {r.verdicts}; {r.verdicts[-1]} in all "
              f"({r.seconds:.0f} s scored)", flush=True)
    print(f"     best: {best(p, known, profile, budget):d} (any allocation, each verdict's item "
          "known beforehand: integer programme)")
    print(f"lens verdicts the pooled items hold at all: {known.reachable}")


if __name__ == "__main__":
    main()
