"""Tests of :mod:`~gguf_fragility.stats.sequential`: worked example against the authors'
code, time-uniform coverage, familywise false-loss rates under adaptive extension (and
the fixed-sample test failing the same scenario), labels, the planner.

Every simulation is seeded and vectorized. Monte-Carlo tolerances are three binomial
standard errors of the simulated rate.

    PYTHONPATH=lib python -m pytest -q tests/test_sequential.py
"""

import math

import numpy as np
import pandas as pd
import pytest

from gguf_fragility.stats import relevance
from gguf_fragility.stats import sequential as sq
from gguf_fragility.stats.lens.base import ABOVE, BELOW
from gguf_fragility.stats.multiplicity import fixed_sequence_graph

ALPHA = 0.05
UNIT = sq.Spec(0.0, 1.0, BELOW)


def _tol(rate: float, reps: int) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / reps)


# ----------------------------------------------------------------- worked example

X = np.array([0.6, 0.4, 0.7, 0.5, 0.55, 0.45, 0.65, 0.5, 0.6, 0.7])


def test_bets_match_confseq_predmix_eb():
    # confseq 0.0.11 (Waudby-Smith & Ramdas' package), betting_strategies.lambda_predmix_eb(X, alpha=0.05)
    ref = [5.88008714, 4.64743773, 4.05764562, 3.61415649, 3.41576945, 3.27728645,
           3.13672019, 2.99432014, 2.91776618, 2.84514665]
    np.testing.assert_allclose(sq._bets(X, 0.05), ref, rtol=1e-7)


@pytest.mark.parametrize(("null", "side", "ref"), [
    # confseq 0.0.11 betting.betting_mart(X, 0.45, alpha=0.05, theta=1): capital for mean > 0.45
    (0.45, ABOVE, [1.166667, 1.101852, 1.407922, 1.48614, 1.651266, 1.651266, 2.018214,
                   2.130337, 2.485394, 3.175781]),
    # betting_mart(X, 0.7, alpha=0.05, theta=0): capital for mean < 0.7
    (0.7, BELOW, [1.166667, 1.75, 1.75, 2.333333, 2.916667, 4.131944, 4.476273, 5.968364,
                  6.963092, 6.963092]),
])
def test_capital_matches_confseq_betting_mart(null, side, ref):
    # one side of the hedged capital, bets tuned at alpha / 2: pass 2 * 0.05; confseq's
    # default trunc_scale is 1/2
    got = np.exp(sq.log_capital(X, UNIT, null, side, alpha=0.1, truncation=0.5))
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_capital_is_scale_free():
    """The same data in another unit gives the same capital (the lens unit is only a range)."""
    pp = sq.Spec(-100.0, 100.0, BELOW)
    a = sq.log_capital(X, UNIT, 0.45, ABOVE)
    b = sq.log_capital(200 * X - 100, pp, 200 * 0.45 - 100, ABOVE)
    np.testing.assert_allclose(a, b)


# ----------------------------------------------------------------- bad input

@pytest.mark.parametrize(("x", "match"), [
    ([0.5, 1.5], r"must lie in \[-1, 1\].*user unit"),
    ([0.5, np.nan], "NaN"),
    ([], "at least one item"),
])
def test_bad_effects_named(x, match):
    with pytest.raises(ValueError, match=match):
        sq.evidence(x, sq.SPECS["correctness"], margin=0.03)


def test_bad_margin_and_side_named():
    with pytest.raises(ValueError, match="margin must be positive"):
        sq.evidence([0.0], sq.SPECS["correctness"], margin=0.0)
    with pytest.raises(ValueError, match="side must be"):
        sq.log_capital([0.0], sq.SPECS["correctness"], 0.0, "left")
    with pytest.raises(ValueError, match=r"n must lie in \[1, 3\]"):
        sq.items_to_decide([0.0, 0.0, 0.0], sq.SPECS["correctness"], 0.03, n=0)


# ----------------------------------------------------------------- coverage

def _draw(rng, values, probs, shape):
    return np.asarray(values, float)[rng.choice(len(values), size=shape, p=probs)]


LENSES = {  # per-item effect laws in each lens's unit, with a known mean
    "correctness": ([-1, 0, 1], [0.12, 0.80, 0.08]),
    "fidelity": ([-1, 0, 1], [0.02, 0.88, 0.10]),
    # gold-probability change with rare collapses: a heavy, skewed bounded law
    "margin": ([-100, -60, -5, -1, 0, 2, 10], [0.02, 0.02, 0.10, 0.30, 0.30, 0.20, 0.06]),
}


