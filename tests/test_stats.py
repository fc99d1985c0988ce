"""The lens grid against independent references, worked examples, and the whole grid at the null.

The null simulation runs the grid's own functions (:func:`correctness_p`,
:func:`lenses.flip_vs_floor`, :func:`margin_p`, :func:`multiplicity.family_of_tests`) on
thousands of simulated grids at once, and a second test checks, replicate by replicate, that
:func:`grid.lens_grid` on item rows reaches exactly the same rejections.
"""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from gguf_fragility.profile import NOISE_FLOOR
from gguf_fragility.stats import grid, lenses, multiplicity
from gguf_fragility.stats.lens.correctness import correctness_p
from gguf_fragility.stats.lens.margin import margin_p
from gguf_fragility.stats.lens.registry import LENSES

ALPHA = 0.05


# --- worked examples that still apply ---------------------------------------------------------

def test_wilson_seed_002_tr125_n485():
    # TR125 (seed 002), llama3.1-8b Q8_0: 0.724 at N = 485 -> [0.682, 0.762]; the accuracy
    # table's interval is statsmodels' Wilson.
    lo, hi = proportion_confint(351, 485, method="wilson")
    assert (round(float(lo), 3), round(float(hi), 3)) == (0.682, 0.762)


def test_mcnemar_fagerland_2013_worked_example():
    # Fagerland, Lydersen & Laake (2013), Table 1 (Bentur et al. 2009, n = 21): discordant
    # pairs b = 1, c = 7; exact p = 0.070, mid-p = 0.039.
    assert float(lenses.mcnemar_test(1, 7).pvalue) == pytest.approx(18 / 256)
    assert float(lenses.mcnemar_test(1, 7, method="midp").pvalue) == pytest.approx(10 / 256)
    p, p_seq = correctness_p(np.array([1, 7]), np.array([7, 1]))
    assert p_seq[0] == 1.0 and p_seq[1] == pytest.approx(18 / 256)  # loss side only


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(0, 200), st.integers(0, 10_000))
def test_mcnemar_ignores_concordant_pairs_and_is_symmetric(b, c, extra):
    p = lenses.mcnemar_test(b, c).pvalue
    assert lenses.mcnemar_test(c, b).pvalue == p
    sm = mcnemar([[extra, b], [c, extra]], exact=True).pvalue
    assert p == pytest.approx(sm, rel=1e-12, abs=1e-15)


def test_holm_hand_worked_as_the_graph_with_one_rung_per_family():
    # Holm by hand, m = 4: sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06 -> stop.
    p = np.array([[0.01], [0.04], [0.03], [0.005]])
    ft = multiplicity.family_of_tests(p, np.full_like(p, 1e-9), ALPHA)
    assert ft.reject[:, 0].tolist() == [True, False, False, True]
    assert ft.reject[:, 0].tolist() == multipletests(p[:, 0], method="holm")[0].tolist()
    assert ft.level == pytest.approx(ALPHA / 4) and ft.tarone_k == 4


def test_tango_agresti_presidential_approval():
    # Agresti (2002), Table 10.1: the same 1600 people in two surveys, 794 / 150 / 86 / 570.
    # Difference -0.04, Wald interval (-0.06, -0.02); at this n Tango's agrees to 1e-3.
    ci = lenses.paired_diff_ci(150, 86, 1600)
    assert float(ci.estimate) == pytest.approx(-0.04)
    assert (round(float(ci.low), 2), round(float(ci.high), 2)) == (-0.06, -0.02)


def test_margin_p_loss_side_matches_one_sided_wilcoxon():
    rng = np.random.default_rng(4)
    x = rng.normal(-0.2, 1.0, (200, 25))
    p, p_seq = margin_p(x)
    less = sps.wilcoxon(x, alternative="less", axis=-1).pvalue
    loss = p_seq < 1
    np.testing.assert_allclose(p_seq[loss], 2 * less[loss], rtol=1e-9)
    assert np.all(less[~loss] >= 0.5 - 1e-12)


def test_tarone_screen_drops_tiny_families():
    # family 0: 4 items, smallest exact p = 2 / 16 = 0.125 > alpha: never significant
    mp = np.array([[2 * 0.5**4] * 2, [2 * 0.5**30] * 2, [2 * 0.5**30] * 2])
    p = np.array([[1e-12, 1e-12], [1e-4, 1e-4], [0.5, 0.5]])
    ft = multiplicity.family_of_tests(p, mp, ALPHA)
    assert not ft.testable[0].any() and ft.testable[1:].all()
    assert ft.level == pytest.approx(ALPHA / 2)  # two families in the graph
    assert ft.reject[1].all() and not ft.reject[0].any() and not ft.reject[2].any()


# --- the whole grid at the null ---------------------------------------------------------------

FAMILIES, RUNGS, REPS = 4, 3, 1500


