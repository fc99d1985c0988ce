"""The KV-cache axis: rung names, the cache's bytes, and the real SmolLM2 run with a q4_0
cache (llama.cpp really stores it in q4_0; its cells are paired and compared)."""

import json

import numpy as np
import pandas as pd
import pytest
from tiny_profile import TINY_ITEMS, copy_tiny_run, tiny_profile_yaml

from gguf_fragility.engine.gguf import KvShape
from gguf_fragility.engine.kvcache import bytes_per_element, kv_cache_bytes
from gguf_fragility.engine.rungs import KV_TYPES, RungSpec, parse_rung
from gguf_fragility.profile import load_profile

SMOL = "smollm2-135m"
# SmolLM2-135M: 30 layers, 3 KV heads of 64 (GQA with 9 query heads), so a cell holds
# 30 x 3 x 64 = 5,760 K and as many V elements
SMOL_SHAPE = KvShape(heads_kv=(3,) * 30, key_length=64, value_length=64)


@pytest.mark.parametrize("rung, spec", [
    ("Q4_K_M", RungSpec("Q4_K_M", None)),
    ("Q4_K_M+kv_q8_0", RungSpec("Q4_K_M", "q8_0")),
    ("F16+kv_q4_0", RungSpec("F16", "q4_0")),
    ("Q2_K+kv_f16", RungSpec("Q2_K", "f16")),
])
def test_parse_rung(rung, spec):
    assert parse_rung(rung) == spec
    assert spec.cache == (spec.kv_cache or "f16")
    assert spec.flash_attn == (spec.kv_cache is not None)  # the control keeps flash attention


def test_kv_cache_bytes_by_hand():
    # one cell: 30 layers x (K + V) x one row of 3 heads x 64 = 192 elements
    # f16: 192 x 2 B = 384 B per row; q8_0: 6 blocks of 32 x 34 B = 204 B; q4_0: 6 x 18 = 108 B
    assert kv_cache_bytes(SMOL_SHAPE, 2048, "f16") == 2048 * 30 * 2 * 384 == 47_185_920  # 45 MiB
    assert kv_cache_bytes(SMOL_SHAPE, 2048, "q8_0") == 2048 * 30 * 2 * 204 == 25_067_520
    assert kv_cache_bytes(SMOL_SHAPE, 2048, "q4_0") == 2048 * 30 * 2 * 108 == 13_271_040
    assert bytes_per_element("q4_0") == 18 / 32 and bytes_per_element("q8_0") == 34 / 32


def test_kv_cache_bytes_per_layer_heads_and_unequal_head_sizes():
    # two layers with 2 and 4 KV heads, K heads of 128 and V heads of 64, 10 cells, f16:
    # layer 1: (2 x 128 + 2 x 64) x 2 B = 768 B; layer 2: (4 x 128 + 4 x 64) x 2 B = 1,536 B
    shape = KvShape(heads_kv=(2, 4), key_length=128, value_length=64)
    assert kv_cache_bytes(shape, 10) == 10 * (768 + 1536)


def test_kv_cache_bytes_refuses_rows_that_are_not_whole_blocks():
    with pytest.raises(ValueError, match="row of 48 elements is not a multiple of the 32"):
        kv_cache_bytes(KvShape((1,), 48, 48), 16, "q8_0")
    with pytest.raises(ValueError, match="unknown KV-cache type 'q5_9'"):
        kv_cache_bytes(SMOL_SHAPE, 16, "q5_9")


@pytest.mark.llama
def test_kv_types_are_llama_cpps():
    import llama_cpp

    assert KV_TYPES == {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0,
                        "q4_0": llama_cpp.GGML_TYPE_Q4_0}


@pytest.mark.llama
def test_kv_shape_of_real_smollm2(smol_ladder):
    from gguf_fragility.engine.gguf import kv_shape, open_gguf

    for path in smol_ladder.file:  # the same architecture at every rung
        assert kv_shape(open_gguf(path)) == SMOL_SHAPE


def _state_bytes(eng) -> int:
    """llama.cpp's saved-state size: the logits plus every used cell's K and V rows as stored."""
    import llama_cpp

    return int(llama_cpp.llama_state_get_size(eng.llm._ctx.ctx))


