"""The inference core on the real llama.cpp and the real SmolLM2 reference."""

import numpy as np
import pytest

from gguf_fragility.engine.gguf import KvShape
from gguf_fragility.engine.greedy import log_softmax
from gguf_fragility.engine.kvcache import kv_cache_bytes
from gguf_fragility.engine.llama import Engine, peak_rss_bytes, system_info, topk_rows
from gguf_fragility.engine.memory import planned_memory

pytestmark = pytest.mark.llama


def test_loglikelihood_ranks_paris_above_banana(smol_engine):
    paris, banana = smol_engine.loglikelihood("The capital of France is",
                                              [" Paris", " banana"]).choices
    assert paris.logprob > banana.logprob + 5
    assert paris.is_greedy and not banana.is_greedy
    assert paris.logprob == pytest.approx(sum(paris.token_logprobs))


def test_loglikelihood_matches_one_full_evaluation(smol_engine):
    """Shared-context scoring equals reading the log-probs off one pass over the whole text."""
    ctx, cont = "Water boils at a temperature of", " one hundred degrees"
    (ll,) = smol_engine.loglikelihood(ctx, [cont]).choices
    whole = smol_engine.tokenize(ctx + cont)
    n_ctx = len(smol_engine.tokenize(ctx))
    rows = smol_engine.logprob_rows(whole, list(range(n_ctx - 1, len(whole) - 1)))
    direct = rows[np.arange(len(rows)), whole[n_ctx:]]
    assert ll.n_tokens == len(whole) - n_ctx
    # different batch shapes may change float rounding slightly, never the value
    np.testing.assert_allclose(ll.token_logprobs, direct, atol=2e-3)


def test_continuations_do_not_leak_into_each_other(smol_engine):
    a1 = smol_engine.loglikelihood("2 + 2 =", [" 4"]).choices[0].logprob
    both = smol_engine.loglikelihood("2 + 2 =", [" five hundred and twelve", " 4"]).choices
    assert both[1].logprob == pytest.approx(a1, abs=1e-6)


def test_one_token_choices_cost_one_decode_of_the_context(smol_engine):
    """ARC-style " A".." D" choices are all read off the context's last logits row."""
    calls = []
    ctx_obj = smol_engine.llm._ctx
    inner = ctx_obj.decode
    ctx_obj.decode = lambda batch: (calls.append(batch.batch.n_tokens), inner(batch))[1]
    try:
        context = "Question: Which is a planet?\nA. Mars\nB. Moon\nC. Sun\nD. Comet\nAnswer:"
        lls, row = smol_engine.loglikelihood(context, [" A", " B", " C", " D"])
    finally:
        del ctx_obj.decode
    n_ctx = len(smol_engine.tokenize(context))
    assert calls == [n_ctx]  # one llama_decode call, no re-evaluation per choice
    assert [ll.n_tokens for ll in lls] == [1, 1, 1, 1]
    # the four log-probs are one softmax row: they equal the row's entries at those ids
    ids = [smol_engine.tokenize(context + c)[n_ctx] for c in (" A", " B", " C", " D")]
    np.testing.assert_allclose([ll.logprob for ll in lls], row[ids], rtol=0, atol=1e-12)
    assert np.exp(row).sum() == pytest.approx(1.0, abs=1e-6)


def test_choices_beyond_n_seq_max_match_one_pack(smol_ladder, smol_engine):
    """Five multi-token choices scored in packs of two equal one pack of five."""
    path = smol_ladder.set_index("rung").loc["F16", "file"]
    small = Engine(path, n_ctx=1024, n_threads=2, seed=0, n_seq_max=2)
    context = "My favourite breakfast is"
    conts = [" toast with butter", " eggs", " a big bowl of porridge", " pancakes and syrup",
             " nothing at all, thanks"]
    try:
        packed = small.loglikelihood(context, conts).choices
    finally:
        small.close()
    one = smol_engine.loglikelihood(context, conts).choices
    assert [ll.n_tokens for ll in packed] == [ll.n_tokens for ll in one]
    # F16 weights make ggml round activations to F16, and batch shape picks the kernel:
    # equal up to ~1e-3 relative (a wrong mask or position moves log-probs by whole nats)
    np.testing.assert_allclose([ll.logprob for ll in packed], [ll.logprob for ll in one],
                               rtol=1e-3, atol=1e-3)
    # and each equals scoring that continuation alone
    alone = [smol_engine.loglikelihood(context, [c]).choices[0].logprob for c in conts]
    np.testing.assert_allclose([ll.logprob for ll in one], alone, rtol=1e-3, atol=1e-3)


def test_greedy_generation_is_deterministic(smol_engine, smol_ladder):
    prompt = smol_engine.render("Name three colours.")
    g1 = smol_engine.generate(prompt, max_tokens=24)
    g2 = smol_engine.generate(prompt, max_tokens=24)
    other = Engine(smol_engine.path, n_ctx=1024, n_threads=1)
    g3 = other.generate(prompt, max_tokens=24)
    other.close()
    assert g1.text == g2.text == g3.text
    assert g1.n_gen_tokens > 0 and g1.gen_tps > 0 and g1.ttft_s > 0


def test_stop_strings(smol_engine):
    g = smol_engine.generate("1, 2, 3, 4,", max_tokens=20, stop=[","])
    assert "," not in g.text and g.finish_reason == "stop"
    assert "," in smol_engine.text_of(g.reply.tokens)  # the stopping token is kept in tokens


