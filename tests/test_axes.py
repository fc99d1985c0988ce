"""Chapter 7's axes (KV cache, importance matrix) on fabricated sweeps: comparators, the
table, gains and losses, the notebook."""

import pandas as pd
import pytest
from synthetic_run import N_MODELS, RUNGS

from gguf_fragility.layout import Table
from gguf_fragility.report import findings
from gguf_fragility.stats import axes, results
from gguf_fragility.stats.grid import Settings
from gguf_fragility.stats.relevance import BEYOND, CHANGE, EQUIVALENT
from gguf_fragility.testing import IMATRIX_MEND, synthetic_results, with_axis_rungs

SETTINGS = Settings(n_boot=300)


def test_axis_pairs_name_each_rungs_comparators():
    present = pd.DataFrame({"model": ["a"] * 6 + ["b"] * 3 + ["c"] * 5, "rung": [
        "F16", "Q4_K_M", "Q4_K_M+kv_f16", "Q4_K_M+kv_q8_0", "Q4_K_M+kv_q4_0", "F16-floor",
        "F16", "Q2_K", "Q2_K+kv_q4_0",
        "F16", "Q2_K", "Q2_K+imatrix_wiki", "Q2_K+imatrix_code", "IQ3_XXS+imatrix_code"]})
    pairs = axes.axis_pairs(present).set_index(["model", "axis", "rung"])
    assert list(pairs.index) == [
        ("a", "kv_cache", "Q4_K_M+kv_q4_0"), ("a", "kv_cache", "Q4_K_M+kv_q8_0"),
        ("b", "kv_cache", "Q2_K+kv_q4_0"),  # the control itself is no KV rung
        # the code matrix against plain Q2_K and against the wiki matrix; the IQ rung has
        # no plain or wiki twin, so it has no comparator here (chapter 5 has it)
        ("c", "imatrix", "Q2_K+imatrix_code"), ("c", "imatrix_text", "Q2_K+imatrix_code"),
        ("c", "imatrix", "Q2_K+imatrix_wiki")]
    cmp = pairs["comparator"]
    assert cmp[("a", "kv_cache", "Q4_K_M+kv_q8_0")] == "Q4_K_M+kv_f16"
    assert pairs.loc[("a", "kv_cache", "Q4_K_M+kv_q8_0"), "comparator_kind"] == axes.CONTROL
    assert cmp[("b", "kv_cache", "Q2_K+kv_q4_0")] == "Q2_K"
    assert pairs.loc[("b", "kv_cache", "Q2_K+kv_q4_0"), "comparator_kind"] == axes.PLAIN
    assert cmp[("c", "imatrix", "Q2_K+imatrix_code")] == "Q2_K"
    assert cmp[("c", "imatrix_text", "Q2_K+imatrix_code")] == "Q2_K+imatrix_wiki"


def test_kv_axis_shows_the_fabricated_q4_0_damage_and_not_q8_0s():
    r = with_axis_rungs(synthetic_results(n_models=1, n_families=4, n_items=120,
                                          rungs=("F16", "Q8_0", "Q4_K_M", "Q2_K"), seed=1))
    table = axes.axis_comparisons(r.items, r.ladder, settings=SETTINGS)
    assert list(table.columns) == axes.COLUMNS
    assert set(table.comparator) == {"Q4_K_M+kv_f16"}
    margin = table[table.lens == "margin"].set_index(["rung", "family"])
    # q4_0 drops every log-prob by 0.15 nats: beyond 3 points of gold-answer probability on
    # every log-likelihood family, but spread over a reply's tokens it is within 3 points of
    # per-token probability; q8_0 drops 0.02 nats: never beyond the margin
    q4 = margin.loc["Q4_K_M+kv_q4_0"]
    gen = q4.index.str.endswith("_gen")
    assert (q4["decision"][~gen] == BEYOND).all() and (q4["ci_high"][~gen] < 0).all()
    assert (q4["decision"][gen] == EQUIVALENT).all()
    q8 = margin.loc["Q4_K_M+kv_q8_0", "decision"]  # a change may be shown, never beyond 3 points
    assert q8.isin([EQUIVALENT, CHANGE]).all() and (q8 == EQUIVALENT).any()
    corr = table[table.lens == "correctness"]
    assert (corr.effect <= 0).all()  # the fabricated cache only loses answers
    assert set(table.bits) == {8.5, 4.5} and set(table.axis) == {"kv_cache"}
    assert not (table.decision == axes.GAIN).any()  # the cache only harms
    text = findings.axis_findings(table)
    assert "Q4_K_M+kv_q4_0** against Q4_K_M+kv_f16 (kv_cache" in text
    assert "margin: loss shown" in text


