"""Our own IFEval instruction checkers (no NLTK data installs offline).

Implements the verifiable instructions of IFEval (Zhou et al., 2023, arXiv:2311.07911)
following the paper's definitions, with a regex sentence splitter and ``\\w+`` word counts
in place of NLTK's punkt tokenizer. ``language:response_language`` is not supported (it
needs a language detector); items using it are left out of the probe file.

``strict``: the response as given. ``loose``: any of the paper's 8 relaxed variants (drop
the first and/or last line, remove ``*``) passes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple


class IFEvalResult(NamedTuple):
    """Result of :func:`check_all`: one bool per instruction."""

    strict: tuple[bool, ...]
    loose: tuple[bool, ...]


_ABBREV = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs|etc|e\.g|i\.e|No|Fig)\.$", re.I)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.!?`` (and line breaks) unless an abbreviation ends there."""
    pieces: list[str] = []
    for block in re.split(r"\n\s*\n|\n(?=\s*[-*#\d])", text):
        buf = ""
        for part in re.split(r"(?<=[.!?])[\"')\]]*\s+", block.strip()):
            buf = f"{buf} {part}".strip() if buf else part
            if not _ABBREV.search(buf):
                if buf.strip():
                    pieces.append(buf.strip())
                buf = ""
        if buf.strip():
            pieces.append(buf.strip())
    return [p for p in pieces if re.search(r"\w", p)]


def count_words(text: str) -> int:
    """Number of ``\\w+`` word tokens."""
    return len(re.findall(r"\w+", text))


def _relation(count: int, relation: str, n: int) -> bool:
    """IFEval's comparison: "less than" is strict, "at least" inclusive."""
    if relation == "less than":
        return count < n
    if relation == "at least":
        return count >= n
    raise ValueError(f"unknown relation {relation!r}; expected 'less than' or 'at least'")


def _highlights(r: str, num_highlights: int, **_: object) -> bool:
    n = sum(1 for h in re.findall(r"\*[^\n*]*\*", r) if h.strip("*").strip())
    n += sum(1 for h in re.findall(r"\*\*[^\n*]*\*\*", r) if h.strip("*").strip())
    return n >= num_highlights


def _bullets(r: str, num_bullets: int, **_: object) -> bool:
    stars = re.findall(r"^\s*\*[^*].*$", r, re.M)
    dashes = re.findall(r"^\s*-.*$", r, re.M)
    return len(stars) + len(dashes) == num_bullets


def _postscript(r: str, postscript_marker: str, **_: object) -> bool:
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pat = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pat = r"\s*p\.\s?s\..*$"
    else:
        pat = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pat, r.lower(), re.M))


def _paragraphs(r: str, num_paragraphs: int, **_: object) -> bool:
    parts = re.split(r"\s?\*\*\*\s?", r)
    n = len(parts)
    for i, p in enumerate(parts):
        if not p.strip():
            if i in (0, len(parts) - 1):
                n -= 1
            else:
                return False
    return n == num_paragraphs


def _nth_first_word(r: str, num_paragraphs: int, nth_paragraph: int, first_word: str,
                    **_: object) -> bool:
    paras = [p for p in re.split(r"\n\n", r) if p.strip()]
    if len(paras) != num_paragraphs or not 1 <= nth_paragraph <= len(paras):
        return False
    words = paras[nth_paragraph - 1].strip().split()
    if not words:
        return False
    word = re.sub(r"[^\w]", "", words[0]).lower()
    return word == first_word.lower()


def _sections(r: str, section_spliter: str, num_sections: int, **_: object) -> bool:
    parts = re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", r)
    return len(parts) - 1 >= num_sections


def _json(r: str, **_: object) -> bool:
    s = r.strip()
    s = re.sub(r"^```(?:json|Json|JSON)?", "", s).strip()
    s = re.sub(r"```$", "", s).strip()
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


def _two_responses(r: str, **_: object) -> bool:
    parts = [p.strip() for p in r.split("******")]
    if any(not p for p in parts[1:-1]):
        return False
    parts = [p for p in parts if p]
    return len(parts) == 2 and parts[0] != parts[1]


def _capital_words(r: str, capital_relation: str, capital_frequency: int, **_: object) -> bool:
    n = sum(1 for w in re.findall(r"\b[\w']+\b", r) if w.isupper())
    return _relation(n, capital_relation, capital_frequency)


