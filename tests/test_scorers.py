"""Scorers against hand-made tables of raw outputs (lm-eval ``tests/test_filters.py`` style)."""

from __future__ import annotations

import json
import math
import time

import pytest

from gguf_fragility.probes import codeexec, ifeval
from gguf_fragility.probes.scorers import (
    SCORERS,
    extract_json,
    extract_number,
    normalize_text,
    score_greedy_loglik,
    score_mc_loglik,
)


def gen_item(gold, scorer, **params):
    return {"gold": gold, "scorer": scorer, "params": params, "choices": None,
            "question": "q", "kind": "generate"}


# ---------------------------------------------------------------- numbers
@pytest.mark.parametrize("raw, want", [
    ("42", "42"), ("The answer is 1,234.", "1234"), ("-7", "-7"), ("It is −12", "-12"),
    ("$18.50 total", "18.5"), ("3.0", "3"), ("first 3 then 17 apples", "17"),
    ("1,000,000 people", "1000000"), ("no digits here", ""), ("Answer: 0.25", "0.25"),
])
def test_extract_number(raw, want):
    assert extract_number(raw) == want


@pytest.mark.parametrize("raw, gold, ok", [
    ("17 * 23 = 391", "391", True), ("The answer is 391.", "391", True),
    ("The answer is 390.", "391", False), ("Janet makes $18 every day.", "18", True),
    ("So the answer is 1,200", "1200", True), ("I cannot compute that.", "5", False),
    ("-15", "-15", True), ("15", "-15", False),
])
def test_numeric_scorer(raw, gold, ok):
    s = SCORERS["numeric"].func(raw, gen_item([gold], "numeric"))
    assert s.correct is ok and s.score == float(ok)


def test_numeric_records_strict_extraction_beside_flexible():
    s = SCORERS["numeric"].func("The answer is 12. Check: 12 + 3 = 15", gen_item(["12"], "numeric"))
    assert not s.correct  # flexible (last number) = 15
    assert s.detail["strict"] == "12" and s.detail["strict_correct"]


