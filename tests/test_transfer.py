"""Transfer statistics on synthetic sweeps, checked against notebook 05's tables and scipy."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from gguf_fragility.report import claims, findings
from gguf_fragility.stats import relevance, results, transfer
from gguf_fragility.stats.relevance import BEYOND, NO_ROOM
from gguf_fragility.testing import synthetic_results

RUNGS = ("F16", "Q8_0", "Q4_K_M", "Q2_K")
SETTINGS = results.Settings(n_boot=300)


@pytest.fixture(scope="module")
def synth():
    r = synthetic_results(n_models=2, n_families=7, n_items=60, rungs=RUNGS, seed=3)
    st = results.stats_tables(r.items, r.ladder, settings=SETTINGS)
    t = transfer.transfer_tables(r.ladder, st.death_order, st.comparisons)
    return r, st, t


def test_rank_agreement_matches_scipy_and_exact_enumeration(synth):
    _, st, t = synth
    fam = t.transfer_families.query("model_a == 'synth-0'")
    row = t.transfer_rank.query("model_a == 'synth-0'").iloc[0]
    tau = sps.kendalltau(fam["fragility_a"], fam["fragility_b"], variant="b").statistic
    rho = sps.spearmanr(fam["fragility_a"], fam["fragility_b"]).statistic
    assert row["kendall_tau_b"] == pytest.approx(tau)
    assert row["spearman_rho"] == pytest.approx(rho)
    assert row["n_families"] == len(fam) == 7 and row["can_show"]
    assert row["p_method"] == "exact permutation" and row["n_pairings"] == math.factorial(7)
    # the p-value by brute force over all 7! pairings (ties handled by tau-b itself)
    x, y = fam["fragility_a"].to_numpy(), fam["fragility_b"].to_numpy()
    perms = np.array(list(__import__("itertools").permutations(range(7))))
    taus = np.array([sps.kendalltau(x[p], y, variant="b").statistic for p in perms])
    p = np.mean(np.abs(taus) >= abs(tau) - 1e-12)
    assert row["kendall_p"] == pytest.approx(p, rel=1e-9)


def test_identical_models_agree_and_decisions_carry():
    r = synthetic_results(n_models=1, n_families=6, n_items=80, rungs=RUNGS, seed=1)
    items = pd.concat([r.items, r.items.assign(model="twin")], ignore_index=True)
    ladder = pd.concat([r.ladder, r.ladder.assign(model="twin")], ignore_index=True)
    st = results.stats_tables(items, ladder, settings=SETTINGS)
    t = transfer.transfer_tables(ladder, st.death_order, st.comparisons)
    row = t.transfer_rank.iloc[0]
    assert row["kendall_tau_b"] == pytest.approx(1.0) and row["verdict"] == "agreement shown"
    assert row["kendall_p"] == pytest.approx(2 / math.factorial(6), rel=1e-9) or (
        row["kendall_p"] < 0.05)  # exact: only the two extreme pairings (fewer with ties)
    d = t.transfer_decisions.query("rung_a == 'all'")
    assert (d["same_decision"] == d["n_families"]).all()
    assert (d["loss_both"] == d["loss_a"]).all()
    f = t.transfer_families
    # agreement is counted only where a loss beyond the margin exists: twins agree on every
    # such family, and a family neither twin loses is never counted as agreement
    assert f["death_counted_correctness"].any() and not f["death_counted_correctness"].all()
    assert (f["death_agree_correctness"] == f["death_counted_correctness"]).all()
    assert (row["n_death_agree_correctness"] == row["n_death_counted_correctness"]
            == f["death_counted_correctness"].sum() // 2)  # both orders of the pair
    text = findings.transfer_conclusion(t.transfer_rank, t.transfer_decisions, "synth-0", "twin")
    assert f"of the {row['n_death_counted_correctness']} families where either model" in text


def test_joint_non_detection_is_not_agreement():
    r = synthetic_results(n_models=1, n_families=6, n_items=80, rungs=RUNGS, seed=1)
    items = pd.concat([r.items, r.items.assign(model="twin")], ignore_index=True)
    ladder = pd.concat([r.ladder, r.ladder.assign(model="twin")], ignore_index=True)
    st = results.stats_tables(items, ladder, settings=SETTINGS)
    cmp = st.comparisons.assign(decision=relevance.UNDECIDED)  # nothing shown anywhere
    t = transfer.transfer_tables(ladder, st.death_order.assign(**{
        f"death_rung_{k}": "" for k in ("correctness", "fidelity", "margin")}), cmp)
    assert not t.transfer_families["death_agree_correctness"].any()
    text = findings.transfer_conclusion(t.transfer_rank, t.transfer_decisions, "synth-0", "twin")
    assert "death rungs cannot be shown" in text or "cannot be shown" in text
    assert "agree by name" not in text


def test_fewer_than_five_families_cannot_be_shown():
    r = synthetic_results(n_models=2, n_families=4, n_items=60, rungs=RUNGS, seed=2)
    st = results.stats_tables(r.items, r.ladder, settings=SETTINGS)
    t = transfer.transfer_tables(r.ladder, st.death_order, st.comparisons)
    row = t.transfer_rank.iloc[0]
    assert not row["can_show"] and row["verdict"].startswith("cannot be shown")
    assert np.isnan(row["kendall_tau_b"]) and np.isnan(row["spearman_p"])
    text = findings.transfer_conclusion(t.transfer_rank, t.transfer_decisions, "synth-0", "synth-1")
    assert "cannot be shown" in text and "tau" not in text.lower()
    assert "transfers" not in text and "safe" not in text


def test_decision_carry_over_by_hand():
    cmp = pd.DataFrame({
        "model": ["a"] * 4 + ["b"] * 4, "lens": "correctness",
        "family": ["f", "g", "h", "k"] * 2, "rung": "Q2_K",
        "decision": [BEYOND, "equivalent within ±m shown", "undecided", BEYOND,
                     BEYOND, "equivalent within ±m shown", BEYOND, "undecided"]})
    ladder = pd.DataFrame({"model": ["a", "a", "b", "b", "b"],
                           "rung": ["F16", "Q2_K", "F16", "Q4_K_M", "Q2_K"],
                           "is_reference": [True, False, True, False, False],
                           "bpw": [16, 5.1, 16, 4.9, 3.0]})
    cmp = pd.concat([cmp, cmp[cmp.model == "b"].assign(rung="Q4_K_M", decision="undecided"),
                     cmp.assign(lens="margin", decision=NO_ROOM)])  # no room on both: no pair
    s = transfer.decision_tables(cmp, ladder, "a", "b", ["f", "g", "h", "k"])
    assert set(s.lens) == {"correctness"}
    by_name = s.query("match == 'name' and rung_a == 'Q2_K'").iloc[0]
    assert (by_name[["n_families", "same_decision", "loss_a", "loss_both", "equivalent_a",
                     "equivalent_both", "undecided_a", "undecided_b"]].tolist()
            == [4, 2, 2, 1, 1, 1, 1, 1])
    by_bpw = s.query("match == 'bpw' and rung_a == 'Q2_K'").iloc[0]
    assert by_bpw["rung_b"] == "Q4_K_M"  # 5.1 bpw on A is nearest B's 4.9 bpw rung
    assert by_bpw["undecided_b"] == 4 and by_bpw["same_decision"] == 1


def test_conclusion_numbers_trace_to_the_tables(synth):
    _, _, t = synth
    text = findings.transfer_conclusion(t.transfer_rank, t.transfer_decisions, "synth-0", "synth-1")
    assert "Kendall's tau-b" in text and "real bits per weight" in text
    assert "safe" not in text and "transfers" not in text
    v = np.concatenate([df.apply(pd.to_numeric, errors="coerce").to_numpy(float).ravel()
                        for df in (t.transfer_rank, t.transfer_decisions)])
    v = v[np.isfinite(v)]
    values = np.unique(np.r_[v, 100 * v, abs(v), 100 * abs(v)])
    found = claims.numbers(text)
    assert len(found) >= 6 and claims.traced(found, values).all()


def test_conclusion_says_nothing_was_shown_once_instead_of_zeros():
    rank = pd.DataFrame([{"model_a": "a", "model_b": "b", "n_families": 3, "can_show": False}])
    dec = pd.DataFrame([{"model_a": "a", "model_b": "b", "lens": "correctness", "match": m,
                         "rung_a": "all", "equivalent_a": 0, "equivalent_both": 0,
                         "loss_a": 0, "loss_both": 0} for m in ("name", "bpw")])
    text = findings.transfer_conclusion(rank, dec, "a", "b")
    assert "of 0" not in text and " 0 were" not in text and " 0 also" not in text, text
    assert text.count("nothing was shown") == 1, text
    dec.loc[0, ["equivalent_a", "equivalent_both"]] = [3, 2]
    text = findings.transfer_conclusion(rank, dec, "a", "b")
    assert "of 3 correctness cells shown equivalent on a, 2 were also shown equivalent on b" in text
    assert "of 0" not in text and "with a loss shown" not in text, text
