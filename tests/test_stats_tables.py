"""The lens grid, death order, decision matrix and table I/O, on a hand-built sweep whose
answers are known."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from gguf_fragility import artifacts
from gguf_fragility.layout import RunLayout
from gguf_fragility.profile import NOISE_FLOOR, load_profile
from gguf_fragility.stats import lenses, relevance, results
from gguf_fragility.stats.deathorder import tie_ranks
from gguf_fragility.stats.decision import GIB, recommend
from gguf_fragility.stats.grid import validate_items
from gguf_fragility.testing import synthetic_results, write_synthetic

BPW = {"F16": 16.0, "Q8_0": 8.5, "Q4_K_M": 4.9, "Q2_K": 3.0}
SETTINGS = results.Settings(n_boot=1000)


def hand_sweep():
    """
    A sweep whose answers are set by hand (model "m", reference F16, floor F16-floor).

    - ``a`` (40 items, log-likelihood; the reference right on 30): Q8_0 intact, Q4_K_M
      loses 20 items, Q2_K loses 25; the lost items' margins and gold log-probabilities
      drop by 2 nats (gold probability 82 -> 11 points). The floor
      flips one item the reference got wrong to another wrong letter. Death rung Q4_K_M
      on every lens.
    - ``b`` (120 items): intact everywhere, margins move by at most 0.001 nats.
    - ``c`` (6 items): Q2_K loses all 6: too few items ever to be significant (untestable).
    - ``d`` (40 items): only Q4_K_M loses 20; Q2_K is intact, so the fixed sequence stops
      at Q2_K and Q4_K_M is never rejected: no death rung (monotone by construction).
    - ``g`` (40 items, generative, 10-token replies): accuracy intact; the reference's own
      answer loses 1 nat of log-probability at Q2_K only (about 5 points of per-token
      probability). Death rung Q2_K on margin only.
    """
    rows = []
    rng = np.random.default_rng(0)
    rungs = [*BPW, NOISE_FLOOR]

    def add(fam, i, rung, ok, ext, margin=np.nan, ref_lp=np.nan, mode="loglik", drop=0.0):
        rows.append({"family": fam, "item_id": f"{fam}{i}", "rung": rung, "correct": ok,
                     "extracted": ext, "mode": mode, "margin": margin,
                     "gold_logprob": -0.2 - drop if mode == "loglik" else np.nan,
                     "ref_answer_logprob": ref_lp, "n_gen_tokens": 10 if mode == "generate" else 0})

    for i in range(40):
        right = i < 30
        m0 = 2.0 + 0.01 * i if right else -1.0 - 0.01 * i
        for rung in rungs:
            dies = right and ((rung == "Q4_K_M" and i < 20) or (rung == "Q2_K" and i < 25))
            ok = right and not dies
            ext = "A" if ok else ("C" if (rung == NOISE_FLOOR and i == 35) else "B")
            add("a", i, rung, ok, ext, m0 - (2.0 if dies else 0.0) + 1e-4 * rng.normal(),
                drop=2.0 if dies else 0.0)
        for rung in rungs:
            dies = rung == "Q4_K_M" and i < 20
            add("d", i, rung, not dies, "B" if dies else "A", 2.0 - (2.0 if dies else 0.0)
                + 1e-4 * rng.normal(), drop=2.0 if dies else 0.0)
            lp = -5.0 - 0.1 * i - (1.0 if rung == "Q2_K" else 0.0) + 1e-3 * rng.normal()
            add("g", i, rung, i % 2 == 0, f"ans{i}", ref_lp=lp, mode="generate")
    for i in range(120):
        for rung in rungs:
            add("b", i, rung, True, "A", 1.0 + 0.001 * rng.uniform(-1, 1))
    for i in range(6):
        for rung in rungs:
            add("c", i, rung, rung != "Q2_K", "B" if rung == "Q2_K" else "A", 1.0)
    df = pd.DataFrame(rows)
    df.insert(0, "model", "m")
    df["answer_kl"] = df["rung"].map({"Q8_0": 0.01, "Q4_K_M": 0.1, "Q2_K": 0.5}).fillna(0.0)
    df["answer_same_top"] = 1.0
    ladder = pd.DataFrame({"model": "m", "rung": list(BPW), "is_reference": [True] + [False] * 3,
                           "bpw": list(BPW.values()),
                           "file_size_bytes": [int(b * 1e8) for b in BPW.values()]})
    return df, ladder


@pytest.fixture(scope="module")
def hand():
    items, ladder = hand_sweep()
    return items, ladder, results.stats_tables(items, ladder, settings=SETTINGS)


def cell(t, lens, family, rung):
    c = t.comparisons
    return c[(c.lens == lens) & (c.family == family) & (c.rung == rung)].iloc[0]


def test_correctness_uses_every_item_and_matches_statsmodels(hand):
    _, _, t = hand
    row = cell(t, "correctness", "a", "Q4_K_M")
    assert (row.n, row.deaths, row.resurrections) == (40, 20, 0)  # all items, not the 30 right
    assert row.acc_ref == 0.75 and row.effect == pytest.approx(-0.5)
    assert row.p_value == pytest.approx(mcnemar([[10, 20], [0, 10]], exact=True).pvalue)
    ci = lenses.paired_diff_ci(20, 0, 40)
    assert (row.ci_low, row.ci_high) == pytest.approx((float(ci.low), float(ci.high)))
    assert row.decision == relevance.BEYOND and row.reject and row.kl_mean == pytest.approx(0.1)


def test_death_rungs_known_by_construction(hand):
    _, _, t = hand
    d = t.death_order.set_index("family")
    assert set(d.index) == {"a", "b", "c", "d", "g"}
    for lens in ("correctness", "fidelity", "margin"):
        assert d.loc["a", f"death_rung_{lens}"] == "Q4_K_M"
        assert d.loc["a", f"death_bpw_{lens}"] == 4.9
        assert d.loc["b", f"death_rung_{lens}"] == ""
        assert d.loc["d", f"death_rung_{lens}"] == ""
    assert d.loc["g", "death_rung_margin"] == "Q2_K"
    assert d.loc["g", "death_rung_correctness"] == ""
    # d: Q4_K_M alone loses 20 items (raw p ~ 2e-6) but the sequence stops at intact Q2_K
    row = cell(t, "correctness", "d", "Q4_K_M")
    assert row.p_value < 1e-5 and not row.reject and row.decision == relevance.UNDECIDED


def test_untestable_family_and_tarone(hand):
    _, _, t = hand
    c = t.comparisons.query("family == 'c' and lens == 'correctness'")
    assert (c.decision == "untestable").all() and not c.testable.any()
    np.testing.assert_allclose(c.min_p, 2 * 0.5**6)
    a = cell(t, "correctness", "a", "Q2_K")
    assert a.tarone_k == 4 and a.level == pytest.approx(0.05 / 4)  # a, b, d, g tested
    assert t.lens_summary.set_index("lens").loc["correctness", "n_untestable"] == 3


def test_equivalence_needs_the_interval_inside_the_margin(hand):
    items, ladder, t = hand
    b = cell(t, "correctness", "b", "Q2_K")  # 120 items, no discordance: Tango about ±3.1 pp
    assert b.equivalence_margin == 0.03 and b.ci_low < -0.03 and b.ci_high < 0.05
    assert b.decision == relevance.UNDECIDED  # not within the default 3 points
    wide = results.stats_tables(items, ladder, settings=SETTINGS.replace(equivalence_margin=0.05))
    b5 = cell(wide, "correctness", "b", "Q2_K")
    assert b5.decision == relevance.EQUIVALENT and b5.equivalence_margin == 0.05
    a8 = cell(t, "correctness", "a", "Q8_0")  # 40 items, no discordance: interval too wide
    assert a8.decision == relevance.UNDECIDED and a8.ci_low < -0.05
    assert a8.planned_mde > 0.05 and "exact" in a8.mde_basis
    m = cell(t, "margin", "b", "Q2_K")  # no change on 120 items: collapses shown rare
    assert m.decision == relevance.EQUIVALENT and m.unit == "gold-answer probability (pp)"
    assert m.equivalence_margin == 3.0
    a4 = cell(t, "margin", "a", "Q4_K_M")  # 20 of 40 items: gold probability 82 -> 11 points
    assert a4.effect == pytest.approx(-50 * (np.exp(-0.2) - np.exp(-2.2)), abs=1e-6)
    assert a4.effect_nats == pytest.approx(-1.0, abs=1e-3) and a4.decision == relevance.BEYOND
    g = cell(t, "margin", "g", "Q2_K")  # 1 nat over 10 tokens: about -5 points per token
    assert g.unit == "reply per-token probability (pp)" and g.effect < -4


def test_noise_floor_present(hand):
    _, _, t = hand
    f = cell(t, "fidelity", "a", "Q4_K_M")
    assert f.floor == "measured" and f.floor_flips == 1 and f.floor_flip_rate == 1 / 40
    assert f.flips == 20 and f.rung_only == 20 and f.floor_only == 1
    assert f.effect == pytest.approx(19 / 40) and f.decision == relevance.BEYOND
    for name in ("comparisons", "death_order", "decision"):
        table = getattr(t, name)
        assert NOISE_FLOOR not in set(table.get("rung", [])), name
    acc = t.accuracy.set_index(["family", "rung"])
    assert acc.loc[("a", NOISE_FLOOR), "is_floor"] and np.isnan(acc.loc[("a", NOISE_FLOOR), "bpw"])
    assert t.lens_summary.set_index("lens").loc["fidelity", "floor_flip_rate"] == pytest.approx(
        1 / (40 + 120 + 6 + 40 + 40))


def test_noise_floor_absent_tests_against_zero(hand):
    items, ladder, _ = hand
    t = results.stats_tables(items[items.rung != NOISE_FLOOR], ladder, settings=SETTINGS)
    f = cell(t, "fidelity", "a", "Q4_K_M")
    assert f.floor == "absent: tested against zero" and f.floor_flip_rate == 0
    assert f.p_value == pytest.approx(0.5**20)  # 20 flips, none on a floor: one-sided exact
    assert np.isnan(t.lens_summary.set_index("lens").loc["fidelity", "floor_flip_rate"])
    assert (t.comparisons.query("lens == 'margin'")["floor"] == "absent").all()


def test_fragility_equal_weights_and_tie_ranks(hand):
    _, _, t = hand
    d = t.death_order.set_index("family")
    assert d.loc["a", "fragility"] == pytest.approx((0 + 50 + 62.5) / 3)
    assert d.loc["d", "fragility"] == pytest.approx(50 / 3)
    assert d.loc["a", "rank_low"] == 1
    # b and g never lose accuracy: tied at 0, both hold ranks 4-5
    assert (d.loc["b", "rank_low"], d.loc["b", "rank_high"]) == (4, 5)
    assert (d.loc["g", "rank_low"], d.loc["g", "rank_high"]) == (4, 5)
    assert d.loc["a", "fragility_ci_low"] <= d.loc["a", "fragility"] <= d.loc["a", "fragility_ci_high"]
    low, high = tie_ranks(np.array([3.0, 1.0, 3.0, 0.0]))
    assert low.tolist() == [1, 3, 1, 4] and high.tolist() == [2, 3, 2, 4]


def test_death_order_ranks_are_rank_sets_of_the_fragility_intervals(hand):
    """Issue 25 gap 1: a (37.5 pp, 40 items) and c (33.3 pp, 6 items) cannot be separated,
    so both hold rank 1 and each names the other as tied; no bootstrap rank columns, no
    order by name."""
    from gguf_fragility.stats.ranking import rank_sets

    _, _, t = hand
    d = t.death_order
    assert not {"rank_ci_low", "rank_ci_high"} & set(d.columns)
    r = rank_sets(-d["fragility"], -d["fragility_ci_high"], -d["fragility_ci_low"])
    assert d["rank_low"].tolist() == r.low.tolist() and d["rank_high"].tolist() == r.high.tolist()
    x = d.set_index("family")
    assert x.loc["a", "rank_low"] == x.loc["c", "rank_low"] == 1
    assert "c" in x.loc["a", "tied_with"].split(", ") and "a" in x.loc["c", "tied_with"].split(", ")
    assert set(x.loc["b", "tied_with"].split(", ")) == {"g"}


def test_decision_matrix_and_recommendations(hand):
    items, ladder, t = hand
    dm = t.decision.set_index("rung")
    q4 = dm.loc["Q4_K_M"]
    assert q4.worst_family == "a" and q4.worst_min_diff == pytest.approx(-0.5)
    assert q4.quality == relevance.BEYOND and q4.n_loss_correctness == 1  # a; d is never reached
    sim = lenses.paired_diff_ci(20, 0, 40, alpha=0.05 / 5)  # five measurable families
    assert q4.worst_sim_low == pytest.approx(float(sim.low))
    assert dm.loc["F16", "quality"] == "reference"
    costs = ladder[["model", "rung"]].assign(peak_rss_bytes=[3.5 * GIB, 1.5 * GIB,
                                                             0.9 * GIB, 0.5 * GIB])
    t2 = results.stats_tables(items, ladder, costs, settings=SETTINGS)
    rec = recommend(t2.decision, budgets_gib=(0.25, 1, 2, 4)).set_index("budget_gib")
    assert rec.loc[0.25, "rung"] == ""  # nothing fits
    assert rec.loc[4, "rung"] == "F16" and rec.loc[4, "basis"] == "reference"
    assert rec.loc[1, "basis"] == "no equivalence shown: best lower bound"
    assert (t2.decision["memory_source"] == "file").all()  # no planned memory, no KV size


def test_recommendations_follow_planned_memory_not_peak_rss(hand):
    """A budget that fits F16's planned memory (llama.cpp's buffers) recommends by quality,
    although every rung's process peaked above it; a rung without buffers falls back to
    file + KV cache, labelled."""
    items, ladder, _ = hand
    size = ladder.set_index("rung")["file_size_bytes"]
    costs = ladder[["model", "rung"]].assign(
        peak_rss_bytes=2.28e9, kv_cache_bytes=45 * 2**20,
        planned_memory_bytes=[size[r] + 0.15e9 for r in ladder.rung])
    costs.loc[costs.rung == "Q2_K", "planned_memory_bytes"] = np.nan
    t = results.stats_tables(items, ladder, costs, settings=SETTINGS)
    dm = t.decision.set_index("rung")
    assert dm.loc["F16", "memory_bytes"] == 1.6e9 + 0.15e9  # not 2.28e9
    assert (dm.loc[["F16", "Q8_0", "Q4_K_M"], "memory_source"] == "llama.cpp").all()
    assert dm.loc["Q2_K", "memory_source"] == "file+kv"
    assert dm.loc["Q2_K", "memory_bytes"] == 3e8 + 45 * 2**20
    assert (dm["peak_rss_bytes"] == 2.28e9).all()  # kept, as a secondary column
    rec = recommend(t.decision, budgets_gib=(2,)).set_index("budget_gib")
    # F16 fits 2 GiB; no rung is shown equivalent (c has 6 items), so the reference it is
    assert not (dm["quality"] == relevance.EQUIVALENT).any()
    assert rec.loc[2, "rung"] == "F16" and rec.loc[2, "basis"] == "reference"
    assert rec.loc[2, "memory_source"] == "llama.cpp"


def test_unmeasurable_family_stays_in_comparisons_but_not_in_decisions(hand):
    items, ladder, _ = hand
    t = results.stats_tables(items.assign(measurable=items.family != "a"), ladder,
                             settings=SETTINGS)
    a = t.comparisons.query("family == 'a'")
    assert len(a) and (a.decision == "not measurable").all() and not a.reject.any()
    assert "a" not in set(t.death_order.family)
    assert t.decision.set_index("rung").loc["Q4_K_M", "worst_family"] != "a"


def test_planner_with_a_target():
    items, ladder = hand_sweep()
    t = results.stats_tables(items, ladder, settings=SETTINGS, target_mde=0.1)
    p = t.planner.set_index("family")
    assert p.loc["b", "n"] == 120 and p.loc["b", "items_needed"] > p.loc["b", "n"]
    assert (p["target_mde"] == 0.1).all() and (p["design_discordance"] == 0.2).all()


def test_bad_input_is_refused():
    items, ladder = hand_sweep()
    with pytest.raises(ValueError, match="no reference rung"):
        validate_items(items, {"other": "F16"})
    with pytest.raises(ValueError, match="reference rung 'BF16' has no item rows"):
        validate_items(items, {"m": "BF16"})
    with pytest.raises(ValueError, match="duplicate"):
        validate_items(pd.concat([items, items.iloc[:1]]), {"m": "F16"})
    with pytest.raises(ValueError, match="lacks columns"):
        validate_items(items.drop(columns="extracted"), {"m": "F16"})
    with pytest.raises(ValueError, match="mode"):
        validate_items(items.assign(mode="chat"), {"m": "F16"})
    with pytest.raises(ValueError, match="several reference"):
        results.stats_tables(items, ladder.assign(is_reference=True), settings=SETTINGS)
    with pytest.raises(ValueError, match="no ladder row"):
        results.stats_tables(items, ladder[ladder.rung != "Q8_0"], settings=SETTINGS)


def test_items_seen_by_both_only():
    """A rung that lost an item's row is compared on the items both saw."""
    items, ladder = hand_sweep()
    drop = items[(items.rung == "Q2_K") & (items.item_id == "a0")].index
    t = results.stats_tables(items.drop(index=drop), ladder, settings=SETTINGS)
    assert cell(t, "correctness", "a", "Q2_K").n == 39
    assert cell(t, "correctness", "a", "Q4_K_M").n == 40


