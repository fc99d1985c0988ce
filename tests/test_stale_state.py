"""Stored state is never silently stale or corrupt (issue 14, item 3), on the real SmolLM2.

Each stored artifact that exists but cannot be reused (torn, made with other parameters or
from other inputs, rows of another cell) is named in one stderr line with the reason and
rebuilt: sweep cells, the reference's top-k store, the shift cache and the rung GGUFs.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_profile import TINY_FAMILIES, TINY_ITEMS, copy_tiny_run, link_built, tiny_profile_yaml

from gguf_fragility.profile import load_profile

pytestmark = pytest.mark.llama

SMOL = "smollm2-135m"
YAML = tiny_profile_yaml(TINY_FAMILIES, TINY_ITEMS, n_threads=2)


def _profile(folder, outputs, yaml: str = YAML):
    """The tiny profile ``stale`` writing under ``outputs``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stale.yaml").write_text(yaml + f"outputs: {str(outputs)!r}\n")
    return load_profile(folder / "stale.yaml")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_run):
    """Outputs root of the tiny profile with its ladder, calibration, reference store, Q2_K
    cells and Q2_K's text-sample shift done (a copy of the session's tiny run, under the
    profile name ``stale``); each test works on its own copy."""
    return copy_tiny_run(tiny_run, tmp_path_factory.mktemp("stale") / "outputs", "stale")


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
    from gguf_fragility.run.cluster import run_cells
    from gguf_fragility.run.plan import plan_rung

    cell = fresh.layout.cell(SMOL, "Q2_K", "arithmetic")
    before = pd.read_parquet(cell)
    _truncate(cell)
    capsys.readouterr()
    # old code: ArrowInvalid from the cell check
    run = run_cells(plan_rung(fresh, SMOL, "Q2_K", families=["arithmetic"]))[0]
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(cell) in lines[0] and "unreadable" in lines[0], lines
    assert run.ran
    after = pd.read_parquet(cell)
    pd.testing.assert_frame_equal(after[["item_id", "raw_output", "correct"]],
                                  before[["item_id", "raw_output", "correct"]])


@pytest.mark.parametrize("foreign", ["rung", "family", "model"])
def test_cell_with_rows_of_another_cell_is_reported_and_rebuilt(fresh, capsys, foreign):
    """A cell file holding another cell's rows is not reused even when its params_hash was
    forged to match and it was written by the real writer, content digest included (the old
    code trusted params_hash alone and reused such a cell)."""
    from gguf_fragility.run.cluster import run_cells
    from gguf_fragility.run.plan import plan_rung
    from gguf_fragility.store import write_table_atomic

    target = fresh.layout.cell(SMOL, "Q2_K", "arithmetic")
    if foreign == "rung":  # the reference's cell in the rung's place
        rows = pd.read_parquet(fresh.layout.cell(SMOL, "F16", "arithmetic"))
    elif foreign == "family":  # the arithmetic cell in the science_mc place
        rows = pd.read_parquet(target)
        target = fresh.layout.cell(SMOL, "Q2_K", "science_mc")
    else:  # another model's rows (relabelled: the tests have one model)
        rows = pd.read_parquet(target).assign(model="qwen2.5-coder-1.5b")
    family = target.stem
    phash = plan_rung(fresh, SMOL, "Q2_K", families=[family]).cells[0].params_hash
    write_table_atomic(rows.assign(params_hash=phash), target)
    capsys.readouterr()
    run = run_cells(plan_rung(fresh, SMOL, "Q2_K", families=[family]))[0]
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


