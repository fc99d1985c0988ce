"""The evaluator: request building, scoring, re-grading (fake engine) and a real llama.cpp run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gguf_fragility import probes
from gguf_fragility.engine.greedy import Greedy
from gguf_fragility.engine.llama import ChoiceScores
from gguf_fragility.engine.llama import Generation as Gen
from gguf_fragility.engine.llama import LogLik as LL
from gguf_fragility.probes import make_item
from gguf_fragility.probes.evaluate import (
    SYSTEM_V1,
    ItemResult,
    build_request,
    evaluate_batch,
    evaluate_item,
    evaluate_items,
    mc_requests,
    regrade_result,
    results_frame,
)
from gguf_fragility.probes.families import SPECS

LL_ROW, GEN_ROW = np.log([0.1, 0.2, 0.3, 0.4]), np.log([0.7, 0.1, 0.1, 0.1])


class FakeEngine:
    """Scripted engine: logprob = -(1 + position in ``prefer``), replies looked up by substring."""

    is_chat = True

    def __init__(self, prefer=(), replies=None, fail=False):
        self.prefer, self.replies, self.fail = list(prefer), replies or {}, fail
        self.calls = []

    def render(self, user, system=None):
        return f"<sys>{system or 'default'}</sys><user>{user}</user><assistant>"

    def tokenize(self, text):
        return text.split()

    def loglikelihood(self, context, continuations):
        self.calls.append(("ll", context, tuple(continuations)))
        return ChoiceScores(tuple(LL(-1.0 - (self.prefer.index(c) if c in self.prefer else 9),
                                     (), 1, c == (self.prefer or [None])[0])
                                  for c in continuations), LL_ROW)

    def prompt_tokens(self, prompt, max_tokens):
        if self.fail:
            raise ValueError("prompt exceeds n_ctx")
        return list(prompt)  # one token per character: generate_group gets the text back

    def groups(self, lengths, max_tokens):
        return [list(range(i, min(i + 2, len(lengths)))) for i in range(0, len(lengths), 2)]

    def generate_group(self, prompts, *, max_tokens, stop=(), drafts=None):
        return [self.generate("".join(p), max_tokens=max_tokens, stop=stop, draft=d)
                for p, d in zip(prompts, drafts or [None] * len(prompts), strict=True)]

    def generate(self, prompt, *, max_tokens, stop=(), draft=None):
        self.calls.append(("gen", prompt, max_tokens, tuple(stop)))
        text = next((v for k, v in self.replies.items() if k in prompt), "no idea")
        reply = Greedy(text, (1, 2), "stop", -1.5, GEN_ROW, 0, -1, np.nan,
                       -2.5 if draft else np.nan, 0.1, 0.1, 2, 1)
        return Gen(text, len(prompt.split()), len(text.split()), 0.1, 100.0, 50.0, "stop",
                   GEN_ROW, reply)


def mmlu_item():
    return make_item("knowledge_mc", "mmlu", "test", "astronomy-1", kind="mc_loglik",
                     question="Which planet is red?", choices=["Venus", "Mars", "Earth", "Moon"],
                     gold=1, scorer="mc_loglik",
                     params={"mc_style": "letters", "topic": "astronomy"})


def test_letters_request_exact_text():
    ctxs, conts = mc_requests(mmlu_item(), 0)
    assert ctxs[0] == ("The following are multiple choice questions (with answers) about "
                       "astronomy.\n\nWhich planet is red?\nA. Venus\nB. Mars\nC. Earth\n"
                       "D. Moon\nAnswer:")
    assert conts == (" A", " B", " C", " D")
    v1, _ = mc_requests(mmlu_item(), 1)
    assert "Q: Which planet is red?" in v1[0] and v1[0].endswith("\nA:")


def test_cloze_boolq_and_partial_winogrande():
    boolq = make_item("reading", "boolq", "validation", 1, kind="mc_loglik", context="P.",
                      question="Is it?", choices=["no", "yes"], gold=1, scorer="mc_loglik",
                      params={"mc_style": "cloze"})
    ctxs, conts = mc_requests(boolq)
    assert ctxs == ("P.\nQuestion: Is it?\nAnswer:",) * 2 and conts == (" no", " yes")
    wg = make_item("commonsense", "winogrande", "validation", 1, kind="mc_loglik",
                   question="Sarah beat Maria so _ won.", choices=["Sarah", "Maria"], gold=0,
                   scorer="mc_loglik", params={"mc_style": "partial"})
    ctxs, conts = mc_requests(wg)
    assert ctxs == ("Sarah beat Maria so Sarah", "Sarah beat Maria so Maria")
    assert conts == (" won.", " won.")


def test_mc_item_scored_with_margin_and_raw_logprobs():
    eng = FakeEngine(prefer=[" B", " C", " A", " D"])
    r = evaluate_item(eng, mmlu_item()).result
    assert r.correct and r.score == 1.0 and r.extracted == "B"
    assert math.isclose(r.margin, 1.0) and math.isclose(r.gold_logprob, -1.0)
    assert json.loads(r.raw_output)["logprobs"] == [-3.0, -1.0, -2.0, -4.0]
    assert len(eng.calls) == 1  # shared context evaluated once
    wrong = evaluate_item(FakeEngine(prefer=[" C", " B"]), mmlu_item()).result
    assert not wrong.correct and wrong.score == 0.0 and math.isclose(wrong.margin, -1.0)


def test_generate_item_uses_template_budget_and_variant():
    item = make_item("arithmetic", "generated", "s", "1", kind="generate",
                     question="What is 17 * 23?", instruction="Answer with the number only.",
                     gold=["391"], scorer="numeric")
    eng = FakeEngine(replies={"17 * 23": "17 * 23 = 391"})
    r = evaluate_item(eng, item, variant=0).result
    assert r.correct and r.extracted == "391" and r.scorer == "numeric@1"
    assert math.isnan(r.margin) and r.n_gen_tokens == 5  # fake tokens = words
    _, prompt, max_tokens, _ = eng.calls[0]
    assert prompt == ("<sys>default</sys><user>What is 17 * 23?\n\nAnswer with the number "
                      "only.</user><assistant>")
    assert max_tokens == SPECS["arithmetic"].gen.max_tokens
    r1 = evaluate_item(eng, item, variant=1).result
    assert r1.variant == 1 and SYSTEM_V1 in eng.calls[-1][1]
    bad = evaluate_item(FakeEngine(replies={"17": "It is 392"}), item).result
    assert not bad.correct and bad.score == 0.0
    # the margin lens's number: the reply's own log-prob, or the draft's when one is verified
    own = evaluate_item(eng, item)
    assert own.reply_logprob == -1.5 and own.result.gen_tokens == (1, 2)
    assert evaluate_item(eng, item, draft=[1, 2]).reply_logprob == -2.5


def test_engine_error_is_recorded_not_raised():
    item = probes.load_family("long_context", n=1).items[0]
    failed = evaluate_item(FakeEngine(fail=True), item)
    r = failed.result
    assert failed.answer_logprobs is None
    assert not r.correct and r.error.startswith("ValueError") and r.finish_reason == "error"


def _sums(n: int) -> list[dict]:
    return [make_item("arithmetic", "generated", "s", f"sum-{i}", kind="generate",
                      question=f"What is {i} + {i}?", gold=[str(2 * i)], scorer="numeric")
            for i in range(1, n + 1)]


class Picky(FakeEngine):
    """Refuses ``too_long`` prompts (as over n_ctx) and fails any group holding ``breaks``."""

    def __init__(self, too_long="", breaks="", **kw):
        super().__init__(**kw)
        self.too_long, self.breaks, self.group_calls = too_long, breaks, []

    def prompt_tokens(self, prompt, max_tokens):
        if self.too_long and self.too_long in prompt:
            raise ValueError("prompt (900 tokens) + max_tokens (24) exceed n_ctx=512")
        return super().prompt_tokens(prompt, max_tokens)

    def generate_group(self, prompts, *, max_tokens, stop=(), drafts=None):
        self.group_calls.append(len(prompts))
        if self.breaks and any(self.breaks in "".join(p) for p in prompts):
            raise RuntimeError("llama_decode returned 1")
        return super().generate_group(prompts, max_tokens=max_tokens, stop=stop, drafts=drafts)


def test_a_batch_keeps_order_groups_replies_and_records_failures_per_item():
    gen = _sums(5)
    items = [gen[0], mmlu_item(), *gen[1:]]
    replies = {f"{i} + {i}": str(2 * i) for i in range(1, 6)}
    eng = Picky(too_long="3 + 3", prefer=[" B"], replies=replies)
    out = evaluate_batch(eng, items, drafts=[[1], None, None, None, [2], None], progress=False)
    assert [e.result.item_id for e in out] == [it["item_id"] for it in items]
    assert [e.result.correct for e in out] == [True, True, True, False, True, True]
    assert "exceed n_ctx" in out[3].result.error and out[3].answer_logprobs is None
    assert eng.group_calls == [2, 2]  # the four that fit, two per group, in order
    # the margin lens's number: the draft's log-prob where one was verified, else the reply's
    assert [out[i].reply_logprob for i in (0, 2, 4, 5)] == [-2.5, -1.5, -2.5, -1.5]
    broken = evaluate_batch(Picky(breaks="4 + 4", replies=replies), gen, progress=False)
    assert [bool(e.result.error) for e in broken] == [False, False, True, True, False]
    assert broken[2].result.error == "RuntimeError: llama_decode returned 1"


def test_regrade_reproduces_and_checks_hash():
    items = [mmlu_item(), make_item("arithmetic", "generated", "s", "2", kind="generate",
                                    question="What is 1 + 1?", gold=["2"], scorer="numeric")]
    eng = FakeEngine(prefer=[" B"], replies={"1 + 1": "2"})
    rows = evaluate_items(eng, items, progress=False)
    for row, it in zip(rows, items, strict=True):
        again = regrade_result(row, it)
        assert again.correct == row.correct and again.score == row.score
    edited = probes.with_hash({**items[1], "gold": ["3"]})
    with pytest.raises(ValueError, match="hash"):
        regrade_result(rows[1], edited)
    df = results_frame(rows)
    assert list(df.columns) == list(ItemResult._fields) and len(df) == 2
    with pytest.raises(ValueError, match="text scorer"):
        regrade_result(rows[1], items[1], scorer="mc_loglik")
    with pytest.raises(ValueError, match="log-likelihood scorer"):
        regrade_result(rows[0], items[0], scorer="numeric")
    with pytest.raises(ValueError, match="unknown scorer"):
        regrade_result(rows[1], items[1], scorer="nope")


def test_every_family_builds_a_request():
    eng = FakeEngine()
    for fam in probes.FAMILIES:
        item = probes.load_family(fam, n=1).items[0]
        req = build_request(eng, item)
        assert req.prompt and (req.mode == "loglik") == (item["kind"] == "mc_loglik")


def _model_path():
    import os
    if os.environ.get("GGUF_FRAGILITY_TEST_MODEL"):
        return os.environ["GGUF_FRAGILITY_TEST_MODEL"]
    try:
        from gguf_fragility.ladder import models
        return str(models.obtain("smollm2-135m"))
    except Exception as exc:  # noqa: BLE001 - offline without the cached model
        pytest.skip(f"SmolLM2 unavailable: {exc}")


@pytest.mark.llama
@pytest.mark.slow
def test_real_smollm2_one_item_per_family():
    """One item of every family (two of long_context) through the real llama.cpp engine and
    SmolLM2."""
    from gguf_fragility.engine.llama import Engine
    eng = Engine(_model_path(), n_ctx=2048, n_threads=2, seed=0)
    try:
        items = [*probes.load_items(probes.FAMILIES, 1),
                 *probes.load_family("long_context", n=2).items[1:]]
        rows = evaluate_items(eng, items, progress=False)
    finally:
        eng.close()
    assert len(rows) == len(probes.FAMILIES) + 1
    assert {r.family for r in rows} == set(probes.FAMILIES)
    assert not [r.error for r in rows if r.error]
    for r in rows:
        assert 0.0 <= r.score <= 1.0 and r.n_prompt_tokens > 0
        if r.mode == "loglik":
            assert math.isfinite(r.gold_logprob) and r.gold_logprob < 0
        else:
            assert r.n_gen_tokens > 0 and r.raw_output
    # the reference model retrieves a needle from a short haystack
    lc = [r for r in rows if r.family == "long_context"]
    assert any(r.correct for r in lc), [r.raw_output for r in lc]


def test_answer_logprobs_are_returned_not_left_on_the_engine():
    """The answer-position distribution travels with the result (the sweep's answer KL)."""
    gen_item = make_item("arithmetic", "generated", "s", "3", kind="generate",
                         question="What is 2 + 2?", gold=["4"], scorer="numeric")
    eng = FakeEngine(prefer=[" B"], replies={"2 + 2": "4"})
    np.testing.assert_array_equal(evaluate_item(eng, mmlu_item()).answer_logprobs, LL_ROW)
    np.testing.assert_array_equal(evaluate_item(eng, gen_item).answer_logprobs, GEN_ROW)
    assert not hasattr(eng, "answer_logprobs")

