"""The text-sample KL without a model: llama-perplexity's positions, its uint16 rows, the
full-vocabulary KL against an independent one (scipy), and the store's round trip.

The same statistics on the real SmolLM2 against the real llama-perplexity are in
``tests/test_llama_tools.py``.
"""

import zipfile
import zlib

import numpy as np
import pytest
from scipy.special import log_softmax as scipy_log_softmax
from scipy.special import rel_entr

from gguf_fragility.run.shift import (
    LOG_RANGE,
    Chunks,
    decode_rows,
    encode_rows,
    iter_rows,
    kl_rows,
    kl_topk,
    read_reference,
    rung_shift,
    sample_chunks,
    write_reference,
)


def _rows(seed: int, n: int, vocab: int, spread: float) -> np.ndarray:
    """Log-probability rows of random logits (larger ``spread``: more peaked)."""
    rng = np.random.default_rng(seed)
    return scipy_log_softmax(rng.standard_normal((n, vocab)) * spread, axis=1)


class FakeEngine:
    """Tokenizes text to its characters' codes; a row's log-probs depend on the prefix only."""

    def __init__(self, vocab: int = 300, add_bos: bool = False, shift: float = 0.0) -> None:
        self.n_vocab, self.add_bos, self.bos_token_id, self.shift = vocab, add_bos, 1, shift
        self.flash_attn = False  # as the Engine records it
        self.calls: list[tuple[list[int], list[int]]] = []

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        assert special is False  # llama-perplexity does not parse special tokens
        return ([self.bos_token_id] if self.add_bos else []) + [ord(c) % self.n_vocab for c in text]

    def logprob_rows(self, tokens, positions) -> np.ndarray:
        self.calls.append((list(tokens), list(positions)))
        out = []
        for p in positions:
            rng = np.random.default_rng(sum(tokens[:p + 1]) * 1000 + p)
            logits = rng.standard_normal(self.n_vocab) * 3.0
            logits[0] += self.shift
            out.append(scipy_log_softmax(logits))
        return np.asarray(out)


def test_codes_round_trip_within_half_a_step():
    lp = _rows(0, 40, 5000, spread=4.0)
    enc = encode_rows(lp)
    back = decode_rows(enc)
    top = lp.max(axis=1, keepdims=True)
    within = lp > top - LOG_RANGE  # the 16 nats the codes span
    assert within.sum() > 1000 and (~within).sum() > 1000  # both kinds are exercised
    err = np.abs(back - lp)[within]
    assert err.max() <= LOG_RANGE / 65535 / 2 + 1e-5  # half a step, plus float32 rounding
    assert (enc.codes.max(axis=1) == 65535).all()  # the top entry takes the last code
    assert (enc.codes[~within] == 0).all()  # llama-perplexity codes them 0 ...
    assert (back[~within] <= -LOG_RANGE + 1e-4).all()  # ... so they fall below the KL's floor


def test_full_kl_matches_scipy_where_the_top_k_bound_falls_short():
    """A flat tail (top 32 of 2,000 tokens hold about half the mass): the old top-32 + tail
    bucket estimator is far below the exact KL, the uint16 rows are within 0.1 %."""
    p = _rows(1, 30, 2000, spread=1.5)
    q = _rows(2, 30, 2000, spread=1.5) * 0.2 + p * 0.8
    q = scipy_log_softmax(q, axis=1)
    exact = rel_entr(np.exp(p), np.exp(q)).sum(axis=1)
    ours = kl_rows(encode_rows(p), q)
    np.testing.assert_allclose(ours, exact, rtol=1e-3, atol=1e-5)
    ids = np.argsort(-p, axis=1)[:, :32]
    topk = kl_topk(ids, np.take_along_axis(p, ids, axis=1), q)
    assert np.exp(np.take_along_axis(p, ids, axis=1)).sum(axis=1).mean() < 0.7
    assert topk.mean() < 0.8 * exact.mean()


def test_full_kl_of_identical_rows_is_within_the_rounding():
    lp = _rows(3, 20, 3000, spread=3.0)
    kl = kl_rows(encode_rows(lp), lp)
    assert np.abs(kl).max() <= LOG_RANGE / 65535 / 2 + 1e-5
    assert kl_rows(encode_rows(lp), _rows(4, 20, 3000, spread=3.0)).min() > 0.1


@pytest.mark.parametrize("add_bos", [False, True])
def test_chunks_are_llama_perplexity_s(add_bos, monkeypatch):
    """Worked by hand from perplexity.cpp: n_ctx 8 -> chunks of tokens 0-7, 8-15, ...; a
    trailing partial chunk is dropped; BOS replaces each chunk's first token when the model
    adds one; positions 4, 5, 6 are scored, predicting tokens 5, 6, 7."""
    from gguf_fragility.run import shift

    monkeypatch.setattr(shift, "sample_text", lambda n: "abcdefghijklmnopqrstu")  # 21 characters
    eng = FakeEngine(add_bos=add_bos)
    chunks = sample_chunks(eng, 2, 8)
    stream = eng.tokenize("abcdefghijklmnopqrstu", special=False)
    assert chunks.tokens.shape == (len(stream) // 8, 8)
    np.testing.assert_array_equal(chunks.tokens.ravel(), stream[:chunks.tokens.size])
    assert (chunks.first, chunks.rows_per_chunk) == (4, 3)
    second = chunks.chunk_input(1)
    assert second[1:] == stream[9:16]
    assert second[0] == (1 if add_bos else stream[8])
    np.testing.assert_array_equal(chunks.targets(1), stream[13:16])
    with pytest.raises(ValueError, match="fewer than 2 chunks of shift_tokens=16"):
        sample_chunks(eng, 2, 16)


def test_store_round_trip_and_a_rung_against_it(tmp_path):
    eng = FakeEngine()
    chunks = Chunks(np.arange(40, dtype=np.int32).reshape(4, 10) % 300, -1)
    path = tmp_path / "ref.npz"
    write_reference(eng, chunks, path, "abc")
    store = read_reference(path)
    assert store.params_hash == "abc" and store.n_vocab == 300
    assert len(store.target_logprob) == 4 * 4  # positions 5..8 of each 10-token chunk
    assert [positions for _, positions in eng.calls] == [[5, 6, 7, 8]] * 4
    blocks = list(iter_rows(store))
    for i, block in enumerate(blocks):
        rows = eng.logprob_rows(chunks.chunk_input(i), [5, 6, 7, 8])
        np.testing.assert_array_equal(block.codes, encode_rows(rows).codes)
        np.testing.assert_array_equal(store.target_logprob[4 * i:4 * i + 4],
                                      rows[np.arange(4), chunks.tokens[i, 6:]])
    same = rung_shift(FakeEngine(), store)
    assert abs(same.kl_mean) < 1e-4 and same.same_top_rate == 1.0 and same.n_positions == 16
    other = rung_shift(FakeEngine(shift=20.0), store)  # token 0 boosted: the top changes
    assert other.kl_mean > 1.0 and other.same_top_rate < 0.5 and other.ppl_ratio > 1.0
    assert other.flash_attn == "off" and "second half" in other.positions


def test_a_corrupted_store_fails_when_read_whole(tmp_path):
    chunks = Chunks(np.arange(60, dtype=np.int32).reshape(3, 20) % 300, -1)
    path = tmp_path / "ref.npz"
    write_reference(FakeEngine(), chunks, path, "abc")
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("codes.npy")
    data = bytearray(path.read_bytes())
    middle = info.header_offset + 100 + info.compress_size // 2  # inside the deflated rows
    data[middle] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises((zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError)):
        read_reference(path)  # verify=True reads every byte of the rows
