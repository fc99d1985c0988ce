"""The whole autopsy, as a user runs it: `gguf-fragility run` on a tiny profile, then the site."""

import os
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = [pytest.mark.llama, pytest.mark.slow]

TINY = """
# tiny: the smallest real run of every chapter (SmolLM2, two rungs, three cheap families)
models:
  smollm2-135m:
    rungs: [F16, Q2_K]
families: [science_mc, knowledge_mc, string_ops]
n_items: 4
min_usable: 0
min_families: 1
shift_passages: 2
shift_tokens: 64
n_boot: 1000
engine: {n_ctx: 1024, n_threads: 2}
"""


def test_run_command_executes_every_chapter_and_renders_the_site(tmp_path, smol_ladder):
    profiles, outputs = tmp_path / "profiles", tmp_path / "outputs"
    profiles.mkdir()
    (profiles / "tiny.yaml").write_text(TINY)
    env = {**os.environ, "GGUF_FRAGILITY_PROFILES": str(profiles),
           "GGUF_FRAGILITY_OUTPUTS": str(outputs)}
    done = subprocess.run([sys.executable, "-m", "gguf_fragility.cli", "run", "--profile", "tiny"],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    run = outputs / "tiny"
    executed = sorted(p.name for p in (run / "notebooks").glob("*.ipynb"))
    assert executed == ["01_ladder__smollm2-135m.ipynb", "02_probes.ipynb",
                        "03_calibrate__smollm2-135m.ipynb",
                        "04_sweep__smollm2-135m__F16-floor.ipynb",  # the noise floor
                        "04_sweep__smollm2-135m__F16.ipynb",
                        "04_sweep__smollm2-135m__Q2_K.ipynb", "05_stats.ipynb", "06_transfer.ipynb",
                        "07_axes.ipynb", "08_lesions.ipynb"]
    timings = pd.read_csv(run / "timings.csv")
    assert list(timings.stage.unique()) == ["ladder", "probes", "calibrate", "sweep", "stats",
                                            "transfer", "axes", "lesions"]
    assert "wall time per stage" in done.stdout
    rows = pd.concat(pd.read_parquet(p) for p in (run / "sweep").rglob("*.parquet"))
    assert len(rows) == 3 * 3 * 4  # (F16, floor, Q2_K) x families x items
    assert set(rows.rung) == {"F16", "F16-floor", "Q2_K"}
    comparisons = pd.read_csv(run / "tables" / "comparisons.csv")
    assert set(comparisons.family) == {"science_mc", "knowledge_mc", "string_ops"}
    assert set(comparisons.rung) == {"Q2_K"}  # the floor is a control, never a rung
    assert set(comparisons.lens) == {"correctness", "fidelity", "margin"}
    assert (run / "site" / "index.html").is_file()
    # a rerun finds every cell done and changes no row
    again = subprocess.run([sys.executable, "-m", "gguf_fragility.cli", "run", "--profile", "tiny",
                            "--stages", "sweep", "--no-site"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rows2 = pd.concat(pd.read_parquet(p) for p in (run / "sweep").rglob("*.parquet"))
    key = ["rung", "family", "item_id", "raw_output", "correct", "params_hash"]
    pd.testing.assert_frame_equal(rows[key].reset_index(drop=True), rows2[key].reset_index(drop=True))
