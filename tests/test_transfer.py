"""Transfer statistics on synthetic sweeps, checked against notebook 05's tables and scipy."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from gguf_fragility.report import claims
from gguf_fragility.stats import results, transfer
from gguf_fragility.testing import synthetic_results

RUNGS = ("F16", "Q8_0", "Q4_K_M", "Q2_K")


@pytest.fixture(scope="module")
def synth():
    r = synthetic_results(n_models=2, n_families=7, n_items=60, rungs=RUNGS, seed=3)
    st = results.stats_tables(r.items, r.ladder, seed=0, n_boot=300)
    t = transfer.transfer_tables(r.items, r.ladder, st.death_order, st.comparisons,
                                 n_boot=300, seed=0)
    return r, st, t


def test_item_scores_reproduce_fragility(synth):
    r, st, _ = synth
    for model in ("synth-0", "synth-1"):
        frag = transfer.item_scores(r.items, r.ladder, model).groupby(level=0)["score"].mean()
        ref = st.death_order.query("subset == 'usable' and model == @model").set_index("family")
        np.testing.assert_allclose(frag[ref.index], ref["fragility"], atol=1e-9)


def test_rank_agreement_point_estimates_match_scipy(synth):
    _, _, t = synth
    fam = t.transfer_families.query("model_a == 'synth-0'")
    row = t.transfer_rank.query("model_a == 'synth-0'").iloc[0]
    tau = sps.kendalltau(fam["fragility_a"], fam["fragility_b"], variant="b").statistic
    rho = sps.spearmanr(fam["fragility_a"], fam["fragility_b"]).statistic
    assert row["kendall_tau_b"] == pytest.approx(tau)
    assert row["spearman_rho"] == pytest.approx(rho)
    assert row["kendall_ci_low"] <= row["kendall_tau_b"] + 1e-9 <= row["kendall_ci_high"] + 2e-9
    assert row["n_families"] == len(fam) == 7
    assert row["n_boot"] == 300 and 150 <= row["n_boot_defined"] <= 300


def test_identical_models_agree_perfectly():
    r = synthetic_results(n_models=1, n_families=5, n_items=80, rungs=RUNGS, seed=1)
    twin = r.items.assign(model="twin")
    items = pd.concat([r.items, twin], ignore_index=True)
    ladder = pd.concat([r.ladder, r.ladder.assign(model="twin")], ignore_index=True)
    st = results.stats_tables(items, ladder, seed=0, n_boot=200)
    t = transfer.transfer_tables(items, ladder, st.death_order, st.comparisons, n_boot=200)
    row = t.transfer_rank.iloc[0]
    assert row["kendall_tau_b"] == pytest.approx(1.0)
    assert row["kendall_ci_low"] == pytest.approx(1.0)  # same items drawn for both models
    s = t.transfer_safety.query("rung_a == 'all'")
    assert (s["safe_unsafe"] == 0).all() and (s["unsafe_safe"] == 0).all()
    assert t.transfer_families["death_agree_name"].all()


def test_safety_2x2_by_hand():
    cmp = pd.DataFrame({
        "model": ["a"] * 4 + ["b"] * 4, "subset": "usable",
        "family": ["f", "g", "h", "k"] * 2, "rung": "Q2_K",
        "worse": [False, False, True, True, False, True, False, True]})
    ladder = pd.DataFrame({"model": ["a", "a", "b", "b", "b"],
                           "rung": ["F16", "Q2_K", "F16", "Q4_K_M", "Q2_K"],
                           "is_reference": [True, False, True, False, False],
                           "bpw": [16, 5.1, 16, 4.9, 3.0]})
    cmp = pd.concat([cmp, cmp[cmp.model == "b"].assign(rung="Q4_K_M", worse=False)])
    s = transfer.safety_tables(cmp, ladder, "a", "b", ["f", "g", "h", "k"])
    by_name = s.query("match == 'name' and rung_a == 'Q2_K'").iloc[0]
    assert (by_name[["safe_safe", "safe_unsafe", "unsafe_safe", "unsafe_unsafe"]].tolist()
            == [1, 1, 1, 1])
    assert by_name["transfer_rate"] == 0.5 and by_name["agreement"] == 0.5
    by_bpw = s.query("match == 'bpw' and rung_a == 'Q2_K'").iloc[0]
    assert by_bpw["rung_b"] == "Q4_K_M"  # 5.1 bpw on A is nearest B's 4.9 bpw rung, not Q2_K
    assert by_bpw["safe_safe"] == 2 and by_bpw["unsafe_safe"] == 2


def test_too_few_families_raises():
    with pytest.raises(ValueError, match="at least 3 common families"):
        transfer.rank_agreement(pd.DataFrame(), pd.DataFrame(), ["x", "y"])


def test_conclusion_numbers_trace_to_the_tables(synth):
    _, _, t = synth
    text = transfer.conclusion(t.transfer_rank, t.transfer_safety, "synth-0", "synth-1")
    assert "Kendall's tau-b" in text and "real bits per weight" in text
    v = np.concatenate([df.apply(pd.to_numeric, errors="coerce").to_numpy(float).ravel()
                        for df in (t.transfer_rank, t.transfer_safety)])
    v = v[np.isfinite(v)]
    values = np.unique(np.r_[v, 100 * v, abs(v), 100 * abs(v)])
    found = claims.numbers(text)
    assert len(found) >= 6 and claims.traced(found, values).all()


def test_mostly_tied_resamples_give_no_interval_and_say_so():
    """When nothing dies in most resamples, tau-b is undefined there: no "nan" interval."""
    fams = [f"f{i}" for i in range(4)]
    idx = pd.MultiIndex.from_product([fams, [f"i{j}" for j in range(20)]],
                                     names=["family", "item_id"])
    a = pd.DataFrame({"score": 0.0}, index=idx)
    a.loc[("f0", "i0"), "score"] = 50.0  # one item of one family died on A
    b = pd.DataFrame({"score": np.arange(len(idx), dtype=float) % 3}, index=idx)
    r = transfer.rank_agreement(a, b, fams, n_boot=400, seed=0)
    # the item is drawn in 1 - (19/20)^20 = 64% of resamples; tau-b needs it
    assert r["n_boot"] == 400
    assert 0.55 * 400 < r["n_boot_defined"] < 0.73 * 400
    r = transfer.rank_agreement(a.assign(score=0.0), b, fams, n_boot=400, seed=0)
    assert r["n_boot_defined"] == 0 and np.isnan(r["kendall_ci_low"])
    # the prose for a defined point estimate whose resamples are mostly undefined
    rank = pd.DataFrame([{**r, "model_a": "a", "model_b": "b", "kendall_tau_b": 0.3, "spearman_rho": 0.35,
                          "n_death_agree_name": 1}])
    safety = pd.DataFrame(columns=["model_a", "model_b", "rung_a"])
    text = transfer.conclusion(rank, safety, "a", "b")
    assert "nan" not in text and "defined in only 0 of 400 resamples" in text
