"""The inference core: one GGUF loaded in llama.cpp (via llama-cpp-python) behind a small interface.

Like lm-evaluation-harness's ``LM`` (``loglikelihood`` / ``generate_until``), every
notebook talks to llama.cpp only through :class:`Engine`::

    eng = Engine("model.gguf", n_ctx=2048, n_threads=2, seed=0)
    eng.loglikelihood("The capital of France is", [" Paris", " banana"])
    eng.generate(eng.render("What is 2+2?"), max_tokens=16)

Contracts
---------
* BOS: a token sequence starts with BOS exactly when the GGUF says so
  (``tokenizer.ggml.add_bos_token``; SmolLM2 says no). The same rule holds for every
  rung and every scorer.
* Log-likelihood: the word-boundary space belongs to the continuation (``" Paris"``).
  Continuation tokens are the tokens of ``context + continuation`` after the context's
  own tokens (lm-eval's ``_encode_pair``). The context is evaluated once per call and its
  KV cache reused for every continuation.
* Generation is greedy (temperature 0) and therefore deterministic for one build.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import llama_cpp
import numpy as np

from gguf_fragility.engine.gguf import open_gguf
from gguf_fragility.engine.greedy import Greedy, greedy, log_softmax, plan_groups
from gguf_fragility.engine.memory import llama_log, planned_memory
from gguf_fragility.engine.rungs import KV_DEFAULT, KV_TYPES

# Version of the log-likelihood computation: part of every sweep cell's params hash, so a
# change that moves log-probs (even by float rounding) re-runs stored cells.
# 2: one batch per item, the choices as sequences on the shared context, whose last
#    logits row scores every first token (was: context[:-1], then one decode per choice)
# 3: cells gain ref_answer_logprob (the reference's reply teacher-forced under the rung)
# 4: generation is engine.greedy's (own greedy loop; a rung verifies the reference's reply
#    tokens in one batch); ref_answer_logprob covers the reply's terminating token
# 5: generative items are decoded in groups (up to n_seq_max replies within group_cells KV
#    cells), one sequence each, the prompts' common prefix shared; prompt and draft in one
#    pass
SCORING_VERSION = 5
# Flash attention: off in every Engine but a KV-cache rung's (llama.cpp needs it for a
# quantized V cache). It moves log-probs by 0.1-1.8 % of a rung's KL on CPU, so llama.cpp's
# own tools are compared with ``-fa off``.
FLASH_ATTN = "off"


class LogLik(NamedTuple):
    """Log-likelihood of one continuation: see :meth:`Engine.loglikelihood`."""

    logprob: float  # sum over the continuation's tokens (natural log)
    token_logprobs: tuple[float, ...]
    n_tokens: int
    is_greedy: bool  # every continuation token is the argmax


class ChoiceScores(NamedTuple):
    """Result of :meth:`Engine.loglikelihood`."""

    choices: tuple[LogLik, ...]  # one per continuation, in order
    answer_logprobs: np.ndarray  # (n_vocab,) next-token log-probs after the context


class Generation(NamedTuple):
    """One greedy generation with llama.cpp's own timings."""

    text: str
    n_prompt_tokens: int  # prompt tokens, including any reused from the KV cache
    n_gen_tokens: int
    ttft_s: float  # prompt evaluation + first token (this reply's shares)
    prompt_tps: float  # prompt tokens over this reply's share of the prompt batch's seconds
    gen_tps: float  # tokens decoded one at a time over this reply's share of those steps
    finish_reason: str  # "stop" or "length"
    answer_logprobs: np.ndarray  # (n_vocab,) next-token log-probs after the prompt
    reply: Greedy  # tokens, their log-probability, and how much of a draft was verified


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux ``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def system_info() -> dict[str, str]:
    """llama.cpp build facts to store with every result."""
    return {"llama_cpp_python": llama_cpp.__version__,
            "system_info": llama_cpp.llama_print_system_info().decode().strip()}