@pytest.mark.llama
def test_q4_0_cache_is_really_q4_0(smol_ladder):
    """llama.cpp stores the cells in q4_0 (its state shrinks by exactly the computed bytes),
    and the log-probs move a little, not a lot, against an f16 cache with the same kernel."""
    from gguf_fragility.engine.llama import Engine

    f16 = smol_ladder.set_index("rung").loc["F16", "file"]
    text = ("The history of the printing press begins in the fifteenth century, when Johannes "
            "Gutenberg combined movable metal type, oil-based ink and a wooden screw press. ") * 3
    out = {}
    for cache in ("f16", "q4_0"):
        with Engine(f16, n_ctx=512, n_threads=2, kv_cache=cache, flash_attn=True) as eng:
            assert eng.llm.context_params.type_k == KV_TYPES[cache]  # survives _use_sequences
            tokens = eng.tokenize(text)
            lp = eng.logprob_rows(tokens, range(len(tokens)))
            out[cache] = (lp, _state_bytes(eng), len(tokens))
    (lp16, s16, n), (lp4, s4, _) = out["f16"], out["q4_0"]
    assert s16 - s4 == kv_cache_bytes(SMOL_SHAPE, n, "f16") - kv_cache_bytes(SMOL_SHAPE, n, "q4_0")
    diff = np.abs(lp4 - lp16)
    assert diff.max() > 1e-3  # the cache type changed the computation
    top16, top4 = lp16.argmax(1), lp4.argmax(1)
    assert (top16 == top4).mean() > 0.8  # ... but not the model
    rows = np.arange(len(top16))
    assert np.abs(lp4[rows, top16] - lp16[rows, top16]).mean() < 0.2  # nats


@pytest.mark.llama
def test_quantized_cache_without_flash_attention_is_refused(smol_ladder):
    from gguf_fragility.engine.llama import Engine

    f16 = smol_ladder.set_index("rung").loc["F16", "file"]
    with pytest.raises(ValueError, match="a q4_0 KV cache needs flash_attn=True"):
        Engine(f16, n_ctx=256, kv_cache="q4_0")


KV_RUNGS = ["Q2_K+kv_f16", "Q2_K+kv_q4_0"]
FAMILIES = ["science_mc", "arithmetic"]  # two of the tiny run's families
N_ITEMS = TINY_ITEMS


@pytest.fixture(scope="module")
def kv_run(tmp_path_factory, tiny_run):
    """A tiny profile with KV rungs of Q2_K, calibrated, every rung swept (on a copy of the
    session's tiny run: its ladder and reference cells are reused)."""
    from gguf_fragility.run.calibrate import calibrate
    from gguf_fragility.run.sweep import sweep_rung

    folder = tmp_path_factory.mktemp("kv")
    outputs = copy_tiny_run(tiny_run, folder / "outputs", "kv", FAMILIES)
    path = folder / "kv.yaml"
    path.write_text(tiny_profile_yaml(FAMILIES, N_ITEMS, n_threads=2).replace(
        "[F16, Q2_K]", f"[F16, Q2_K, {', '.join(KV_RUNGS)}]") + f"outputs: {str(outputs)!r}\n")
    profile = load_profile(path)
    assert list(profile.models[SMOL].ladder_rungs) == ["F16", "Q2_K"]  # the copied ladder's
    calibrate(profile, SMOL)
    rows = {r: sweep_rung(profile, SMOL, r) for r in profile.models[SMOL].rungs}
    return profile, rows


@pytest.mark.llama
def test_kv_rung_cells_record_the_cache_and_reuse_the_weights_file(kv_run):
    profile, rows = kv_run
    ladder = pd.read_csv(profile.layout.ladder_csv(SMOL)).set_index("rung")
    assert "Q2_K+kv_q4_0" not in ladder.index  # no file of its own
    q4, ctl = rows["Q2_K+kv_q4_0"], rows["Q2_K+kv_f16"]
    assert len(q4) == len(FAMILIES) * N_ITEMS
    assert (q4.model_sha256 == ladder.loc["Q2_K", "sha256"]).all() and (q4.quant_type == "Q2_K").all()
    assert (q4.kv_cache_type_k == "q4_0").all() and (q4.kv_cache_type_v == "q4_0").all()
    assert q4.flash_attn.all() and ctl.flash_attn.all() and (ctl.kv_cache_type_k == "f16").all()
    assert not (rows["F16"].flash_attn.any() or (rows["F16"].kv_cache_type_k != "f16").any())
    assert set(q4.params_hash).isdisjoint(set(ctl.params_hash))  # the cache type is hashed
    # paired with the same F16 reference: its answers' top-k and replies are read
    assert q4.answer_kl.notna().all()
    gen = q4[q4["mode"] == "generate"]
    assert len(gen) and gen.ref_answer_logprob.notna().all()
    for rung, cache, per_cell in (("Q2_K+kv_q4_0", "q4_0", 216), ("Q2_K+kv_f16", "f16", 768)):
        cost = json.loads(profile.layout.cost_json(SMOL, rung).read_text())
        assert cost["kv_cache"] == cache and cost["n_ctx"] == 1024
        assert cost["kv_cache_bytes"] == 1024 * 30 * per_cell  # by hand, as above


