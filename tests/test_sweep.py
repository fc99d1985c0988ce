"""Calibration and the sweep on the real SmolLM2: rows, provenance, resume after SIGKILL,
re-grade without a model, KL of the reference against itself."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_profile import TINY_FAMILIES, TINY_ITEMS, copy_tiny_run, tiny_profile_yaml

from gguf_fragility.artifacts import load_items
from gguf_fragility.layout import RunLayout
from gguf_fragility.profile import load_profile

pytestmark = pytest.mark.llama

FAMILIES = TINY_FAMILIES  # arithmetic, science_mc, knowledge_mc, factual_recall
N_ITEMS = TINY_ITEMS
PROFILE_YAML = tiny_profile_yaml(FAMILIES, N_ITEMS, n_threads=2)


@pytest.fixture(scope="module")
def mini(tmp_path_factory, tiny_run):
    """A tiny profile with its ladder and calibration done (a copy of the session's tiny run:
    calibrate finds every reference cell stored)."""
    from gguf_fragility.run.calibrate import calibrate

    folder = tmp_path_factory.mktemp("mini")
    outputs = copy_tiny_run(tiny_run, folder / "outputs", "mini")
    (folder / "mini.yaml").write_text(PROFILE_YAML + f"outputs: {str(outputs)!r}\n")
    profile = load_profile(folder / "mini.yaml")
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
    from gguf_fragility.run.sweep import rung_summary, sweep_rung

    profile, _ = mini
    rows = sweep_rung(profile, "smollm2-135m", "Q2_K")
    assert len(rows) == len(FAMILIES) * N_ITEMS
    assert not rows.duplicated(["family", "item_id"]).any()
    ladder = pd.read_csv(profile.layout.ladder_csv("smollm2-135m")).set_index("rung")
    assert (rows.model_sha256 == ladder.loc["Q2_K", "sha256"]).all()
    assert (rows.quant_type == "Q2_K").all()
    for col in ["probe_file_sha256", "scorer", "code_version", "llama_system_info", "params_hash",
                "item_hash", "raw_output"]:
        assert rows[col].astype(str).str.len().gt(0).all(), col
    # generative rows verified the reference's reply: what they record adds up
    gen = rows[rows["mode"] == "generate"]
    assert (gen.n_verified <= gen.gen_tokens.map(len)).all()
    assert ((gen.diverged_at < 0) | (gen.diverged_at == gen.n_verified)).all()
    assert gen.ref_answer_logprob.notna().all() and (gen.ref_answer_logprob < 0).all()
    summary = rung_summary(rows)
    assert summary.loc[["science_mc", "knowledge_mc"], "replies_verified"].isna().all()
    assert summary.loc["arithmetic", "replies_verified"] == int(
        ((gen.family == "arithmetic") & (gen.diverged_at < 0)).sum())
    everything = load_items(profile.layout)
    assert len(everything) == 2 * len(FAMILIES) * N_ITEMS
    assert set(everything.rung) == {"F16", "Q2_K"}


def test_reference_against_itself_has_zero_kl(mini):
    from gguf_fragility.run.plan import plan_rung
    from gguf_fragility.run.shift import LOG_RANGE, read_reference, rung_shift
    from gguf_fragility.run.sweep import measure_shift

    profile, _ = mini
    ref = measure_shift(profile, "smollm2-135m", "F16")  # from the store, no second run
    store = read_reference(profile.layout.reference_logprobs("smollm2-135m"))
    with plan_rung(profile, "smollm2-135m", "F16", families=()).open() as eng:
        again = rung_shift(eng, store)._asdict()
    # a real second run agrees up to the store's rounding: half a code step per entry
    # (llama-perplexity's uint16 codes span 16 nats), plus float32 rounding
    half_step = LOG_RANGE / 65535 / 2 + 1e-5
    assert abs(again["kl_mean"]) <= half_step and abs(again["kl_max"]) <= half_step
    assert again["same_top_rate"] == 1.0 and again["ppl_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert ref["kl_mean"] == 0.0 and ref["n_positions"] == again["n_positions"]
    assert ref["ppl"] == pytest.approx(again["ppl"], rel=1e-6)
    assert ref["flash_attn"] == again["flash_attn"] == "off"
    q2 = measure_shift(profile, "smollm2-135m", "Q2_K")
    assert q2["kl_mean"] > 0.01 and q2["same_top_rate"] < 1.0
    assert q2["kl_mean"] > 100 * half_step  # far above the rounding of the store
    f16 = load_items(profile.layout).query("rung == 'F16'")
    assert np.allclose(f16.answer_kl.dropna(), 0.0)


def _copy_prefix(src: RunLayout, dst: Path) -> None:
    """Copy ladder + calibration + reference cells of a run into another outputs root."""
    import shutil

    for sub in ["ladder", "calibration", "sweep/smollm2-135m/F16"]:
        shutil.copytree(src.root / sub, dst / src.profile / sub)
    shutil.copy(src.reference_logprobs("smollm2-135m"),
                RunLayout.of(src.profile, dst).reference_logprobs("smollm2-135m"))


def _sweep_cmd(profile_path) -> list[str]:
    code = ("from gguf_fragility.profile import load_profile; "
            "from gguf_fragility.run.sweep import sweep_rung; "
            f"sweep_rung(load_profile({str(profile_path)!r}), 'smollm2-135m', 'Q2_K')")
    return [sys.executable, "-c", code]


def _kill_after_cells(cmd: list[str], env: dict, folder: Path, n: int) -> dict[str, int]:
    """Start ``cmd``; SIGKILL it as soon as ``folder`` holds ``n`` cell files; return the
    cells stored at that moment (name -> mtime). Fails if the run finished first."""
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        while len(list(folder.glob("*.parquet"))) < n:
            assert proc.poll() is None, "the sweep ended before it could be killed mid-run"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    return {c.name: c.stat().st_mtime_ns for c in folder.glob("*.parquet")}


@pytest.mark.slow
def test_killed_sweep_resumes_without_loss_or_duplicates(mini, tmp_path):
    """Killed twice (SIGKILL) and resumed, a sweep in its own process ends with the rows of
    the uninterrupted sweep of the same profile (the session's tiny run swept Q2_K straight
    through, in-process: ``mini`` holds its cells)."""
    profile, _ = mini
    profile_path = tmp_path / "mini.yaml"
    profile_path.write_text(PROFILE_YAML)
    root = tmp_path / "interrupted"
    _copy_prefix(profile.layout, root)
    env = {**os.environ, "GGUF_FRAGILITY_OUTPUTS": str(root)}
    folder = root / "mini/sweep/smollm2-135m/Q2_K"
    # killed once right after its first cell, and again (resumed) after its second:
    # each kill lands inside the next family, with cells stored before it
    first = _kill_after_cells(_sweep_cmd(profile_path), env, folder, 1)
    second = _kill_after_cells(_sweep_cmd(profile_path), env, folder, len(first) + 1)
    assert 1 <= len(first) < len(second) < len(FAMILIES)
    assert all(second[c] == t for c, t in first.items())  # resumed, not redone
    subprocess.run(_sweep_cmd(profile_path), env=env, check=True, stderr=subprocess.DEVNULL)
    cells = sorted(folder.glob("*.parquet"))
    assert len(cells) == len(FAMILIES) and not list(folder.glob("*.tmp*"))
    assert all(c.stat().st_mtime_ns == second[c.name] for c in cells if c.name in second)
    straight = [profile.layout.cell("smollm2-135m", "Q2_K", c.stem) for c in cells]
    a, b = (pd.concat([pd.read_parquet(c) for c in run], ignore_index=True)
            .sort_values(["family", "item_id"]).reset_index(drop=True) for run in (cells, straight))
    assert len(a) == len(b) == len(FAMILIES) * N_ITEMS
    assert not a.duplicated(["family", "item_id"]).any()
    cols = ["family", "item_id", "raw_output", "correct", "params_hash"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_regrade_changes_scores_without_a_model(mini, monkeypatch, capsys):
    from gguf_fragility.engine import llama
    from gguf_fragility.run import sweep
    from gguf_fragility.store import write_table_atomic

    profile, _ = mini
    sweep.sweep_rung(profile, "smollm2-135m", "Q2_K")
    cell = profile.layout.cell("smollm2-135m", "Q2_K", "arithmetic")
    df = pd.read_parquet(cell)
    truth = df.correct.copy()
    df["correct"] = ~df.correct  # as if an old, buggy scorer had graded them
    df["score"] = 1.0 - df.score
    df["scorer"] = "number@0"  # ... of a version that no longer exists
    write_table_atomic(df, cell)  # stored by the sweep's own writer, digest included
    # a cell edited by hand (no digest) is named and left to the next sweep, not re-scored
    hand = profile.layout.cell("smollm2-135m", "Q2_K", "science_mc")
    pd.read_parquet(hand).to_parquet(hand, index=False)
    capsys.readouterr()

    def no_model(*a, **k):
        raise AssertionError("regrade must not load a model")

    monkeypatch.setattr(llama.Engine, "__init__", no_model)
    summary = sweep.regrade(profile.layout)
    assert summary.set_index("cell").loc["smollm2-135m/Q2_K/arithmetic.parquet", "changed"] == len(df)
    assert (pd.read_parquet(cell).correct == truth).all()
    # the re-scored cell carries the current scorer tags, so the next sweep reuses it
    from gguf_fragility.run.cells import scorer_tags
    from gguf_fragility.run.cluster import run_cells
    from gguf_fragility.run.plan import plan_rung

    assert set(pd.read_parquet(cell).scorer) <= scorer_tags(
        plan_rung(profile, "smollm2-135m", "Q2_K", families=["arithmetic"]).cells[0].items)
    assert not run_cells(plan_rung(profile, "smollm2-135m", "Q2_K", families=["arithmetic"]))[0].ran
    assert "smollm2-135m/Q2_K/science_mc.parquet" not in set(summary.cell)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if str(hand) in ln]
    assert len(lines) == 1 and "no content digest" in lines[0], lines


def test_tampered_probe_file_is_refused_by_sweep_and_regrade(mini, tmp_path, monkeypatch):
    """Calibrate, sweep and regrade read items through probes.load_family, which checked
    each item but not manifest.json: a file that lost an item, or whose item was edited with
    its hash recomputed, was used silently (old code: no error)."""
    import shutil

    from gguf_fragility import paths, probes
    from gguf_fragility.run import sweep
    from gguf_fragility.run.cluster import run_cells
    from gguf_fragility.run.plan import plan_rung

    profile, _ = mini
    copy = tmp_path / "probes"
    shutil.copytree(paths.PROBES, copy)
    f = copy / "arithmetic.jsonl"
    items = probes.read_jsonl(f)
    probes.write_jsonl(f, items[:-1])  # one item lost, every remaining item valid
    monkeypatch.setattr(paths, "PROBES", copy)
    with pytest.raises(probes.ProbeSchemaError, match="holds 299 items, manifest.json records 300"):
        run_cells(plan_rung(profile, "smollm2-135m", "Q2_K", families=["arithmetic"]))[0]
    items[0] = probes.with_hash({**items[0], "gold": ["-1"]})
    probes.write_jsonl(f, items)
    with pytest.raises(probes.ProbeSchemaError, match=f"{f}: its sha256 .* manifest.json records"):
        sweep.regrade(profile.layout)
