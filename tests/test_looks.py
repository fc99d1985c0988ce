"""The budgeted, sequential sweep (issue 27 stage 2): the profile's ``budget``, the cells'
sequential decisions, and the looks on the real SmolLM2 (Q2_K, one family, 2-5 items)."""

from functools import partial

import numpy as np
import pandas as pd
import pytest
from tiny_profile import copy_tiny_run, tiny_profile_yaml

from gguf_fragility import cli
from gguf_fragility.engine.rungs import NOISE_FLOOR
from gguf_fragility.layout import Table
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
    path.write_text(f"models:\n  {SMOL}: {{}}\n")
    assert load_profile(path).budget is None  # the fixed design stays the default


@pytest.mark.parametrize("budget, says", [
    ("budget: {minutes: 0, look_items: 4}", "budget.minutes: 0.0 is out of range; use >= 0.01"),
    ("budget: {minutes: 5, look_items: 0}", "budget.look_items: 0 is out of range; use >= 1"),
    ("budget: {max_items: 2}", "budget.max_items: 2 is below n_items 4"),
    ("budget: {look_items: 4}", "budget: neither minutes nor max_items is set"),
    ("budget: {minutez: 5}", "budget: unknown key(s) ['minutez']"),
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


def _looks_profile(folder, max_items, minutes=None):
    budget = f"budget: {{look_items: 1, max_items: {max_items}" + (
        f", minutes: {minutes}" if minutes else "") + "}\n"
    (folder / "look.yaml").write_text(tiny_profile_yaml([FAMILY], 2, n_threads=2)
                                      + f"outputs: {str(folder / 'outputs')!r}\n"
                                      + "noise_floor: false\n" + budget)
    return load_profile(folder / "look.yaml")


def _run_looks(profile):
    from gguf_fragility.run.looks import run_looks

    lines = []
    log = run_looks(profile, partial(sq.judge_run, s=Settings.of(profile)), progress=lines.append)
    return log, lines


@pytest.mark.llama
def test_looks_extend_and_a_larger_budget_only_adds(tmp_path, tiny_run):
    """Budget of 4 items per cell (2 first, one per look), then of 5: the stored 3-item cells
    are prefixes, each look adds an item to the undecided Q2_K cell (and its reference), and
    the larger budget only appends items, earlier rows untouched."""
    copy_tiny_run(tiny_run, tmp_path / "outputs", "look", [FAMILY])
    cell = tmp_path / "outputs/look/sweep" / SMOL / "Q2_K" / f"{FAMILY}.parquet"
    profile = _looks_profile(tmp_path, 4)
    log, lines = _run_looks(profile)
    assert len(lines) == len(log) >= 3 and lines[0].startswith("look 1: ")
    assert "cells decided" in lines[-1] and "no clock limit" in lines[-1]
    assert log.items_scored.sum() == 2  # item 4 at F16 and at Q2_K; items 1-3 were stored
    before = pd.read_parquet(cell)
    assert len(before) == 4
    table = pd.read_csv(profile.layout.table(Table.SEQUENTIAL))
    q2 = table[(table.rung == "Q2_K") & (table.lens == "correctness")].iloc[0]
    assert q2.n == 4 and q2.cs_low <= q2.estimate <= q2.cs_high

    log2, _ = _run_looks(_looks_profile(tmp_path, 5))
    after = pd.read_parquet(cell)
    assert len(after) == 5 and log2.items_scored.sum() == 2
    pd.testing.assert_frame_equal(after.iloc[:4].drop(columns="params_hash"),
                                  before.drop(columns="params_hash"))


@pytest.mark.llama
def test_looks_stop_when_the_minutes_are_spent(tmp_path, tiny_run):
    copy_tiny_run(tiny_run, tmp_path / "outputs", "look", [FAMILY])
    """Under a 0.6-second budget the looks stop on the clock, not on max_items: the cell is
    still undecided and far below its cap."""
    log, lines = _run_looks(_looks_profile(tmp_path, 50, minutes=0.01))
    last = log.iloc[-1]
    assert last.minutes_left == 0 and last.undecided == 1 and last.exhausted == 0
    assert lines[-1].endswith("0.0 min left")
    cell = tmp_path / "outputs/look/sweep" / SMOL / "Q2_K" / f"{FAMILY}.parquet"
    assert len(pd.read_parquet(cell)) < 10
