"""Notebook 05 end to end on a synthetic sweep (papermill), checking the CSVs it writes."""

import os

import pandas as pd
import pytest

from gguf_fragility import paths, results

NOTEBOOK = paths.NOTEBOOKS / "05_stats.ipynb"
EXPECTED = {
    "accuracy": ["model", "family", "subset", "rung", "is_reference", "n", "n_correct",
                 "accuracy", "ci_low", "ci_high", "bpw"],
    "comparisons": ["model", "family", "rung", "reference", "subset", "n", "deaths",
                    "resurrections", "net_loss", "net_loss_rate", "diff", "diff_ci_low",
                    "diff_ci_high", "p_raw", "p_adj", "significant", "worse", "tost_p_3pp",
                    "equiv_3pp", "tost_p_5pp", "equiv_5pp", "mde", "cohens_h", "risk_diff",
                    "tier", "kl_mean", "same_top_rate", "margin_shrink_median", "bpw"],
    "death_order": ["model", "subset", "family", "death_rung", "death_bpw", "persistent",
                    "recoveries", "fragility", "fragility_ci_low", "fragility_ci_high",
                    "rank", "rank_ci_low", "rank_ci_high"],
    "decision": ["model", "rung", "bpw", "file_size_bytes", "peak_rss_bytes", "prompt_tps",
                 "gen_tps", "memory_bytes", "worst_family", "worst_diff", "worst_ci_low",
                 "worst_ci_high", "tier"],
    "recommendations": ["model", "budget_gib", "rung", "tier", "worst_diff", "memory_bytes"],
}


def make_synthetic_outputs(root, profile="smoke", **kwargs):
    """Test helper: lay a synthetic sweep out under ``root`` as notebooks 01 and 04 would."""
    old = paths.OUTPUTS
    paths.OUTPUTS = root
    try:
        return results.write_synthetic(profile, **kwargs)
    finally:
        paths.OUTPUTS = old


@pytest.mark.slow
def test_notebook_05_on_synthetic_sweep(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    make_synthetic_outputs(tmp_path, n_models=2, n_families=5, n_items=80, seed=3)
    monkeypatch.setenv("GGUF_FRAGILITY_OUTPUTS", str(tmp_path))  # read by the kernel
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "05_stats.ipynb"),
                               parameters={"profile": "smoke", "n_boot": 1000},
                               kernel_name="python3", cwd=str(paths.REPO),
                               progress_bar=False)
    tables = tmp_path / "smoke" / "tables"
    for name, cols in EXPECTED.items():
        df = pd.read_csv(tables / f"{name}.csv")
        assert len(df), name
        assert set(cols) <= set(df.columns), (name, set(cols) - set(df.columns))
    assert (tables / "stats_config.json").exists()
    figs = {p.name for p in (tmp_path / "smoke" / "figures").glob("*.svg")}
    assert {"accuracy_vs_bpw.svg", "netloss_heatmap.svg", "death_order.svg",
            "kl_vs_bpw.svg", "decision_matrix.svg"} <= figs
    assert os.environ["GGUF_FRAGILITY_OUTPUTS"] == str(tmp_path)
