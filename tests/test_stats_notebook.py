"""Notebook 05 end to end on a synthetic sweep (papermill), checking the CSVs it writes.

The notebook runs once per session on the shared synthetic run (``synthetic_chapters``).
"""

import json

import pandas as pd
import pytest
from synthetic_run import N_BOOT

from gguf_fragility.layout import Table
from gguf_fragility.profile import Profile

EXPECTED = {
    "accuracy": ["model", "family", "rung", "is_reference", "is_floor", "n", "n_correct",
                 "accuracy", "ci_low", "ci_high", "bpw"],
    "comparisons": ["model", "lens", "family", "rung", "bpw", "reference", "measurable", "n",
                    "effect", "ci_low", "ci_high", "unit", "p_value", "p_method", "testable",
                    "reject", "decision", "planned_mde", "mde_unit", "level", "tarone_k",
                    "deaths", "resurrections", "flips", "flip_rate", "floor_flip_rate",
                    "floor", "floor_mean", "kl_mean", "same_top_rate"],
    "death_order": ["model", "family", "n", "death_rung_correctness", "death_bpw_correctness",
                    "death_rung_fidelity", "death_rung_margin", "fragility",
                    "fragility_ci_low", "fragility_ci_high", "rank_low", "rank_high",
                    "tied_with"],
    "decision": ["model", "rung", "bpw", "file_size_bytes", "model_buffer_bytes",
                 "kv_buffer_bytes", "compute_buffer_bytes", "planned_memory_bytes",
                 "peak_rss_bytes", "prompt_tps", "gen_tps", "memory_bytes", "memory_source",
                 "n_loss_correctness", "n_undecided_margin",
                 "worst_family", "worst_min_diff", "worst_sim_low", "worst_sim_high",
                 "quality"],
    "recommendations": ["model", "budget_gib", "rung", "basis", "quality", "memory_bytes",
                        "memory_source"],
    "planner": ["model", "family", "n", "level", "planned_mde", "items_needed"],
    "lens_summary": ["model", "lens", "n_cells", "n_decided", "n_undecided", "n_untestable",
                     "undecided_mde_min", "floor_flip_rate"],
}


@pytest.mark.slow
def test_notebook_05_on_synthetic_sweep_without_llama_cpp(synthetic_chapters):
    """Notebook 05 reads only ``profile``: its settings come from the profile, and its
    kernel runs where llama.cpp cannot be imported (a laptop without a compiler)."""
    profile = synthetic_chapters.profile
    for name, cols in EXPECTED.items():
        df = pd.read_csv(profile.layout.table(name))
        assert len(df), name
        assert set(cols) <= set(df.columns), (name, set(cols) - set(df.columns))
    config = json.loads(profile.layout.stats_config.read_text())
    # the profile's value, not a default
    assert config["n_boot"] == profile.n_boot == N_BOOT != Profile.n_boot
    assert config["seed"] == profile.seed and config["alpha"] == profile.alpha
    assert config["correction"] == "holm"  # the design's, not a setting
    dm = pd.read_csv(profile.layout.table(Table.DECISION))  # memory is llama.cpp's planned memory
    assert (dm.memory_source == "llama.cpp").all()
    assert (dm.memory_bytes == dm.planned_memory_bytes).all()
    assert (dm.memory_bytes < dm.peak_rss_bytes).all()
    rec = pd.read_csv(profile.layout.table(Table.RECOMMENDATIONS)).dropna(subset=["memory_bytes"])
    assert len(rec) and (rec.memory_source == "llama.cpp").all()
    cmp = pd.read_csv(profile.layout.table(Table.COMPARISONS))
    assert set(cmp["lens"]) == {"correctness", "fidelity", "margin"}
    assert "F16-floor" not in set(cmp["rung"])
    figs = {p.name for p in profile.layout.figures_dir.glob("*.svg")}
    assert {"accuracy_vs_bpw.svg", "lens_heatmap.svg", "death_order.svg",
            "kl_vs_bpw.svg", "decision_matrix.svg"} <= figs
