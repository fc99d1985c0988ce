"""The evaluator: turn a probe item into an engine request, run it, score it (one row per item).

Like lm-evaluation-harness's ``evaluator.py`` it only joins the pieces: items
(:mod:`.probes`), the backend (:class:`gguf_fragility.engine.llama.Engine`) and the scorers
(:mod:`.scorers`)::

    from gguf_fragility.probes.evaluate import evaluate_items, results_frame
    rows = evaluate_items(engine, items, variant=0)
    df = results_frame(rows)

Prompt contract
---------------
* ``mc_loglik`` items are scored by log-likelihood on **plain text** (no chat template, as
  lm-eval does by default). ``letters`` style: ``"{question}\\nA. ..\\nB. ..\\nAnswer:"``
  with continuations ``" A"``, ``" B"`` ...; ``cloze``: ``"[passage\\n]Question: {q}\\nAnswer:"``
  with continuations ``" " + choice``; ``partial`` (WinoGrande): the option replaces ``_``
  in the context and the rest of the sentence is the continuation; ``single`` (LAMBADA):
  the passage and its last word. The word-boundary space belongs to the continuation.
* ``generate`` items send one user message, ``context``, ``question`` and ``instruction``
  joined by blank lines, rendered with the engine's chat template (:meth:`Engine.render`),
  decoded greedily with the family's ``max_tokens`` and stop strings (its ``gen`` in
  :data:`gguf_fragility.probes.families.SPECS`).
* ``variant`` 1 is one harmless prompt variation for calibration: log-likelihood prompts
  use ``Q:``/``A:`` instead of ``Question:``/``Answer:`` (label-free prompts get a leading
  newline); generative prompts get the system message :data:`SYSTEM_V1` instead of the
  template's default.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from gguf_fragility.probes.families import SPECS
from gguf_fragility.probes.scorers import (
    DEFAULT_SETTINGS,
    LETTERS,
    SCORERS,
    LoglikScorer,
    Score,
    ScoreSettings,
    TextScorer,
    scorer_tag,
)

SYSTEM_V1 = "You are a careful assistant. Follow the instructions exactly."
VARIANTS = {0: "default template", 1: "Q:/A: labels (loglik) or custom system message (generate)"}
NAN = float("nan")


class Request(NamedTuple):
    """What the evaluator sends the engine for one item."""

    mode: str  # "loglik" or "generate"
    user: str  # the user message (generate) or "" (loglik)
    system: str | None
    prompt: str  # exact text fed to the model (rendered chat prompt, or the shared context)
    contexts: tuple[str, ...]  # loglik: one context per continuation
    continuations: tuple[str, ...]
    max_tokens: int
    stop: tuple[str, ...]
    scorer: str


class ItemResult(NamedTuple):
    """One scored answer: the row the paired statistics need."""

    item_id: str
    family: str
    variant: int
    mode: str  # "loglik" or "generate"
    raw_output: str  # generated text, or JSON of per-choice logprobs (re-gradable)
    extracted: str
    score: float
    correct: bool
    acc_norm: float  # loglik only (nan for generative)
    gold_logprob: float  # loglik only
    margin: float  # logprob(gold) - best other; nan for generative
    n_prompt_tokens: int
    n_gen_tokens: int
    ttft_s: float
    prompt_tps: float
    gen_tps: float
    finish_reason: str
    seconds: float  # wall time for the item
    scorer: str  # name@version
    item_hash: str
    detail: str  # scorer detail as JSON
    error: str  # "" unless the request failed (then score 0)
    gen_tokens: tuple[int, ...]  # the reply's token ids, terminating token included (generate)
    n_verified: int  # reply tokens accepted from the reference's draft in one batch
    diverged_at: int  # first draft position where this model's argmax differed; -1: none
    divergence_gap: float  # logit gap there (this model's argmax - the draft's token)


def _labels(variant: int) -> tuple[str, str]:
    return ("Q:", "A:") if variant == 1 else ("Question:", "Answer:")


def mc_requests(item: dict, variant: int = 0) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Per-choice (contexts, continuations) of an ``mc_loglik`` item; see the module notes."""
    style, q, choices = item["params"]["mc_style"], item["question"], item["choices"]
    ql, al = _labels(variant)
    lead = "\n" if variant == 1 else ""
    if style == "letters":
        head = (f"The following are multiple choice questions (with answers) about "
                f"{item['params']['topic']}.\n\n" if item["params"].get("topic") else "")
        opts = "".join(f"{LETTERS[i]}. {c}\n" for i, c in enumerate(choices))
        body = f"{item['context']}\n\n{q}" if item["context"] else q
        ctx = f"{head}{body}\n{opts}{al}" if variant == 0 else f"{head}{ql} {body}\n{opts}{al}"
        conts = tuple(f" {LETTERS[i]}" for i in range(len(choices)))
        return (ctx,) * len(choices), conts
    if style == "cloze":
        if item["params"].get("bare"):
            ctx = lead + q
        else:
            ctx = (f"{item['context']}\n" if item["context"] else "") + f"{ql} {q}\n{al}"
        return (ctx,) * len(choices), tuple(" " + c for c in choices)
    if style == "partial":
        cut = q.index("_")
        cont = " " + q[cut + 1:].strip()
        return tuple(lead + q[:cut] + c for c in choices), (cont,) * len(choices)
    if style == "single":
        return (lead + q,), (" " + choices[item["gold"]],)
    raise ValueError(f"{item['item_id']}: unknown mc_style {style!r}")