def null_grid(rng, reps, n, half_right):
    """Correctness, answers and margins of reference, floor and rungs drawn from one law.

    Per item: P(gold) ~ Beta(0.4, 0.4) (knife-edge items and fixed ones; the reference is
    right on about half the items) or Beta(2, 0.5) (mostly right); the other three choices
    share the rest unequally. Margins: an item-level value plus heavy-tailed noise (t, 3 df)
    whose scale varies per item, drawn independently at every run.
    """
    shape = (reps, FAMILIES, n)
    a, b = (0.4, 0.4) if half_right else (2.0, 0.5)
    pg = rng.beta(a, b, shape)
    probs = np.stack([pg, (1 - pg) * 0.6, (1 - pg) * 0.3, (1 - pg) * 0.1], -1)
    cum = probs.cumsum(-1)
    runs = RUNGS + 2  # reference, floor, rungs

    def answer():
        u = rng.random(shape)[..., None]
        return (u > cum).sum(-1)

    ans = np.stack([answer() for _ in range(runs)], axis=2)  # (reps, F, runs, n)
    scale = rng.gamma(2.0, 0.5, shape)[:, :, None, :]
    margin = rng.normal(0, 2, shape)[:, :, None, :] + scale * rng.standard_t(3, ans.shape)
    return ans, margin


def familywise(ans, margin, n):
    """Familywise rejection per replicate and lens, through the grid's own functions."""
    ref, floor, rungs = ans[:, :, 0], ans[:, :, 1], ans[:, :, 2:]
    ok0, ok = ref == 0, rungs == 0
    b = (ok0[:, :, None] & ~ok).sum(-1)
    c = (~ok0[:, :, None] & ok).sum(-1)
    _, p_corr = correctness_p(b, c)
    flips = rungs != ref[:, :, None]
    fl = np.broadcast_to((floor != ref)[:, :, None], flips.shape)
    p_fid = lenses.flip_vs_floor(flips, fl).pvalue
    _, p_mar = margin_p(margin[:, :, 2:] - margin[:, :, :1])
    min_p = {"correctness": 2 * 0.5**n, "fidelity": 0.5**n, "margin": 2 * 0.5**n}
    out = {}
    for lens, p in (("correctness", p_corr), ("fidelity", p_fid), ("margin", p_mar)):
        mp = np.full((FAMILIES, RUNGS), min(1.0, min_p[lens]))
        out[lens] = np.array([multiplicity.family_of_tests(p[r], mp, ALPHA).reject.any()
                              for r in range(len(p))])
    return out


@pytest.mark.parametrize("half_right", [True, False])
@pytest.mark.parametrize("n", [10, 30, 100])
def test_whole_grid_familywise_error_at_the_null(n, half_right):
    """Rung = reference in distribution: every lens's familywise rejection rate <= alpha."""
    rng = np.random.default_rng([12, n, half_right])
    ans, margin = null_grid(rng, REPS, n, half_right)
    tol = 3 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)
    for lens, rej in familywise(ans, margin, n).items():
        assert rej.mean() <= ALPHA + tol, (lens, n, half_right, rej.mean())
    if half_right:  # the regression-to-the-mean trap is gone: the reference is right on ~half
        assert 0.4 < (ans[:, :, 0] == 0).mean() < 0.6


def test_lens_grid_reaches_the_simulation_s_rejections():
    """lens_grid on item rows (one model per replicate) rejects exactly as the simulation."""
    rng = np.random.default_rng(77)
    reps, n = 15, 20
    ans, margin = null_grid(rng, reps, n, True)
    ans[:, 0, 2:, :12] = 1  # family 0 loses twelve items at every rung: real losses to find
    ans[:, 0, 0, :12] = 0
    margin[:, 0, 2:, :] -= 3.0
    rungs = ["Q2_K", "Q4_K_M", "Q8_0"]  # lowest bpw first, as the simulation's rung axis
    names = ["F16", NOISE_FLOOR, *rungs]
    r, f, k, i = np.meshgrid(np.arange(reps), np.arange(FAMILIES), np.arange(RUNGS + 2),
                             np.arange(n), indexing="ij")
    items = pd.DataFrame({
        "model": [f"rep{x:03d}" for x in r.ravel()], "rung": np.array(names)[k.ravel()],
        "family": [f"fam{x}" for x in f.ravel()], "item_id": i.ravel().astype(str),
        "correct": ans.ravel() == 0, "extracted": np.array(list("ABCD"))[ans.ravel()],
        "mode": "loglik", "margin": margin.ravel(),
        "gold_logprob": -np.logaddexp(0.0, -margin.ravel()),  # log sigmoid: two choices
        "ref_answer_logprob": np.nan, "answer_kl": 0.0, "answer_same_top": 1.0})
    bpw = {(f"rep{x:03d}", rr): v for x in range(reps)
           for rr, v in zip(rungs, (3.0, 4.9, 8.5), strict=True)}
    g = grid.lens_grid(items, {f"rep{x:03d}": "F16" for x in range(reps)}, bpw,
                       settings=grid.Settings(n_boot=0))
    expect = familywise(ans, margin, n)
    for lens in LENSES:
        got = g.comparisons[g.comparisons.lens == lens].groupby("model")["reject"].any()
        assert got.to_numpy().tolist() == expect[lens].tolist(), lens
    c = g.comparisons.query("lens == 'correctness' and family == 'fam0'")
    assert c["reject"].mean() > 0.5  # the planted loss is found