@pytest.mark.parametrize("lens", sorted(LENSES))
def test_time_uniform_coverage(lens):
    """The truth stays inside the sequence at every one of 400 looks, in >= 95 % of runs."""
    values, probs = LENSES[lens]
    truth = float(np.dot(values, probs))
    rng = np.random.default_rng(27)
    reps = 4000
    x = _draw(rng, values, probs, (reps, 400))
    spec = sq.SPECS[lens]
    bound = math.log(2 / ALPHA)  # the sequence excludes theta once either capital reaches 2/alpha
    out = ((sq.log_capital(x, spec, np.full(reps, truth), ABOVE).max(-1) >= bound)
           | (sq.log_capital(x, spec, np.full(reps, truth), BELOW).max(-1) >= bound))
    assert out.mean() <= ALPHA + _tol(ALPHA, reps)


def test_confidence_sequence_covers_and_never_widens():
    values, probs = LENSES["margin"]
    truth = float(np.dot(values, probs))
    rng = np.random.default_rng(3)
    x = _draw(rng, values, probs, (300, 150))
    spec = sq.SPECS["margin"]
    early = sq.confidence_sequence(x[:, :60], spec, grid=401)
    late = sq.confidence_sequence(x, spec, grid=401)
    assert np.all(late.low >= early.low) and np.all(late.high <= early.high)
    assert np.all(late.high - late.low < early.high - early.low)
    covered = (late.low <= truth) & (truth <= late.high)
    assert covered.mean() >= 1 - ALPHA - _tol(ALPHA, 300)
    assert np.all(late.low <= late.estimate) and np.all(late.estimate <= late.high)


# ----------------------------------------------------------------- families under extension

REPS, FAMILIES, RUNGS, N0 = 2000, 3, 4, 100
M = relevance.MARGINS.correctness


def _boundary_null(seed):
    """Every cell's loss exactly ``m`` (the least favourable null of "beyond the margin")."""
    rng = np.random.default_rng(seed)
    p_death = 0.10
    return _draw(rng, [-1, 0, 1], [p_death, 1 - 2 * p_death + M, p_death - M],
                 (REPS, FAMILIES, RUNGS, 3 * N0))


def _family_rejects(p):
    return np.stack([fixed_sequence_graph(p[i], alpha=ALPHA).reject.any() for i in range(len(p))])


def test_fixed_sample_tango_fails_under_extension():
    """Today's test, re-read after each of two extensions of an undecided run: too many false losses.

    A "beyond" claim is one-sided at alpha / 2 (``tango_beyond_p`` is twice the one-sided p),
    which one look keeps; three looks break it.
    """
    d = _boundary_null(11)
    false_loss = np.zeros(REPS, bool)
    for k in (1, 2, 3):  # look, extend if undecided, look, extend, look
        dd = d[..., :k * N0]
        p = relevance.tango_beyond_p((dd == -1).sum(-1), (dd == 1).sum(-1), k * N0, M)
        false_loss |= _family_rejects(p)
        if k == 1:
            one_look = false_loss.mean()
    nominal = ALPHA / 2
    assert one_look <= nominal + _tol(nominal, REPS)
    assert false_loss.mean() > nominal + _tol(nominal, REPS)


@pytest.mark.parametrize("lens", ["correctness", "fidelity"])
def test_sequential_family_holds_under_extension(lens):
    """Same scenario (and any other stopping rule): the anytime p-values keep the rate.

    The running minimum of the p-value over all 300 items bounds what any user could have
    seen at any look, so a rejection at any stopping time is a rejection here.
    """
    d = _boundary_null(12)
    if lens == "fidelity":  # excess flips: a loss is a positive effect
        d = -d
    ev = sq.evidence(d, sq.SPECS[lens], margin=M)
    rate = _family_rejects(ev.p_beyond).mean()
    assert rate <= ALPHA / 2 + _tol(ALPHA / 2, REPS)


def test_equivalence_holds_under_extension():
    """At the least favourable null of equivalence (a loss of exactly m), "equivalent" shown at
    any of the 300 items (the running minimum of ``p_equivalent``) in at most alpha / 2 of the
    runs: the two one-sided tests' level per side, as the 1 - alpha sequence's."""
    d = _boundary_null(13)[:, 0, 0]
    ev = sq.evidence(d, sq.SPECS["correctness"], margin=M)
    rate = (ev.p_equivalent <= ALPHA).mean()
    assert rate <= ALPHA / 2 + _tol(ALPHA / 2, REPS)