# ---------------------------------------------------------------- text
def test_normalize_text():
    assert normalize_text("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_text("An Apple a day") == "apple day"


@pytest.mark.parametrize("raw, ok", [
    ("Paris", True), ("paris.", True), ("The answer is Paris", True), ("**Paris**", True),
    ("It is Paris, France.", True), ("Lyon", False), ("Parisian cafés", False), ("", False),
])
def test_alias_scorer(raw, ok):
    item = gen_item(["Paris", "City of Light"], "alias")
    assert SCORERS["alias"].func(raw, item).correct is ok


def test_alias_uses_first_line_only():
    item = gen_item(["Paris"], "alias")
    assert not SCORERS["alias"].func("London\nActually maybe Paris", item).correct


@pytest.mark.parametrize("raw, ok", [
    ("olleh", True), ("'olleh'", True), ("The reversed word is 'olleh'.", True),
    ("Answer: OLLEH", True), ("**olleh**", True), ("ohell", False), ("hello", False),
    ("Reversing 'hello' gives 'ohlle'.", False),
])
def test_exact_scorer(raw, ok):
    assert SCORERS["exact"].func(raw, gen_item(["olleh"], "exact")).correct is ok


def test_contains_scorer_whole_tokens():
    item = gen_item(["4829103"], "contains")
    assert SCORERS["contains"].func("The number is 4829103.", item).correct
    assert not SCORERS["contains"].func("The number is 48291034.", item).correct
    assert not SCORERS["contains"].func("I could not find it", item).correct


# ---------------------------------------------------------------- JSON
FIELDS = {"name": "Maria Lopez", "product_code": "KT-4821", "quantity": 3, "city": "Leeds"}


@pytest.mark.parametrize("raw, score, ok", [
    ('{"name": "Maria Lopez", "product_code": "KT-4821", "quantity": 3, "city": "Leeds"}', 1, True),
    ('```json\n{"name": "maria lopez", "product_code": "KT-4821", "quantity": "3", '
     '"city": "Leeds"}\n```', 1, True),  # seed 003's bug: fences must be stripped
    ('Here it is: {"name": "Maria Lopez", "product_code": "KT-4821", "quantity": 4, '
     '"city": "Leeds"} Hope it helps', 0.75, False),
    ('{"name": "Maria Lopez", "city": "Leeds"}', 0.5, False),
    ('{"name": "Maria Lopez", "product_code": "KT-4821", quantity: 3}', 0, False),  # invalid
    ("name: Maria Lopez", 0, False),
])
def test_json_fields_scorer(raw, score, ok):
    s = SCORERS["json_fields"].func(raw, gen_item([], "json_fields", fields=FIELDS))
    assert s.correct is ok and math.isclose(s.score, score)


def test_extract_json_prefers_fenced_block():
    assert extract_json('x {"a": 0}\n```json\n{"a": 1}\n```') == {"a": 1}


# ---------------------------------------------------------------- log-likelihood
def test_mc_loglik_acc_norm_and_margin():
    item = {"gold": 1, "choices": ["a", "bbbbbbbbb", "c"]}
    # raw logprob prefers choice 0; per byte the long gold (10 bytes incl. space) wins
    s = score_mc_loglik([-2.0, -3.0, -5.0], [False] * 3, item)
    assert not s.correct and s.score == 0.0
    assert s.detail["acc_norm"] == 1.0
    assert math.isclose(s.detail["margin"], -1.0)
    assert math.isclose(s.detail["gold_logprob"], -3.0)
    ok = score_mc_loglik([-4.0, -1.5, -2.0], [False] * 3, item)
    assert ok.correct and math.isclose(ok.detail["margin"], 0.5)


def test_greedy_loglik():
    item = {"gold": 0, "choices": ["signs"]}
    assert score_greedy_loglik([-0.3], [True], item).correct
    s = score_greedy_loglik([-0.3], [False], item)
    assert not s.correct and math.isnan(s.detail["margin"])


def test_every_scorer_has_version_and_kind():
    for name, s in SCORERS.items():
        assert s.name == name and s.version and s.kind in ("mc_loglik", "generate")


# ---------------------------------------------------------------- IFEval
def ife(raw, ids, kwargs):
    return ifeval.check_all(raw, ids, kwargs).strict


def test_ifeval_table():
    assert ife("hello world", ["punctuation:no_comma"], [{}]) == (True,)
    assert ife("hello, world", ["punctuation:no_comma"], [{}]) == (False,)
    words = {"relation": "at least", "num_words": 5}
    assert ife("one two three four five", ["length_constraints:number_words"], [words]) == (True,)
    assert ife("one two three four", ["length_constraints:number_words"], [words]) == (False,)
    sent = {"relation": "less than", "num_sentences": 3}
    assert ife("Dr. Smith came. He left.", ["length_constraints:number_sentences"], [sent]) == (
        True,)
    assert ife("A. B c. D e. F g.", ["length_constraints:number_sentences"], [sent]) == (False,)
    assert ife("all lower case", ["change_case:english_lowercase"], [{}]) == (True,)
    assert ife("Not lower", ["change_case:english_lowercase"], [{}]) == (False,)
    assert ife("ALL CAPS HERE", ["change_case:english_capital"], [{}]) == (True,)
    assert ife('"quoted"', ["startend:quotation"], [{}]) == (True,)
    assert ife("not quoted", ["startend:quotation"], [{}]) == (False,)
    assert ife("<<My Title>>\ntext", ["detectable_format:title"], [{}]) == (True,)
    assert ife("* a\n* b\n- c", ["detectable_format:number_bullet_lists"], [{"num_bullets": 3}]) \
        == (True,)
    assert ife("* a\n* b", ["detectable_format:number_bullet_lists"], [{"num_bullets": 3}]) \
        == (False,)
    assert ife("*one* and *two*", ["detectable_format:number_highlighted_sections"],
               [{"num_highlights": 2}]) == (True,)
    assert ife("p1\n***\np2", ["length_constraints:number_paragraphs"],
               [{"num_paragraphs": 2}]) == (True,)
    assert ife("text\nP.S. bye", ["detectable_content:postscript"],
               [{"postscript_marker": "P.S."}]) == (True,)
    assert ife("text only", ["detectable_content:postscript"],
               [{"postscript_marker": "P.S."}]) == (False,)
    assert ife('```json\n{"a": 1}\n```', ["detectable_format:json_format"], [{}]) == (True,)
    assert ife("{a: 1}", ["detectable_format:json_format"], [{}]) == (False,)
    assert ife("My answer is yes.", ["detectable_format:constrained_response"], [{}]) == (True,)
    assert ife("Yes", ["detectable_format:constrained_response"], [{}]) == (False,)
    assert ife("a ****** b", ["combination:two_responses"], [{}]) == (True,)
    assert ife("a ****** a", ["combination:two_responses"], [{}]) == (False,)
    assert ife("The sky is blue.", ["keywords:forbidden_words"],
               [{"forbidden_words": ["sky"]}]) == (False,)
    assert ife("I love banana bread", ["keywords:letter_frequency"],
               [{"letter": "a", "let_frequency": 4, "let_relation": "at least"}]) == (True,)
    assert ife("Is it done? Is it? Any other questions?", ["startend:end_checker"],
               [{"end_phrase": "Any other questions?"}]) == (True,)


def test_ifeval_loose_drops_first_line():
    res = ifeval.check_all("Sure, here it is:\nall lower case", ["change_case:english_lowercase"],
                           [{}])
    assert res.strict == (False,) and res.loose == (True,)


def test_ifeval_rejects_unsupported_id():
    with pytest.raises(ValueError, match="unsupported"):
        ifeval.check_all("x", ["language:response_language"], [{"language": "en"}])


def test_split_sentences():
    assert len(ifeval.split_sentences("Mr. Brown went home. It rained! Why?")) == 3


# ---------------------------------------------------------------- code execution
HE_PARAMS = {"harness": "humaneval", "entry_point": "add",
             "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
             "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}


@pytest.mark.parametrize("raw, ok", [
    ("```python\ndef add(a, b):\n    return a + b\n```", True),
    ("    return a + b\n", True),  # body only, appended to the prompt
    ("```python\ndef add(a, b):\n    return a - b\n```", False),
    ("I am not sure how to do this.", False),
])
def test_code_exec_humaneval(raw, ok):
    s = SCORERS["code_exec"].func(raw, gen_item([], "code_exec", **HE_PARAMS))
    assert s.correct is ok


WRONG_ADD = "def add(a, b):\n    return a - b\n"  # the appended tests would fail it
EARLY_EXITS = {  # model code that ends its process before the tests, with status 0
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "os._exit(0)": "import os\nos._exit(0)\n",
    "process-group kill": ("import os, signal\n"
                           "signal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
                           "os.killpg(0, signal.SIGTERM)\nimport time\ntime.sleep(5)\n"),
    "process-group SIGKILL": "import os, signal\nos.killpg(0, signal.SIGKILL)\n",
    "exec /bin/true": "import os\nos.execv('/bin/true', ['true'])\n",
    "fake token line": ("print('gguf-fragility tests done ' + '0' * 32)\n"
                        "import sys\nsys.exit(0)\n"),
    "token hunt": ("import os, sys\nprint(sys.stdin.read())\nprint(' '.join(sys.argv))\n"
                   "print(*os.environ.values())\nprint(open('/proc/self/cmdline').read())\n"
                   "os._exit(0)\n"),
}


@pytest.mark.parametrize("tail", EARLY_EXITS.values(), ids=EARLY_EXITS.keys())
def test_code_exec_needs_the_tests_to_run(tail):
    item = gen_item([], "code_exec", **HE_PARAMS)
    s = SCORERS["code_exec"].func(f"```python\n{WRONG_ADD}{tail}```", item)
    assert not s.correct and s.score == 0.0, s.detail
    assert s.detail["status"] == "failed" and s.detail["reason"], s.detail


def test_code_exec_correct_code_passes_with_the_token_hidden():
    raw = "```python\ndef add(a, b):\n    return a + b\nprint('no newline', end='')\n```"
    s = SCORERS["code_exec"].func(raw, gen_item([], "code_exec", **HE_PARAMS))
    assert s.correct and s.detail["reason"] == "", s.detail
    res = codeexec.run_python("import sys\nprint('a')\nprint('b', end='')\n")
    assert res.passed and res.stdout == "a\nb" and res.reason == ""  # token line removed
    early = codeexec.run_python("import sys\nprint('a')\nsys.exit(0)\n")
    assert not early.passed and "before its tests finished" in early.reason
    assert early.stdout == "a\n"  # nothing of the token reached the output


def test_code_exec_times_out_on_infinite_loop():
    t0 = time.perf_counter()
    res = codeexec.run_python("while True: pass\n", timeout_s=1.5)
    assert res.status == "timeout" and not res.passed and "within 1.5 s" in res.reason
    assert time.perf_counter() - t0 < 10


def test_code_exec_blocks_network():
    res = codeexec.run_python("import socket\nsocket.create_connection(('127.0.0.1', 80))\n")
    assert not res.passed and "network disabled" in res.stderr


def test_code_exec_mbpp():
    params = {"harness": "mbpp", "setup": "", "test": "assert sq(3) == 9"}
    good = SCORERS["code_exec"].func("```python\ndef sq(x):\n    return x*x\n```",
                                     gen_item([], "code_exec", **params))
    bad = SCORERS["code_exec"].func("```python\ndef sq(x):\n    return x+x\n```",
                                    gen_item([], "code_exec", **params))
    assert good.correct and not bad.correct


def test_scorers_are_typed_entries_dispatched_by_class():
    """Each scorer is a LoglikScorer or a TextScorer; the entry's class fixes its signature."""
    import inspect

    from gguf_fragility.probes.scorers import LoglikScorer, TextScorer
    for name, entry in SCORERS.items():
        assert isinstance(entry, LoglikScorer | TextScorer), name
        params = list(inspect.signature(entry.func).parameters)
        if isinstance(entry, TextScorer):
            assert params == ["raw", "item", "settings"], name
        else:
            assert params[:3] == ["logprobs", "is_greedy", "item"], name


def test_regrade_refuses_a_scorer_of_the_other_kind():
    """A text result re-graded with a log-likelihood scorer (and back) is refused by name."""
    from gguf_fragility.probes.evaluate import regrade_result
    item = {**gen_item(["4"], "numeric"), "hash": "h"}
    with pytest.raises(ValueError, match="'mc_loglik' scores mc_loglik outputs; this generate "
                                         "result needs a text scorer"):
        regrade_result({"mode": "generate", "raw_output": "4", "item_hash": "h"}, item, "mc_loglik")
    raw = json.dumps({"logprobs": [-1.0, -2.0], "is_greedy": [True, False],
                      "continuations": [" A", " B"]})
    with pytest.raises(ValueError, match="'numeric' scores generate outputs; this loglik "
                                         "result needs a log-likelihood scorer"):
        regrade_result({"mode": "loglik", "raw_output": raw, "item_hash": "h"}, item, "numeric")
