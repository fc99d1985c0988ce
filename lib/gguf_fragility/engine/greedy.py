"""Greedy decoding of several prompts at once, each verified against a draft: the reference's
own reply.

Speculative decoding (Leviathan, Kalman & Matias 2023, "Fast inference from transformers
via speculative decoding", ICML; Chen et al. 2023, arXiv 2302.01318) checks a draft's
tokens in one batch and keeps the prefix the target model would have produced itself. Under
greedy decoding the check is exact: the target keeps draft token ``i`` when it is the argmax
of the target's row ``i``. Here the draft costs nothing, because the reference already
produced it; a rung whose argmax agrees at every draft position has, by construction, the
reference's reply as its own greedy reply, and no token is generated one at a time.

Several prompts are decoded together, one KV-cache sequence each, as llama.cpp's
``llama-parallel`` serves several clients: the prompts' common prefix is decoded once and
shared by every sequence, and each step of one-token decoding carries one token of every
unfinished reply. On two CPU cores and short contexts a step over 8 sequences costs about
3.6 one-sequence steps; over long replies the cells a group holds eat the gain (README,
*Verified and grouped generation*), hence :func:`plan_groups`' cell budget.

The algorithm needs only a :class:`Backend`: decode tokens at positions on sequences and
return chosen logits rows chunk by chunk, drop a sequence's cache beyond a position, tell
end-of-generation tokens, detokenize. :class:`gguf_fragility.engine.llama.Engine` is one; the
unit tests use a scripted one.

Definition of a rung's greedy reply (the same for every rung and for the reference): the
prompts of a group are decoded in batches of the engine's ``n_batch`` tokens, their common
prefix once, then each prompt's rest followed by its draft (when there is one); from the
first position where the rung's argmax differs from the draft, one token per unfinished
sequence per step. A reply therefore depends on the group it was decoded in (the batch
shapes move the float rounding), which is why groups are formed the same way at every rung
(:func:`plan_groups`: consecutive items, in the cell's order). Generation ends after an
end-of-generation token (kept in ``tokens``, not in ``text``), when the text contains a stop
string (``text`` is cut before it), or at ``max_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol

import numpy as np


class Backend(Protocol):
    """What greedy decoding needs from a loaded model."""

    n_batch: int

    def decode(self, tokens: Sequence[int], pos: Sequence[int],
               seqs: Sequence[Sequence[int]], want: Sequence[int]
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Decode token ``i`` at position ``pos[i]`` in sequences ``seqs[i]`` (the cache keeps
        them); yield ``(indexes, rows)`` per chunk: the logits rows of the ``want`` indexes
        (increasing) decoded in that chunk."""
        ...

    def drop(self, seq: int, n: int) -> None:
        """Drop every cached position >= ``n`` of sequence ``seq``."""
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
    prefill_s: float  # the first batch's seconds × this prompt's share of its tokens
    generate_s: float  # its share of the one-token steps it took part in
    n_decoded: int  # tokens decoded one at a time
    group_size: int  # replies decoded together with this one (itself included)


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


def plan_groups(lengths: Sequence[int], max_tokens: int, *, n_ctx: int, n_seq_max: int,
                group_cells: int) -> list[list[int]]:
    """Consecutive prompts decoded together: at most ``n_seq_max`` per group, and the
    prompts plus ``max_tokens`` each within ``group_cells`` of the shared KV cache (a prompt
    that alone needs more is decoded alone).

    Every token of a step attends over every cell a group holds (llama.cpp's unified cache
    masks the other sequences' cells, but computes them), so a group's cells cost each of its
    tokens; on two cores groups of long replies are slower than one reply at a time
    (README, *Verified and grouped generation*), while short answers gain.

    Raises
    ------
    ValueError
        If one prompt plus ``max_tokens`` exceeds ``n_ctx``.
    """
    groups: list[list[int]] = []
    used = group_cells + 1
    for i, n in enumerate(lengths):
        need = n + max_tokens
        if need > n_ctx:
            raise ValueError(f"prompt {i} ({n} tokens) + max_tokens ({max_tokens}) exceed "
                             f"n_ctx={n_ctx}; raise n_ctx in the profile or shorten the item")
        if used + need > group_cells or len(groups[-1]) == n_seq_max:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += need
    return groups


