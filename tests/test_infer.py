"""The inference core on the real llama.cpp and the real SmolLM2 reference."""

import numpy as np
import pytest

from gguf_fragility.engine.greedy import log_softmax
from gguf_fragility.engine.llama import Engine, peak_rss_bytes, system_info, topk_rows

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