def test_sequential_family_finds_real_losses():
    """Power check: a 15-point loss on the two lowest rungs is shown beyond the margin in most
    runs at 300 items (validity at every look costs power against a fixed-n test: about 0.7
    here), and no rung without a loss is ever shown beyond it."""
    rng = np.random.default_rng(5)
    reps = 300
    loss = np.array([0.15, 0.15, 0.0, 0.0])
    p_death = 0.05 + loss
    u = rng.random((reps, FAMILIES, RUNGS, 300))
    d = np.where(u < p_death[:, None], -1.0, np.where(u < p_death[:, None] + 0.05, 1.0, 0.0))
    ev = sq.evidence(d, sq.SPECS["correctness"], margin=M)
    rej = np.stack([sq.family_reject(ev.p_beyond[i]) for i in range(reps)])
    assert rej[:, :, :2].mean() > 0.6
    assert not rej[:, :, 2:].any()


# ----------------------------------------------------------------- labels

def _shuffled(x):  # exchangeable order, as items are drawn
    return np.random.default_rng(9).permutation(x)


def test_labels_at_a_look():
    n = 2000
    big_loss = np.r_[-np.ones(n // 4), np.zeros(n - n // 4)]  # 25-point accuracy loss
    same = np.zeros(n)
    small = np.r_[-np.ones(n // 50), np.zeros(n - n // 50)]  # 2 points: a change, within m
    few = np.zeros(10)
    spec = sq.SPECS["correctness"]
    got = []
    for x in (big_loss, same, small, few):
        x = _shuffled(x)
        cs = sq.confidence_sequence(x, spec)
        ev = sq.evidence(x, spec, margin=M)
        got.append(sq.label(cs, sq.family_reject(ev.p_beyond[None, None])[0, 0], M, spec))
    assert [str(g) for g in got] == [relevance.BEYOND, relevance.EQUIVALENT,
                                     relevance.CHANGE, relevance.UNDECIDED]


def test_fidelity_label_is_mirrored():
    n = 2000
    extra_flips = _shuffled(np.r_[np.ones(n // 4), np.zeros(n - n // 4)])  # 25 % more flips than the floor
    spec = sq.SPECS["fidelity"]
    cs = sq.confidence_sequence(extra_flips, spec)
    ev = sq.evidence(extra_flips, spec, margin=M)
    assert cs.low > 0.15 and ev.estimate < -0.15  # sequence in the lens unit, evidence mirrored
    beyond = sq.family_reject(ev.p_beyond[None, None])[0, 0]
    assert str(sq.label(cs, beyond, M, spec)) == relevance.BEYOND


# ----------------------------------------------------------------- planner

def test_planner_worked_example_items_that_never_move():
    """16 items with no extra flip (fidelity, unit [-1, 1], margin 0.03). On the [0, 1] scale
    every item is 1/2 and the null 'mean >= 0.03' is 0.515, so the capped bet is
    0.75 / 0.485 = 1.546 (the plug-in bet, sqrt(8 log 40 / log(1 + t)) >= 2.4 through t = 160,
    is above it) and each item multiplies the capital by 1 + 1.546 x 0.015: it reaches
    2 / alpha = 40 after ceil(log 40 / log 1.02320) = 161 items, the other side alike."""
    k = math.ceil(math.log(40) / math.log1p(0.75 / 0.485 * 0.015))
    assert k == 161
    plan = sq.items_to_decide(np.zeros(16), sq.SPECS["fidelity"], 0.03)
    assert plan.items == k - 16
    assert plan.label == relevance.EQUIVALENT
    assert sq.items_to_decide(np.zeros(16), sq.SPECS["fidelity"], 0.03,
                              n_max=160).items == np.inf  # one item short of the family's size
    # the label agrees with the plan: equivalent at item 161, not at 160, although the grid
    # sequence's bound (the nearest grid point it excludes) then sits on the margin itself
    spec = sq.SPECS["fidelity"]
    for n, want in ((k - 1, relevance.UNDECIDED), (k, relevance.EQUIVALENT)):
        x = np.zeros(n)
        cs, ev = sq.confidence_sequence(x, spec), sq.evidence(x, spec, margin=0.03)
        assert str(sq.label(cs, False, 0.03, spec, equivalent=ev.p_equivalent <= ALPHA)) == want
    assert cs.high == pytest.approx(0.03) and cs.low == pytest.approx(-0.03)


def test_planner_edges():
    """Decided now: 0 items; a cell losing every item: beyond, sooner at a looser level; an
    estimate on the margin (3 losses in 100): never; noisy items need more than quiet ones at
    the same mean; rows of different lengths are replayed from their own items only."""
    spec = sq.SPECS["correctness"]
    lost = sq.items_to_decide(-np.ones(40), spec, 0.03, level=[0.05, 0.05 / 7])
    assert lost.items[0] == 0 and (lost.label == relevance.BEYOND).all()
    few = sq.items_to_decide(-np.ones(3), spec, 0.03, level=[0.05, 0.05 / 7])
    assert 0 < few.items[0] < few.items[1] < np.inf
    on_margin = np.zeros(100)
    on_margin[[10, 50, 90]] = -1
    assert sq.items_to_decide(on_margin, spec, 0.03, n_max=300).items == np.inf
    noisy = np.tile([1.0, -1.0, 0.0, 0.0], 8)  # mean 0, half the items discordant
    quiet, loud = sq.items_to_decide(np.stack([np.zeros(32), noisy]), spec, 0.03,
                                     n_max=10_000).items
    assert quiet < loud
    padded = np.stack([np.r_[np.zeros(16), np.ones(16)], np.zeros(32)])
    short = sq.items_to_decide(padded, sq.SPECS["fidelity"], 0.03, n=[16, 32])
    assert short.items[0] == 161 - 16 and short.items[1] == 161 - 32


def test_first_decision_on_measured_items():
    """Hindsight on a cell's own items (benchmarks/bench_planner.py): agreeing items decide
    equivalence at the worked example's item 161 and not before; a loss on every item from
    the 11th decides beyond the margin there or later, never before the losses begin; a
    cell on its margin never decides; the fidelity lens (a loss is positive) is mirrored."""
    spec = sq.SPECS["correctness"]
    agree = sq.first_decision(np.zeros(300), spec, 0.03)
    assert agree.items == 161 and agree.label == relevance.EQUIVALENT
    assert sq.first_decision(np.zeros(160), spec, 0.03).items == np.inf
    late = np.r_[np.zeros(10), -np.ones(40)]
    lost = sq.first_decision(late, spec, 0.03, level=[0.05, 0.05 / 7])
    assert (lost.label == relevance.BEYOND).all() and 10 < lost.items[0] < lost.items[1] < 50
    on_margin = np.zeros(300)
    on_margin[::33] = -1  # 10 losses in 300 items: 3.3 points, on the margin
    assert sq.first_decision(on_margin, spec, 0.03).label == ""
    flips = sq.first_decision(np.ones(40), sq.SPECS["fidelity"], 0.03)
    assert flips.label == relevance.BEYOND and flips.items < 40


def test_budgeted_stats_read_the_sequences():
    """A budgeted run's chapter-5 tables come from the sequences, read in the pre-registered
    order: wider than the fixed intervals at the same items, dependent on the order, labelled
    by the anytime method; the fixed design's planned MDE is not claimed for them."""
    from gguf_fragility.stats.results import stats_tables
    from gguf_fragility.testing import synthetic_results

    r = synthetic_results(n_models=1, n_families=2, n_items=60, rungs=("F16", "Q4_K_M", "Q2_K"))
    keys = list(dict.fromkeys(zip(r.items.family, r.items.item_id, strict=True)))
    fwd = {k: i for i, k in enumerate(keys)}
    rev = {k: -i for i, k in enumerate(keys)}
    fixed = stats_tables(r.items, r.ladder).comparisons
    seq = stats_tables(r.items, r.ladder, positions=fwd).comparisons
    back = stats_tables(r.items, r.ladder, positions=rev).comparisons
    m = seq["measurable"].astype(bool)
    assert (seq.loc[m, "p_method"] == sq.ANYTIME_METHOD).all()
    assert not (fixed["p_method"] == sq.ANYTIME_METHOD).any()
    assert seq.loc[m, "planned_mde"].isna().all() and fixed.loc[m, "planned_mde"].notna().any()
    paired = seq["lens"].isin(["correctness", "fidelity"]) & m
    width = lambda t: (t["ci_high"] - t["ci_low"])[paired]  # noqa: E731
    assert (width(seq) >= width(fixed) - 1e-9).all() and (width(seq) > width(fixed)).any()
    assert ((seq["ci_low"] <= seq["effect"] + 1e-9) & (seq["effect"] <= seq["ci_high"] + 1e-9))[m].all()
    assert not np.allclose(seq.loc[m, "ci_low"], back.loc[m, "ci_low"])  # the order is read
    np.testing.assert_allclose(seq["effect"], back["effect"])  # the mean is not


def _looked_cells() -> pd.DataFrame:
    """sequential.csv of one model's four cells after 3 looks: Q8_0 decided at look 2, the
    others open, planned at 300 s, 500 s and never (fidelity cannot decide: no floor)."""
    rows = []
    for rung, decided, look, secs in (("Q8_0", True, 2, 0.0), ("Q4_K_M", False, np.nan, 300.0),
                                      ("Q3_K_M", False, np.nan, 500.0),
                                      ("Q2_K", False, np.nan, np.inf)):
        for lens, can in (("correctness", True), ("fidelity", False)):
            rows.append({"model": "m", "rung": rung, "family": "f", "lens": lens,
                         "n": 40 if decided else 64, "can_decide": can,
                         "decided": decided and can, "look_decided": look,
                         "seconds_to_decide": secs, "looks": 3})
    return pd.DataFrame(rows)


def test_budget_summary_prices_further_minutes():
    """Cells decided when every lens that can decide them has; a further budget settles the
    undecided verdicts its plan reaches within it (at 300 s and 500 s: one in 5 minutes, two in
    10); a verdict not within its items is counted apart, never as likely; only lenses that
    can decide are verdicts."""
    b = sq.budget_summary(_looked_cells(), minutes=(5, 10, 30))
    cells = b.cells.set_index("rung")
    assert bool(cells.loc["Q8_0", "decided"]) and cells.loc["Q8_0", "look_decided"] == 2
    assert not cells.loc["Q4_K_M", "decided"] and cells.loc["Q4_K_M", "undecided_lenses"] == "correctness"
    f = b.further.set_index("minutes")
    assert f.likely_decided.tolist() == [1, 2, 2]
    assert (f.undecided == 3).all() and (f.not_within_items == 1).all()
    assert (f.verdicts == 4).all() and (f.decided == 1).all()
    assert (f.items_min == 40).all() and (f.items_max == 64).all()
    with pytest.raises(ValueError, match="seconds_to_decide"):
        sq.budget_summary(_looked_cells().drop(columns="seconds_to_decide"))


def test_landing_reports_what_the_budget_decided(tmp_path):
    """The landing's details say how many cells the budget decided per model and what further
    minutes would likely settle, and write the numbers as tables the claim check traces; a
    fixed design gets no such section."""
    from gguf_fragility import store
    from gguf_fragility.layout import RunLayout, Table
    from gguf_fragility.report.landing import budget_markdown

    run = RunLayout(tmp_path / "p")
    assert budget_markdown(run) == ""
    store.write_table_atomic(_looked_cells(), run.table(Table.SEQUENTIAL))
    text = budget_markdown(run)
    assert "## Budgeted sweep" in text and "3 looks" in text and "m: 1 of 4 lens verdicts" in text
    assert "| m | 4 | 1 | 40 to 64 | 2 | 2 | 2 | 1 |" in text  # planned at 300 s and 500 s
    further = pd.read_csv(run.table(Table.SITE_BUDGET_FURTHER))
    assert set(further.minutes) == set(sq.FURTHER_MINUTES)


def test_decide_cells_before_any_rung_has_items():
    """A look whose clock ran out while only the reference had items decides nothing, and says
    so with empty tables rather than an error."""
    from gguf_fragility.testing import synthetic_results

    r = synthetic_results(n_models=1, n_families=1, n_items=5, rungs=("F16", "Q2_K"))
    ref = r.items[r.items["rung"] == "F16"]
    pos = {(f, i): k for k, (f, i) in enumerate(zip(ref.family, ref.item_id, strict=True))}
    dec = sq.decide_cells(ref, {"synth-0": "F16"}, {("synth-0", "Q2_K"): 2.6}, pos,
                          sq.Settings())
    assert dec.lenses.empty and dec.cells.empty
    assert list(dec.lenses.columns) == list(sq.DECIDED_COLUMNS)