class _Reply:
    """One sequence's tokens so far and the stopping rule applied after each one."""

    def __init__(self, backend: Backend, max_tokens: int, stop: Sequence[str]) -> None:
        self.backend, self.max_tokens, self.stop = backend, max_tokens, tuple(s for s in stop if s)
        self.tokens: list[int] = []
        self.text, self.finish = "", ""
        self.logprob = 0.0
        self.next_tok, self.next_lp = -1, 0.0  # the model's next token, not yet added
        self.refeed = -1  # a token already in the reply whose row is still to be decoded
        self.generate_s, self.n_decoded = 0.0, 0

    def add(self, token: int, logprob: float) -> bool:
        """Append ``token``; True when the reply is finished."""
        self.tokens.append(token)
        self.logprob += logprob
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


class _Rows(NamedTuple):
    """Per scored position of one sequence: the model's argmax, its log-prob, and the draft
    token's log-prob (NaN past the draft)."""

    argmax: np.ndarray
    top_lp: np.ndarray
    draft_lp: np.ndarray


def _common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens shared by every prompt, leaving each at least one of its own."""
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return max(n, 0) if len(prompts) > 1 else 0


def _first_pass(backend: Backend, prompts: Sequence[Sequence[int]],
                drafts: Sequence[list[int]]) -> tuple[list[_Rows], list[np.ndarray]]:
    """Decode every prompt and its draft but the last token; per sequence its :class:`_Rows`
    (row 0: after the prompt) and its full log-probabilities after the prompt.

    Each chunk's rows are reduced at once, so memory stays one chunk of logits.
    """
    share = _common_prefix(prompts)
    group = tuple(range(len(prompts)))
    tokens, pos, seqs = list(prompts[0][:share]), list(range(share)), [group] * share
    want, owner, target = [], [], []
    for s, (p, d) in enumerate(zip(prompts, drafts, strict=True)):
        body = list(p[share:]) + d[:-1]
        start = len(tokens) + len(p) - share - 1  # the prompt's last token
        tokens += body
        pos += range(share, share + len(body))
        seqs += [(s,)] * len(body)
        want += range(start, len(tokens))
        owner += [s] * (len(tokens) - start)
        target += d or [-1]
    owner_a, target_a = np.asarray(owner), np.asarray(target)
    argmax, top, tok = np.empty(len(want), np.int64), np.empty(len(want)), np.empty(len(want))
    answers: dict[int, np.ndarray] = {}
    where = {w: k for k, w in enumerate(want)}
    for idx, rows in backend.decode(tokens, pos, seqs, want):
        k = np.fromiter((where[i] for i in idx), np.int64, len(idx))
        lse = _lse(rows)
        a = rows.argmax(axis=1)
        argmax[k] = a
        top[k] = rows[np.arange(len(rows)), a] - lse
        t = target_a[k]
        tok[k] = np.where(t >= 0, rows[np.arange(len(rows)), np.maximum(t, 0)] - lse, np.nan)
        for j, kk in enumerate(k):  # row 0 of a sequence: keep its whole distribution
            if kk == 0 or owner_a[kk - 1] != owner_a[kk]:
                answers[int(owner_a[kk])] = (rows[j] - lse[j]).astype(np.float64)
    out = [_Rows(argmax[owner_a == s], top[owner_a == s], tok[owner_a == s]) for s in group]
    return out, [answers[s] for s in group]


def greedy(backend: Backend, prompts: Sequence[Sequence[int]], *, max_tokens: int,
           stop: Sequence[str] = (),
           drafts: Sequence[Sequence[int] | None] | None = None) -> list[Greedy]:
    """Greedy replies to ``prompts`` (token ids), decoded together, each verifying its draft.

    Parameters
    ----------
    backend : Backend
        The loaded model; its cache is assumed empty and must hold every prompt plus
        ``max_tokens`` on its own sequence (:func:`plan_groups`).
    prompts : sequence of sequences of int
        One per sequence 0, 1, ...
    max_tokens : int
        Most tokens in a reply.
    stop : sequence of str
        Stop strings: a reply ends at the first token whose text contains one.
    drafts : sequence of (sequence of int or None), optional
        A proposed reply per prompt (the reference's ``tokens``). Its longest prefix that
        this model would produce greedily is accepted from the first batch; generation goes
        on one token at a time from the first disagreement.

    Returns
    -------
    list of Greedy
        One per prompt. Equal to one-token-at-a-time greedy decoding wherever the batched
        and one-token rows have the same argmax (``divergence_gap`` shows how near a call
        was where the draft was left).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not prompts:
        return []
    drafts = [[int(t) for t in d][:max_tokens] if d else []
              for d in (drafts or [None] * len(prompts))]
    t0 = time.perf_counter()
    scored, answers = _first_pass(backend, prompts, drafts)
    first_s = time.perf_counter() - t0
    n_first = sum(len(p) + max(len(d) - 1, 0) for p, d in zip(prompts, drafts, strict=True))
    replies = [_Reply(backend, max_tokens, stop) for _ in prompts]
    verified, diverged, gaps = [0] * len(prompts), [-1] * len(prompts), [np.nan] * len(prompts)
    for s, (r, d, rows) in enumerate(zip(replies, drafts, scored, strict=True)):
        bad = np.flatnonzero(rows.argmax[:len(d)] != np.asarray(d, np.int64))
        k = int(bad[0]) if bad.size else len(d)
        for i in range(k):
            verified[s] += 1
            if r.add(d[i], float(rows.draft_lp[i])):
                break
        if r.finish:
            continue
        if k < len(d) or not d:  # the model's own token at k, from the row already computed
            if d:
                diverged[s], gaps[s] = k, float(rows.top_lp[k] - rows.draft_lp[k])
                backend.drop(s, len(prompts[s]) + k)
            r.next_tok, r.next_lp = int(rows.argmax[k]), float(rows.top_lp[k])
        else:  # the draft ran out unfinished: its last token's row is still to be decoded
            r.refeed = d[-1]
    _decode_steps(backend, prompts, replies)
    return [Greedy(r.text, tuple(r.tokens), r.finish, r.logprob, answers[s], verified[s],
                   diverged[s], gaps[s],
                   float(np.sum(scored[s].draft_lp[:len(drafts[s])])) if drafts[s] else np.nan,
                   first_s * len(prompts[s]) / n_first, r.generate_s, r.n_decoded, len(prompts))
            for s, r in enumerate(replies)]


def _decode_steps(backend: Backend, prompts: Sequence[Sequence[int]],
                  replies: list[_Reply]) -> None:
    """One-token steps over every unfinished reply until all are finished."""
    while True:
        tokens, pos, seqs = [], [], []
        for s, r in enumerate(replies):
            if r.finish:
                continue
            if r.refeed >= 0:
                tok, r.refeed = r.refeed, -1
            elif r.add(r.next_tok, r.next_lp):
                continue
            else:
                tok = r.next_tok
            tokens.append(tok)
            pos.append(len(prompts[s]) + len(r.tokens) - 1)
            seqs.append((s,))
        if not tokens:
            return
        t0 = time.perf_counter()
        chunks = list(backend.decode(tokens, pos, seqs, range(len(tokens))))
        share = (time.perf_counter() - t0) / len(tokens)
        rows = np.concatenate([c[1] for c in chunks])
        lse = _lse(rows)
        for (s,), row, z in zip(seqs, rows, lse, strict=True):
            r = replies[s]
            r.next_tok = int(row.argmax())
            r.next_lp = float(row[r.next_tok] - z)
            r.generate_s += share
            r.n_decoded += 1


__all__ = ["Backend", "Greedy", "greedy", "log_softmax", "plan_groups"]