def topk_rows(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ids and log-probs of each row of full log-probabilities, most likely first."""
    ids = np.argpartition(-rows, k - 1, axis=1)[:, :k]
    lp = np.take_along_axis(rows, ids, axis=1)
    order = np.argsort(-lp, axis=1, kind="stable")
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(lp, order, axis=1)


class Engine:
    """One GGUF model loaded in llama.cpp.

    Parameters
    ----------
    path : str or Path
        GGUF file; checked (exists, magic, not truncated) before loading.
    n_ctx : int, default 2048
        Context size in tokens.
    n_threads : int, optional
        CPU threads; llama-cpp-python's default (all cores) when None.
    seed : int, default 0
    n_gpu_layers : int, default 0
        Layers offloaded to the GPU (-1 = all); needs a CUDA build (see README).
    n_batch : int, default 512
        Tokens per llama_decode call.
    n_seq_max : int, default 8
        Sequences in the (unified) KV cache: the choices of one log-likelihood call are
        decoded together, one sequence each, on top of their shared context, and so are the
        replies of one :meth:`generate_group`.
    kv_cache : {"f16", "q8_0", "q4_0"}, default "f16"
        Type of the K and V cache (llama.cpp's ``--cache-type-k``/``-v``); a quantized V
        cache needs ``flash_attn``.
    flash_attn : bool, default False
        llama.cpp's flash attention (``LLAMA_FLASH_ATTN_TYPE_ENABLED``, else disabled).
    group_cells : int, default 512
        KV cells (prompt plus ``max_tokens`` each) that replies decoded together may reserve
        (:meth:`groups`); a reply that needs more is decoded alone.

    Attributes
    ----------
    memory : gguf_fragility.engine.memory.PlannedMemory or None
        What llama.cpp allocated for this model and context (weights, KV cache at ``n_ctx``,
        compute buffers), read from its log while loading
        (:func:`gguf_fragility.engine.memory.planned_memory`); None if its log lines were
        not recognised.

    Raises
    ------
    ValueError
        For an unknown ``kv_cache``, or a quantized cache without ``flash_attn``.
    """

    def __init__(self, path: str | Path, *, n_ctx: int = 2048, n_threads: int | None = None,
                 seed: int = 0, n_gpu_layers: int = 0, n_batch: int = 512,
                 n_seq_max: int = 8, kv_cache: str = KV_DEFAULT,
                 flash_attn: bool = False, group_cells: int = 512) -> None:
        if kv_cache not in KV_TYPES:
            raise ValueError(f"unknown KV-cache type {kv_cache!r}; use one of "
                             f"{', '.join(KV_TYPES)}")
        if kv_cache != KV_DEFAULT and not flash_attn:  # llama.cpp refuses the context
            raise ValueError(f"a {kv_cache} KV cache needs flash_attn=True")
        self.path = Path(path)
        reader = open_gguf(self.path)
        self.add_bos = bool(_field(reader, "tokenizer.ggml.add_bos_token", False))
        self.chat_template = _field(reader, "tokenizer.chat_template", None)
        self.bos_token_id = _field(reader, "tokenizer.ggml.bos_token_id", None)
        del reader
        t0 = time.perf_counter()
        with llama_log() as model_log:
            self.llm = llama_cpp.Llama(
                model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads, seed=seed,
                n_gpu_layers=n_gpu_layers, n_batch=n_batch, n_ubatch=n_batch, logits_all=False,
                type_k=KV_TYPES[kv_cache], type_v=KV_TYPES[kv_cache], flash_attn=flash_attn,
                verbose=False)
        with llama_log() as context_log:
            self._use_sequences(n_seq_max)  # keeps type_k, type_v and flash_attn_type
        self.memory = planned_memory(model_log, context_log)
        self.load_s = time.perf_counter() - t0
        self.n_ctx, self.n_batch, self.seed, self.n_seq_max = n_ctx, n_batch, seed, n_seq_max
        self.kv_cache, self.flash_attn, self.group_cells = kv_cache, flash_attn, group_cells
        self.n_vocab = self.llm.n_vocab()
        # next-token log-probs at the answer position of the latest call (after the context
        # of `loglikelihood`, after the prompt of `generate`); used for answer-position KL
        self._formatter = None
        if self.chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
            eos = self.llm.detokenize([self.llm.token_eos()], special=True).decode()
            self._formatter = Jinja2ChatFormatter(self.chat_template, eos_token=eos, bos_token="")

    # ---------------------------------------------------------------- text
    @property
    def is_chat(self) -> bool:
        """True when the GGUF carries a chat template (instruct model)."""
        return self._formatter is not None

    def render(self, user: str, system: str | None = None) -> str:
        """The prompt text the model sees: chat template with generation prompt, or plain text."""
        if self._formatter is None:
            return user if system is None else f"{system}\n\n{user}"
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}]
        return self._formatter(messages=messages).prompt

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Tokens of ``text`` with this model's BOS rule; special tokens are parsed unless
        ``special`` is False (plain text, as llama-perplexity reads its file)."""
        return self.llm.tokenize(text.encode(), add_bos=self.add_bos, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens`` (special tokens spelled out)."""
        return self.llm.detokenize(list(tokens), special=True).decode(errors="replace")

    # ---------------------------------------------------------------- decoding
    def _use_sequences(self, n_seq_max: int) -> None:
        """Replace llama-cpp-python's one-sequence context by one with ``n_seq_max`` sequences.

        ``Llama`` has no argument for it; the new context shares the model and every other
        parameter, with a unified KV cache so that sequences can share the context's cells.
        """
        if n_seq_max < 1:
            raise ValueError(f"n_seq_max must be >= 1, got {n_seq_max}")
        params = self.llm.context_params
        params.n_seq_max, params.kv_unified = n_seq_max, True
        old = self.llm._ctx
        self.llm._ctx = llama_cpp._internals.LlamaContext(
            model=self.llm._model, params=params, verbose=False)
        old.close()

    def _reset(self) -> None:
        self.llm._ctx.kv_cache_clear()
        self.llm.n_tokens = 0

    def decode(self, tokens: Sequence[int], pos: Sequence[int],
               seqs: Sequence[Sequence[int]], want: Sequence[int]
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One llama_decode per ``n_batch`` tokens; token i at ``pos[i]`` in sequences ``seqs[i]``.

        Yields, per chunk that computes any, ``(indexes, rows)``: the ``want`` indexes (into
        ``tokens``, increasing) decoded in that chunk and their logits rows. Only those rows
        are computed (no logits_all), and each chunk's rows are copied in one block (llama.cpp
        stores them contiguously, in batch order).
        """
        want_set = set(want)
        if list(want) != sorted(want_set):
            raise ValueError("want must be increasing indexes without repeats")
        batch = self.llm._batch.batch
        for start in range(0, len(tokens), self.n_batch):
            chunk = range(start, min(start + self.n_batch, len(tokens)))
            batch.n_tokens = len(chunk)
            out = []
            for i, j in enumerate(chunk):
                batch.token[i], batch.pos[i] = tokens[j], pos[j]
                batch.n_seq_id[i] = len(seqs[j])
                for k, seq in enumerate(seqs[j]):
                    batch.seq_id[i][k] = seq
                batch.logits[i] = j in want_set
                if j in want_set:
                    out.append(j)
            self.llm._ctx.decode(self.llm._batch)
            if out:
                ptr = llama_cpp.llama_get_logits(self.llm._ctx.ctx)
                yield np.asarray(out), np.ctypeslib.as_array(
                    ptr, shape=(len(out), self.n_vocab)).copy()

    def _decode_batch(self, tokens: Sequence[int], pos: Sequence[int],
                      seqs: Sequence[Sequence[int]], want: Sequence[int]) -> np.ndarray:
        """The logits rows at ``want`` of :meth:`decode`, in one array."""
        blocks = [rows for _, rows in self.decode(tokens, pos, seqs, want)]
        return np.concatenate(blocks) if blocks else np.empty((0, self.n_vocab), np.float32)

    def _decode(self, tokens: Sequence[int], n_past: int, want: Sequence[int]) -> np.ndarray:
        """Evaluate ``tokens`` on sequence 0 at positions n_past.. and return logits at ``want``."""
        rows = self._decode_batch(tokens, range(n_past, n_past + len(tokens)),
                                  [(0,)] * len(tokens), want)
        self._keep_prefix(list(tokens), n_past)
        return rows

    def _keep_prefix(self, tokens: list[int], n_past: int) -> None:
        """Sequence 0 holds exactly ``tokens`` after ``n_past`` kept ones; others are dropped.

        Keeps llama-cpp-python's bookkeeping true so create_completion reuses this prefix.
        """
        end = n_past + len(tokens)
        self.llm._ctx.kv_cache_seq_keep(0)
        self.llm._ctx.kv_cache_seq_rm(0, end, -1)
        self.llm.input_ids[n_past:end] = tokens
        self.llm.n_tokens = end

    # ---------------------------------------------------------------- scoring
    def loglikelihood(self, context: str, continuations: Sequence[str]) -> ChoiceScores:
        """Log-probability of each continuation after ``context``.

        One batch holds the context, as a prefix shared by every choice's sequence, and
        each continuation's tokens but the last on its own sequence (llama-perplexity's
        HellaSwag scoring; prefix sharing as in lm-evaluation-harness). The context's last
        logits row scores every continuation's first token, so one-token choices (" A")
        cost nothing beyond the context. More choices than ``n_seq_max`` (or than fit in
        ``n_ctx``) go in further batches on copies of the context's cells.

        Raises
        ------
        ValueError
            If the context has no tokens to condition on, a continuation adds none, or the
            context plus one continuation exceeds ``n_ctx``.
        """
        ctx = self.tokenize(context)
        if not ctx:
            raise ValueError("loglikelihood needs a non-empty context (this model adds no BOS).")
        conts = [self._continuation_ids(context, ctx, c) for c in continuations]
        n = len(ctx)
        self._reset()
        rows: list[np.ndarray] = []
        first = None
        for p, pack in enumerate(self._packs(n, [len(c) - 1 for c in conts])):
            tokens = [t for j in pack for t in conts[j][:-1]]
            pos = [n + i for j in pack for i in range(len(conts[j]) - 1)]
            seqs = [(k,) for k, j in enumerate(pack) for _ in conts[j][:-1]]
            want = list(range(len(tokens)))
            if p == 0:  # the context, shared by the pack's sequences, logits at its end
                tokens, pos, want = ctx + tokens, [*range(n), *pos], [n - 1, *(w + n for w in want)]
                seqs = [tuple(range(len(pack)))] * n + seqs
            else:
                for k in range(1, len(pack)):
                    self.llm._ctx.kv_cache_seq_cp(0, k, 0, n)
            lp = log_softmax(self._decode_batch(tokens, pos, seqs, want))
            if p == 0:
                first, lp = lp[0], lp[1:]
            rows += np.split(lp, np.cumsum([len(conts[j]) - 1 for j in pack])[:-1])
            self._keep_prefix(ctx, 0)
        out = []
        for cont_ids, rest in zip(conts, rows, strict=True):
            lp = np.vstack([first, rest])  # row j: distribution of cont_ids[j]
            tok_lp = lp[np.arange(len(cont_ids)), cont_ids]
            greedy = bool(np.all(lp.argmax(axis=1) == np.asarray(cont_ids)))
            out.append(LogLik(float(tok_lp.sum()), tuple(map(float, tok_lp)), len(cont_ids),
                              greedy))
        return ChoiceScores(tuple(out), first)

    def _continuation_ids(self, context: str, ctx: list[int], cont: str) -> list[int]:
        """Tokens of ``cont`` after ``ctx`` (lm-eval's ``_encode_pair``)."""
        whole = self.tokenize(context + cont)
        ids = whole[len(ctx):] if whole[:len(ctx)] == ctx else self.llm.tokenize(
            cont.encode(), add_bos=False, special=False)
        if not ids:
            raise ValueError(f"continuation {cont!r} adds no tokens after the context")
        return ids

    def _packs(self, n_context: int, extra: Sequence[int]) -> list[list[int]]:
        """Group continuations (by their extra tokens) into batches that fit the KV cache."""
        packs: list[list[int]] = [[]]
        used = n_context
        for j, m in enumerate(extra):
            if n_context + m > self.n_ctx:
                raise ValueError(f"context ({n_context} tokens) + continuation {j} ({m + 1} "
                                 f"tokens) exceed n_ctx={self.n_ctx}; raise n_ctx in the profile")
            if len(packs[-1]) == self.n_seq_max or used + m > self.n_ctx:
                packs.append([])
                used = n_context
            packs[-1].append(j)
            used += m
        return packs

    def logprob_rows(self, tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        """Full next-token log-probabilities after ``tokens[:p+1]`` for each p in ``positions``.

        Returns an array of shape (len(positions), n_vocab), float64.
        """
        bad = [p for p in positions if not 0 <= p < len(tokens)]
        if bad:
            raise ValueError(f"positions {bad[:5]} are outside 0..{len(tokens) - 1}")
        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens exceed the context size n_ctx={self.n_ctx}")
        self._reset()
        return log_softmax(self._decode(list(tokens), 0, list(positions)))

    # ---------------------------------------------------------------- generation
    def prompt_tokens(self, prompt: str, max_tokens: int) -> list[int]:
        """Tokens of a rendered prompt, checked to leave room for ``max_tokens`` in ``n_ctx``."""
        tokens = self.tokenize(prompt)
        if len(tokens) + max_tokens > self.n_ctx:
            raise ValueError(f"prompt ({len(tokens)} tokens) + max_tokens ({max_tokens}) exceed "
                             f"n_ctx={self.n_ctx}; raise n_ctx in the profile or shorten the item")
        return tokens

    def groups(self, lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
        """Prompts (by token count, in order) that :meth:`generate_group` decodes together."""
        return plan_groups(lengths, max_tokens, n_ctx=self.n_ctx, n_seq_max=self.n_seq_max,
                           group_cells=self.group_cells)

    def generate(self, prompt: str, *, max_tokens: int, stop: Sequence[str] = (),
                 draft: Sequence[int] | None = None) -> Generation:
        """Greedy reply to one ``prompt`` (already rendered): :meth:`generate_group` of one.

        Raises
        ------
        ValueError
            If the prompt plus ``max_tokens`` exceeds ``n_ctx``.
        """
        return self.generate_group([self.prompt_tokens(prompt, max_tokens)],
                                   max_tokens=max_tokens, stop=stop, drafts=[draft])[0]

    def generate_group(self, prompts: Sequence[Sequence[int]], *, max_tokens: int,
                       stop: Sequence[str] = (),
                       drafts: Sequence[Sequence[int] | None] | None = None) -> list[Generation]:
        """Greedy replies to ``prompts`` (the tokens of rendered prompts, as
        :meth:`prompt_tokens` gives them), decoded together, one sequence each.

        ``drafts`` are replies' token ids (a reference's ``Generation.reply.tokens``): the
        prefix of each that this model would produce greedily is accepted from the first
        batch, and decoding goes on one token per reply per step from the first disagreement
        (:func:`gguf_fragility.engine.greedy.greedy`, which defines the replies). Timings are
        each reply's share of the batches it was decoded in.

        Raises
        ------
        ValueError
            If the prompts do not fit one group (split them with :meth:`groups`); a prompt
            plus ``max_tokens`` over ``n_ctx`` is one such case.
        """
        if len(self.groups([len(t) for t in prompts], max_tokens)) > 1:
            raise ValueError(f"{len(prompts)} prompts do not fit one group of n_seq_max="
                             f"{self.n_seq_max} sequences in n_ctx={self.n_ctx}; split them "
                             f"with Engine.groups")
        self._reset()
        replies = greedy(self, prompts, max_tokens=max_tokens, stop=stop, drafts=drafts)
        return [Generation(
            text=g.text, n_prompt_tokens=len(t),
            n_gen_tokens=len(g.tokens) - (bool(g.tokens) and self.is_eog(g.tokens[-1])),
            ttft_s=g.prefill_s + (g.generate_s / g.n_decoded if g.n_decoded else 0.0),
            prompt_tps=len(t) / g.prefill_s,
            gen_tps=g.n_decoded / g.generate_s if g.generate_s > 0 else float("nan"),
            finish_reason=g.finish_reason, answer_logprobs=g.answer_logprobs, reply=g)
            for t, g in zip(prompts, replies, strict=True)]

    def parting_gap(self, prompt: Sequence[int], a: Sequence[int], b: Sequence[int]) -> float:
        """|logit difference| under this model between two replies' tokens where they first
        part (both following ``prompt``); NaN when one reply is a prefix of the other.

        How near a call the parting was: two float paths of one model (batched and one-token
        decoding) part only where its two candidates are close.
        """
        j = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if j is None:
            return float("nan")
        row = self.logprob_rows(list(prompt) + list(a[:j]), [len(prompt) + j - 1])[0]
        return float(abs(row[a[j]] - row[b[j]]))

    # the greedy.Backend protocol (with decode above)
    def drop(self, seq: int, n: int) -> None:
        """Drop every cached position >= ``n`` of sequence ``seq``."""
        self.llm._ctx.kv_cache_seq_rm(seq, n, -1)

    def is_eog(self, token: int) -> bool:
        """True for an end-of-generation token of this model (EOS, end of turn)."""
        return bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))

    def text_of(self, tokens: Sequence[int]) -> str:
        """Reply text of ``tokens`` (special tokens not spelled out, as llama.cpp's server)."""
        return self.llm.detokenize(list(tokens), special=False).decode(errors="replace")

    def close(self) -> None:
        """Free the model and context now rather than at garbage collection."""
        self.llm.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _field(reader, name: str, default):
    field = reader.fields.get(name)
    return default if field is None else field.contents()


__all__ = ["FLASH_ATTN", "SCORING_VERSION", "ChoiceScores", "Engine", "Generation", "LogLik",
           "peak_rss_bytes", "system_info", "topk_rows"]