@pytest.mark.llama
def test_kv_rung_is_paired_in_the_axis_table_and_kept_out_of_the_ladder_grid(kv_run):
    from gguf_fragility import artifacts
    from gguf_fragility.stats import axes, results
    from gguf_fragility.stats.settings import Settings

    profile, _ = kv_run
    r = artifacts.load_results(profile.layout)
    settings = Settings.of(profile).replace(n_boot=200)
    table = axes.axis_comparisons(r.items, r.ladder, settings=settings)
    assert set(table.axis) == {"kv_cache"}
    assert set(table.rung) == {"Q2_K+kv_q4_0"} and set(table.comparator) == {"Q2_K+kv_f16"}
    assert (table.comparator_kind == axes.CONTROL).all()
    assert set(table.lens) == {"correctness", "fidelity", "margin"}
    assert set(table.family) == set(FAMILIES)
    assert (table.query("lens == 'correctness'").n == N_ITEMS).all()  # every item paired
    assert (table.bits == 4.5).all()
    assert table.decision.notna().all() and table.effect.notna().all()
    # chapter 5's ladder grid compares weight rungs only
    grid = results.stats_tables(r.items, r.ladder, r.costs, r.shift, settings=settings)
    assert set(grid.comparisons.rung) == {"Q2_K"}
    costs = axes.kv_costs(r.costs).set_index("rung")
    assert costs.loc["Q2_K+kv_q4_0", "kv_cache_mib"] == pytest.approx(1024 * 30 * 216 / 2**20)


@pytest.mark.llama
def test_every_rung_records_llama_cpps_planned_memory(kv_run):
    """The cost record of each rung carries llama.cpp's buffers at the profile's n_ctx: the
    KV buffer is kv_cache_bytes in the rung's cache type, the sum is the planned memory."""
    profile, _ = kv_run
    for rung in profile.models[SMOL].rungs:
        cost = json.loads(profile.layout.cost_json(SMOL, rung).read_text())
        parts = [cost[k] for k in ("model_buffer_bytes", "kv_buffer_bytes",
                                   "compute_buffer_bytes")]
        assert all(p > 0 for p in parts), rung
        assert cost["planned_memory_bytes"] == sum(parts)
        assert abs(cost["kv_buffer_bytes"] - cost["kv_cache_bytes"]) <= 2**20 // 100, rung
        # at most the file twice over: the mapped file plus llama.cpp's repacked copies
        assert 0.9 * cost["file_size_bytes"] < cost["model_buffer_bytes"] < 2 * cost["file_size_bytes"]
        assert cost["planned_memory_bytes"] < cost["peak_rss_bytes"]


@pytest.mark.llama
def test_planned_memory_is_recorded_when_every_cell_is_reused(kv_run):
    """A rung whose cells are all stored still gets its planned memory: a record made
    before the memory columns gains them (its measured figures kept), a missing record is
    written (peak RSS None: nothing ran)."""
    from gguf_fragility.run.plan import plan_rung
    from gguf_fragility.run.sweep import evaluate_rung
    from gguf_fragility.store import write_result_json

    profile, _ = kv_run
    old_path, new_path = (profile.layout.cost_json(SMOL, r) for r in ("Q2_K+kv_f16", "Q2_K"))
    saved = {p: p.read_text() for p in (old_path, new_path)}
    try:
        old = json.loads(saved[old_path])
        stripped = {k: v for k, v in old.items()
                    if not k.endswith("_buffer_bytes") and k != "planned_memory_bytes"
                    and k != "memory_params_hash" and k != "content_sha256"}
        write_result_json(old_path, stripped)  # a digest of its own, as an older record had
        new_path.unlink()
        for rung in ("Q2_K+kv_f16", "Q2_K"):
            evaluate_rung(profile, plan_rung(profile, SMOL, rung))
        again, new = (json.loads(p.read_text()) for p in (old_path, new_path))
        assert again["planned_memory_bytes"] == old["planned_memory_bytes"]
        assert again["peak_rss_bytes"] == old["peak_rss_bytes"]
        assert again["prompt_tps"] == old["prompt_tps"]
        assert new["planned_memory_bytes"] > 0 and new["peak_rss_bytes"] is None
        assert new["kv_buffer_bytes"] == pytest.approx(new["kv_cache_bytes"], abs=2**20 // 100)
    finally:
        for p, text in saved.items():
            p.write_text(text)
