"""Scorers: answer extraction kept apart from scoring, each scorer named and versioned.

Like lm-evaluation-harness's ``Filter`` (extraction) and metric registry, the two steps are
separate functions: ``extract_*`` turns raw model text into a candidate answer,
``score_*`` compares it with the gold. :data:`SCORERS` maps a scorer name to its entry, a
:class:`LoglikScorer` or a :class:`TextScorer` (name, version, function); a result row stores
the raw text and the scorer name+version, so a new scorer version can re-grade saved outputs
(:func:`regrade`) without re-running a model.

The two kinds have typed signatures (:class:`LoglikScoreFn`, :class:`TextScoreFn`): a
log-likelihood scorer takes ``(logprobs, is_greedy, item, continuations)`` with one entry per
choice; a text scorer takes ``(raw, item, settings)``, the :class:`ScoreSettings` passed
explicitly by the caller (the run plan's choices, e.g. whether model code may run
unisolated). A new scorer is one function plus one entry in :data:`SCORERS`.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

LETTERS = "ABCDE"


class Score(NamedTuple):
    """Outcome of scoring one answer."""

    extracted: str  # the answer the extraction step found ("" when none)
    score: float  # in [0, 1]: partial credit where the scorer defines it
    correct: bool
    detail: dict  # scorer-specific facts (acc_norm, margin, per-field, strict match, ...)


@dataclass(frozen=True)
class ScoreSettings:
    """Settings a scorer may need, passed explicitly from the run plan (default: the safe ones)."""

    allow_unisolated_code: bool = False  # code_exec may run model code without a sandbox


DEFAULT_SETTINGS = ScoreSettings()


class LoglikScoreFn(Protocol):
    """A log-likelihood scorer: per-choice log-probabilities and greedy flags to a Score."""

    def __call__(self, logprobs: Sequence[float], is_greedy: Sequence[bool], item: dict,
                 continuations: Sequence[str] | None = None) -> Score: ...


class TextScoreFn(Protocol):
    """A text scorer: a generated reply to a Score, under explicit :class:`ScoreSettings`."""

    def __call__(self, raw: str, item: dict,
                 settings: ScoreSettings = DEFAULT_SETTINGS) -> Score: ...


@dataclass(frozen=True)
class _Registered:
    """What every registered scorer holds: its name, version and scoring function."""

    name: str
    version: str
    func: LoglikScoreFn | TextScoreFn
    kind: ClassVar[str]  # the item kind it scores
    outputs: ClassVar[str]  # what it reads

    @property
    def doc(self) -> str:
        """The scoring function's docstring."""
        return self.func.__doc__ or ""


@dataclass(frozen=True)
class LoglikScorer(_Registered):
    """A registered log-likelihood scorer (scores ``mc_loglik`` items)."""

    func: LoglikScoreFn
    kind: ClassVar[str] = "mc_loglik"
    outputs: ClassVar[str] = "log-likelihood"


@dataclass(frozen=True)
class TextScorer(_Registered):
    """A registered text scorer (scores ``generate`` items)."""

    func: TextScoreFn
    kind: ClassVar[str] = "generate"
    outputs: ClassVar[str] = "text"


Scorer = LoglikScorer | TextScorer


# ---------------------------------------------------------------- extraction
_NUMBER = re.compile(r"(?<![\w.])[-−]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])")


def _to_float(token: str) -> float | None:
    """Float value of a number token ("-1,234.50", "$18"), or None."""
    t = token.replace("−", "-").replace("$", "").replace(",", "")
    try:
        return float(t)
    except ValueError:
        return None


def extract_number(text: str) -> str:
    """Last number in ``text`` (commas, sign, decimals, ``$`` handled), normalised; ``""`` if none."""
    found = _NUMBER.findall(text)
    if not found:
        return ""
    value = _to_float(found[-1])
    return "" if value is None else _fmt(value)


def extract_number_strict(text: str) -> str:
    """Number after "answer is"/"####"/"Answer:" (lm-eval ``strict-match``); ``""`` if none."""
    m = re.search(r"(?:answer is|####|answer:)\s*\**\s*(\$?[-−]?\$?[\d,]*\.?\d+)", text, re.I)
    if not m:
        return ""
    value = _to_float(m.group(1))
    return "" if value is None else _fmt(value)


