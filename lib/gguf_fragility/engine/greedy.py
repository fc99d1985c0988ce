"""Greedy decoding, plain or verified against a draft: the reference's own reply.

Speculative decoding (Leviathan, Kalman & Matias 2023, "Fast inference from transformers
via speculative decoding", ICML; Chen et al. 2023, arXiv 2302.01318) checks a draft's
tokens in one batch and keeps the prefix the target model would have produced itself. Under
greedy decoding the check is exact: the target keeps draft token ``i`` when it is the argmax
of the target's row ``i``. Here the draft costs nothing, because the reference already
produced it; a rung whose argmax agrees at every draft position has, by construction, the
reference's reply as its own greedy reply, and no token is generated one at a time.

The algorithm needs only a :class:`Backend`: decode tokens at positions, return their logits
rows, drop the cache beyond a position, tell end-of-generation tokens, detokenize.
:class:`gguf_fragility.engine.llama.Engine` is one; the unit tests use a scripted one.

Definition of a rung's greedy reply (the same for every rung): the prompt is decoded in one
batch; the draft (when there is one) in batches of the engine's ``n_batch`` on top of it;
from the first position where the rung's argmax differs from the draft, one token at a time.
Generation ends after an end-of-generation token (kept in ``tokens``, not in ``text``),
when the text contains a stop string (``text`` is cut before it), or at ``max_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np


class Backend(Protocol):
    """What greedy decoding needs from a loaded model."""

    n_batch: int

    def feed(self, tokens: Sequence[int], n_past: int, n_rows: int) -> np.ndarray:
        """Decode ``tokens`` at positions ``n_past..`` (cache keeps them); logits of the last
        ``n_rows`` fed tokens, shape (n_rows, n_vocab)."""
        ...

    def truncate(self, n: int) -> None:
        """Drop every cached position >= ``n``."""
        ...

    def is_eog(self, token: int) -> bool:
        """True for an end-of-generation token (EOS, end of turn)."""
        ...

    def text_of(self, tokens: Sequence[int]) -> str:
        """The reply text of ``tokens`` (special tokens not spelled out)."""
        ...


class Greedy(NamedTuple):
    """One greedy reply (see the module notes for its definition)."""

    text: str
    tokens: tuple[int, ...]  # every token produced, the terminating one included
    finish_reason: str  # "stop" (end-of-generation token or stop string) or "length"
    logprob: float  # log-probability of ``tokens`` under this model (teacher-forced)
    answer_logprobs: np.ndarray  # (n_vocab,) next-token log-probs after the prompt
    n_verified: int  # tokens taken from the draft
    diverged_at: int  # first draft position whose argmax differs; -1: none (or no draft)
    divergence_gap: float  # logit(rung's argmax) - logit(draft token) there; NaN if none
    draft_logprob: float  # log-probability of the whole draft under this model; NaN if none
    prefill_s: float  # seconds to decode the prompt
    generate_s: float  # seconds spent decoding one token at a time
    n_decoded: int  # tokens decoded one at a time


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, float64 result; exponentials in the input's precision.

    The normaliser log Σ exp(x − max) is summed in float64, so the result matches a float64
    log-softmax to ~1e-8 on float32 logits at a tenth of its time (the vocabulary rows of a
    152k-token model are the hot path of KL and verification).
    """
    x = np.asarray(logits)
    if x.dtype != np.float32:
        x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    lse = m.astype(np.float64) + np.log(np.exp(x - m).sum(axis=-1, keepdims=True,
                                                         dtype=np.float64))
    return x - lse


def _lse(rows: np.ndarray) -> np.ndarray:
    """log Σ exp of each row (float64), as in :func:`log_softmax`."""
    m = rows.max(axis=1, keepdims=True)
    return (m.astype(np.float64) + np.log(np.exp(rows - m).sum(axis=1, keepdims=True,
                                                               dtype=np.float64)))[:, 0]


class _Reply:
    """Tokens produced so far and the stopping rule applied after each one."""

    def __init__(self, backend: Backend, max_tokens: int, stop: Sequence[str]) -> None:
        self.backend, self.max_tokens, self.stop = backend, max_tokens, tuple(s for s in stop if s)
        self.tokens: list[int] = []
        self.text, self.finish = "", ""

    def add(self, token: int) -> bool:
        """Append ``token``; True when the reply is finished."""
        self.tokens.append(token)
        if self.backend.is_eog(token):
            self.finish = "stop"
            return True
        text = self.backend.text_of(self.tokens)
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            self.text, self.finish = text[:min(cuts)], "stop"
            return True
        self.text = text
        if len(self.tokens) >= self.max_tokens:
            self.finish = "length"
            return True
        return False