def user_message(item: dict) -> str:
    """The user message of a generative request: context, question and instruction."""
    parts = [item["context"], item["question"], item["instruction"]]
    return "\n\n".join(p.strip() for p in parts if p.strip())


def build_request(engine, item: dict, variant: int = 0) -> Request:
    """
    The engine request for one item.

    Parameters
    ----------
    engine : Engine
        Needs ``render(user, system)`` and ``is_chat``.
    item : dict
        A validated probe item.
    variant : {0, 1}, default 0
        Prompt variation (see module notes).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    if isinstance(SCORERS[item["scorer"]], LoglikScorer):
        ctxs, conts = mc_requests(item, variant)
        return Request("loglik", "", None, ctxs[0], ctxs, conts, 0, (), item["scorer"])
    settings = SPECS[item["family"]].gen
    system = SYSTEM_V1 if variant == 1 else None
    user = user_message(item)
    stop = settings.stop + (() if engine.is_chat else settings.stop_base)
    return Request("generate", user, system, engine.render(user, system=system), (), (),
                   settings.max_tokens, stop, item["scorer"])


class Evaluated(NamedTuple):
    """Result of :func:`evaluate_batch` for one item."""

    result: ItemResult
    answer_logprobs: np.ndarray | None  # next-token log-probs at the answer; None on error
    reply_logprob: float  # generate: teacher-forced log-prob of the draft if one was given,
    #                       else of this model's own reply; NaN for loglik items and errors


class _Choices(NamedTuple):
    logprobs: list[float]
    greedy: list[bool]
    n_prompt_tokens: int
    answer_logprobs: np.ndarray  # after the first context


def _loglik(engine, req: Request) -> _Choices:
    """Log-probs and greedy flags per continuation, grouping equal contexts into one call."""
    lps: list[float] = [NAN] * len(req.continuations)
    greedy = [False] * len(req.continuations)
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(req.contexts):
        groups.setdefault(c, []).append(i)
    answer = None
    for ctx, idx in groups.items():
        out = engine.loglikelihood(ctx, [req.continuations[i] for i in idx])
        answer = out.answer_logprobs if answer is None else answer
        for i, ll in zip(idx, out.choices, strict=True):
            lps[i], greedy[i] = ll.logprob, ll.is_greedy
    return _Choices(lps, greedy, len(engine.tokenize(req.contexts[0])), answer)


NO_REPLY = dict(gen_tokens=(), n_verified=0, diverged_at=-1, divergence_gap=NAN)


def evaluate_item(engine, item: dict, variant: int = 0, draft: Sequence[int] | None = None, *,
                  settings: ScoreSettings = DEFAULT_SETTINGS) -> Evaluated:
    """Build, run and score one item: :func:`evaluate_batch` of one (a reply decoded alone)."""
    return evaluate_batch(engine, [item], variant, [draft], progress=False, settings=settings)[0]


def evaluate_batch(engine, items: Sequence[dict], variant: int = 0,
                   drafts: Sequence[Sequence[int] | None] | None = None, *,
                   progress: bool = True, desc: str = "probes",
                   settings: ScoreSettings = DEFAULT_SETTINGS) -> list[Evaluated]:
    """Build, run and score ``items``, one :class:`Evaluated` each, in order; failures are
    recorded in ``error``, never raised.

    ``settings`` reach the text scorers (e.g. the run plan's ``allow_unisolated_code``).

    Log-likelihood items run one at a time. Generative items with the same decoding budget
    are decoded in groups (:meth:`Engine.groups`: consecutive items, as many as the KV cache
    holds), one sequence each (:func:`gguf_fragility.engine.greedy.greedy`). ``drafts``
    (aligned with ``items``) are the reference's reply tokens: the engine verifies each in
    the group's first batch and generates only from the first token where this model
    disagrees; the reply is the model's greedy reply either way. A generative item's
    ``seconds`` is its group's wall time over the group's size.
    """
    from tqdm.auto import tqdm
    drafts = list(drafts) if drafts is not None else [None] * len(items)
    reqs = [build_request(engine, it, variant) for it in items]
    out: list[Evaluated | None] = [None] * len(items)
    budgets: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    with tqdm(total=len(items), desc=desc, disable=not progress, leave=False) as bar:
        for i, (item, req) in enumerate(zip(items, reqs, strict=True)):
            if req.mode == "loglik":
                out[i] = _loglik_item(engine, item, variant, req)
                bar.update(1)
            else:
                budgets.setdefault((req.max_tokens, req.stop), []).append(i)
        for (max_tokens, stop), idx in budgets.items():
            fits, tokens = [], []
            for i in idx:
                try:
                    tokens.append(engine.prompt_tokens(reqs[i].prompt, max_tokens))
                    fits.append(i)
                except ValueError as exc:  # longer than n_ctx
                    out[i] = _failed(items[i], variant, reqs[i], exc, 0.0)
                    bar.update(1)
            for group in engine.groups([len(t) for t in tokens], max_tokens):
                members = [fits[g] for g in group]
                t0 = time.perf_counter()
                try:
                    gens = engine.generate_group([tokens[g] for g in group],
                                                 max_tokens=max_tokens, stop=stop,
                                                 drafts=[drafts[i] for i in members])
                except (ValueError, RuntimeError) as exc:
                    gens = [exc] * len(members)
                seconds = (time.perf_counter() - t0) / len(members)
                for i, gen in zip(members, gens, strict=True):
                    out[i] = (_failed(items[i], variant, reqs[i], gen, seconds)
                              if isinstance(gen, Exception) else
                              _generated(items[i], variant, reqs[i], gen, seconds,
                                         drafts[i] is not None and len(drafts[i]) > 0,
                                         settings))
                bar.update(len(members))
    return out


def _base(item: dict, variant: int, req: Request) -> dict:
    """The identifying fields of an item's result row."""
    return dict(item_id=item["item_id"], family=item["family"], variant=variant, mode=req.mode,
                scorer=scorer_tag(req.scorer), item_hash=item["hash"])


def _loglik_item(engine, item: dict, variant: int, req: Request) -> Evaluated:
    """Score one log-likelihood item (its choices through :meth:`Engine.loglikelihood`)."""
    t0 = time.perf_counter()
    try:
        ch = _loglik(engine, req)
        sc = _scorer(req.scorer, LoglikScorer, req.mode).func(ch.logprobs, ch.greedy, item,
                                                              req.continuations)
    except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than n_ctx
        return _failed(item, variant, req, exc, time.perf_counter() - t0)
    raw = json.dumps({"logprobs": ch.logprobs, "is_greedy": ch.greedy,
                      "continuations": list(req.continuations)})
    return Evaluated(ItemResult(
        **_base(item, variant, req), raw_output=raw, extracted=sc.extracted, score=sc.score,
        correct=sc.correct, acc_norm=sc.detail["acc_norm"],
        gold_logprob=sc.detail["gold_logprob"], margin=sc.detail["margin"],
        n_prompt_tokens=ch.n_prompt_tokens, n_gen_tokens=0, ttft_s=NAN, prompt_tps=NAN,
        gen_tps=NAN, finish_reason="", seconds=time.perf_counter() - t0,
        detail=detail_json(sc.detail), error="", **NO_REPLY), ch.answer_logprobs, NAN)


def _generated(item: dict, variant: int, req: Request, gen, seconds: float,
               drafted: bool, settings: ScoreSettings) -> Evaluated:
    """Score one generated reply (``gen``: an :class:`Engine` ``Generation``)."""
    try:
        sc = _scorer(req.scorer, TextScorer, req.mode).func(gen.text, item, settings)
    except (ValueError, RuntimeError) as exc:
        return _failed(item, variant, req, exc, seconds)
    g = gen.reply
    return Evaluated(ItemResult(
        **_base(item, variant, req), raw_output=gen.text, extracted=sc.extracted,
        score=sc.score, correct=sc.correct, acc_norm=NAN, gold_logprob=NAN, margin=NAN,
        n_prompt_tokens=gen.n_prompt_tokens, n_gen_tokens=gen.n_gen_tokens,
        ttft_s=gen.ttft_s, prompt_tps=gen.prompt_tps, gen_tps=gen.gen_tps,
        finish_reason=gen.finish_reason, seconds=seconds, detail=detail_json(sc.detail), error="",
        gen_tokens=g.tokens, n_verified=g.n_verified, diverged_at=g.diverged_at,
        divergence_gap=g.divergence_gap),
        gen.answer_logprobs, g.draft_logprob if drafted else g.logprob)


def _failed(item: dict, variant: int, req: Request, exc: Exception, seconds: float) -> Evaluated:
    """The row of an item whose request failed (score 0, the error named)."""
    return Evaluated(ItemResult(
        **_base(item, variant, req), raw_output="", extracted="", score=0.0, correct=False,
        acc_norm=NAN, gold_logprob=NAN, margin=NAN, n_prompt_tokens=0, n_gen_tokens=0,
        ttft_s=NAN, prompt_tps=NAN, gen_tps=NAN, finish_reason="error", seconds=seconds,
        detail="{}", error=f"{type(exc).__name__}: {exc}", **NO_REPLY), None, NAN)


def evaluate_items(engine, items: Iterable[dict], variant: int = 0, *, progress: bool = True,
                   desc: str = "probes",
                   settings: ScoreSettings = DEFAULT_SETTINGS) -> list[ItemResult]:
    """
    Evaluate items in order, one :class:`ItemResult` each (:func:`evaluate_batch`'s rows).

    Parameters
    ----------
    engine : Engine
        Loaded model (needs ``render``, ``is_chat``, ``loglikelihood``, ``tokenize``,
        ``prompt_tokens``, ``groups``, ``generate_group``).
    items : iterable of dict
        Validated probe items.
    variant : {0, 1}, default 0
    progress : bool, default True
        Show a tqdm bar.
    desc : str
        Label of the bar.
    settings : ScoreSettings, default DEFAULT_SETTINGS
        Passed to the text scorers.

    Returns
    -------
    list of ItemResult
    """
    return [e.result for e in evaluate_batch(engine, list(items), variant, progress=progress,
                                             desc=desc, settings=settings)]


def results_frame(results: Sequence[ItemResult]):
    """Results as a pandas DataFrame (one row per item, columns = :class:`ItemResult` fields)."""
    import pandas as pd
    return pd.DataFrame(list(results), columns=list(ItemResult._fields))


def _scorer(name: str, cls: type[LoglikScorer] | type[TextScorer],
            mode: str) -> LoglikScorer | TextScorer:
    """The registered scorer ``name``, which must be a ``cls`` to score a ``mode`` result."""
    entry = SCORERS[name]
    if not isinstance(entry, cls):
        raise ValueError(f"scorer {name!r} scores {entry.kind} outputs; this {mode} result "
                         f"needs a {cls.outputs} scorer")
    return entry


def regrade_result(result: ItemResult | dict, item: dict, scorer: str | None = None, *,
                   settings: ScoreSettings = DEFAULT_SETTINGS) -> Score:
    """
    Re-score a stored result from its raw output (no model run).

    Log-likelihood rows are re-scored from the stored per-choice log-probabilities;
    generative rows from their stored text.

    Raises
    ------
    ValueError
        If the item changed since the result was made, the scorer is unknown, or it scores
        the other kind of output (text vs log-probabilities).
    """
    row = result._asdict() if isinstance(result, ItemResult) else dict(result)
    if row["item_hash"] != item["hash"]:
        raise ValueError(f"{row['item_id']}: result was made from item hash "
                         f"{row['item_hash'][:12]}, the item now hashes to {item['hash'][:12]}")
    name = scorer or item["scorer"]
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {sorted(SCORERS)}")
    if row["mode"] == "loglik":
        raw = json.loads(row["raw_output"])
        return _scorer(name, LoglikScorer, row["mode"]).func(
            raw["logprobs"], raw["is_greedy"], item, raw["continuations"])
    return _scorer(name, TextScorer, row["mode"]).func(row["raw_output"], item, settings)


def detail_json(detail: dict) -> str:
    """Scorer detail as JSON (NaN written as null)."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in detail.items()}
    return json.dumps(clean, sort_keys=True)


__all__ = ["SYSTEM_V1", "VARIANTS", "Evaluated", "ItemResult", "Request",
           "build_request", "detail_json", "evaluate_batch", "evaluate_item", "evaluate_items", "mc_requests",
           "regrade_result", "results_frame", "user_message"]