def _fmt(value: float) -> str:
    """Canonical spelling of a number: integers without ``.0``."""
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def normalize_text(text: str) -> str:
    """SQuAD/TriviaQA normalisation: lower case, drop punctuation and articles, squeeze spaces."""
    text = text.lower().replace("’", "'")
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def first_line(text: str) -> str:
    """First non-empty line of ``text``, stripped."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def extract_short_answer(text: str) -> str:
    """First line with "Answer:"/"The answer is" prefixes, markdown and end period removed."""
    line = first_line(text)
    line = re.sub(r"^(?:final answer|answer|the answer is|the answer)\s*[:：]?\s*", "", line,
                  flags=re.I)
    line = line.replace("**", "").replace("`", "").strip()
    return line[:-1].strip() if line.endswith(".") else line


def answer_candidates(text: str) -> list[str]:
    """Candidate short answers: the short line, the last quoted/bold span, the text after the
    last ``:`` or `` is ``."""
    short = extract_short_answer(text)
    cands = [short]
    spans = re.findall(r"\*\*([^*\n]+)\*\*|`([^`\n]+)`|\"([^\"\n]+)\"|'([^'\n]+)'", text)
    if spans:
        cands.append(next(s for s in spans[-1] if s))
    tail = re.split(r":|\bis\b", short)
    if len(tail) > 1:
        cands.append(tail[-1])
    out = []
    for c in cands:
        c = c.strip().strip("\"'`*").strip()
        c = c[:-1].strip() if c.endswith(".") else c
        if c and c not in out:
            out.append(c)
    return out


def _contains_tokens(haystack: str, needle: str) -> bool:
    """Whole-token containment of normalised ``needle`` in normalised ``haystack``."""
    h, n = normalize_text(haystack), normalize_text(needle)
    return bool(n) and f" {n} " in f" {h} "


# ---------------------------------------------------------------- log-likelihood scorers
def score_mc_loglik(logprobs: Sequence[float], is_greedy: Sequence[bool], item: dict,
                    continuations: Sequence[str] | None = None) -> Score:
    """
    Multiple choice by log-likelihood: ``acc`` (argmax logprob) and ``acc_norm``.

    ``acc_norm`` divides each choice's log-probability by its continuation's length in
    UTF-8 bytes (lm-eval's ``acc_norm``). ``margin`` = logprob(gold) - best other choice;
    positive when the gold wins. Ties go to the lowest index. ``continuations`` are the
    texts actually scored (default ``" " + choice``), used for the byte lengths.
    """
    lp = [float(x) for x in logprobs]
    gold = item["gold"]
    conts = list(continuations) if continuations else [" " + c for c in item["choices"]]
    nbytes = [max(1, len(c.encode("utf-8"))) for c in conts]
    pred = max(range(len(lp)), key=lambda i: (lp[i], -i))
    norm = [x / b for x, b in zip(lp, nbytes, strict=True)]
    pred_norm = max(range(len(norm)), key=lambda i: (norm[i], -i))
    others = [x for i, x in enumerate(lp) if i != gold]
    margin = lp[gold] - max(others) if others else float("nan")
    detail = {"acc_norm": float(pred_norm == gold), "pred": pred, "pred_norm": pred_norm,
              "gold_logprob": lp[gold], "margin": margin}
    return Score(LETTERS[pred] if pred < len(LETTERS) else str(pred), float(pred == gold),
                 pred == gold, detail)


def score_greedy_loglik(logprobs: Sequence[float], is_greedy: Sequence[bool], item: dict,
                        continuations: Sequence[str] | None = None) -> Score:
    """LAMBADA-style: correct when every token of the (single) gold continuation is the argmax."""
    ok = bool(is_greedy[item["gold"]])
    return Score("greedy" if ok else "", float(ok), ok,
                 {"gold_logprob": float(logprobs[item["gold"]]), "margin": float("nan"),
                  "acc_norm": float(ok)})


# ---------------------------------------------------------------- generative scorers
def score_numeric(raw: str, item: dict, settings: ScoreSettings = DEFAULT_SETTINGS) -> Score:
    """Last number in the reply equals a gold number (``strict`` match recorded beside it)."""
    golds = [_to_float(g) for g in item["gold"]]
    flex, strict = extract_number(raw), extract_number_strict(raw)

    def hit(ans: str) -> bool:
        v = _to_float(ans) if ans else None
        return v is not None and any(g is not None and math.isclose(v, g, rel_tol=1e-9,
                                                                     abs_tol=1e-9) for g in golds)
    ok = hit(flex)
    return Score(flex, float(ok), ok, {"strict": strict, "strict_correct": hit(strict)})


def score_exact(raw: str, item: dict, settings: ScoreSettings = DEFAULT_SETTINGS) -> Score:
    """Case-insensitive match of any answer candidate (:func:`answer_candidates`) with a gold.

    ``strict_correct`` records the stricter rule: the whole short answer line equals the gold.
    """
    golds = [g.strip().casefold() for g in item["gold"]]
    cands = answer_candidates(raw)
    hit = next((c for c in cands if c.casefold() in golds), "")
    strict = extract_short_answer(raw).casefold() in golds
    return Score(hit or (cands[0] if cands else ""), float(bool(hit)), bool(hit),
                 {"strict_correct": strict})


def score_alias(raw: str, item: dict, settings: ScoreSettings = DEFAULT_SETTINGS) -> Score:
    """Alias match: a normalised alias equals, or appears as whole tokens in, the first line.

    ``exact`` (normalised equality with the short answer) is recorded beside it.
    """
    short = extract_short_answer(raw)
    exact = any(normalize_text(short) == normalize_text(a) for a in item["gold"])
    ok = exact or any(_contains_tokens(short, a) for a in item["gold"])
    return Score(short, float(ok), ok, {"exact": exact})


def score_contains(raw: str, item: dict, settings: ScoreSettings = DEFAULT_SETTINGS) -> Score:
    """A gold answer appears as whole tokens anywhere in the reply (needle retrieval)."""
    hit = next((g for g in item["gold"] if _contains_tokens(raw, g)), "")
    return Score(hit, float(bool(hit)), bool(hit), {})


def extract_json(text: str) -> Any:
    """Parse the JSON object in a reply: fenced block first, else outermost ``{...}``; None if invalid."""
    m = re.search(r"```(?:json|JSON)?\s*\n?(.*?)```", text, re.S)
    cands = [m.group(1)] if m else []
    if "{" in text and "}" in text:
        cands.append(text[text.index("{"):text.rindex("}") + 1])
    cands.append(text.strip())
    for c in cands:
        try:
            return json.loads(c)
        except (json.JSONDecodeError, ValueError):
            continue
    return None


def _same_value(got: Any, want: Any) -> bool:
    """Field equality after normalisation: numbers numerically, strings case/space-folded."""
    if isinstance(want, bool) or isinstance(got, bool):
        return got == want
    if isinstance(want, int | float):
        g = _to_float(str(got)) if isinstance(got, str) else got
        return isinstance(g, int | float) and math.isclose(float(g), float(want), abs_tol=1e-9)
    return isinstance(got, str) and " ".join(got.split()).casefold() == " ".join(
        str(want).split()).casefold()


def score_json_fields(raw: str, item: dict, settings: ScoreSettings = DEFAULT_SETTINGS) -> Score:
    """Valid JSON object and per-field match against ``params['fields']``.

    ``score`` is the fraction of fields right (0 when the JSON is invalid); ``correct``
    needs every field. Extra keys are ignored; code fences are stripped (seed 003's bug).
    """
    want = item["params"]["fields"]
    got = extract_json(raw)
    valid = isinstance(got, dict)
    per = {k: valid and k in got and _same_value(got[k], v) for k, v in want.items()}
    frac = sum(per.values()) / len(per) if per else 0.0
    return Score(json.dumps(got, sort_keys=True) if valid else "", frac, valid and all(
        per.values()), {"valid_json": valid, "fields": per})


def score_ifeval(raw: str, item: dict, settings: ScoreSettings = DEFAULT_SETTINGS) -> Score:
    """IFEval: instruction-level fraction followed (strict); correct when all are followed."""
    from gguf_fragility.probes.ifeval import check_all
    res = check_all(raw, item["params"]["instruction_ids"], item["params"]["kwargs"],
                    item["question"])
    frac = sum(res.strict) / len(res.strict)
    return Score(raw.strip()[:80], frac, all(res.strict),
                 {"strict": list(res.strict), "loose": list(res.loose),
                  "loose_all": all(res.loose)})


def score_code_exec(raw: str, item: dict, settings: ScoreSettings = DEFAULT_SETTINGS) -> Score:
    """Greedy pass@1: run the extracted program with the item's tests in a sandbox.

    Version 2: a pass needs the run's completion token after the tests (exit status 0 alone
    was counted before), and a program over the sandbox's total memory cap fails.
    """
    from gguf_fragility.probes.codeexec import build_program, extract_code, run_python
    code = extract_code(raw)
    program = build_program(code, item["params"])
    res = run_python(program, timeout_s=float(item["params"].get("timeout_s", 10)),
                     allow_unisolated=settings.allow_unisolated_code)
    return Score(code[:2000], float(res.passed), res.passed,
                 {"status": res.status, "reason": res.reason, "stderr_tail": res.stderr[-300:]})


SCORERS: dict[str, Scorer] = {s.name: s for s in (
    LoglikScorer("mc_loglik", "1", score_mc_loglik),
    LoglikScorer("greedy_loglik", "1", score_greedy_loglik),
    TextScorer("numeric", "1", score_numeric),
    TextScorer("exact", "1", score_exact),
    TextScorer("alias", "1", score_alias),
    TextScorer("contains", "1", score_contains),
    TextScorer("json_fields", "2", score_json_fields),
    TextScorer("ifeval", "1", score_ifeval),
    TextScorer("code_exec", "2", score_code_exec),
)}


def scorer_tag(name: str) -> str:
    """``name@version`` of a registered scorer (stored with every result)."""
    return f"{name}@{SCORERS[name].version}"


__all__ = ["DEFAULT_SETTINGS", "LETTERS", "SCORERS", "LoglikScoreFn", "LoglikScorer", "Score",
           "ScoreSettings", "Scorer", "TextScoreFn", "TextScorer", "answer_candidates", "extract_json",
           "extract_number", "extract_number_strict", "extract_short_answer",
           "normalize_text", "scorer_tag", "score_mc_loglik", "score_greedy_loglik"]
