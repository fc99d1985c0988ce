"""Distribution shift of a rung against the reference, as ``llama-perplexity --kl-divergence``.

The positions are llama-perplexity's: the text sample (the profile's first ``shift_passages``
passages, joined by blank lines) is tokenized once, cut into consecutive chunks of
``shift_tokens`` tokens (a trailing partial chunk is dropped), each chunk is evaluated from an
empty KV cache with its first token replaced by BOS when the model adds one, and only the
second half of each chunk is scored (positions ``n_ctx/2 .. n_ctx-2``, predicting tokens
``n_ctx/2+1 .. n_ctx-1``). The reference's full next-token log-probabilities at those
positions are stored once per model as llama-perplexity stores them for
``--kl-divergence-base`` (one uint16 per vocabulary entry and a per-row scale and offset);
each rung is then compared with them: full-vocabulary KL divergence, same-top-token rate,
perplexity ratio and the RMS change of the correct token's probability. Both models run
with flash attention off (:data:`gguf_fragility.engine.llama.FLASH_ATTN`), so run
``llama-perplexity -fa off`` to compare (``tests/test_llama_tools.py`` does).

The text sample is frozen in ``data/shift/wikipedia.jsonl`` (Wikipedia passages from the
``evals`` PyPI package); ``python -m gguf_fragility.run.shift`` rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gguf_fragility import paths
from gguf_fragility.engine.llama import FLASH_ATTN
from gguf_fragility.probes.sources import WIKIPEDIA, wikipedia_passages
from gguf_fragility.store import check_digest, content_digest, removed_on_error

SAMPLE = paths.DATA / "shift" / "wikipedia.jsonl"
LOG_RANGE = 16.0  # nats below a row's top log-prob that the uint16 codes span (llama-perplexity)
LOGPROB_FLOOR = -16.0  # reference entries at or below this log-prob are left out of the KL sum
POSITIONS = "second half of each chunk (llama-perplexity)"


def kl_topk(ref_ids: np.ndarray, ref_lp: np.ndarray, rung_rows: np.ndarray) -> np.ndarray:
    """KL(reference || rung) per position from the reference's top-k plus one tail bucket.

    Used for the answer position of each item (the sweep cells keep the reference's top 32
    there). The reference mass outside its top-k and the rung's mass on the same tokens are
    merged into one bucket, so the value is a lower bound of the full KL (log-sum
    inequality); on the text sample it was 19-24 % below the full KL, which is why the text
    sample uses :func:`kl_rows` instead.

    Parameters
    ----------
    ref_ids, ref_lp : ndarray, shape (N, k)
    rung_rows : ndarray, shape (N, n_vocab)
        The rung's full next-token log-probabilities at the same positions.
    """
    q_lp = np.take_along_axis(rung_rows, ref_ids, axis=1)
    p = np.exp(ref_lp)
    head = np.sum(p * (ref_lp - q_lp), axis=1)
    p_tail = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)
    q_tail = np.clip(1.0 - np.exp(q_lp).sum(axis=1), 1e-300, 1.0)
    tail = np.where(p_tail > 0, p_tail * (np.log(np.maximum(p_tail, 1e-300)) - np.log(q_tail)), 0.0)
    return np.maximum(head + tail, 0.0)


# ------------------------------------------------------------------ the positions
class Chunks(NamedTuple):
    """The tokens llama-perplexity evaluates on the text sample."""

    tokens: np.ndarray  # (n_chunks, n_ctx) int32: consecutive tokens of the tokenized text
    bos: int  # token put in each chunk's first place when evaluated; -1: the model adds none

    @property
    def n_ctx(self) -> int:
        """Tokens per chunk."""
        return int(self.tokens.shape[1])

    @property
    def first(self) -> int:
        """First scored position of each chunk (llama-perplexity's ``n_ctx/2``)."""
        return self.n_ctx // 2

    @property
    def rows_per_chunk(self) -> int:
        """Scored positions per chunk: ``n_ctx/2 .. n_ctx-2``."""
        return self.n_ctx - 1 - self.first

    def chunk_input(self, i: int) -> list[int]:
        """Tokens of chunk ``i`` as evaluated (BOS in the first place when the model adds one)."""
        toks = self.tokens[i].tolist()
        if self.bos >= 0:
            toks[0] = self.bos
        return toks

    def targets(self, i: int) -> np.ndarray:
        """The tokens predicted at chunk ``i``'s scored positions."""
        return self.tokens[i, self.first + 1:].astype(np.int64)


def sample_text(n_passages: int, path: Path = SAMPLE) -> str:
    """The text llama-perplexity reads with ``-f``: the first passages joined by blank lines."""
    return "\n\n".join(load_sample(n_passages, path))


def sample_chunks(engine, n_passages: int, n_tokens: int) -> Chunks:
    """llama-perplexity's chunks of the text sample for a loaded model.

    The text is tokenized whole (BOS first when the GGUF says so, special tokens not
    parsed, as ``common_tokenize(ctx, text, true)``), then cut into ``len // n_tokens``
    chunks. Raises ``ValueError`` below two chunks (llama-perplexity refuses them too).
    """
    tokens = engine.tokenize(sample_text(n_passages), special=False)
    n_chunks = len(tokens) // n_tokens
    if n_chunks < 2:
        raise ValueError(f"the text sample of {n_passages} passages is {len(tokens)} tokens, fewer "
                         f"than 2 chunks of shift_tokens={n_tokens}; raise shift_passages")
    arr = np.asarray(tokens[:n_chunks * n_tokens], dtype=np.int32).reshape(n_chunks, n_tokens)
    bos = engine.bos_token_id if engine.add_bos and engine.bos_token_id is not None else -1
    return Chunks(arr, int(bos))


def chunk_rows(engine, chunks: Chunks, i: int) -> np.ndarray:
    """Full next-token log-probs (float64, (rows_per_chunk, n_vocab)) of chunk ``i``'s scored
    positions, the chunk decoded from an empty KV cache."""
    return engine.logprob_rows(chunks.chunk_input(i), list(range(chunks.first, chunks.n_ctx - 1)))


# ------------------------------------------------------------------ the compact rows
class RowCodes(NamedTuple):
    """Log-probability rows in llama-perplexity's ``--kl-divergence-base`` encoding."""

    codes: np.ndarray  # (N, n_vocab) uint16: (log p - offset) / scale, 0 below the offset
    scale: np.ndarray  # (N,) float32: (top log p - offset) / 65535
    offset: np.ndarray  # (N,) float32: max(lowest log p, top log p - 16)


def encode_rows(logprobs: np.ndarray) -> RowCodes:
    """Encode log-probability rows as ``llama-perplexity --kl-divergence-base`` does.

    Parameters
    ----------
    logprobs : ndarray, shape (N, n_vocab)
        Normalised next-token log-probabilities.

    Returns
    -------
    RowCodes
        One uint16 per entry over the 16 nats below the row's top entry; a step of
        16/65535 = 2.4e-4 nats, so a decoded entry is within 1.2e-4 nats of the original.

    Notes
    -----
    Same as ``log_softmax(n_vocab, logits, uint16_t *, tok)`` in llama.cpp's
    ``tools/perplexity/perplexity.cpp``, computed from log-probabilities (they differ from
    the logits by a constant per row): entries more than 16 nats below the top are coded 0
    and decode to the offset, which lies at or below log p = -16 and is therefore left out
    of :func:`kl_rows`.
    """
    lp = np.asarray(logprobs)
    top = lp.max(axis=1).astype(np.float64)
    offset = np.maximum(lp.min(axis=1), top - LOG_RANGE).astype(np.float32)
    scale = ((top - offset) / 65535.0).astype(np.float32)
    codes = np.empty(lp.shape, dtype=np.uint16)
    for b in _blocks(len(lp)):  # bounded temporaries: a few rows of the vocabulary at a time
        off = offset[b, None].astype(np.float64)
        step = np.where(scale[b] > 0, scale[b], 1.0).astype(np.float64)[:, None]
        x = np.where(lp[b] > off, np.rint((lp[b] - off) / step), 0.0)
        codes[b] = np.clip(x, 0, 65535)
    return RowCodes(codes, scale, offset)


def _blocks(n: int, size: int = 16) -> list[slice]:
    """Row slices of at most ``size`` rows covering ``range(n)``."""
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def decode_rows(rows: RowCodes) -> np.ndarray:
    """Log-probabilities (float32, as llama-perplexity) of :func:`encode_rows`'s codes."""
    return rows.codes.astype(np.float32) * rows.scale[:, None] + rows.offset[:, None]


def kl_rows(ref: RowCodes, rung_rows: np.ndarray) -> np.ndarray:
    """KL(reference || rung) per position over the whole vocabulary.

    Parameters
    ----------
    ref : RowCodes, N rows
        The reference's stored rows (:func:`encode_rows`).
    rung_rows : ndarray, shape (N, n_vocab)
        The rung's full next-token log-probabilities at the same positions.

    Returns
    -------
    ndarray, shape (N,)
        sum_i p_i (log p_i - log q_i) over the entries with log p_i > -16.

    Notes
    -----
    llama-perplexity's ``--kl-divergence`` estimator, term for term (its per-row function
    ``log_softmax(n_vocab, logits, base_log_prob, tok, kld)``). The entries left out hold at
    most n_vocab * e^-16 of the reference's mass (0.5 % for 49,152 tokens, 1.7 % for
    151,936; in practice orders of magnitude less). The codes' rounding (at most 1.2e-4 nats
    per entry) makes the reference against itself give |KL| <= 1.2e-4 per position rather
    than exactly 0.

    References
    ----------
    .. [1] ggml-org/llama.cpp, ``tools/perplexity/perplexity.cpp`` (``kl_divergence``),
       as vendored in llama-cpp-python 0.3.36.
    """
    out = np.empty(len(ref.codes), dtype=np.float64)
    for b in _blocks(len(out)):  # bounded temporaries: a few rows of the vocabulary at a time
        p_lp = decode_rows(RowCodes(ref.codes[b], ref.scale[b], ref.offset[b]))
        keep = p_lp > LOGPROB_FLOOR
        p = np.exp(p_lp, where=keep, out=np.zeros_like(p_lp))
        out[b] = np.sum(p * np.where(keep, p_lp - rung_rows[b], 0.0), axis=1, dtype=np.float64)
    return out


# ------------------------------------------------------------------ the reference store
class RefStore(NamedTuple):
    """What is kept of the reference on the text sample, less its rows (read chunk by chunk
    with :func:`iter_rows`, so memory stays one chunk of a 152k-token vocabulary)."""

    path: Path
    chunks: Chunks
    target_logprob: np.ndarray  # (N,) float64: exact reference log-prob of the actual next token
    top: np.ndarray  # (N,) the reference's most likely token (exact argmax)
    n_vocab: int
    params_hash: str


_SMALL = ("tokens", "bos", "target_logprob", "top", "scale", "offset", "params_hash")


def _store_digest(small: dict[str, np.ndarray], codes_shape: tuple, codes_sha256: str) -> str:
    """:func:`~gguf_fragility.store.content_digest` of a reference store: its small arrays
    (dtype, shape, bytes) and the sha256 of its codes' bytes (hashed as they stream)."""
    parts = [(k, f"{a.dtype.str}{a.shape}".encode() + np.ascontiguousarray(a).tobytes())
             for k, a in sorted(small.items())]
    return content_digest([*parts, ("codes", f"{tuple(codes_shape)}{codes_sha256}".encode())])


def write_reference(engine, chunks: Chunks, path: Path, params_hash: str) -> None:
    """Score the reference on every chunk and store its rows atomically (``.npz``, streamed).

    The file is an ordinary ``.npz`` (``np.load`` reads it) whose big member, ``codes``
    (N, n_vocab) uint16, is written one chunk at a time, deflated; its ``content_sha256``
    member is the digest of every other member (:func:`read_reference` checks it). The write
    goes to a temporary file renamed over ``path`` at the end (removed if the write fails).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    n_rows = len(chunks.tokens) * chunks.rows_per_chunk
    shape = (n_rows, engine.n_vocab)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<u2")), "fortran_order": False,
              "shape": shape}
    small: dict[str, list] = {"target_logprob": [], "top": [], "scale": [], "offset": []}
    codes_sha = hashlib.sha256()
    with removed_on_error(tmp), zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("codes.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            for i in range(len(chunks.tokens)):
                rows = chunk_rows(engine, chunks, i)
                enc = encode_rows(rows)
                block = np.ascontiguousarray(enc.codes, dtype="<u2").tobytes()
                f.write(block)
                codes_sha.update(block)
                t = chunks.targets(i)
                small["target_logprob"].append(rows[np.arange(len(t)), t])
                small["top"].append(rows.argmax(axis=1).astype(np.int32))
                small["scale"].append(enc.scale), small["offset"].append(enc.offset)
        arrays = {k: np.concatenate(v) for k, v in small.items()}
        arrays.update(tokens=chunks.tokens, bos=np.array(chunks.bos), params_hash=np.array(params_hash))
        arrays = {k: np.asarray(a) for k, a in arrays.items()}
        arrays["content_sha256"] = np.array(_store_digest(arrays, shape, codes_sha.hexdigest()))
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    tmp.replace(path)


def read_reference(path: Path, *, verify: bool = True) -> RefStore:
    """The stored reference, less its rows; with ``verify`` every byte of the rows is read
    (CRC checked) and the store's contents must hash as written (``content_sha256``), so a
    torn, edited or foreign file fails here and not halfway through a rung.

    Raises
    ------
    gguf_fragility.store.StaleContent
        With ``verify``, when the contents do not hash as written or the store has no digest.
    OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, EOFError
        When the file is truncated or corrupted, not an ``.npz``, lacks an array or its
        arrays disagree.
    """
    with np.load(path) as z:
        missing = [k for k in (*_SMALL, "codes") if k not in z.files]
        if missing:
            raise KeyError(f"no array {', '.join(missing)} (a store of an older format)")
        a = {k: z[k] for k in _SMALL}
        stored = str(z["content_sha256"]) if "content_sha256" in z.files else None
    chunks = Chunks(a["tokens"], int(a["bos"]))
    n = len(chunks.tokens) * chunks.rows_per_chunk
    lengths = {k: len(a[k]) for k in ("target_logprob", "top", "scale", "offset")}
    if set(lengths.values()) != {n}:
        raise ValueError(f"arrays of unequal length ({lengths}; {n} scored positions)")
    with zipfile.ZipFile(path) as zf, zf.open("codes.npy") as f:
        shape = _npy_header(f)[0]
        if shape[0] != n:
            raise ValueError(f"codes hold {shape[0]} rows; {n} scored positions")
        if verify:
            codes_sha = hashlib.sha256()
            while block := f.read(1 << 24):  # zipfile checks the CRC when the member's end is read
                codes_sha.update(block)
            check_digest(stored, _store_digest(a, shape, codes_sha.hexdigest()))
    return RefStore(Path(path), chunks, a["target_logprob"].astype(np.float64), a["top"],
                    int(shape[1]), str(a["params_hash"]))


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype of the ``.npy`` stream ``f`` (left at its data)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def iter_rows(store: RefStore) -> Iterator[RowCodes]:
    """The stored rows, one chunk's :class:`RowCodes` at a time, in chunk order."""
    with np.load(store.path) as z:
        scale, offset = z["scale"], z["offset"]
    per, v = store.chunks.rows_per_chunk, store.n_vocab
    with zipfile.ZipFile(store.path) as zf, zf.open("codes.npy") as f:
        shape, fortran, dtype = _npy_header(f)
        if fortran or dtype != np.dtype("<u2"):
            raise ValueError(f"codes are {dtype}, fortran_order={fortran}; expected C-order <u2")
        for i in range(len(store.chunks.tokens)):
            buf = f.read(per * v * 2)
            if len(buf) != per * v * 2:
                raise EOFError(f"{store.path}: codes end at chunk {i}")
            sl = slice(i * per, (i + 1) * per)
            yield RowCodes(np.frombuffer(buf, "<u2").reshape(per, v), scale[sl], offset[sl])


# ------------------------------------------------------------------ the statistics
class ShiftStats(NamedTuple):
    """Result of :func:`rung_shift` (stored as a rung's ``_shift.json``)."""

    n_positions: int
    n_chunks: int
    chunk_tokens: int
    kl_mean: float  # nats
    kl_median: float
    kl_p90: float
    kl_p95: float
    kl_p99: float
    kl_p999: float
    kl_max: float
    same_top_rate: float  # share of positions whose most likely token is the reference's
    ppl: float  # the rung's perplexity on the scored tokens
    ppl_ratio: float  # exp(mean NLL(rung) - mean NLL(reference))
    rms_dp: float  # RMS of p(rung) - p(reference) of the actual next token
    positions: str  # which positions are scored
    flash_attn: str  # the engine's flash-attention setting: "off" ("on" for a KV-cache rung)


def rung_shift(engine, store: RefStore) -> ShiftStats:
    """Distribution shift of a loaded rung against the stored reference, on the same chunks.

    Parameters
    ----------
    engine : gguf_fragility.engine.llama.Engine
        The rung, loaded with the same engine settings as the reference.
    store : RefStore
        :func:`read_reference` of the reference's store.

    Returns
    -------
    ShiftStats
        KL divergence (mean and llama-perplexity's percentiles), same-top rate, perplexity
        and its ratio to the reference's, RMS change of the actual token's probability.

    Notes
    -----
    The statistics of ``llama-perplexity --kl-divergence`` (``kl_divergence`` in
    ``tools/perplexity/perplexity.cpp``) on the same tokens: KL by :func:`kl_rows`; same top
    token compares exact argmaxes (llama-perplexity takes the reference's from its codes,
    which differs only where two tokens are within 1.2e-4 nats); perplexity ratio and dp use
    the reference's exact log-prob of the actual token (llama-perplexity: decoded from the
    codes). Percentiles interpolate linearly, as llama-perplexity's ``percentile``.
    """
    kl, same, nll, dp = [], [], [], []
    per = store.chunks.rows_per_chunk
    for i, ref_rows in enumerate(iter_rows(store)):
        rows = chunk_rows(engine, store.chunks, i)
        t = store.chunks.targets(i)
        sl = slice(i * per, (i + 1) * per)
        kl.append(kl_rows(ref_rows, rows))
        same.append(rows.argmax(axis=1) == store.top[sl])
        t_lp = rows[np.arange(per), t]
        nll.append(-t_lp)
        dp.append(np.exp(t_lp) - np.exp(store.target_logprob[sl]))
    kl, same, nll, dp = (np.concatenate(x) for x in (kl, same, nll, dp))
    q = np.percentile(kl, [50, 90, 95, 99, 99.9])
    return ShiftStats(
        n_positions=int(kl.size), n_chunks=len(store.chunks.tokens),
        chunk_tokens=store.chunks.n_ctx, kl_mean=float(kl.mean()), kl_median=float(q[0]),
        kl_p90=float(q[1]), kl_p95=float(q[2]), kl_p99=float(q[3]), kl_p999=float(q[4]),
        kl_max=float(kl.max()), same_top_rate=float(same.mean()), ppl=float(np.exp(nll.mean())),
        ppl_ratio=float(np.exp(nll.mean() + store.target_logprob.mean())),
        rms_dp=float(np.sqrt(np.mean(dp ** 2))), positions=POSITIONS,
        flash_attn="on" if engine.flash_attn else "off")


def reference_shift(store: RefStore) -> ShiftStats:
    """:func:`rung_shift` of the reference against itself, from its store (no model run).

    Zero KL and RMS change, same top token everywhere, perplexity ratio 1; the perplexity
    is the reference's own on the sample. ``tests/test_sweep.py`` checks it against a real
    second run of the reference (whose KL is within the codes' rounding of 0).
    """
    nll = -np.asarray(store.target_logprob, dtype=np.float64)
    return ShiftStats(
        n_positions=int(nll.size), n_chunks=len(store.chunks.tokens),
        chunk_tokens=store.chunks.n_ctx, kl_mean=0.0, kl_median=0.0, kl_p90=0.0, kl_p95=0.0,
        kl_p99=0.0, kl_p999=0.0, kl_max=0.0, same_top_rate=1.0, ppl=float(np.exp(nll.mean())),
        ppl_ratio=1.0, rms_dp=0.0, positions=POSITIONS, flash_attn=FLASH_ATTN)


# ------------------------------------------------------------------ the text sample
def load_sample(n_passages: int, path: Path = SAMPLE) -> list[str]:
    """The first ``n_passages`` frozen passages."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run python -m gguf_fragility.run.shift")
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    if n_passages > len(texts):
        raise ValueError(f"profile asks for {n_passages} passages; {path} holds {len(texts)}")
    return texts[:n_passages]


def freeze_sample(n: int = 64, seed: int = 0, min_chars: int = 2400) -> Path:
    """Write ``n`` texts of at least ``min_chars`` to :data:`SAMPLE` (deterministic).

    The source passages are short (median ~580 characters), so consecutive passages of a
    seeded shuffle are joined with blank lines into longer texts, like the continuous
    chunks ``llama-perplexity`` scores.
    """
    passages = wikipedia_passages(seed)
    texts, current = [], []
    for passage in passages:
        current.append(passage)
        if sum(map(len, current)) >= min_chars:
            texts.append("\n\n".join(current))
            current = []
        if len(texts) == n:
            break
    if len(texts) < n:
        raise ValueError(f"{WIKIPEDIA[1]} yields only {len(texts)} texts of {min_chars} characters")
    SAMPLE.parent.mkdir(parents=True, exist_ok=True)
    SAMPLE.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return SAMPLE


if __name__ == "__main__":
    print(freeze_sample(*(int(a) for a in sys.argv[1:])))