CHECKERS: dict[str, Callable[..., bool]] = {
    "punctuation:no_comma": lambda r, **_: "," not in r,
    "length_constraints:number_words": lambda r, relation, num_words, **_: _relation(
        count_words(r), relation, num_words),
    "length_constraints:number_sentences": lambda r, relation, num_sentences, **_: _relation(
        len(split_sentences(r)), relation, num_sentences),
    "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:nth_paragraph_first_word": _nth_first_word,
    "keywords:forbidden_words": lambda r, forbidden_words, **_: not any(
        re.search(r"\b" + re.escape(w) + r"\b", r, re.I) for w in forbidden_words),
    "keywords:frequency": lambda r, keyword, frequency, relation, **_: _relation(
        len(re.findall(re.escape(keyword), r, re.I)), relation, frequency),
    "keywords:existence": lambda r, keywords, **_: all(
        re.search(re.escape(k), r, re.I) for k in keywords),
    "keywords:letter_frequency": lambda r, letter, let_frequency, let_relation, **_: _relation(
        r.lower().count(letter.lower()), let_relation, let_frequency),
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:title": lambda r, **_: any(
        t.strip("<>").strip() for t in re.findall(r"<<[^\n]+>>", r)),
    "detectable_format:json_format": _json,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:constrained_response": lambda r, **_: any(
        o in r for o in ("My answer is yes.", "My answer is no.", "My answer is maybe.")),
    "detectable_content:number_placeholders": lambda r, num_placeholders, **_: len(
        re.findall(r"\[.*?\]", r)) >= num_placeholders,
    "detectable_content:postscript": _postscript,
    "change_case:english_lowercase": lambda r, **_: r == r.lower() and bool(r.strip()),
    "change_case:english_capital": lambda r, **_: r.isupper(),
    "change_case:capital_word_frequency": _capital_words,
    "startend:quotation": lambda r, **_: len(r.strip()) > 1 and r.strip()[0] == '"' == r.strip()[-1],
    "startend:end_checker": lambda r, end_phrase, **_: r.strip().strip('"').lower().endswith(
        end_phrase.strip().lower()),
    "combination:repeat_prompt": lambda r, prompt_to_repeat, **_: r.strip().lower().startswith(
        prompt_to_repeat.strip().lower()),
    "combination:two_responses": _two_responses,
}
SUPPORTED: frozenset[str] = frozenset(CHECKERS)


def loose_variants(response: str) -> list[str]:
    """The 8 relaxed responses of IFEval's loose metric."""
    lines = response.split("\n")
    base = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(),
            "\n".join(lines[1:-1]).strip()]
    return base + [b.replace("*", "") for b in base]


def check_all(response: str, instruction_ids: Sequence[str], kwargs: Sequence[dict],
              prompt: str = "") -> IFEvalResult:
    """
    Check every instruction of one IFEval prompt.

    Parameters
    ----------
    response : str
        The model's reply.
    instruction_ids : sequence of str
        IFEval instruction ids, all in :data:`SUPPORTED`.
    kwargs : sequence of dict
        Keyword arguments of each instruction (IFEval's ``kwargs``), same length.
    prompt : str, default ""
        The prompt (unused by the supported checkers; kept for interface parity).

    Returns
    -------
    IFEvalResult
        Strict and loose verdicts, one per instruction.
    """
    if len(instruction_ids) != len(kwargs):
        raise ValueError(f"{len(instruction_ids)} instruction ids but {len(kwargs)} kwargs")
    unknown = [i for i in instruction_ids if i not in CHECKERS]
    if unknown:
        raise ValueError(f"unsupported IFEval instruction ids {unknown}; supported: "
                         f"{sorted(SUPPORTED)}")
    variants = [v for v in loose_variants(response) if v.strip()]
    strict, loose = [], []
    for iid, kw in zip(instruction_ids, kwargs, strict=True):
        kw = {k: v for k, v in kw.items() if v is not None}
        fn = CHECKERS[iid]
        s = bool(response.strip()) and fn(response, **kw)
        strict.append(bool(s))
        loose.append(bool(s) or any(fn(v, **kw) for v in variants))
    return IFEvalResult(tuple(strict), tuple(loose))


__all__ = ["CHECKERS", "SUPPORTED", "IFEvalResult", "check_all", "count_words",
           "loose_variants", "split_sentences"]
