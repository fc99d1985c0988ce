"""Claim check: every number in the site's prose must be a value of a generated CSV.

    .venv/bin/python -m gguf_fragility.report.claims default      # exit 1 and list what is untraceable

Seed 000's hand-kept ``CLAIM_CHECK.csv``, made automatic. Definitions:

* **Pages**: every ``*.html`` of the rendered site (``outputs/<profile>/site/``), whichever
  renderer made it, except :data:`QUOTED_PAGES` (dated measurements of named runs, quoted);
  only the page's ``<main>`` is read (navigation is not a claim).
* **Prose**: the text of ``<main>`` outside ``pre, code, kbd, samp, table, svg, math,
  script, style`` and ``.cell-code`` / stream outputs. Markdown cells of the executed
  notebooks, generated sentences and ``text/markdown`` outputs are prose; code, printed
  output, data tables (with the ``N rows × M columns`` line pandas writes under a long one)
  and chart internals are not (they come from the data directly); nor are cross-references
  to chapters ("notebook 06", "chapters 5-8").
* **Number**: a run of digits, optionally signed, with thousands commas and a decimal part,
  that is not glued to a letter, digit, ``_`` or ``.`` on either side. So ``Q4_K_M``,
  ``SmolLM2``, ``135M``, ``sha256`` and dotted versions such as ``3.11.2`` are names, not
  numbers; ``5.14 bpw``, ``-3.2 pp``, ``88.9%`` and ``1,024`` are numbers.
* **Traceable**: some finite numeric cell ``v`` of a CSV under ``outputs/<profile>/tables/``
  or ``outputs/<profile>/ladder/`` satisfies ``|x - t(v)| <= 0.5 * 10**-d`` (``d`` = the
  decimals written, plus a 1e-9 slack) for ``t`` in {v, 100 v, |v|, 100 |v|}: the number
  is the value rounded as printed, possibly as a percentage and without its sign.

This proves that a printed number *exists* in the generated data at the printed precision;
it does not prove it came from the right cell. Small integers are traced almost always.
The verdict and every number found are written to ``outputs/<profile>/claim_check.csv``
(not under ``tables/``, so the report cannot trace numbers to itself).
"""

from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from gguf_fragility.layout import RunLayout

# Hand-written pages that quote figures measured on named, dated runs (and the exact messages
# of bad input), not numbers of this run: they say so at their top and are not checked.
QUOTED_PAGES = frozenset({"measurements.html", "troubleshooting.html"})
PANDAS_SHAPE = re.compile(r"\b\d+ rows × \d+ columns\b")
# a cross-reference to a chapter ("notebook 06", "chapters 5-8") names a page, not a measure
CROSS_REFERENCE = re.compile(r"\b(?:[Cc]hapters?|[Nn]otebooks?)\s+\d+(?:\s*(?:[-\u2013]|and|to)\s*\d+)?\b")
SKIP_TAGS = {"pre", "code", "kbd", "samp", "table", "svg", "math", "script", "style", "nav",
             "head", "button"}
SKIP_CLASSES = {"cell-code", "cell-output-stdout", "cell-output-stderr", "sourceCode",
                "cell-output-error"}
VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "source", "col", "area", "base",
        "embed", "param", "track"}
NUMBER = re.compile(r"(?<![\w.\-\u2212])(?:[-\u2212+](?=\d))?"
                    r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w]|\.\d|,\d{3})")


class Claim(NamedTuple):
    """One number found in prose."""

    page: str
    number: str
    value: float
    decimals: int
    context: str


class ClaimCheck(NamedTuple):
    """Result of :func:`check`."""

    ok: bool  # every number traced (and at least one page read)
    claims: pd.DataFrame  # page, number, value, decimals, context, traced
    report: Path  # where ``claims`` was written
    n_pages: int


class _Prose(HTMLParser):
    """Text of ``<main>`` outside skipped elements, in document order."""

    def __init__(self, require_main: bool):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, skips its content)
        self.in_main = 0
        self.chunks: list[str] = []
        self.require_main = require_main

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        a = dict(attrs)
        cls = set((a.get("class") or "").split())
        if tag == "main":
            self.in_main += 1
        self.stack.append((tag, tag in SKIP_TAGS or bool(cls & SKIP_CLASSES)))
        if tag in ("p", "li", "div", "h1", "h2", "h3", "h4", "h5", "h6", "figcaption", "td"):
            self.chunks.append("\n")

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if any(t == tag for t, _ in self.stack):  # close it and any unclosed children
            while self.stack and self.stack.pop()[0] != tag:
                pass
        if tag == "main":
            self.in_main -= 1

    def handle_data(self, data):
        if (self.in_main or not self.require_main) and not any(k for _, k in self.stack):
            self.chunks.append(data)