def test_edited_reference_store_is_rebuilt_and_the_shift_cache_follows(fresh, capsys):
    """A reference store of the same size and params_hash but other content (target
    log-probs moved by 0.1 nats): the old code kept it and the shift cache (keyed on the
    store's bytes) was recomputed against the edited content. Now the store fails its
    content digest and is rebuilt, byte for byte the store it was, so the shift cache
    computed against that store holds again."""
    from gguf_fragility.run.sweep import measure_shift
    from gguf_fragility.store import sha256_file

    ref_path = fresh.layout.reference_logprobs(SMOL)
    first = measure_shift(fresh, SMOL, "Q2_K")  # stored by the fixture
    original = sha256_file(ref_path)
    with np.load(ref_path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(ref_path, **{**arrays, "target_logprob": arrays["target_logprob"] + 0.1})
    capsys.readouterr()
    second = measure_shift(fresh, SMOL, "Q2_K")
    assert second["ppl_ratio"] == pytest.approx(first["ppl_ratio"], rel=1e-9)
    assert second["kl_mean"] == pytest.approx(first["kl_mean"], rel=1e-9)
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(ref_path) in lines[0] and "edited or corrupted" in lines[0]
    assert sha256_file(ref_path) == original


def test_edited_shift_cache_value_is_reported_and_recomputed(fresh, capsys):
    """A `_shift.json` whose kl_mean was edited (params_hash intact): the old code returned
    the edited number."""
    from gguf_fragility.run.sweep import measure_shift

    truth = measure_shift(fresh, SMOL, "Q2_K")
    out = fresh.layout.shift_json(SMOL, "Q2_K")
    out.write_text(json.dumps({**json.loads(out.read_text()), "kl_mean": truth["kl_mean"] / 10}))
    capsys.readouterr()
    again = measure_shift(fresh, SMOL, "Q2_K")
    assert again["kl_mean"] == pytest.approx(truth["kl_mean"], rel=1e-9)
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(out) in lines[0] and "edited or corrupted" in lines[0], lines


def test_edited_sweep_cell_is_rebuilt_with_the_true_values(fresh, capsys):
    """The issue's case on a real cell: Q2_K's `correct` edited with params_hash and owner
    intact was reused by the old code; now it is named and rebuilt with the true values."""
    from gguf_fragility.run.cluster import run_cells
    from gguf_fragility.run.plan import plan_rung

    cell = fresh.layout.cell(SMOL, "Q2_K", "arithmetic")
    truth = pd.read_parquet(cell)
    _rewrite_keeping_metadata(cell, "correct", (~truth.correct).tolist())
    capsys.readouterr()
    run = run_cells(plan_rung(fresh, SMOL, "Q2_K", families=["arithmetic"]))[0]
    assert run.ran, "the edited cell was reused"
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(cell) in lines[0] and "edited or corrupted" in lines[0], lines
    pd.testing.assert_series_equal(pd.read_parquet(cell).correct, truth.correct)


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
    src_dir = Path(files.loc["Q2_K", "file"]).parent
    cache = link_built(src_dir, tmp_path / "cache" / "models" / SMOL,
                       [p.name for p in src_dir.glob("*.gguf") if p.name != "Q2_K.gguf"])
    for name in ("Q2_K.gguf", "Q2_K.gguf.json"):  # truncated in place below: a copy
        shutil.copy(src_dir / name, cache / name)
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


# ---------------------------------------------------------------- content digests (issue 29)
# Unit tests of the one checked read of a stored cell (``cells.stored_prefix``) on real
# Parquet files written by the real writer, planned for two real science_mc items; no model runs.


def _cell_plan(tmp_path):
    """The plan of the Q2_K science_mc cell of two items under ``tmp_path`` (nothing is run)."""
    from gguf_fragility import probes
    from gguf_fragility.layout import RunLayout
    from gguf_fragility.probes.scorers import ScoreSettings
    from gguf_fragility.profile import rung_spec
    from gguf_fragility.run.plan import CellPlan, RungPlan, cell_hash

    run, engine, sha = RunLayout(tmp_path / "run"), {"n_ctx": 1024}, "f" * 64
    items = probes.load_family("science_mc", n=2)
    cell = CellPlan("science_mc", 0, items, run.cell(SMOL, "Q2_K", "science_mc"),
                    cell_hash(engine, sha, [it["hash"] for it in items.items], 0))
    plan = RungPlan(SMOL, "Q2_K", rung_spec("Q2_K"), pd.Series({"sha256": sha}), engine, run,
                    ScoreSettings(), (cell,))
    return plan, cell


def _cell_rows(cell) -> pd.DataFrame:
    """Its two items answered, log-likelihood rows shaped like a sweep cell's."""
    from gguf_fragility.probes.scorers import scorer_tag

    raw = '{"logprobs": [-0.25, -1.5], "is_greedy": [true, false], "continuations": [" A", " B"]}'
    items = cell.items.items
    return pd.DataFrame({
        "item_id": [it["item_id"] for it in items], "item_hash": [it["hash"] for it in items],
        "scorer": [scorer_tag(it["scorer"]) for it in items], "mode": ["loglik", "loglik"],
        "raw_output": [raw, raw], "correct": [True, False], "score": [1.0, 0.0],
        "gold_logprob": [-0.25, -1.5], "error": ["", ""], "gen_tokens": [[], []],
        "ref_answer_logprob": [np.nan, np.nan], "answer_top_lp": [[-0.1, -2.3], [-0.7, -0.9]],
        "params_hash": [cell.params_hash] * 2, "model": SMOL, "rung": "Q2_K",
        "family": cell.family, "variant": 0})


def _stored(tmp_path, rows=None, edit=None):
    """``(plan, cell)`` with ``rows`` (default :func:`_cell_rows`, after ``edit``) stored."""
    from gguf_fragility.store import write_table_atomic

    plan, cell = _cell_plan(tmp_path)
    rows = _cell_rows(cell) if rows is None else rows
    write_table_atomic(rows if edit is None else edit(rows), cell.path)
    return plan, cell


def _rewrite_keeping_metadata(path, column: str, values) -> None:
    """Edit one column in place as a hand or a tool would, keeping the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    i = table.column_names.index(column)
    table = table.set_column(i, column, pa.array(values, type=table.schema.field(i).type))
    pq.write_table(table, path)  # the schema metadata (and its stored digest) travels along


def test_intact_cell_written_by_the_writer_is_reused(tmp_path, capsys):
    from gguf_fragility.run.cells import stored_prefix

    plan, cell = _stored(tmp_path)
    pd.testing.assert_frame_equal(stored_prefix(plan, cell), _cell_rows(cell))
    assert not _report_lines(capsys)


def test_edited_cell_value_is_reported_and_rebuilt(tmp_path, capsys):
    """A `correct`/`score` edited with params_hash and owner columns intact: the old code
    reused it (an edited accuracy went straight into accuracy.csv)."""
    from gguf_fragility.run.cells import stored_prefix

    plan, cell = _stored(tmp_path)
    _rewrite_keeping_metadata(cell.path, "correct", [True, True])
    _rewrite_keeping_metadata(cell.path, "score", [1.0, 1.0])
    capsys.readouterr()
    assert stored_prefix(plan, cell) is None
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(cell.path) in lines[0] and "edited or corrupted" in lines[0], lines


def test_cell_scored_by_an_older_scorer_version_is_reported_and_rebuilt(tmp_path, capsys):
    """A scorer's new version (code_exec@1 -> @2) must not leave cells scored by the old one
    in use: the params hash does not carry per-scorer versions (old code: reused)."""
    from gguf_fragility.run.cells import stored_prefix

    plan, cell = _stored(tmp_path)
    capsys.readouterr()
    assert stored_prefix(plan, cell) is not None  # scored by the current version
    (now,) = set(_cell_rows(cell).scorer)
    name, version = now.split("@")
    old = f"{name}@{int(version) - 1}"
    plan, cell = _stored(tmp_path, edit=lambda rows: rows.assign(scorer=old))
    assert stored_prefix(plan, cell) is None
    lines = _report_lines(capsys)
    assert len(lines) == 1 and f"scored with {old}, now {now}" in lines[0], lines


def test_bit_rot_in_a_readable_cell_is_reported(tmp_path, capsys):
    """One bit flipped inside a stored float: the file still parses (old code: reused)."""
    import pyarrow.parquet as pq

    from gguf_fragility.run.cells import stored_prefix

    plan, cell = _stored(tmp_path, edit=lambda rows: rows.assign(
        gold_logprob=[-0.123456789012345, -1.5]))
    data = bytearray(cell.path.read_bytes())
    at = data.find(np.float64(-0.123456789012345).tobytes())
    assert at > 0, "the float is stored verbatim (incompressible)"
    data[at] ^= 0x01  # the lowest mantissa bit
    cell.path.write_bytes(bytes(data))
    assert pq.read_table(cell.path).column("gold_logprob")[0].as_py() != -0.123456789012345
    capsys.readouterr()
    assert stored_prefix(plan, cell) is None
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(cell.path) in lines[0] and "edited or corrupted" in lines[0], lines


def test_cell_without_a_digest_is_reported_and_rebuilt(tmp_path, capsys):
    """A cell written before digests were kept (or by hand, with pandas) is not trusted."""
    from gguf_fragility.run.cells import stored_prefix

    plan, cell = _stored(tmp_path)
    pd.read_parquet(cell.path).to_parquet(cell.path, index=False)
    capsys.readouterr()
    assert stored_prefix(plan, cell) is None
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(cell.path) in lines[0] and "no content digest" in lines[0], lines


@pytest.mark.parametrize("where", ["gold_logprob", "raw_output", "answer_top_lp"])
def test_cell_with_nan_logprobs_is_reported_and_rebuilt(tmp_path, capsys, where):
    """NaN log-probabilities where an answered item must have them (old code: reused),
    even in a cell whose digest matches (NaN written by the writer itself)."""
    from gguf_fragility.run.cells import stored_prefix

    plan, cell = _cell_plan(tmp_path)
    rows = _cell_rows(cell)
    if where == "gold_logprob":
        rows.loc[1, "gold_logprob"] = np.nan
    elif where == "raw_output":
        rows.loc[1, "raw_output"] = rows.raw_output[1].replace("-1.5", "NaN")
    else:
        rows.at[1, "answer_top_lp"] = [-0.7, np.nan]
    _stored(tmp_path, rows)
    capsys.readouterr()
    assert stored_prefix(plan, cell) is None
    lines = _report_lines(capsys)
    first, second = rows.item_id
    assert len(lines) == 1 and str(cell.path) in lines[0] and "NaN log-probabilities" in lines[0]
    assert second in lines[0] and first not in lines[0], lines
    # an item that failed (error recorded, no answer position) has no log-probs to check
    rows = rows.assign(error=["", "prompt longer than n_ctx"])
    rows.at[1, "answer_top_lp"] = []
    _stored(tmp_path, rows)
    assert stored_prefix(plan, cell) is not None


def test_edited_or_digestless_reference_store_is_refused(tmp_path):
    """The reference store swapped for an edited copy that keeps its params_hash (or has no
    digest at all): the old code read it as valid."""
    from test_shift_rows import FakeEngine  # log-prob rows for the store's unit tests

    from gguf_fragility.run.shift import Chunks, read_reference, write_reference
    from gguf_fragility.store import StaleContent

    path = tmp_path / "_reference_logprobs.npz"
    chunks = Chunks(np.arange(48, dtype=np.int32).reshape(3, 16) % 50, 1)
    write_reference(FakeEngine(vocab=50), chunks, path, "k" * 16)
    good = read_reference(path)
    assert good.params_hash == "k" * 16 and len(good.target_logprob) == 3 * 7
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(path, **{**arrays, "target_logprob": arrays["target_logprob"] + 0.1})
    with pytest.raises(StaleContent, match="edited or corrupted"):
        read_reference(path)
    other = {**arrays, "codes": arrays["codes"][:, ::-1].copy()}  # another model's rows
    np.savez(path, **other)
    with pytest.raises(StaleContent, match="edited or corrupted"):
        read_reference(path)
    np.savez(path, **{k: v for k, v in arrays.items() if k != "content_sha256"})
    with pytest.raises(StaleContent, match="no content digest"):
        read_reference(path)


def test_edited_result_json_is_reported(tmp_path, capsys):
    from gguf_fragility.store import read_result_json, write_json_atomic, write_result_json

    path = tmp_path / "_shift.json"
    write_result_json(path, {"kl_mean": 0.25, "params_hash": "k", "rung": "Q2_K"})
    assert read_result_json(path) == {"kl_mean": 0.25, "params_hash": "k", "rung": "Q2_K"}
    edited = {**json.loads(path.read_text()), "kl_mean": 0.05}
    write_json_atomic(path, edited)
    capsys.readouterr()
    assert read_result_json(path) is None
    lines = _report_lines(capsys)
    assert len(lines) == 1 and str(path) in lines[0] and "edited or corrupted" in lines[0], lines