def test_write_and_load_roundtrip(tmp_path):
    run = RunLayout.of("unit", tmp_path)
    r = write_synthetic(run, n_models=2, n_families=3, n_items=40, seed=2)
    loaded = artifacts.load_results(run)
    assert len(loaded.items) == len(r.items) and loaded.costs is not None
    assert NOISE_FLOOR in set(loaded.items.rung) and loaded.items.measurable.all()
    profile = dataclasses.replace(load_profile("smoke"), name="unit", outputs=str(tmp_path),
                                  n_boot=200)
    t = results.analyse(profile, loaded)
    for name in results.StatsTables._fields:
        back = pd.read_csv(run.table(name))
        assert list(back.columns) == list(getattr(t, name).columns)
    config = json.loads(run.stats_config.read_text())
    assert config["n_boot"] == 200 and config["gold_prob_margin_pp"] == 3.0
    assert "margin_equivalence_nats" not in config
    assert not list(run.tables_dir.glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="no sweep cells"):
        artifacts.load_results(RunLayout.of("nothing-here", tmp_path))


def test_synthetic_fixture_has_the_contract():
    r = synthetic_results(n_models=1, n_families=3, n_items=30, seed=5)
    gen = r.items[r.items["mode"] == "generate"]
    ll = r.items[r.items["mode"] == "loglik"]
    assert gen["margin"].isna().all() and gen["ref_answer_logprob"].notna().all()
    assert ll["ref_answer_logprob"].isna().all() and ll["extracted"].isin(list("ABCD")).all()
    assert NOISE_FLOOR not in set(r.ladder.rung)
    assert (ll["correct"] == (ll["extracted"] == "A")).all()


