"""The budgeted, sequential sweep (issue 27 stage 2): the profile's ``budget``, the cells'
sequential decisions, and the looks on the real SmolLM2 (Q2_K, one or two families, 2-5
items): extension, the clock, cheapest-first visits, the planning columns of
``sequential.csv`` and an exact resume after SIGKILL."""

import signal
import subprocess
import sys
import time
from functools import partial
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
from tiny_profile import copy_tiny_run, tiny_profile_yaml

from gguf_fragility import cli
from gguf_fragility.engine.rungs import NOISE_FLOOR
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.profile import Budget, ProfileError, load_profile, parse_minutes
from gguf_fragility.stats import relevance
from gguf_fragility.stats import sequential as sq
from gguf_fragility.stats.settings import DEFAULT_SETTINGS, Settings

SMOL = "smollm2-135m"
FAMILY = "science_mc"


def _problems(tmp_path, budget: str, n_items: int = 4) -> list[str]:
    path = tmp_path / "mine.yaml"
    path.write_text(f"models:\n  {SMOL}: {{}}\nn_items: {n_items}\n{budget}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return str(info.value).splitlines()


def test_budget_loads(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(f"models:\n  {SMOL}: {{}}\nbudget: {{minutes: 30, look_items: 4, max_items: 200}}\n")
    assert load_profile(path).budget == Budget(30.0, 4, 200)
    path.write_text(f"models:\n  {SMOL}: {{}}\nn_items: 64\nbudget: {{minutes: 5, first_items: 16}}\n")
    assert load_profile(path).budget.first_items == 16  # below n_items: the first look is smaller
    path.write_text(f"models:\n  {SMOL}: {{}}\n")
    assert load_profile(path).budget is None  # the fixed design stays the default


@pytest.mark.parametrize("budget, says", [
    ("budget: {minutes: 0, look_items: 4}", "budget.minutes: 0.0 is out of range; use >= 0.01"),
    ("budget: {minutes: 5, look_items: 0}", "budget.look_items: 0 is out of range; use >= 1"),
    ("budget: {max_items: 2}", "budget.max_items: 2 is below"),
    ("budget: {look_items: 4}", "budget: neither minutes nor max_items is set"),
    ("budget: {minutez: 5}", "budget: unknown key(s) ['minutez']"),
    ("budget: {minutes: 5, first_items: 0}", "budget.first_items: 0 is out of range; use >= 1"),
    ("budget: {max_items: 8, first_items: 9}", "budget.max_items: 8 is below the 9 items"),
    ("budget: 45", "budget: expected a mapping, got 45"),
])
def test_budget_validation(tmp_path, budget, says):
    assert any(says in line for line in _problems(tmp_path, budget)), _problems(tmp_path, budget)


def test_budget_flag_durations_and_error(capsys):
    assert [parse_minutes(t) for t in ("45m", "45", "1.5h", "90s")] == [45, 45, 90, 1.5]
    assert cli.main(["run", "--profile", "smoke", "--budget", "soon"]) == 2
    assert "--budget 'soon': expected a positive duration such as 45m" in capsys.readouterr().err


def _items(model, rung, family, correct, gold_lp, extracted):
    n = len(correct)
    return pd.DataFrame({"model": model, "rung": rung, "family": family,
                         "item_id": [f"{family}-{i:04d}" for i in range(n)], "correct": correct,
                         "extracted": extracted, "mode": "loglik", "margin": 1.0,
                         "gold_logprob": gold_lp, "ref_answer_logprob": np.nan,
                         "answer_kl": 0.0, "answer_same_top": 1.0, "measurable": True})


def test_decide_cells_beyond_equivalent_and_undecided():
    """A rung that loses every item is a loss beyond the margin on the correctness lens; one
    identical to the reference on 600 items is decided (equivalent) on every lens; 6 items
    decide nothing. Labels, sequences and decisions read in the lens's unit."""
    n = 600
    ref = _items("m", "F16", "fam", [True] * n, [-0.05] * n, ["A"] * n)
    same = ref.assign(rung="Q8_0")
    broken = _items("m", "Q2_K", "fam", [False] * n, [-5.0] * n, ["B"] * n)
    floor = ref.assign(rung=NOISE_FLOOR)
    few = pd.concat([ref, _items("m", "Q4_K_M", "fam", [True] * 6, [-0.05] * 6, ["A"] * 6)])
    bpw = {("m", "Q2_K"): 2.6, ("m", "Q4_K_M"): 4.8, ("m", "Q8_0"): 8.5}
    pos = {("fam", f"fam-{i:04d}"): i for i in range(n)}
    dec = sq.decide_cells(pd.concat([ref, same, broken, floor]), {"m": "F16"}, bpw, pos,
                          DEFAULT_SETTINGS)
    lens = dec.lenses.set_index(["rung", "lens"])
    assert lens.loc[("Q2_K", "correctness"), "label"] == relevance.BEYOND
    assert lens.loc[("Q2_K", "correctness"), "cs_high"] < -0.9
    assert lens.loc[("Q8_0", "correctness"), "label"] == relevance.EQUIVALENT
    cells = dec.cells.set_index("rung")
    assert bool(cells.loc["Q8_0", "decided"]) and bool(cells.loc["Q2_K", "decided"])
    small = sq.decide_cells(few, {"m": "F16"}, bpw, pos, DEFAULT_SETTINGS)
    assert not small.cells.decided.any()
    assert set(small.lenses.label) == {relevance.UNDECIDED}
    assert not small.lenses.set_index("lens").loc["fidelity", "can_decide"]  # no floor


def _looks_profile(folder, max_items, minutes=None, families=(FAMILY,), settings="", first=None):
    budget = f"budget: {{look_items: 1, max_items: {max_items}" + (
        f", minutes: {minutes}" if minutes else "") + (
        f", first_items: {first}" if first else "") + "}\n"
    (folder / "look.yaml").write_text(tiny_profile_yaml(list(families), 2, n_threads=2)
                                      + f"outputs: {str(folder / 'outputs')!r}\n"
                                      + "noise_floor: false\n" + settings + budget)
    return load_profile(folder / "look.yaml")


def _run_looks(profile, progress=None):
    from gguf_fragility.run.looks import run_looks

    lines = []
    log = run_looks(profile, partial(sq.judge_run, s=Settings.of(profile)),
                    progress=progress or lines.append)
    return log, lines


@pytest.mark.llama
def test_looks_extend_and_a_larger_budget_only_adds(tmp_path, tiny_run):
    """Budget of 4 items per cell (2 first, at least one per look), then of 5: the stored
    3-item cells hold their 3 (the first look scores none), a later look adds the fourth item
    to the undecided Q2_K cell (and its reference), and the larger budget only appends items,
    earlier rows untouched."""
    copy_tiny_run(tiny_run, tmp_path / "outputs", "look", [FAMILY])
    cell = tmp_path / "outputs/look/sweep" / SMOL / "Q2_K" / f"{FAMILY}.parquet"
    profile = _looks_profile(tmp_path, 4)
    log, lines = _run_looks(profile)
    assert len(lines) == len(log) >= 2 and lines[0].startswith("look 1: ")
    assert log.items_scored.iloc[0] == 0  # 3 stored items are more than the 2 first ones
    assert "lens verdicts reached" in lines[-1] and "cells decided" in lines[-1]
    assert "no clock limit" in lines[-1]
    assert log.items_scored.sum() == 2  # item 4 at F16 and at Q2_K; items 1-3 were stored
    before = pd.read_parquet(cell)
    assert len(before) == 4
    table = pd.read_csv(profile.layout.table(Table.SEQUENTIAL))
    q2 = table[(table.rung == "Q2_K") & (table.lens == "correctness")].iloc[0]
    assert q2.n == 4 and q2.cs_low <= q2.estimate <= q2.cs_high

    log2, _ = _run_looks(_looks_profile(tmp_path, 5))
    after = pd.read_parquet(cell)
    assert len(after) == 5 and log2.items_scored.sum() == 2
    # the looks go on from the last one (it is judged again, then one more), not from look 1
    assert log2.look.tolist() == [log.look.iloc[-1], log.look.iloc[-1] + 1]
    assert (pd.read_csv(profile.layout.table(Table.SEQUENTIAL)).looks == log2.look.iloc[-1]).all()
    pd.testing.assert_frame_equal(after.iloc[:4].drop(columns="params_hash"),
                                  before.drop(columns="params_hash"))


@pytest.mark.llama
def test_chapter_4_takes_the_cells_as_the_looks_left_them(tmp_path, tiny_run):
    """A budget of one item per cell (n_items 3): chapter 4's sweep_rung returns the Q2_K
    cell's one item and adds none; the fixed design (no budget) brings it to its 3. Old code
    planned n_items in chapter 4, so a budgeted run's undecided cells were topped up to the
    fixed design after the looks, outside the budget."""
    from gguf_fragility.run.sweep import sweep_rung

    copy_tiny_run(tiny_run, tmp_path / "outputs", "look", [FAMILY])
    cell = tmp_path / "outputs/look/sweep" / SMOL / "Q2_K" / f"{FAMILY}.parquet"
    cell.unlink()  # the looks score it from its first item
    (tmp_path / "look.yaml").write_text(
        tiny_profile_yaml([FAMILY], 3, n_threads=2) + f"outputs: {str(tmp_path / 'outputs')!r}\n"
        + "noise_floor: false\nbudget: {first_items: 1, max_items: 1}\n")
    profile = load_profile(tmp_path / "look.yaml")
    _run_looks(profile)
    assert len(pd.read_parquet(cell)) == 1
    assert len(sweep_rung(profile, SMOL, "Q2_K")) == 1 and len(pd.read_parquet(cell)) == 1
    fixed = tmp_path / "fixed" / "look.yaml"  # the same profile name, without the budget
    fixed.parent.mkdir()
    fixed.write_text((tmp_path / "look.yaml").read_text().split("budget:")[0])
    assert len(sweep_rung(load_profile(fixed), SMOL, "Q2_K")) == 3 and len(pd.read_parquet(cell)) == 3


@pytest.mark.llama
def test_looks_stop_when_the_minutes_are_spent(tmp_path, tiny_run):
    copy_tiny_run(tiny_run, tmp_path / "outputs", "look", [FAMILY])
    """Under a 0.6-second budget the looks stop on the clock, not on max_items: the cell is
    still undecided and far below its cap."""
    log, lines = _run_looks(_looks_profile(tmp_path, 50, minutes=0.01))
    last = log.iloc[-1]
    assert last.minutes_left == 0 and last.undecided == 1 and last.verdicts_decided == 0
    assert lines[-1].endswith("0.0 min left")
    cell = tmp_path / "outputs/look/sweep" / SMOL / "Q2_K" / f"{FAMILY}.parquet"
    assert len(pd.read_parquet(cell)) < 10
    table = pd.read_csv(RunLayout(tmp_path / "outputs" / "look").table(Table.SEQUENTIAL))
    assert (table.seconds_to_decide > 0).all()  # undecided: some further seconds, or inf


def _lens_rows(rows) -> pd.DataFrame:
    """Open lens rows of model m for :func:`allocate`: (rung, family, lens, n, further items)."""
    return pd.DataFrame([{"model": "m", "rung": r, "family": f, "lens": lens, "n": n, "items": it,
                          "against_floor": lens == "fidelity", "can_decide": True,
                          "decided": False} for r, f, lens, n, it in rows])


HOLDS = {("m", "F16", "a"): 64, ("m", "F16", "b"): 64, ("m", "F16-floor", "a"): 8,
         ("m", "F16-floor", "b"): 8, ("m", "Q8_0", "a"): 8, ("m", "Q4", "a"): 8,
         ("m", "Q8_0", "b"): 8}
ONE_SECOND = dict.fromkeys(HOLDS, 1.0)
CAPS = dict.fromkeys(HOLDS, 300)


def test_allocate_grows_the_cheapest_verdicts_first():
    """Priced per verdict (a cell's new items, its reference's beyond the 64 it holds, the
    floor's only for the fidelity lens; one second per item here): Q4/a's margin verdict at
    48 items costs 40 s, Q8_0/b's at 100 costs 92 + 36 = 128 s, Q8_0/a's three verdicts at
    160 cost 152 + 96 + 152 = 400 s (133 s each). A look plans half the seconds left and
    grows the cells taken to their counts at once; the floor only with fidelity. Old code
    grew every cell in reach by look_items, cheapest cell first, and raised the floor with
    every rung."""
    from gguf_fragility.run.looks import allocate

    rows = _lens_rows([("Q8_0", "a", lens, 8, 152) for lens in ("correctness", "margin", "fidelity")]
                      + [("Q4", "a", "margin", 8, 40), ("Q8_0", "b", "correctness", 8, np.inf),
                         ("Q8_0", "b", "margin", 8, 92)])
    q4, q8b = {("m", "Q4", "a"): 48}, {("m", "Q8_0", "b"): 100, ("m", "F16", "b"): 100}
    assert allocate(rows, HOLDS, ONE_SECOND, CAPS, 1200, 16) == {  # 568 s fit in 600
        **HOLDS, **q4, **q8b, ("m", "Q8_0", "a"): 160, ("m", "F16", "a"): 160,
        ("m", "F16-floor", "a"): 160}
    assert allocate(rows, HOLDS, ONE_SECOND, CAPS, 1000, 16) == {**HOLDS, **q4, **q8b}  # 500
    assert allocate(rows, HOLDS, ONE_SECOND, CAPS, 300, 16) == {**HOLDS, **q4}  # 168 > 150
    # none fits in half (30 s): the look takes what fits in all (40 of 60 s)
    assert allocate(rows, HOLDS, ONE_SECOND, CAPS, 60, 16) == {**HOLDS, **q4}
    least = allocate(rows, HOLDS, ONE_SECOND, CAPS, 10, 16)  # none fits: the cheapest, one step
    assert least == {**HOLDS, ("m", "Q4", "a"): 24}


HUNDRED = {**HOLDS, ("m", "Q8_0", "a"): 100, ("m", "Q4", "a"): 100}


def test_allocate_prices_the_floor_only_for_fidelity_and_shares_the_reference():
    """From 100 items, a margin verdict at 130 (30 + 66 = 96 s) comes before fidelity's at 160
    (60 + 96 + the floor's 152 s: 154 s per verdict); a sibling rung's verdict at 160 costs
    only its own 60 items once the reference holds them (156 + 60 s fit in 250, 156 + 156
    would not). Neither first option fits in half the seconds, so each look takes all."""
    from gguf_fragility.run.looks import allocate

    rows = _lens_rows([("Q8_0", "a", "margin", 100, 30), ("Q8_0", "a", "fidelity", 100, 60)])
    assert allocate(rows, HUNDRED, ONE_SECOND, CAPS, 150, 16) == {
        **HUNDRED, ("m", "Q8_0", "a"): 130, ("m", "F16", "a"): 130}
    rows = _lens_rows([("Q8_0", "a", "margin", 100, 60), ("Q4", "a", "margin", 100, 60)])
    assert allocate(rows, HUNDRED, ONE_SECOND, CAPS, 250, 16) == {
        **HUNDRED, ("m", "Q8_0", "a"): 160, ("m", "Q4", "a"): 160, ("m", "F16", "a"): 160}


def test_allocate_grows_every_open_cell_by_a_step_when_none_is_in_reach():
    """No verdict projected within the caps: every undecided cell gains look_items (the floor
    and reference cover them); a cell at its cap stays."""
    from gguf_fragility.run.looks import allocate

    rows = _lens_rows([("Q8_0", "a", "fidelity", 8, np.inf), ("Q8_0", "b", "margin", 8, np.inf),
                       ("Q4", "a", "margin", 8, np.inf)])
    caps = {**CAPS, ("m", "Q4", "a"): 8}
    assert allocate(rows, HOLDS, ONE_SECOND, caps, 1e6, 16) == {
        **HOLDS, ("m", "Q8_0", "a"): 24, ("m", "Q8_0", "b"): 24, ("m", "F16-floor", "a"): 24,
        ("m", "F16-floor", "b"): 24}


def test_projected_seconds_follow_the_plan():
    """Without a budget the fill of the first allocate test takes Q4/a (40 s), then Q8_0/b
    (128 s more: 168), then Q8_0/a's three verdicts (400 s more: 568); a verdict out of reach
    is inf, a decided one 0."""
    from gguf_fragility.run.looks import projected_seconds

    rows = _lens_rows([("Q8_0", "a", lens, 8, 152) for lens in ("correctness", "margin", "fidelity")]
                      + [("Q4", "a", "margin", 8, 40), ("Q8_0", "b", "correctness", 8, np.inf),
                         ("Q8_0", "b", "margin", 8, 92), ("Q4", "a", "correctness", 8, 0)])
    rows.loc[6, "decided"] = True
    assert projected_seconds(rows, HOLDS, ONE_SECOND, CAPS, 16) == [
        568.0, 568.0, 568.0, 40.0, np.inf, 168.0, 0.0]


def test_filled_costs_take_the_models_own_median():
    """A cell the looks never scored (a stored reference) costs its model's median, not every
    model's: the 1.5B model is ten times slower."""
    from gguf_fragility.run.looks import filled_costs

    cost = {("s", "Q8_0", "a"): 0.2, ("s", "Q4", "a"): 0.4, ("q", "Q4", "a"): 2.0,
            ("q", "Q2", "a"): 4.0, ("q", "Q2", "b"): 6.0}
    got = filled_costs([("s", "F16", "a"), ("q", "F16", "a"), ("x", "F16", "a"), ("s", "Q4", "a")],
                       cost)
    assert got == {("s", "F16", "a"): pytest.approx(0.3), ("q", "F16", "a"): 4.0,
                   ("x", "F16", "a"): 2.0, ("s", "Q4", "a"): 0.4}


TWO = ("factual_recall", "knowledge_mc")
# a correctness margin so wide (95 accuracy points) that both Q2_K cells' correctness sequences
# decide from 3 items; a gold-probability margin (68.5 points) above what the reference gives
# knowledge_mc's gold answers (under 13 points each), so its margin lens has no room and the
# cell is decided with its correctness; factual_recall's reply-probability sequence (the
# default 3-point margin, a loss of ~15 points) is not decided within 6 items
WIDE = "equivalence_margin: 0.95\ngold_prob_margin_pp: 68.5\n"


def _two_families(tiny_run, folder):
    """The two families' tiny run without its Q2_K cells, and a budget whose looks start them at
    one item (up to 6, at least one more per look): projected from their first item, both
    are grown to 3 items at look 2 (knowledge_mc, the cheaper per item, first), where their
    correctness verdicts come and knowledge_mc is decided; factual_recall's margin lens stays
    open and the cell grows by an item a look up to its 6."""
    copy_tiny_run(tiny_run, folder / "outputs", "look", list(TWO))
    for family in TWO:
        (folder / "outputs/look/sweep" / SMOL / "Q2_K" / f"{family}.parquet").unlink()
    return _looks_profile(folder, 6, families=TWO, settings=WIDE, first=1)


class Visited(NamedTuple):
    """One evaluate_cell call of the looks."""

    look: int
    rung: str
    family: str
    scored: int


class Straight(NamedTuple):
    """An uninterrupted budgeted run (the ``straight`` fixture)."""

    profile: object
    log: pd.DataFrame
    visits: list  # Visited, in call order
    tables: list  # tables/sequential.csv after each look
    seconds: float  # wall seconds of run_looks


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_run):
    """Two families under WIDE margins (:func:`_two_families`), no clock: run straight
    through, every cell visit (the real evaluate_cell) and each look's table recorded."""
    from gguf_fragility.run import looks

    profile = _two_families(tiny_run, tmp_path_factory.mktemp("straight"))
    visits, tables, real = [], [], looks.evaluate_cell

    def record(plan, cell, engine=None):
        done = real(plan, cell, engine)
        visits.append(Visited(len(tables) + 1, plan.rung, cell.family, done.scored))
        return done

    def after_look(line):
        tables.append(pd.read_csv(profile.layout.table(Table.SEQUENTIAL)))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(looks, "evaluate_cell", record)
        t0 = time.perf_counter()
        log, _ = _run_looks(profile, after_look)
    return Straight(profile, log, visits, tables, time.perf_counter() - t0)


def _cells(table: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of a sequential table (its per-cell columns repeat on each lens row),
    ``decided`` when every lens that can decide it has, ``seconds_to_decide`` those of its
    next lens verdict (the least of its open lenses', 0 once decided)."""
    cells = table.drop_duplicates(["model", "rung", "family"]).set_index("family")
    decided = table[table.can_decide].groupby("family").decided.all()
    open_ = table[table.can_decide & ~table.decided].groupby("family").seconds_to_decide.min()
    return cells.assign(decided=decided, seconds_to_decide=open_.reindex(cells.index).where(
        ~decided.reindex(cells.index), 0.0).fillna(np.inf))


@pytest.mark.llama
def test_a_look_visits_cells_cheapest_first(straight):
    """Within a look the reference's cells come first, then the rung's cells in order of the
    previous look's projected seconds to decide (inf last); the reference's in the same order.
    Old code visited every cell in ladder and family order, whatever the projections."""
    reordered = False
    for look in range(2, len(straight.tables) + 1):
        seen = [v for v in straight.visits if v.look == look]
        rungs = [v.rung for v in seen]
        assert rungs == sorted(rungs, key=lambda r: r != "F16"), (look, seen)
        secs = _cells(straight.tables[look - 2]).seconds_to_decide
        q2 = [v.family for v in seen if v.rung == "Q2_K"]
        assert q2 == sorted(q2, key=lambda f: (not np.isfinite(secs[f]),
                                               secs[f] if np.isfinite(secs[f]) else 0, f)), look
        assert [v.family for v in seen if v.rung == "F16"] == q2
        reordered |= q2 != sorted(q2)
    assert reordered, "premise: a look where knowledge_mc is projected the cheaper (see WIDE)"


@pytest.mark.llama
def test_sequential_table_plans_in_seconds(straight):
    """seconds_to_decide is 0 once decided, positive before, and inf for a cell whose open lens
    is not projected to decide within its items (factual_recall at its 6); seconds_per_item
    is the cell's measured cost, one value per cell, and the looks' items at those costs fit
    in the run's wall time."""
    first, last = _cells(straight.tables[0]), _cells(straight.tables[-1])
    assert not first.decided.any() and (first.seconds_to_decide > 0).all()
    assert np.isfinite(first.seconds_to_decide).all()
    assert last.decided.to_dict() == {"factual_recall": False, "knowledge_mc": True}
    assert last.seconds_to_decide.to_dict() == {"factual_recall": np.inf, "knowledge_mc": 0.0}
    assert last.n.to_dict() == {"factual_recall": 6, "knowledge_mc": 3}
    table = pd.read_csv(straight.profile.layout.table(Table.SEQUENTIAL))
    assert (table.groupby("family").seconds_per_item.nunique() == 1).all()
    scored = pd.DataFrame(straight.visits).query("rung == 'Q2_K'").groupby("family").scored.sum()
    assert (scored > 0).all() and (last.seconds_per_item[scored.index] > 0).all()
    assert (last.seconds_per_item[scored.index] * scored).sum() < straight.seconds


def _looks_cmd(profile_path) -> list[str]:
    code = ("from functools import partial; from gguf_fragility.profile import load_profile; "
            "from gguf_fragility.run.looks import run_looks; "
            "from gguf_fragility.stats.sequential import judge_run; "
            "from gguf_fragility.stats.settings import Settings; "
            f"p = load_profile({str(profile_path)!r}); "
            "run_looks(p, partial(judge_run, s=Settings.of(p)))")
    return [sys.executable, "-c", code]


def _kill_after_a_decision(cmd: list[str], layout) -> None:
    """Start ``cmd``; SIGKILL it at the first cell written after a table that shows a decided
    cell (inside the next look, its other cells not yet extended)."""
    table, seen, decided = layout.table(Table.SEQUENTIAL), None, None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while decided is None or not any(c.stat().st_mtime_ns > decided for c in layout.cells()):
            assert proc.poll() is None, "the looks ended before a look after a decision"
            if table.is_file() and table.stat().st_mtime_ns != seen:
                seen = table.stat().st_mtime_ns
                decided = seen if pd.read_csv(table).decided.any() else None
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


TIMED = ["seconds_to_decide", "seconds_per_item"]  # measured wall times differ between runs


@pytest.mark.llama
def test_a_run_killed_during_a_look_resumes_it_exactly(straight, tiny_run, tmp_path):
    """Killed (SIGKILL) during the look after the first decision and rerun, the looks end with
    the cells and the sequential table of the uninterrupted run; a larger budget afterwards
    extends only the undecided cell and keeps each verdict's look_decided. Old code restarted
    from look 1 on the stored cells: the cell decided earlier was decided again at look 1."""
    profile = _two_families(tiny_run, tmp_path)
    want = pd.read_csv(straight.profile.layout.table(Table.SEQUENTIAL))
    verdicts = want.look_decided.dropna()
    assert len(verdicts) and (verdicts > 1).all() and straight.tables[-2].decided.any(), (
        "premise: lens verdicts after look 1, a cell decided a look before the last")
    _kill_after_a_decision(_looks_cmd(tmp_path / "look.yaml"), profile.layout)
    log, _ = _run_looks(profile)
    assert log.look.iloc[0] > 1  # resumed the killed look
    got = pd.read_csv(profile.layout.table(Table.SEQUENTIAL))
    pd.testing.assert_frame_equal(got.drop(columns=TIMED), want.drop(columns=TIMED))
    cells = [c.relative_to(profile.layout.root) for c in profile.layout.cells()]
    assert cells == [c.relative_to(straight.profile.layout.root)
                     for c in straight.profile.layout.cells()]
    cols = ["item_id", "raw_output", "correct", "gold_logprob", "params_hash"]
    for c in cells:
        pd.testing.assert_frame_equal(pd.read_parquet(profile.layout.root / c)[cols],
                                      pd.read_parquet(straight.profile.layout.root / c)[cols])
    log2, _ = _run_looks(_looks_profile(tmp_path, 7, families=TWO, settings=WIDE, first=1))
    again = pd.read_csv(profile.layout.table(Table.SEQUENTIAL))
    assert log2.look.iloc[0] == log.look.iloc[-1]  # continued, not restarted at look 1
    assert log2.items_scored.sum() == 2  # factual_recall's 7th item at F16 and Q2_K
    sizes = {(r, f): len(pd.read_parquet(profile.layout.cell(SMOL, r, f)))
             for r in ("F16", "Q2_K") for f in TWO}
    assert sizes[("Q2_K", "factual_recall")] == 7 and sizes[("Q2_K", "knowledge_mc")] == 3
    pd.testing.assert_series_equal(again.look_decided, want.look_decided)


@pytest.mark.llama
def test_the_clock_is_checked_before_each_cell(tiny_run, tmp_path, monkeypatch):
    """Under a clock that jumps 10 minutes with each scored cell, a 5-minute budget scores
    one cell and starts no other. Old code checked the clock only before each rung, so the
    reference's second family was scored after the minutes were spent."""
    from gguf_fragility.run import looks

    copy_tiny_run(tiny_run, tmp_path / "outputs", "look", list(TWO))
    skew, late, real = [0.0], [], looks.evaluate_cell

    def record(plan, cell, engine=None):
        late.append(skew[0] > 0)
        done = real(plan, cell, engine)
        skew[0] += 600.0 * (done.scored > 0)
        return done

    monkeypatch.setattr(looks, "evaluate_cell", record)
    monkeypatch.setattr(looks, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + skew[0]))
    log, _ = _run_looks(_looks_profile(tmp_path, 8, minutes=5, families=TWO))
    assert log.items_scored.sum() == 1 and late.count(True) == 0
    assert log.minutes_left.iloc[-1] == 0
