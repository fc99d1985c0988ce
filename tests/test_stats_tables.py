"""The grid, death order, decision matrix and table I/O, on small hand-built sweeps."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from gguf_fragility.layout import RunLayout
from gguf_fragility.profile import load_profile
from gguf_fragility.stats import inputs, results
from gguf_fragility.stats.deathorder import trapezoid_weights
from gguf_fragility.stats.decision import GIB, decision_matrix, recommend
from gguf_fragility.stats.grid import paired_grid, validate_items
from gguf_fragility.testing import synthetic_results, write_synthetic

BPW = {"F16": 16.0, "Q8_0": 8.5, "Q4_K_M": 4.9, "Q2_K": 3.0}


def hand_sweep():
    """Family 'a' (40 usable items): Q8_0 intact, Q4_K_M loses 20, Q2_K loses 1 (a
    'recovery'). Family 'b' (40 usable + 10 unusable items): intact everywhere, except
    the unusable ones, which all resurrect at Q2_K."""
    rows = []
    for i in range(40):
        for rung in BPW:
            ok_a = not ((rung == "Q4_K_M" and i < 20) or (rung == "Q2_K" and i == 0))
            rows.append(("a", f"a{i}", rung, ok_a, True, 2.0 - 0.1 * (rung != "F16")))
            rows.append(("b", f"b{i}", rung, True, True, 1.0))
    for i in range(10):
        for rung in BPW:
            rows.append(("b", f"bx{i}", rung, rung == "Q2_K", False, np.nan))
    df = pd.DataFrame(rows, columns=["family", "item_id", "rung", "correct", "usable",
                                     "margin"])
    df.insert(0, "model", "m")
    df["answer_kl"] = df["rung"].map({"F16": 0.0, "Q8_0": 0.01, "Q4_K_M": 0.1, "Q2_K": 0.5})
    df["answer_same_top"] = 1.0
    ladder = pd.DataFrame({"model": "m", "rung": list(BPW), "is_reference": [True] + [False] * 3,
                           "bpw": list(BPW.values()),
                           "file_size_bytes": [int(b * 1e8) for b in BPW.values()]})
    return df, ladder


@pytest.fixture(scope="module")
def hand():
    items, ladder = hand_sweep()
    return items, ladder, results.stats_tables(items, ladder, seed=0, n_boot=4000)


def test_flip_table_and_tests_by_hand(hand):
    _, _, t = hand
    c = t.comparisons.set_index(["family", "rung", "subset"])
    row = c.loc[("a", "Q4_K_M", "usable")]
    assert (row.n, row.deaths, row.resurrections, row.net_loss) == (40, 20, 0, 20)
    assert row["diff"] == -0.5 and row.tier == "unacceptable" and row.worse
    assert row.p_raw == pytest.approx(mcnemar([[20, 20], [0, 0]], exact=True).pvalue)
    assert row.kl_mean == pytest.approx(0.1) and row.same_top_rate == 1.0
    assert row.n_margin == 20 and row.margin_shrink_median == pytest.approx(0.1)
    assert row.margin_shrink_rel_median == pytest.approx(0.05)
    b_all = c.loc[("b", "Q2_K", "all")]
    assert (b_all.n, b_all.deaths, b_all.resurrections, b_all["diff"]) == (50, 0, 10, 0.2)
    assert c.loc[("b", "Q2_K", "usable")].n == 40
    assert np.isnan(b_all.margin_shrink_median) or b_all.n_margin == 40


def test_holm_runs_across_the_grid_per_subset(hand):
    _, _, t = hand
    for _, g in t.comparisons.groupby("subset"):
        np.testing.assert_allclose(g["p_adj"], multipletests(g["p_raw"], method="holm")[1])


def test_accuracy_table_has_wilson_for_every_rung(hand):
    _, _, t = hand
    acc = t.accuracy
    assert len(acc) == 2 * 2 * 4  # families × subsets × rungs, reference included
    ref = acc[(acc.family == "a") & (acc.rung == "F16") & (acc.subset == "usable")].iloc[0]
    assert ref.is_reference and ref.accuracy == 1.0 and ref.ci_low < 1.0 == ref.ci_high


def test_death_order_by_hand(hand):
    _, _, t = hand
    d = t.death_order.set_index(["subset", "family"])
    a = d.loc[("usable", "a")]
    assert a.death_rung == "Q4_K_M" and a.death_bpw == 4.9
    assert not a.persistent and a.recoveries == "Q2_K"
    x, y = [3.0, 4.9, 8.5, 16.0], [2.5, 50.0, 0.0, 0.0]  # net-loss pp against bpw
    assert a.fragility == pytest.approx(np.trapezoid(y, x))
    assert a.fragility_mean_pp == pytest.approx(np.trapezoid(y, x) / 13.0)
    assert a.fragility_ci_low <= a.fragility <= a.fragility_ci_high
    assert a["rank"] == 1 and a.rank_ci_high == 1
    b = d.loc[("usable", "b")]
    assert b.death_rung == "" and pd.isna(b.persistent) and b.fragility == 0
    assert d.loc[("all", "b")].fragility < 0  # resurrections count as negative loss


def test_trapezoid_weights_match_numpy():
    x = np.array([2.6, 3.4, 4.8, 8.5, 16.0])
    y = np.random.default_rng(0).normal(size=5)
    assert trapezoid_weights(x) @ y == pytest.approx(np.trapezoid(y, x))
    with pytest.raises(ValueError, match="increasing"):
        trapezoid_weights([1.0, 1.0])


def test_decision_matrix_and_recommendations(hand):
    items, ladder, t = hand
    dm = t.decision.set_index("rung")
    assert dm.loc["Q4_K_M", "worst_family"] == "a" and dm.loc["Q4_K_M", "worst_diff"] == -0.5
    assert dm.loc["F16", "tier"] == "negligible" and (dm["memory_source"] == "file_size").all()
    costs = ladder[["model", "rung"]].assign(peak_rss_bytes=[3.5 * GIB, 1.5 * GIB,
                                                             0.9 * GIB, 0.5 * GIB])
    grid = paired_grid(items, {"m": "F16"}, seed=0, n_boot=100)
    dm2 = decision_matrix(grid.comparisons, ladder, costs)
    rec = recommend(dm2, budgets_gib=(0.25, 1, 2, 4)).set_index("budget_gib")
    assert rec.loc[0.25, "rung"] == ""  # nothing fits
    assert rec.loc[1, "rung"] == "Q2_K"  # Q4_K_M fits too but is unacceptable
    assert rec.loc[2, "rung"] == "Q8_0"  # as good as F16 and smaller
    assert rec.loc[4, "rung"] == "Q8_0"
    assert (dm2["memory_source"] == "peak_rss").all()


def test_bad_input_is_refused():
    items, ladder = hand_sweep()
    with pytest.raises(ValueError, match="misaligned"):
        validate_items(items.drop(index=items.index[5]), {"m": "F16"})
    with pytest.raises(ValueError, match="no reference rung"):
        validate_items(items, {"other": "F16"})
    with pytest.raises(ValueError, match="reference rung 'BF16' has no item rows"):
        validate_items(items, {"m": "BF16"})
    with pytest.raises(ValueError, match="duplicate"):
        validate_items(pd.concat([items, items.iloc[:1]]), {"m": "F16"})
    with pytest.raises(ValueError, match="lacks columns"):
        validate_items(items.drop(columns="usable"), {"m": "F16"})
    flip = items.copy()
    flip.loc[flip.index[0], "usable"] = False
    with pytest.raises(ValueError, match="'usable' differs"):
        validate_items(flip, {"m": "F16"})
    with pytest.raises(ValueError, match="several reference"):
        results.stats_tables(items, ladder.assign(is_reference=True), seed=0, n_boot=10)
    with pytest.raises(ValueError, match="no reference rung"):
        results.stats_tables(items, ladder.assign(is_reference=False), seed=0, n_boot=10)


def test_grid_is_reproducible_and_cells_independent():
    r = synthetic_results(n_models=1, n_families=3, n_items=60, seed=1)
    refs = results.reference_rungs(r.ladder)
    g1 = paired_grid(r.items, refs, seed=7, n_boot=500)
    g2 = paired_grid(r.items, refs, seed=7, n_boot=500)
    pd.testing.assert_frame_equal(g1.comparisons, g2.comparisons)
    one = paired_grid(r.items[r.items.family == "fam01"], refs, seed=7, n_boot=500)
    sel = (g1.comparisons.family == "fam01").to_numpy()
    np.testing.assert_array_equal(one.boot, g1.boot[:, sel])


def test_unmeasurable_family_stays_in_comparisons_but_not_in_decisions(hand):
    """Calibration's gate: a family below min_usable must not drive death order or tiers."""
    items, ladder, t = hand
    gated = results.stats_tables(items.assign(measurable=items.family == "b"), ladder,
                                 seed=0, n_boot=500)
    a = gated.comparisons.query("family == 'a'")
    assert len(a) and not a.measurable.any() and gated.comparisons.query("family == 'b'").measurable.all()
    # 'a' loses 20 of 40 usable items at Q4_K_M; without it the worst family is the intact 'b'
    assert set(gated.death_order.family) == {"b"}
    dm = gated.decision.set_index("rung")
    assert dm.loc["Q4_K_M", "worst_family"] == "b" and dm.loc["Q4_K_M", "worst_diff"] == 0
    assert dm.loc["Q4_K_M", "tier"] == "negligible"
    assert t.decision.set_index("rung").loc["Q4_K_M", "tier"] != "negligible"  # ungated


def test_write_and_load_roundtrip(tmp_path):
    run = RunLayout.of("unit", tmp_path)
    r = write_synthetic(run, n_models=2, n_families=3, n_items=40, seed=2)
    loaded = inputs.load_results(run)
    assert len(loaded.items) == len(r.items) and loaded.costs is not None
    assert loaded.items.measurable.all()  # write_synthetic's calibration report: all measurable
    profile = dataclasses.replace(load_profile("smoke"), name="unit", outputs=str(tmp_path),
                                  n_boot=200)
    t = results.analyse(profile, loaded)
    for name in results.StatsTables._fields:
        back = pd.read_csv(run.tables_dir / f"{name}.csv")
        assert list(back.columns) == list(getattr(t, name).columns)
    assert json.loads((run.tables_dir / "stats_config.json").read_text())["n_boot"] == 200
    assert not list(run.tables_dir.glob("*.tmp"))
    for cost in run.rung_jsons("_cost.json"):
        cost.unlink()
    assert inputs.load_results(run).costs is None
    with pytest.raises(FileNotFoundError, match="no sweep cells"):
        inputs.load_results(RunLayout.of("nothing-here", tmp_path))