def test_a_rung_identical_to_the_reference_is_shown_equivalent_on_margin():
    """Every margin unchanged: the bootstrap has nothing to resample, the nats interval is
    [0, 0]; the points interval still charges the collapses 120 items cannot rule out
    (Clopper-Pearson upper share of 0/120 at level 0.05/4, times the 50 points beyond)."""
    items, ladder = hand_sweep()
    ref = items[(items.rung == "F16") & (items.family == "b")]
    items = pd.concat([items[~((items.rung == "Q8_0") & (items.family == "b"))],
                       ref.assign(rung="Q8_0")], ignore_index=True)
    t = results.stats_tables(items, ladder, settings=SETTINGS)
    m = cell(t, "margin", "b", "Q8_0")
    assert (m.effect_nats, m.ci_low_nats, m.ci_high_nats) == (0.0, 0.0, 0.0)
    assert (m.effect, m.ci_high) == (0.0, 0.0)
    assert m.ci_low == pytest.approx(-50 * (1 - 0.0125 ** (1 / 120)))
    assert m.decision == relevance.EQUIVALENT and not m.reject


def test_calibration_usable_flags():
    """Margin above the threshold for choice items; a one-continuation item (no margin)
    counts when correct; generative items must also be right under prompt variant 1."""
    from gguf_fragility.run.calibrate import usable_flags

    v0 = pd.DataFrame({"model": "m", "family": ["mc", "mc", "lambada", "lambada", "gen", "gen"],
                       "item_id": list("abcdef"), "item_hash": "h",
                       "mode": ["loglik"] * 4 + ["generate"] * 2,
                       "correct": [True, True, True, False, True, True],
                       "margin": [2.0, 0.1, np.nan, np.nan, np.nan, np.nan]})
    v1 = pd.DataFrame({"item_id": ["e", "f"], "correct": [True, False]})
    flags = usable_flags(v0, v1, threshold=0.5).set_index("item_id").usable
    assert flags.to_dict() == {"a": True, "b": False, "c": True, "d": False, "e": True,
                               "f": False}
