"""Calibration and the sweep on the real SmolLM2: rows, provenance, resume after SIGKILL,
re-grade without a model, KL of the reference against itself."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from tiny_profile import tiny_profile_yaml

from gguf_fragility import paths
from gguf_fragility.params import load_profile

pytestmark = pytest.mark.llama

FAMILIES = ["arithmetic", "science_mc", "knowledge_mc", "factual_recall"]
N_ITEMS = 3
PROFILE_YAML = tiny_profile_yaml(FAMILIES, N_ITEMS, n_threads=2)


@pytest.fixture(scope="module")
def mini(tmp_path_factory, smol_ladder):
    """A tiny profile with its ladder and calibration done."""
    from gguf_fragility.calibrate import calibrate
    from gguf_fragility.ladder import build_ladder

    path = tmp_path_factory.mktemp("profiles") / "mini.yaml"
    path.write_text(PROFILE_YAML)
    profile = load_profile(path)
    build_ladder("smollm2-135m", list(profile.models["smollm2-135m"].rungs), profile="mini")
    cal = calibrate(profile, "smollm2-135m")
    return profile, cal


def test_calibration_report(mini):
    _, cal = mini
    assert list(cal.report.family) == FAMILIES
    assert (cal.report.n == N_ITEMS).all()
    assert ((cal.report.ci_low <= cal.report.accuracy) & (cal.report.accuracy <= cal.report.ci_high)).all()
    # usable implies correct at the reference
    assert not (cal.items.usable & ~cal.items.correct_v0).any()
    assert cal.gate_passed


def test_sweep_rows_and_provenance(mini):
    from gguf_fragility.sweep import load_items, sweep_rung

    profile, _ = mini
    rows = sweep_rung(profile, "smollm2-135m", "Q2_K")
    assert len(rows) == len(FAMILIES) * N_ITEMS
    assert not rows.duplicated(["family", "item_id"]).any()
    ladder = pd.read_csv(paths.ladder_dir("mini", "smollm2-135m") / "ladder.csv").set_index("rung")
    assert (rows.model_sha256 == ladder.loc["Q2_K", "sha256"]).all()
    assert (rows.quant_type == "Q2_K").all()
    for col in ["probe_file_sha256", "scorer", "code_version", "llama_system_info", "params_hash",
                "item_hash", "raw_output"]:
        assert rows[col].astype(str).str.len().gt(0).all(), col
    everything = load_items("mini")
    assert len(everything) == 2 * len(FAMILIES) * N_ITEMS
    assert set(everything.rung) == {"F16", "Q2_K"}


def test_reference_against_itself_has_zero_kl(mini):
    from gguf_fragility.sweep import load_items, measure_shift

    profile, _ = mini
    ref = measure_shift(profile, "smollm2-135m", "F16")
    assert ref["kl_mean"] == pytest.approx(0.0, abs=1e-6)
    assert ref["same_top_rate"] == 1.0 and ref["ppl_ratio"] == pytest.approx(1.0, abs=1e-6)
    q2 = measure_shift(profile, "smollm2-135m", "Q2_K")
    assert q2["kl_mean"] > 0.01 and q2["same_top_rate"] < 1.0
    f16 = load_items("mini").query("rung == 'F16'")
    assert np.allclose(f16.answer_kl.dropna(), 0.0)


def _copy_prefix(src: str, dst) -> None:
    """Copy ladder + calibration + reference cells of the mini profile into another outputs root."""
    import shutil

    for sub in ["ladder", "calibration", "sweep/smollm2-135m/F16"]:
        shutil.copytree(paths.OUTPUTS / "mini" / sub, dst / "mini" / sub)
    shutil.copy(paths.OUTPUTS / "mini/sweep/smollm2-135m/_reference_topk.npz",
                dst / "mini/sweep/smollm2-135m/_reference_topk.npz")


def _sweep_cmd(profile_path) -> list[str]:
    code = ("from gguf_fragility.params import load_profile; from gguf_fragility.sweep import sweep_rung;"
            f"sweep_rung(load_profile({str(profile_path)!r}), 'smollm2-135m', 'Q2_K')")
    return [sys.executable, "-c", code]


def test_killed_sweep_resumes_without_loss_or_duplicates(mini, tmp_path):
    profile, _ = mini
    profile_path = tmp_path / "mini.yaml"
    profile_path.write_text(PROFILE_YAML)
    runs = {}
    for name, kill in [("interrupted", True), ("straight", False)]:
        root = tmp_path / name
        _copy_prefix("mini", root)
        env = {**os.environ, "GGUF_FRAGILITY_OUTPUTS": str(root)}
        if kill:
            proc = subprocess.Popen(_sweep_cmd(profile_path), env=env, stderr=subprocess.DEVNULL)
            time.sleep(random.Random(os.getpid()).uniform(3.0, 8.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        subprocess.run(_sweep_cmd(profile_path), env=env, check=True, stderr=subprocess.DEVNULL)
        cells = sorted((root / "mini/sweep/smollm2-135m/Q2_K").glob("*.parquet"))
        runs[name] = pd.concat([pd.read_parquet(c) for c in cells], ignore_index=True)
    a, b = (runs[k].sort_values(["family", "item_id"]).reset_index(drop=True) for k in runs)
    assert len(a) == len(b) == len(FAMILIES) * N_ITEMS
    assert not a.duplicated(["family", "item_id"]).any()
    cols = ["family", "item_id", "raw_output", "correct", "params_hash"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_regrade_changes_scores_without_a_model(mini, monkeypatch):
    from gguf_fragility import infer, sweep

    profile, _ = mini
    sweep.sweep_rung(profile, "smollm2-135m", "Q2_K")
    cell = paths.sweep_dir("mini") / "smollm2-135m" / "Q2_K" / "arithmetic.parquet"
    df = pd.read_parquet(cell)
    truth = df.correct.copy()
    df["correct"] = ~df.correct  # as if an old, buggy scorer had graded them
    df["score"] = 1.0 - df.score
    df.to_parquet(cell, index=False)

    def no_model(*a, **k):
        raise AssertionError("regrade must not load a model")

    monkeypatch.setattr(infer.Engine, "__init__", no_model)
    summary = sweep.regrade("mini")
    assert summary.set_index("cell").loc["smollm2-135m/Q2_K/arithmetic.parquet", "changed"] == len(df)
    assert (pd.read_parquet(cell).correct == truth).all()