def prose(html_text: str) -> str:
    """The prose of one rendered page (see the module docstring)."""
    p = _Prose(require_main=re.search(r"<main\b", html_text) is not None)
    p.feed(html_text)  # a fragment, or a page without <main>, is read whole
    # pandas writes the shape of a long table under it ("120 rows × 14 columns"): data
    return CROSS_REFERENCE.sub(" ", PANDAS_SHAPE.sub(" ", "".join(p.chunks)))


def numbers(text: str, page: str = "") -> list[Claim]:
    """Every number in a prose string, with 40 characters of context either side."""
    out = []
    for m in NUMBER.finditer(text):
        s = m.group(0)
        v = float(s.replace(",", "").replace("\u2212", "-"))
        d = len(s.split(".")[1]) if "." in s else 0
        ctx = " ".join(text[max(0, m.start() - 40):m.end() + 40].split())
        out.append(Claim(page, s, v, d, ctx))
    return out


def csv_values(run: RunLayout) -> np.ndarray:
    """Sorted finite numeric cells of every CSV under ``tables/`` and ``ladder/``, transformed.

    The transforms ``v, 100 v, |v|, 100 |v|`` are included, so a lookup is a range search.
    """
    files = sorted(run.tables_dir.glob("*.csv")) + sorted(run.root.glob("ladder/*/*.csv"))
    vals = []
    for f in files:
        df = pd.read_csv(f, low_memory=False)
        num = df.apply(pd.to_numeric, errors="coerce").to_numpy(float).ravel()
        vals.append(num[np.isfinite(num)])
    v = np.concatenate(vals) if vals else np.empty(0)
    return np.unique(np.concatenate([v, 100 * v, np.abs(v), 100 * np.abs(v)]))


def traced(claims: list[Claim], values: np.ndarray) -> np.ndarray:
    """Whether each claim matches a value at its printed precision."""
    out = np.zeros(len(claims), bool)
    for i, c in enumerate(claims):
        tol = 0.5 * 10.0 ** -c.decimals + 1e-9 * max(1.0, abs(c.value))
        j = np.searchsorted(values, c.value - tol)
        out[i] = j < len(values) and values[j] <= c.value + tol
    return out


def check(run: RunLayout, site: Path | None = None) -> ClaimCheck:
    """
    Trace every number in the prose of a profile's rendered site to its CSVs.

    Parameters
    ----------
    profile : str
        Run profile: values come from ``outputs/<profile>/tables/*.csv`` and the ladder
        manifests.
    site : pathlib.Path, optional
        Rendered site folder (default ``outputs/<profile>/site``).

    Returns
    -------
    ClaimCheck
        ``ok`` is False when any number is untraced or no page was found.
    """
    site = Path(site) if site is not None else run.site_dir
    pages = sorted(p for p in site.rglob("*.html")
                   if "site_libs" not in p.parts and p.relative_to(site).as_posix() not in QUOTED_PAGES)
    found: list[Claim] = []
    for p in pages:
        found += numbers(prose(p.read_text(errors="replace")), str(p.relative_to(site)))
    df = pd.DataFrame(found, columns=list(Claim._fields))
    df["traced"] = traced(found, csv_values(run)) if found else pd.Series(dtype=bool)
    report = run.claim_check
    report.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(report, index=False)
    return ClaimCheck(bool(pages) and bool(df["traced"].all()), df, report, len(pages))


def untraceable(res: ClaimCheck) -> list[str]:
    """``UNTRACEABLE <page>: <number>  …context…``, one line per number no table holds."""
    if not len(res.claims):
        return []
    return [f"UNTRACEABLE {r.page}: {r.number}  …{r.context}…"
            for r in res.claims[~res.claims["traced"]].itertuples()]


def main(argv: list[str] | None = None) -> int:
    """``python -m gguf_fragility.report.claims <profile>``: exit 1 listing untraceable numbers."""
    ap = argparse.ArgumentParser(prog="python -m gguf_fragility.report.claims",
                                 description="Check that every number in the site's prose "
                                             "is a value of a generated CSV.")
    ap.add_argument("profile")
    ap.add_argument("--site", type=Path, help="rendered site folder (default outputs/<profile>/site)")
    args = ap.parse_args(argv)
    res = check(RunLayout.of(args.profile), args.site)
    if res.n_pages == 0:
        print(f"claims: no rendered pages under {args.site or 'the site folder'}; "
              f"run `python -m gguf_fragility.report.site {args.profile}` first", file=sys.stderr)
        return 1
    bad = untraceable(res)
    for line in bad:
        print(line)
    print(f"claims: {len(res.claims)} numbers in the prose of {res.n_pages} pages, "
          f"{len(bad)} untraceable; table {res.report}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