def test_imatrix_axes_show_the_fabricated_gains_where_they_are():
    """wiki mends 15% of every family's answers and raises log-probs by 0.15 nats; code only
    the generative families: gains shown there, and code against wiki loses the others."""
    r = with_axis_rungs(synthetic_results(n_models=1, n_families=6, n_items=150,
                                          rungs=("F16", "Q4_K_M", "Q2_K"), seed=3),
                        "Q2_K", {"+imatrix_wiki": IMATRIX_MEND}, seed=3)
    r = with_axis_rungs(r, "Q2_K", {"+imatrix_code": IMATRIX_MEND}, seed=4, only="_gen")
    table = axes.axis_comparisons(r.items, r.ladder, settings=SETTINGS)
    margin = table[table.lens == "margin"].set_index(["axis", "rung", "family"])["decision"]
    margin = margin.sort_index()
    gen = [f for f in set(table.family) if f.endswith("_gen")]
    other = sorted(set(table.family) - set(gen))
    # a 0.15-nat rise is a gain of gold-answer probability; over a reply's tokens it is
    # within the per-token margin, so code's mend of the generative replies is equivalent
    assert (margin["imatrix", "Q2_K+imatrix_wiki"][other] == axes.GAIN).all()
    assert (margin["imatrix", "Q2_K+imatrix_wiki"][gen] == EQUIVALENT).all()
    assert (margin["imatrix", "Q2_K+imatrix_code"] == EQUIVALENT).all()
    # code against wiki: a loss on the families only wiki mends, nothing on the others
    assert (margin["imatrix_text", "Q2_K+imatrix_code"][other] == BEYOND).all()
    assert not (margin["imatrix_text", "Q2_K+imatrix_code"][gen] == BEYOND).any()
    fid = table[table.lens == "fidelity"]
    assert BEYOND not in set(fid.decision)  # plain Q2_K is no standard: changes only
    assert (fid[fid.axis == "imatrix"].decision == axes.CHANGE).any()
    bits = table.set_index("rung")["bits"]
    assert (bits == 3.0).all()  # the files' bpw: ties, ordered by name
    text = findings.axis_findings(table)
    assert "**synth-0 Q2_K+imatrix_wiki** against Q2_K (imatrix; " in text
    assert "margin: gain shown on" in text


def test_gains_keep_their_level_when_nothing_changes():
    """An imatrix twin that equals its comparator but for 0.01-nat jitter: over 40 fabricated
    sweeps the share with any gain or loss shown stays near alpha (type-I error)."""
    hits = 0
    for seed in range(40):
        r = synthetic_results(n_models=1, n_families=3, n_items=40, rungs=("F16", "Q2_K"),
                              seed=seed, noise_floor=False)
        r = with_axis_rungs(r, "Q2_K", {"+imatrix_wiki": 0.0}, seed=seed)
        t = axes.axis_comparisons(r.items, r.ladder, settings=Settings(n_boot=200, seed=seed))
        hits += bool(t.decision.isin([BEYOND, axes.GAIN]).any())
    assert hits / 40 <= 0.125  # 0.05 family-wise, with room for 40 runs' binomial noise


def test_axes_without_axis_rungs_are_empty():
    r = synthetic_results(n_models=1, n_families=3, n_items=30, rungs=("F16", "Q2_K"))
    table = axes.axis_comparisons(r.items, r.ladder, settings=SETTINGS)
    assert table.empty and list(table.columns) == axes.COLUMNS
    assert "no rung with a comparator" in findings.axis_findings(table)


def test_decision_matrix_carries_kv_cache_bytes():
    r = with_axis_rungs(synthetic_results(n_models=1, n_families=3, n_items=40,
                                          rungs=("F16", "Q4_K_M", "Q2_K")))
    costs = r.costs.assign(kv_cache_bytes=r.costs.get("kv_cache_bytes").fillna(48 * 2**20))
    t = results.stats_tables(r.items, r.ladder, costs, r.shift, settings=SETTINGS)
    assert set(t.decision.rung) == {"F16", "Q4_K_M", "Q2_K"}  # KV rungs are not ladder rungs
    assert (t.decision.kv_cache_bytes == 48 * 2**20).all()


@pytest.mark.slow
def test_notebook_07_on_synthetic_sweep_without_llama_cpp(synthetic_chapters):
    """Notebook 07 reads only ``profile`` and runs where llama.cpp is absent (the shared
    synthetic run: KV rungs of Q4_K_M, imatrix rungs of Q2_K)."""
    run = synthetic_chapters.profile.layout
    table = pd.read_csv(run.table(Table.AXIS_COMPARISONS))
    costs = pd.read_csv(run.table(Table.KV_COSTS))
    # per model: the ladder rungs, three KV rungs and two imatrix rungs (lesions cost nothing)
    assert len(costs) == N_MODELS * (len(RUNGS) + 5)
    assert set(zip(table.axis, table.rung, strict=True)) == {
        ("kv_cache", "Q4_K_M+kv_q8_0"), ("kv_cache", "Q4_K_M+kv_q4_0"),
        ("imatrix", "Q2_K+imatrix_wiki"), ("imatrix", "Q2_K+imatrix_code"),
        ("imatrix_text", "Q2_K+imatrix_code")}
    assert (run.figures_dir / "axes.svg").is_file()
    assert "gain shown" in (synthetic_chapters.executed / "07_axes.ipynb").read_text()
