"""Stored state is never silently stale or corrupt (issue 14, item 3), on the real SmolLM2.

Each stored artifact that exists but cannot be reused (torn, made with other parameters or
from other inputs, rows of another cell) is named in one stderr line with the reason and
rebuilt: sweep cells, the reference's top-k store, the shift cache and the rung GGUFs.
"""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from tiny_profile import tiny_profile_yaml

from gguf_fragility.profile import load_profile

pytestmark = pytest.mark.llama

SMOL = "smollm2-135m"
FAMILIES = ["arithmetic", "science_mc"]
YAML = tiny_profile_yaml(FAMILIES, 2, n_threads=2)


def _profile(folder, outputs, yaml: str = YAML):
    """The tiny profile ``stale`` writing under ``outputs``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stale.yaml").write_text(yaml + f"outputs: {str(outputs)!r}\n")
    return load_profile(folder / "stale.yaml")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, smol_ladder):
    """Outputs root of the tiny profile with its ladder, calibration, reference store and one
    Q2_K cell done; each test works on its own copy."""
    from gguf_fragility.ladder.quantize import build_ladder
    from gguf_fragility.run.calibrate import calibrate
    from gguf_fragility.run.cells import evaluate_cell

    root = tmp_path_factory.mktemp("stale")
    profile = _profile(root / "profiles", root / "outputs")
    build_ladder(SMOL, ["F16", "Q2_K"], run=profile.layout, n_threads=2)
    calibrate(profile, SMOL)
    evaluate_cell(profile, SMOL, "Q2_K", "arithmetic")
    return root / "outputs"


@pytest.fixture
def fresh(calibrated, tmp_path):
    """A private copy of the calibrated outputs and the profile that writes there."""
    shutil.copytree(calibrated, tmp_path / "outputs")
    return _profile(tmp_path / "profiles", tmp_path / "outputs")


def _report_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("gguf-fragility: rebuilding")]


def _truncate(path, keep: float = 0.5) -> None:
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


def test_truncated_cell_is_reported_and_rebuilt(fresh, capsys):
    from gguf_fragility.run.cells import evaluate_cell

    cell = fresh.layout.cell(SMOL, "Q2_K", "arithmetic")
    before = pd.read_parquet(cell)
    _truncate(cell)
    capsys.readouterr()
    run = evaluate_cell(fresh, SMOL, "Q2_K", "arithmetic")  # old code: ArrowInvalid from is_done
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(cell) in lines[0] and "unreadable" in lines[0], lines
    assert run.ran
    after = pd.read_parquet(cell)
    pd.testing.assert_frame_equal(after[["item_id", "raw_output", "correct"]],
                                  before[["item_id", "raw_output", "correct"]])


@pytest.mark.parametrize("foreign", ["rung", "family", "model"])
def test_cell_with_rows_of_another_cell_is_reported_and_rebuilt(fresh, capsys, foreign):
    """A cell file holding another cell's rows is not reused even when its params_hash was
    forged to match (the old code trusted params_hash alone and reused such a cell)."""
    from gguf_fragility.run.cells import evaluate_cell, plan_cell

    target = fresh.layout.cell(SMOL, "Q2_K", "arithmetic")
    if foreign == "rung":  # the reference's cell in the rung's place
        rows = pd.read_parquet(fresh.layout.cell(SMOL, "F16", "arithmetic"))
    elif foreign == "family":  # the arithmetic cell in the science_mc place
        rows = pd.read_parquet(target)
        target = fresh.layout.cell(SMOL, "Q2_K", "science_mc")
    else:  # another model's rows (relabelled: the tests have one model)
        rows = pd.read_parquet(target).assign(model="qwen2.5-coder-1.5b")
    family = target.stem
    phash = plan_cell(fresh, SMOL, "Q2_K", family).params_hash
    rows.assign(params_hash=phash).to_parquet(target, index=False)
    capsys.readouterr()
    run = evaluate_cell(fresh, SMOL, "Q2_K", family)
    after = pd.read_parquet(target)
    assert run.ran, "the foreign cell was reused"
    assert set(after.model) == {SMOL} and set(after.rung) == {"Q2_K"} and set(after.family) == {family}
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(target) in lines[0] and f"belong to {foreign}" in lines[0], lines


def test_reference_store_is_rebuilt_when_its_parameters_change(fresh, tmp_path, capsys):
    """Shorter chunks: the old code kept the 64-token reference and compared the rung's
    48-token windows with the wrong positions (the reference against itself gave KL > 0)."""
    from gguf_fragility.run.shift import read_reference
    from gguf_fragility.run.sweep import measure_shift

    ref_path = fresh.layout.reference_logprobs(SMOL)
    before = read_reference(ref_path).chunks.tokens
    # llama-perplexity scores positions n_ctx/2 .. n_ctx-2 of each chunk: 31 of 64
    assert before.shape[1] == 64 and len(read_reference(ref_path).target_logprob) == len(before) * 31
    shorter = _profile(tmp_path / "profiles2", fresh.outputs,
                       YAML.replace("shift_tokens: 64", "shift_tokens: 48"))
    assert shorter.shift_tokens == 48 and shorter.layout == fresh.layout
    capsys.readouterr()
    itself = measure_shift(shorter, SMOL, "F16")
    assert itself["kl_mean"] == pytest.approx(0.0, abs=1e-6) and itself["same_top_rate"] == 1.0
    after = read_reference(ref_path)
    assert after.chunks.tokens.shape[1] == 48
    assert len(after.target_logprob) == itself["n_positions"] == len(after.chunks.tokens) * 23
    n = min(before.size, after.chunks.tokens.size)  # both cut the same token stream
    np.testing.assert_array_equal(before.ravel()[:n], after.chunks.tokens.ravel()[:n])
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(ref_path) in lines[0] and "other parameters" in lines[0], lines


def test_shift_cache_follows_reference_content_not_size(fresh, capsys):
    """A reference store of the same size but other content: the old cache (keyed on the
    file's size) returned the shift computed against the old content."""
    from gguf_fragility.run.sweep import measure_shift

    ref_path = fresh.layout.reference_logprobs(SMOL)
    with np.load(ref_path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(ref_path, **arrays)  # uncompressed: the size depends only on the shapes
    first = measure_shift(fresh, SMOL, "Q2_K")
    size = ref_path.stat().st_size
    np.savez(ref_path, **{**arrays, "target_logprob": arrays["target_logprob"] + 0.1})
    assert ref_path.stat().st_size == size
    capsys.readouterr()
    second = measure_shift(fresh, SMOL, "Q2_K")
    # ppl_ratio = exp(mean rung NLL + mean reference target log-prob): shifted by exp(0.1)
    assert second["ppl_ratio"] == pytest.approx(first["ppl_ratio"] * np.exp(0.1), rel=1e-9)
    assert second["kl_mean"] == pytest.approx(first["kl_mean"], rel=1e-9)
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(fresh.layout.shift_json(SMOL, "Q2_K")) in lines[0], lines


def test_torn_reference_store_and_shift_cache_are_reported_and_rebuilt(fresh, capsys):
    from gguf_fragility.run.sweep import measure_shift

    ref_path = fresh.layout.reference_logprobs(SMOL)
    with np.load(ref_path) as z:
        good = z["codes"]
    truth = measure_shift(fresh, SMOL, "Q2_K")
    _truncate(ref_path)
    shift_json = fresh.layout.shift_json(SMOL, "Q2_K")
    shift_json.write_text(shift_json.read_text()[:40])  # a torn JSON
    capsys.readouterr()
    again = measure_shift(fresh, SMOL, "Q2_K")
    lines = _report_lines(capsys)
    assert len(lines) == 2, lines
    assert str(ref_path) in lines[0] and "unreadable" in lines[0]
    assert str(shift_json) in lines[1] and "unreadable" in lines[1]
    with np.load(ref_path) as z:
        np.testing.assert_array_equal(z["codes"], good)
    assert again["kl_mean"] == pytest.approx(truth["kl_mean"], rel=1e-9)


def test_truncated_rung_gguf_is_reported_and_rebuilt(smol_ladder, tmp_path, monkeypatch, capsys):
    from gguf_fragility.ladder.quantize import build_ladder
    from gguf_fragility.layout import RunLayout

    files = smol_ladder.set_index("rung")
    src_dir = os.path.dirname(files.loc["Q2_K", "file"])
    cache = tmp_path / "cache" / "models" / SMOL
    cache.mkdir(parents=True)
    for name in os.listdir(src_dir):
        if name.endswith(".gguf") and name != "Q2_K.gguf":
            os.link(os.path.join(src_dir, name), cache / name)  # read-only here; writers replace
        elif name.endswith(".json") or name == "Q2_K.gguf":
            shutil.copy(os.path.join(src_dir, name), cache / name)
    monkeypatch.setenv("GGUF_FRAGILITY_CACHE", str(tmp_path / "cache"))
    rung = cache / "Q2_K.gguf"
    _truncate(rung, 0.6)
    capsys.readouterr()
    table = build_ladder(SMOL, ["F16", "Q2_K"], run=RunLayout(tmp_path / "out" / "x"), n_threads=2)
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(rung) in lines[0] and "truncated or modified" in lines[0], lines
    row = table.set_index("rung").loc["Q2_K"]
    assert not row.reused and row.sha256 == files.loc["Q2_K", "sha256"]
    assert rung.stat().st_size == row.file_size_bytes


def test_a_built_file_is_hashed_again_only_when_its_stamp_moves(tmp_path, monkeypatch, capsys):
    from gguf_fragility import store

    f = tmp_path / "rung.gguf"
    f.write_bytes(b"GGUF" + bytes(range(200)))
    made = store.write_sidecar(f, {"source_sha256": "abc"})
    hashed = []
    real = store.sha256_file
    monkeypatch.setattr(store, "sha256_file", lambda p: hashed.append(p) or real(p))
    # untouched: the stamp matches, the bytes are not read again
    assert store.fresh_record(f, {"source_sha256": "abc"})["sha256"] == made["sha256"]
    assert hashed == []
    # the same bytes with a new mtime (a copy, a touch): hashed once, kept, stamp renewed
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert store.fresh_record(f, {"source_sha256": "abc"}) is not None and len(hashed) == 1
    assert store.fresh_record(f, {"source_sha256": "abc"}) is not None and len(hashed) == 1
    # one byte changed in place, same size: the mtime moves, the hash catches it
    capsys.readouterr()
    with open(f, "r+b") as fh:
        fh.seek(10)
        fh.write(b"\xff")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 2 * 10**9))
    assert store.fresh_record(f, {"source_sha256": "abc"}) is None
    lines = _report_lines(capsys)
    assert len(lines) == 1 and "truncated or modified" in lines[0], lines
