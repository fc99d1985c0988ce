"""Greedy decoding verified against a draft: a scripted model, then the real SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax as scipy_log_softmax

from gguf_fragility import probes
from gguf_fragility.engine.greedy import greedy
from gguf_fragility.probes.evaluate import build_request, evaluate_item

EOS, V = 0, 8
CHARS = "_abc,efg"  # token t spells CHARS[t]; token 4 is a comma (the stop string below)


class Scripted:
    """A model whose greedy reply is ``script`` then EOS, whatever came before.

    The row predicting reply position i puts 5.0 on ``script[i]`` (EOS after the script),
    4.0 on the next token id and 0 elsewhere. It checks every position it is fed at
    against its cache, so a wrong truncation or position fails the test.
    """

    n_batch = 3  # small: a draft spans several chunks

    def __init__(self, n_prompt: int, script: list[int]) -> None:
        self.n_prompt, self.script = n_prompt, script
        self.cache: list[int] = []
        self.fed: list[int] = []  # tokens per feed call

    def row(self, i: int) -> np.ndarray:
        want = self.script[i] if i < len(self.script) else EOS
        r = np.zeros(V, np.float32)
        r[want], r[(want + 1) % V] = 5.0, 4.0
        return r

    def feed(self, tokens, n_past, n_rows):
        assert n_past == len(self.cache), f"fed at {n_past}, cache holds {len(self.cache)}"
        self.cache += list(tokens)
        self.fed.append(len(tokens))
        end = len(self.cache)
        return np.stack([self.row(p + 1 - self.n_prompt) for p in range(end - n_rows, end)])

    def truncate(self, n):
        del self.cache[n:]

    def is_eog(self, token):
        return token == EOS

    def text_of(self, tokens):
        return "".join(CHARS[t] for t in tokens)


PROMPT = [5, 6, 7, 1]
SCRIPT = [1, 2, 3, 1, 2]  # "abcab", then EOS


def run(script=SCRIPT, draft=None, max_tokens=16, stop=()):
    model = Scripted(len(PROMPT), script)
    return greedy(model, PROMPT, max_tokens=max_tokens, stop=stop, draft=draft), model


def lp(token: int, want: int) -> float:
    """Log-prob of ``token`` under a Scripted row that prefers ``want`` (scipy)."""
    r = np.zeros(V)
    r[want], r[(want + 1) % V] = 5.0, 4.0
    return float(scipy_log_softmax(r)[token])


def test_plain_reply_follows_the_script():
    g, model = run()
    assert g.tokens == (1, 2, 3, 1, 2, EOS) and g.text == "abcab" and g.finish_reason == "stop"
    assert g.n_verified == 0 and g.diverged_at == -1 and np.isnan(g.draft_logprob)
    assert g.n_decoded == 5 and model.fed == [4, 1, 1, 1, 1, 1]
    assert g.logprob == pytest.approx(6 * lp(1, 1))  # every token is the row's favourite


def test_full_agreement_generates_nothing():
    plain, _ = run()
    g, model = run(draft=plain.tokens)
    assert g.tokens == plain.tokens and g.text == plain.text and g.finish_reason == "stop"
    assert g.n_verified == 6 and g.n_decoded == 0 and g.diverged_at == -1
    assert model.fed == [4, 3, 2]  # the prompt, then draft[:-1] in chunks of n_batch
    assert g.draft_logprob == pytest.approx(plain.logprob) == pytest.approx(g.logprob)


@pytest.mark.parametrize("draft, at", [
    ([3, 2, 3, 1, 2, EOS], 0),        # first token
    ([1, 2, 3, 1, 7, EOS], 4),        # last token before EOS
    ([1, 2, 3, 1, 2, 5, EOS], 5),     # the draft goes on where the model ends (EOS)
    ([1, 2, EOS], 2),                 # the draft ends where the model goes on
])
def test_divergence_continues_to_the_plain_reply(draft, at):
    plain, _ = run()
    g, model = run(draft=draft)
    assert g.tokens == plain.tokens and g.text == plain.text
    assert g.diverged_at == at and g.n_verified == at
    want = SCRIPT[at] if at < len(SCRIPT) else EOS
    assert g.divergence_gap == pytest.approx(5.0 - (4.0 if draft[at] == (want + 1) % V else 0.0))
    assert g.n_decoded == len(plain.tokens) - at - 1  # the token at `at` came from the batch
    assert g.logprob == pytest.approx(plain.logprob)
    expected = sum(lp(t, SCRIPT[i] if i < len(SCRIPT) else EOS) for i, t in enumerate(draft))
    assert g.draft_logprob == pytest.approx(expected)  # the whole draft, teacher-forced
    assert len(model.cache) == len(PROMPT) + len(g.tokens) - 1


def test_stop_string_ends_both_paths_at_the_same_token():
    script = [1, 4, 2, 3]  # "a,bc": stop at the comma
    plain, _ = run(script, stop=[","])
    assert plain.text == "a" and plain.tokens == (1, 4) and plain.finish_reason == "stop"
    same, _ = run(script, draft=plain.tokens, stop=[","])
    assert same.tokens == plain.tokens and same.n_decoded == 0
    longer, _ = run(script, draft=[1, 2, 3, EOS], stop=[","])  # the draft has no comma
    assert longer.tokens == plain.tokens and longer.diverged_at == 1
    early, _ = run([1, 2, 3], draft=[1, 4, 2], stop=[","])  # the draft stops, the model not
    assert early.text == "abc" and early.diverged_at == 1


def test_max_tokens_ends_both_paths():
    plain, _ = run(max_tokens=3)
    assert plain.tokens == (1, 2, 3) and plain.finish_reason == "length"
    g, _ = run(draft=[1, 2, 3, 1, 2, EOS], max_tokens=3)  # the draft is cut to max_tokens
    assert g.tokens == plain.tokens and g.finish_reason == "length" and g.n_decoded == 0
    short, model = run(draft=[1, 2], max_tokens=4)  # the draft runs out unfinished
    assert short.tokens == (1, 2, 3, 1) and short.finish_reason == "length"
    assert short.n_verified == 2 and short.diverged_at == -1
    assert len(model.cache) == len(PROMPT) + 3


def test_bad_max_tokens_is_refused():
    with pytest.raises(ValueError, match="max_tokens"):
        run(max_tokens=0)


GENERATIVE = {"arithmetic": 6, "string_ops": 6, "factual_recall": 4, "structured_output": 3}


def test_verified_equals_plain_on_the_real_model(smol_ladder, smol_engine):
    """At Q2_K (the rung that disagrees most with F16) the verified path gives the same
    replies as plain greedy generation; only near-ties (logit gap < 0.05) may differ."""
    from gguf_fragility.engine.llama import Engine

    items = [it for fam, n in GENERATIVE.items() for it in probes.load_family(fam, n=n).items]
    drafts = {it["item_id"]: evaluate_item(smol_engine, it).result.gen_tokens for it in items}
    path = smol_ladder.set_index("rung").loc["Q2_K", "file"]
    with Engine(path, n_ctx=1024, n_threads=2, seed=0) as q2:
        verified, plain, gaps = [], [], []
        for it in items:
            v = evaluate_item(q2, it, draft=drafts[it["item_id"]]).result
            p = evaluate_item(q2, it).result
            verified.append(v)
            plain.append(p)
            if v.gen_tokens != p.gen_tokens:  # where they part: how close was the call?
                req = build_request(q2, it)
                toks = q2.tokenize(req.prompt)
                j = next(i for i, (a, b) in enumerate(zip(v.gen_tokens, p.gen_tokens,
                                                              strict=False)) if a != b)
                row = q2.logprob_rows(toks + list(p.gen_tokens[:j]), [len(toks) + j - 1])[0]
                gaps.append(abs(row[p.gen_tokens[j]] - row[v.gen_tokens[j]]))
    assert all(g < 0.05 for g in gaps), gaps
    same = [v.extracted == p.extracted for v, p in zip(verified, plain, strict=True)]
    assert sum(same) >= len(items) - len(gaps)
    # Q2_K really disagrees with F16 somewhere, so both branches of the check ran
    assert any(v.diverged_at >= 0 for v in verified)
    assert any(v.n_verified > 0 for v in verified)