def test_chat_template_from_gguf(smol_engine):
    assert smol_engine.is_chat and not smol_engine.add_bos  # SmolLM2 sets add_bos_token=false
    text = smol_engine.render("What is 2+2?")
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_top_logprobs_are_sorted_distribution(smol_engine):
    toks = smol_engine.tokenize("The quick brown fox jumps over the lazy dog")
    ids, lps = topk_rows(smol_engine.logprob_rows(toks, [1, 4, len(toks) - 1]), 10)
    assert ids.shape == lps.shape == (3, 10)
    assert np.all(np.diff(lps, axis=1) <= 0)
    assert np.all(np.logaddexp.reduce(lps, axis=1) <= 1e-9)
    # "dog" should be among the likeliest continuations of "... the lazy"
    lazy = len(toks) - 2
    row = smol_engine.logprob_rows(toks, [lazy])[0]
    assert np.sum(row > row[toks[-1]]) < 10


def test_log_softmax_matches_scipy():
    from scipy.special import log_softmax as ref

    x = np.random.default_rng(0).normal(size=(4, 50)) * 10
    np.testing.assert_allclose(log_softmax(x), ref(x, axis=1), atol=1e-12)
    # float32 logits (what llama.cpp returns): float64 result within 1e-6 of float64 maths
    x32 = (np.random.default_rng(1).normal(size=(3, 150_000)) * 8).astype(np.float32)
    got = log_softmax(x32)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref(x32.astype(np.float64), axis=1), atol=1e-6)


def test_provenance_facts():
    info = system_info()
    assert info["llama_cpp_python"] == "0.3.36"
    assert "CPU" in info["system_info"] or "CUDA" in info["system_info"]
    assert peak_rss_bytes() > 50e6


MIB = 2**20
HUNDREDTH_MIB = MIB // 100  # llama.cpp logs each buffer in MiB with two decimals


# SmolLM2-135M's K and V per cell, by hand: 30 layers x 3 KV heads x 64 (as in
# test_kvcache.py); the GGUF is not parsed again here (seconds per file)
SMOL_SHAPE = KvShape(heads_kv=(3,) * 30, key_length=64, value_length=64)


def _check_planned_memory(engine: Engine, rung, kv_cache: str, *, repacked: bool = False) -> None:
    """The engine's planned memory against the ladder row's bytes and kv_cache_bytes.

    ``repacked``: llama.cpp's CPU backend keeps an interleaved copy of some quantized
    tensors (its CPU_REPACK buffer, e.g. SmolLM2's Q4_0 fallbacks) besides the mapped
    file, so the weights take more than the file, never twice the file.
    """
    size = rung.file_size_bytes
    tensor_bytes = rung.bpw * rung.n_params / 8  # the census' real bits per weight
    kv = kv_cache_bytes(SMOL_SHAPE, engine.n_ctx, kv_cache)
    mem = engine.memory
    assert mem is not None, "llama.cpp's buffer lines were not found in its load log"
    if repacked:
        assert tensor_bytes < mem.model_bytes < 2 * tensor_bytes
    else:
        assert mem.model_bytes == pytest.approx(tensor_bytes, rel=0.02)  # the weights
        assert mem.model_bytes <= size
    assert abs(mem.kv_bytes - kv) <= HUNDREDTH_MIB
    assert 0 < mem.compute_bytes < 0.5 * mem.total_bytes
    assert mem.total_bytes == mem.model_bytes + mem.kv_bytes + mem.compute_bytes
    planned = size + kv + mem.compute_bytes
    assert planned / 1.5 <= mem.total_bytes <= 1.5 * planned  # hundreds of MB, not GBs


def test_planned_memory_is_llama_cpps_accounting_at_load(smol_ladder, smol_engine):
    """F16 with an f16 cache at n_ctx 1024: the weights' buffer is the GGUF's tensor bytes
    (within 2 %), the KV buffer kv_cache_bytes, and the whole within 1.5x of file + KV +
    compute buffers, far below the process's peak RSS."""
    _check_planned_memory(smol_engine, smol_ladder.set_index("rung").loc["F16"], "f16")
    assert smol_engine.memory.total_bytes < peak_rss_bytes()


def test_planned_memory_follows_the_rung_and_a_q8_0_cache(smol_ladder):
    """Q2_K's smaller weights and a q8_0 cache at n_ctx 256 (34 bytes per 32 elements)."""
    row = smol_ladder.set_index("rung").loc["Q2_K"]
    with Engine(row.file, n_ctx=256, n_threads=2, kv_cache="q8_0", flash_attn=True) as eng:
        _check_planned_memory(eng, row, "q8_0", repacked=True)


def test_planned_memory_sums_every_buffer_of_each_kind():
    """Buffers on several devices add up; the first context's lines (in the model's log)
    are not counted; a log without a compute line gives None, not a partial figure."""
    model_log = ["load_tensors: offloaded 31/31 layers to GPU",
                 "load_tensors:        CUDA0 model buffer size =   200.00 MiB",
                 "load_tensors:   CPU_Mapped model buffer size =    56.50 MiB",
                 "llama_kv_cache:        CPU KV buffer size =   999.00 MiB"]
    context_log = ["llama_context:  CUDA_Host  output buffer size =     0.75 MiB",
                   "llama_kv_cache:      CUDA0 KV buffer size =    45.00 MiB",
                   "llama_context:      CUDA0 compute buffer size =    98.50 MiB",
                   "llama_context:  CUDA_Host compute buffer size =     5.25 MiB"]
    mem = planned_memory(model_log, context_log)
    assert mem == (256.5 * MIB, 45 * MIB, 104.5 * MIB, 406 * MIB)
    assert planned_memory(model_log, context_log[:2]) is None
