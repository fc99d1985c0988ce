"""Chapter 7's KV-cache axis on fabricated sweeps: comparators, the table, the notebook."""

import pandas as pd
import pytest

from gguf_fragility import paths
from gguf_fragility.layout import RunLayout
from gguf_fragility.stats import axes, results
from gguf_fragility.stats.grid import Settings
from gguf_fragility.testing import synthetic_results, with_kv_rungs, write_synthetic

SETTINGS = Settings(n_boot=300)


def test_kv_pairs_prefer_the_control_and_fall_back_to_the_plain_rung():
    present = pd.DataFrame({"model": ["a"] * 6 + ["b"] * 3, "rung": [
        "F16", "Q4_K_M", "Q4_K_M+kv_f16", "Q4_K_M+kv_q8_0", "Q4_K_M+kv_q4_0", "F16-floor",
        "F16", "Q2_K", "Q2_K+kv_q4_0"]})
    pairs = axes.kv_pairs(present).set_index(["model", "rung"])
    assert list(pairs.index) == [("a", "Q4_K_M+kv_q4_0"), ("a", "Q4_K_M+kv_q8_0"),
                                 ("b", "Q2_K+kv_q4_0")]  # the control itself is no KV rung
    assert pairs.loc[("a", "Q4_K_M+kv_q8_0"), "comparator"] == "Q4_K_M+kv_f16"
    assert pairs.loc[("a", "Q4_K_M+kv_q8_0"), "comparator_kind"] == axes.CONTROL
    assert pairs.loc[("b", "Q2_K+kv_q4_0"), "comparator"] == "Q2_K"
    assert pairs.loc[("b", "Q2_K+kv_q4_0"), "comparator_kind"] == axes.PLAIN


def test_kv_axis_shows_the_fabricated_q4_0_damage_and_not_q8_0s():
    r = with_kv_rungs(synthetic_results(n_models=1, n_families=4, n_items=120,
                                        rungs=("F16", "Q8_0", "Q4_K_M", "Q2_K"), seed=1))
    table = axes.kv_axis(r.items, settings=SETTINGS)
    assert list(table.columns) == axes.COLUMNS
    assert set(table.comparator) == {"Q4_K_M+kv_f16"}
    margin = table[table.lens == "margin"].set_index(["rung", "family"])
    # q4_0 drops every log-prob by 0.15 nats: a margin loss on every family; q8_0 by 0.02:
    # equivalent within 0.1 nats
    assert (margin.loc["Q4_K_M+kv_q4_0", "decision"] == "loss shown").all()
    assert (margin.loc["Q4_K_M+kv_q8_0", "decision"] == "equivalent within ±m shown").all()
    assert (margin.loc["Q4_K_M+kv_q4_0", "ci_high"] < 0).all()
    corr = table[table.lens == "correctness"]
    assert (corr.effect <= 0).all()  # the fabricated cache only loses answers
    assert set(table.cache_bits) == {8.5, 4.5}
    text = axes.kv_findings(table)
    assert "Q4_K_M+kv_q4_0** against Q4_K_M+kv_f16" in text and "margin: loss shown" in text


def test_kv_axis_without_kv_rungs_is_empty():
    r = synthetic_results(n_models=1, n_families=3, n_items=30, rungs=("F16", "Q2_K"))
    table = axes.kv_axis(r.items, settings=SETTINGS)
    assert table.empty and list(table.columns) == axes.COLUMNS
    assert "no KV-cache rung" in axes.kv_findings(table)


def test_decision_matrix_carries_kv_cache_bytes():
    r = with_kv_rungs(synthetic_results(n_models=1, n_families=3, n_items=40,
                                        rungs=("F16", "Q4_K_M", "Q2_K")))
    costs = r.costs.assign(kv_cache_bytes=r.costs.get("kv_cache_bytes").fillna(48 * 2**20))
    t = results.stats_tables(r.items, r.ladder, costs, r.shift, settings=SETTINGS)
    assert set(t.decision.rung) == {"F16", "Q4_K_M", "Q2_K"}  # KV rungs are not ladder rungs
    assert (t.decision.kv_cache_bytes == 48 * 2**20).all()


@pytest.mark.slow
@pytest.mark.parametrize("kv_weights", ["Q4_K_M", None])
def test_notebook_07_on_synthetic_sweep_without_llama_cpp(tmp_path, monkeypatch, no_llama_env,
                                                          kv_weights):
    """Notebook 07 reads only ``profile``, runs where llama.cpp is absent, and says so when
    a profile has no KV rung."""
    papermill = pytest.importorskip("papermill")
    write_synthetic(RunLayout.of("smoke", tmp_path), n_models=1, n_families=4, n_items=60,
                    rungs=("F16", "Q8_0", "Q4_K_M", "Q2_K"), seed=2, kv_weights=kv_weights)
    monkeypatch.setenv("GGUF_FRAGILITY_OUTPUTS", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", no_llama_env["PYTHONPATH"])
    out = tmp_path / "07_axes.ipynb"
    papermill.execute_notebook(str(paths.NOTEBOOKS / "07_axes.ipynb"), str(out),
                               parameters={"profile": "smoke"}, kernel_name="python3",
                               cwd=str(paths.REPO), progress_bar=False)
    tables = tmp_path / "smoke" / "tables"
    kv = pd.read_csv(tables / "kv_axis.csv")
    costs = pd.read_csv(tables / "kv_costs.csv")
    assert len(costs) == 4 + 3 * (kv_weights is not None)
    if kv_weights is None:
        assert kv.empty and "no KV-cache rung" in out.read_text()
    else:
        assert set(kv.rung) == {"Q4_K_M+kv_q8_0", "Q4_K_M+kv_q4_0"}
        assert (tmp_path / "smoke" / "figures" / "kv_axis.svg").is_file()