def _draft_rows(backend: Backend, first: np.ndarray, draft: Sequence[int],
                n_prompt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per draft position: the rung's argmax, max logit and logit of the draft token.

    Row 0 is the prompt's last row (``first``); rows 1.. come from decoding ``draft[:-1]`` on
    top of the prompt, in ``n_batch`` chunks, each reduced at once (memory stays one chunk).
    Also returns the log-normaliser of each row.
    """
    argmax, top, tok, lse = [], [], [], []

    def take(rows: np.ndarray, ids: Sequence[int]) -> None:
        a = rows.argmax(axis=1)
        argmax.append(a)
        top.append(rows[np.arange(len(rows)), a].astype(np.float64))
        tok.append(rows[np.arange(len(rows)), list(ids)].astype(np.float64))
        lse.append(_lse(rows))

    take(first[None, :], draft[:1])
    rest = list(draft[:-1])
    for s in range(0, len(rest), backend.n_batch):
        chunk = rest[s:s + backend.n_batch]
        take(backend.feed(chunk, n_prompt + s, len(chunk)), draft[s + 1:s + 1 + len(chunk)])
    a, t, k, z = (np.concatenate(x) for x in (argmax, top, tok, lse))
    return a, t - k, k - z


def greedy(backend: Backend, prompt: Sequence[int], *, max_tokens: int,
           stop: Sequence[str] = (), draft: Sequence[int] | None = None) -> Greedy:
    """Greedy reply to ``prompt`` (token ids), verifying ``draft`` first when given.

    Parameters
    ----------
    backend : Backend
        The loaded model; its cache is assumed empty.
    prompt : sequence of int
    max_tokens : int
        Most tokens in the reply.
    stop : sequence of str
        Stop strings: the reply ends at the first token whose text contains one.
    draft : sequence of int, optional
        A proposed reply (the reference's ``tokens``). Its longest prefix that this model
        would produce greedily is accepted in one batch; generation goes on one token at a
        time from the first disagreement.

    Returns
    -------
    Greedy
        Equal to plain greedy decoding whenever the batched and one-token rows have the same
        argmax (they can differ only at near-ties; ``divergence_gap`` shows how near).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    n = len(prompt)
    t0 = time.perf_counter()
    row = backend.feed(list(prompt), 0, 1)[0]
    prefill_s = time.perf_counter() - t0
    answer = log_softmax(row)
    reply = _Reply(backend, max_tokens, stop)
    logprob, n_verified, diverged, gap, draft_lp = 0.0, 0, -1, float("nan"), float("nan")
    next_tok, next_lp = int(row.argmax()), float(answer[row.argmax()])
    draft = [] if draft is None else [int(t) for t in draft][:max_tokens]
    if draft:
        argmax, gaps, tok_lp = _draft_rows(backend, row, draft, n)
        draft_lp = float(tok_lp.sum())
        bad = np.flatnonzero(argmax != np.asarray(draft))
        k = int(bad[0]) if bad.size else len(draft)
        for i in range(k):
            n_verified += 1
            logprob += float(tok_lp[i])
            if reply.add(draft[i]):
                break
        if not reply.finish:
            if k < len(draft):  # the rung's own token at k, from the row already computed
                diverged, gap = k, float(gaps[k])
                next_tok, next_lp = int(argmax[k]), float(tok_lp[k] + gaps[k])
                backend.truncate(n + k)
            else:  # the draft ran out unfinished: decode its last token and go on
                last = backend.feed([draft[-1]], n + k - 1, 1)[0]
                next_tok = int(last.argmax())
                next_lp = float(log_softmax(last)[next_tok])
    n_decoded, gen_s = 0, 0.0
    while not reply.finish:
        logprob += next_lp
        if reply.add(next_tok):
            break
        t1 = time.perf_counter()
        last = backend.feed([next_tok], n + len(reply.tokens) - 1, 1)[0]
        gen_s += time.perf_counter() - t1
        n_decoded += 1
        next_tok = int(last.argmax())
        next_lp = float(log_softmax(last)[next_tok])
    return Greedy(reply.text, tuple(reply.tokens), reply.finish, logprob, answer, n_verified,
                  diverged, gap, draft_lp, prefill_s, gen_s, n_decoded)


__all__ = ["Backend", "Greedy", "greedy", "log_softmax"]
