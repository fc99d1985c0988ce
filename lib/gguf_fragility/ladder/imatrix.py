"""Importance matrices: the frozen calibration texts and ``llama-imatrix`` runs on the reference.

An imatrix rung (``Q2_K+imatrix_wiki``, ``IQ3_XXS+imatrix_code``; see
:mod:`gguf_fragility.engine.rungs`) is quantized with an importance matrix that
``llama-imatrix`` computes on the model's F16 reference over one calibration text:

- ``data/calibration/wiki.txt``: Wikipedia passages from the same source as the KL text
  sample (``evals==3.0.1.post1``), taken from the far end of the same seeded shuffle, so
  no passage is in both;
- ``data/calibration/code.txt``: Python source files of the standard library that installs
  with Python itself (CPython 3.11, PSF licence), comments and docstrings kept.

Neither may share a 13-word sequence with any probe item (:func:`probe_overlap`, the
contamination test of Brown et al. 2020, GPT-3 paper, appendix C): a text that does is
refused before any model runs. The matrix is cached beside the model's rungs
(``imatrix-<text>.gguf`` and its sidecar) and rebuilt only when the reference, the text or
the settings change. Usage::

    freeze_texts()                               # rewrite data/calibration/ (deterministic)
    m = build_imatrix(ref, "qwen2.5-coder-1.5b", "code", n_threads=2)
    m.path, m.sha256, m.text_sha256
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from gguf_fragility import paths, probes
from gguf_fragility.engine.tools import tool_path
from gguf_fragility.probes.sources import wikipedia_passages
from gguf_fragility.store import fresh_record, sha256_file, write_sidecar

CALIBRATION = paths.DATA / "calibration"
NGRAM = 13  # words per shared sequence that counts as overlap (GPT-3's contamination test)
CHUNK_TOKENS = 512  # llama-imatrix's -c (its default)
CHUNKS = 16  # chunks of each text the matrix is computed on: 8,192 tokens
TARGET_CHARS = 60_000  # each frozen text: enough for CHUNKS chunks with either tokenizer
# standard-library modules of the code text: plain Python, varied (parsing, numbers, text,
# data structures), none generated or test code
STDLIB_FILES = ("textwrap.py", "fractions.py", "heapq.py", "bisect.py", "statistics.py",
                "shlex.py", "difflib.py", "string.py", "calendar.py", "csv.py", "colorsys.py",
                "graphlib.py", "ipaddress.py", "json/encoder.py", "json/decoder.py")


class Imatrix(NamedTuple):
    """Result of :func:`build_imatrix`: one importance matrix and what it was made from."""

    path: Path
    sha256: str
    text: str  # calibration text name (wiki, code)
    text_sha256: str
    chunks: int
    chunk_tokens: int
    seconds: float  # llama-imatrix's wall time when the matrix was computed
    reused: bool  # True when a cached matrix was used


class Overlap(NamedTuple):
    """One probe item that shares a word sequence with a calibration text."""

    item_id: str
    ngram: str


def text_path(name: str, folder: Path | None = None) -> Path:
    """Path of calibration text ``name`` (``<folder>/<name>.txt``, ``data/calibration`` by default).

    Raises
    ------
    FileNotFoundError
        If it does not exist, naming the texts that do and how to rebuild them.
    """
    folder = folder or CALIBRATION
    path = folder / f"{name}.txt"
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("*.txt"))
        raise FileNotFoundError(f"calibration text {path} does not exist (have: "
                                f"{', '.join(have) or 'none'}); run "
                                "`python -m gguf_fragility.ladder.imatrix` to rebuild them")
    return path


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _ngrams(words: list[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    """Every run of ``n`` words that is not all numbers (``2 3 4 ... 14`` is in any text)."""
    runs = (tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return {g for g in runs if not all(w.isdigit() for w in g)}


def probe_overlap(text: str, families: Iterable[str] | None = None,
                  root: Path | None = None) -> list[Overlap]:
    """
    Probe items that share a sequence of :data:`NGRAM` words with ``text``.

    Words are runs of letters, digits and underscores, lower-cased; an item's words are
    those of all its fields (prompt, context, choices, gold, tests). The test is GPT-3's
    contamination check (Brown et al. 2020, appendix C: 13-gram overlap); runs made only
    of numbers (a counted list, ``range(2, 15)``) are not evidence of shared text and are
    skipped.

    Parameters
    ----------
    text : str
    families : iterable of str, optional
        Probe families to check (default: every family of the frozen battery).
    root : Path, optional
        Probe folder (default ``data/probes``).

    Returns
    -------
    list of Overlap
        One per overlapping item (its first shared sequence); empty when the text is clean.
    """
    grams = _ngrams(_words(text))
    out = []
    for family in families or probes.FAMILIES:
        for item in probes.load_family(family, root, validate=False).items:
            words = _words(json.dumps({k: v for k, v in item.items() if k != "hash"}))
            hit = next((g for g in _ngrams(words) if g in grams), None)
            if hit is not None:
                out.append(Overlap(item["item_id"], " ".join(hit)))
    return out


def check_text(name: str, folder: Path | None = None, root: Path | None = None) -> Path:
    """The path of calibration text ``name`` after checking it shares nothing with the probes.

    Raises
    ------
    ValueError
        If it overlaps a probe item, naming the text, how many items, the first of them
        with the shared words, and the fix.
    """
    path = text_path(name, folder)
    hits = probe_overlap(path.read_text(), root=root)
    if hits:
        first = hits[0]
        raise ValueError(f"calibration text {path} shares {NGRAM}-word sequences with "
                         f"{len(hits)} probe item(s), e.g. {first.item_id}: {first.ngram!r}; an "
                         "importance matrix must not see the test items: take those "
                         "passages out of the text (or rebuild it with "
                         "`python -m gguf_fragility.ladder.imatrix`)")
    return path


def build_imatrix(reference: Path, reference_sha256: str, key: str, text: str, *,
                  n_threads: int | None = None, chunks: int = CHUNKS,
                  folder: Path | None = None) -> Imatrix:
    """
    The importance matrix of a model's reference over one calibration text (cached).

    Runs ``llama-imatrix -m reference -f <text> -c 512 --chunks chunks --no-ppl`` and writes
    ``imatrix-<text>.gguf`` (renamed into place when complete) with a sidecar recording the
    reference's and the text's sha256 and the settings; a matching cached matrix is reused.

    Parameters
    ----------
    reference : Path
        The F16 reference GGUF.
    reference_sha256 : str
    key : str
        Model key: the matrix goes to ``paths.model_dir(key)``.
    text : str
        Calibration text name (``wiki``, ``code``); checked by :func:`check_text`.
    n_threads : int, optional
    chunks : int, default CHUNKS
        512-token chunks of the text processed; the text must hold that many.
    folder : Path, optional
        Where the calibration texts are (default ``data/calibration``).

    Returns
    -------
    Imatrix

    Raises
    ------
    ValueError
        If the text overlaps a probe item or holds fewer than ``chunks`` chunks.
    RuntimeError
        If llama-imatrix fails (its output's end is in the message).
    """
    src = check_text(text, folder)
    expect = {"reference_sha256": reference_sha256, "text": text,
              "text_sha256": sha256_file(src), "chunks": chunks, "chunk_tokens": CHUNK_TOKENS}
    dst = paths.model_dir(key) / f"imatrix-{text}.gguf"
    record = fresh_record(dst, expect)
    reused = record is not None
    if record is None:
        tmp = dst.with_name(f"imatrix-{text}.tmp.gguf")
        cmd = [str(tool_path("llama-imatrix")), "-m", str(reference), "-f", str(src), "-o",
               str(tmp), "-c", str(CHUNK_TOKENS), "--chunks", str(chunks), "--no-ppl",
               "-t", str(n_threads or 2), "-ofreq", str(10 * chunks)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        seconds = time.perf_counter() - t0
        log = proc.stdout + proc.stderr
        if proc.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{log[-2000:]}")
        done = re.findall(r"compute_imatrix: computing over (\d+) chunks", log)
        if done and int(done[-1]) < chunks:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"calibration text {src} holds only {done[-1]} chunks of "
                             f"{CHUNK_TOKENS} tokens for this model's tokenizer, {chunks} asked; "
                             "lengthen the text or lower the chunks")
        tmp.replace(dst)
        record = write_sidecar(dst, {**expect, "imatrix_s": seconds})
    return Imatrix(dst, record["sha256"], text, expect["text_sha256"], chunks, CHUNK_TOKENS,
                   record["imatrix_s"], reused)


# ------------------------------------------------------------------ freezing the texts
def wiki_text(target_chars: int = TARGET_CHARS, seed: int = 0) -> str:
    """Wikipedia passages from the far end of the KL sample's seeded shuffle, joined by blank
    lines until ``target_chars`` (the KL sample takes its texts from the near end)."""
    passages = wikipedia_passages(seed)
    out: list[str] = []
    for passage in reversed(passages):
        out.append(passage)
        if sum(map(len, out)) >= target_chars:
            break
    return "\n\n".join(out)


def code_text(target_chars: int = TARGET_CHARS) -> str:
    """Standard-library Python files (:data:`STDLIB_FILES`, in order) cut at ``target_chars``
    on a line boundary, each preceded by a ``# file: <name>`` line."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for name in STDLIB_FILES:
        body = (stdlib / name).read_text()
        parts.append(f"# file: {name}\n{body}")
        size += len(parts[-1])
        if size >= target_chars:
            break
    text = "\n".join(parts)
    return text[:text.rfind("\n", 0, target_chars) + 1]


def freeze_texts(folder: Path | None = None) -> list[Path]:
    """Write ``wiki.txt`` and ``code.txt`` to ``folder`` (``data/calibration``), checked
    against the probes (:func:`check_text`)."""
    folder = folder or CALIBRATION
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in (("wiki", wiki_text()), ("code", code_text())):
        path = folder / f"{name}.txt"
        path.write_text(text)
        out.append(check_text(name, folder))
    return out


if __name__ == "__main__":
    print(*freeze_texts(*(Path(a) for a in sys.argv[1:])), sep="\n")
