"""The probe item schema: load, validate, hash and check the frozen probe files.

Every capability family is one JSONL file under ``data/probes/<family>.jsonl`` (one item
per line, keys sorted) plus a shared ``data/probes/manifest.json``. The files are written
by ``python -m gguf_fragility.probes.build`` and never edited by hand.

An item is a JSON object with exactly these fields:

``item_id`` : str
    Stable id, ``<family>/<dataset>/<original id>``.
``family`` : str
    One of :data:`FAMILIES`.
``source`` : {"dataset": str, "split": str, "original_id": str}
    Where the item comes from (``generated`` datasets name their generator and seed).
``kind`` : {"mc_loglik", "generate"}
    How the evaluator asks the model (log-likelihood of choices, or greedy generation).
``context`` : str
    Passage or haystack shown before the question (may be empty).
``question`` : str
    The question, task or prompt.
``instruction`` : str
    Answer-format instruction appended for generative prompts (may be empty).
``choices`` : list of str or null
    Answer options (``mc_loglik`` items; null otherwise).
``gold`` : int or list of str
    Index of the right choice (``mc_loglik``) or accepted answers/aliases (``generate``).
``scorer`` : str
    Name of the scorer in :data:`gguf_fragility.probes.scorers.SCORERS`.
``params`` : dict
    Scorer/prompt-specific fields (``mc_style``, IFEval ids and kwargs, code tests, JSON
    fields, ...).
``meta`` : dict
    Descriptive facts not used for scoring (subject, haystack length, depth, ...).
``hash`` : str
    sha256 of the canonical JSON of the item without ``hash`` (:func:`item_hash`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from gguf_fragility import paths
from gguf_fragility.probes.families import FAMILIES
from gguf_fragility.probes.items import canonical_json, item_hash, make_item, with_hash
from gguf_fragility.store import sha256_file

KINDS = ("mc_loglik", "generate")
MC_STYLES = ("letters", "cloze", "partial", "single")
FIELDS: dict[str, type | tuple[type, ...]] = {
    "item_id": str, "family": str, "source": dict, "kind": str, "context": str,
    "question": str, "instruction": str, "choices": (list, type(None)), "gold": (int, list),
    "scorer": str, "params": dict, "meta": dict, "hash": str,
}
SOURCE_FIELDS = ("dataset", "split", "original_id")


class ProbeSchemaError(ValueError):
    """A probe file or item breaks the schema; the message names file, line and field."""


class ManifestMismatch(ProbeSchemaError):
    """A probe file is not the one ``manifest.json`` records (its sha256 or item count)."""


class ProbeFile(NamedTuple):
    """Result of :func:`load_family`."""

    family: str
    path: Path
    items: list[dict]
    sha256: str  # of the file's bytes


class ManifestCheck(NamedTuple):
    """Result of :func:`verify_manifest`: one row per family."""

    family: str
    n_items: int
    sha256_ok: bool
    count_ok: bool
    n_errors: int


def validate_item(item: Any, where: str = "item") -> None:
    """
    Check one item against the schema.

    Parameters
    ----------
    item : dict
        A decoded probe item.
    where : str, default "item"
        Location used as the message prefix, e.g. ``"data/probes/arithmetic.jsonl line 17"``.

    Raises
    ------
    ProbeSchemaError
        On the first problem found, naming the field, what was received and what is
        expected.
    """
    from gguf_fragility.probes.scorers import SCORERS  # local import: scorers imports nothing from here

    def fail(field: str, msg: str) -> None:
        raise ProbeSchemaError(f"{where}: field {field!r} {msg}")

    if not isinstance(item, dict):
        raise ProbeSchemaError(f"{where}: expected a JSON object, got {type(item).__name__}")
    for name, typ in FIELDS.items():
        if name not in item:
            fail(name, "missing; every item needs " + ", ".join(FIELDS))
        if not isinstance(item[name], typ) or (typ is int and isinstance(item[name], bool)):
            fail(name, f"has type {type(item[name]).__name__}, expected {typ}")
    extra = sorted(set(item) - set(FIELDS))
    if extra:
        fail(extra[0], f"is not part of the schema (allowed: {', '.join(FIELDS)})")
    if item["family"] not in FAMILIES:
        fail("family", f"is {item['family']!r}; use one of {FAMILIES}")
    if not item["item_id"].startswith(item["family"] + "/"):
        fail("item_id", f"is {item['item_id']!r}; it must start with '{item['family']}/'")
    for key in SOURCE_FIELDS:
        if not isinstance(item["source"].get(key), str) or not item["source"][key]:
            fail(f"source.{key}", "missing or not a non-empty string")
    if item["kind"] not in KINDS:
        fail("kind", f"is {item['kind']!r}; use one of {KINDS}")
    if item["scorer"] not in SCORERS:
        fail("scorer", f"is {item['scorer']!r}; known scorers: {sorted(SCORERS)}")
    if SCORERS[item["scorer"]].kind != item["kind"]:
        fail("scorer", f"{item['scorer']!r} scores {SCORERS[item['scorer']].kind!r} items, "
             f"not {item['kind']!r}")
    if item["kind"] == "mc_loglik":
        choices, gold = item["choices"], item["gold"]
        if not isinstance(choices, list) or not choices or not all(
                isinstance(c, str) and c for c in choices):
            fail("choices", "must be a non-empty list of non-empty strings for mc_loglik")
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            fail("gold", f"is {gold!r}; expected a choice index in 0..{len(choices) - 1}")
        if item["params"].get("mc_style") not in MC_STYLES:
            fail("params.mc_style", f"is {item['params'].get('mc_style')!r}; use {MC_STYLES}")
    else:
        if item["choices"] is not None:
            fail("choices", "must be null for generate items")
        gold = item["gold"]
        if not isinstance(gold, list) or not all(isinstance(g, str) for g in gold):
            fail("gold", "must be a list of strings for generate items")
        if not gold and item["scorer"] not in ("ifeval", "code_exec", "json_fields"):
            fail("gold", "is empty; generate items need at least one accepted answer")
    if not item["question"].strip():
        fail("question", "is empty")
    expected = item_hash(item)
    if item["hash"] != expected:
        fail("hash", f"is {item['hash'][:12]}..., the content hashes to {expected[:12]}... "
             "(edited by hand? rebuild with python -m gguf_fragility.probes.build)")


def read_jsonl(path: str | Path, *, validate: bool = True) -> list[dict]:
    """
    Read a probe JSONL file, validating every line.

    Parameters
    ----------
    path : str or Path
        The file.
    validate : bool, default True
        Run :func:`validate_item` on each item and check ids are unique.

    Returns
    -------
    list of dict
        The items in file order.

    Raises
    ------
    ProbeSchemaError
        Naming the file, the 1-based line number and the field at fault.
    """
    path = Path(path)
    shown = _shown(path)
    items, seen = [], {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            where = f"{shown} line {lineno}"
            if not line.strip():
                raise ProbeSchemaError(f"{where}: blank line (one JSON object per line)")
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProbeSchemaError(f"{where}: not valid JSON ({exc.msg} at column "
                                       f"{exc.colno})") from None
            if validate:
                validate_item(item, where)
                if item["item_id"] in seen:
                    raise ProbeSchemaError(f"{where}: field 'item_id' {item['item_id']!r} "
                                           f"duplicates line {seen[item['item_id']]}")
                seen[item["item_id"]] = lineno
            items.append(item)
    return items


def write_jsonl(path: str | Path, items: Iterable[dict]) -> str:
    """Write items one per line in canonical JSON (byte-stable); return the file sha256."""
    text = "".join(canonical_json(it) + "\n" for it in items)
    Path(path).write_bytes(text.encode("utf-8"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def family_path(family: str, root: str | Path | None = None) -> Path:
    """Path of a family's JSONL file under ``root`` (default ``data/probes``)."""
    return Path(root or paths.PROBES) / f"{family}.jsonl"


def item_positions(families: Iterable[str], root: str | Path | None = None
                   ) -> dict[tuple[str, str], int]:
    """Each item's place in its family's frozen, seeded order, keyed ``(family, item_id)``:
    the pre-registered order a budgeted sweep draws items in and its sequences read them in."""
    return {(f, it["item_id"]): i for f in families
            for i, it in enumerate(load_family(f, root, validate=False).items)}


def load_family(family: str, root: str | Path | None = None, *, n: int | None = None,
                validate: bool = True) -> ProbeFile:
    """
    Load one family's frozen items, checked against ``manifest.json``.

    Every reader of probe items comes through here (calibration, the sweep, ``regrade``,
    chapter 2), so a file that is not the one the manifest records is never used.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.
    root : str or Path, optional
        Folder holding the files and their ``manifest.json`` (default
        :data:`gguf_fragility.paths.PROBES`).
    n : int, optional
        Keep only the first ``n`` items (the files are already in a seeded random order,
        so a prefix is a random subsample; profiles use this).
    validate : bool, default True
        Check every item against the schema (:func:`validate_item`).

    Returns
    -------
    ProbeFile
        Family, path, items and the file's sha256.

    Raises
    ------
    ManifestMismatch
        When the file's sha256 or item count is not the manifest's (an item lost or edited,
        even with its hash recomputed), or the manifest has no entry for the family; the
        message names the file, what differs and how to restore it.
    ProbeSchemaError
        When an item breaks the schema.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; use one of {FAMILIES}")
    path = family_path(family, root)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run python -m gguf_fragility.probes.build")
    entry = _manifest_entry(family, root)
    items = read_jsonl(path, validate=validate)
    sha = sha256_file(path)
    if len(items) != entry["n_items"] or sha != entry["sha256"]:
        what = (f"holds {len(items)} items, manifest.json records {entry['n_items']}"
                if len(items) != entry["n_items"] else
                f"its sha256 {sha[:12]}… is not the {entry['sha256'][:12]}… manifest.json records "
                "(items edited, even with their hashes recomputed)")
        raise ManifestMismatch(f"{_shown(path)}: {what}; probe files are never edited by hand: "
                               f"restore it (git checkout -- {_shown(path)}) or rebuild the set "
                               "with `make probes`")
    return ProbeFile(family, path, items if n is None else items[:n], sha)


def _manifest_entry(family: str, root: str | Path | None) -> dict:
    """The manifest's record of one family (file sha256, item count)."""
    where = _shown(Path(root or paths.PROBES) / "manifest.json")
    try:
        entry = read_manifest(root)["families"].get(family)
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise ManifestMismatch(f"{where} is missing or unreadable ({type(exc).__name__}), so the "
                               "probe files cannot be checked; restore it (git checkout -- "
                               f"{where}) or rebuild the set with `make probes`") from None
    if not isinstance(entry, dict):
        raise ManifestMismatch(f"{where} has no entry for family {family!r}; rebuild the set "
                               "with `make probes`")
    return entry


def load_items(families: Sequence[str], n_items: int | None = None,
               root: str | Path | None = None) -> list[dict]:
    """Items of several families, concatenated (the first ``n_items`` of each)."""
    return [it for fam in families for it in load_family(fam, root, n=n_items).items]


def read_manifest(root: str | Path | None = None) -> dict:
    """The decoded ``manifest.json`` of a probe folder."""
    path = Path(root or paths.PROBES) / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8"))


def verify_manifest(root: str | Path | None = None, *, strict: bool = True) -> list[ManifestCheck]:
    """
    Check every family file of the manifest with :func:`load_family` (schema, sha256, count).

    Parameters
    ----------
    root : str or Path, optional
        Probe folder (default ``data/probes``).
    strict : bool, default True
        Raise on the first mismatch instead of only reporting it.

    Returns
    -------
    list of ManifestCheck
        One row per family in the manifest.

    Raises
    ------
    ProbeSchemaError
        With ``strict``, if a file's hash or count differs from the manifest
        (:class:`ManifestMismatch`) or an item is malformed.
    """
    root = Path(root or paths.PROBES)
    rows = []
    for fam, entry in sorted(read_manifest(root)["families"].items()):
        try:
            rows.append(ManifestCheck(fam, len(load_family(fam, root).items), True, True, 0))
        except ProbeSchemaError as exc:
            if strict:
                raise
            path = root / entry["file"]
            n_items = len(read_jsonl(path, validate=False)) if path.is_file() else 0
            rows.append(ManifestCheck(fam, n_items, path.is_file() and sha256_file(path) == entry["sha256"],
                                      n_items == entry["n_items"],
                                      int(not isinstance(exc, ManifestMismatch))))
    return rows


def _shown(path: Path) -> str:
    """Path relative to the repository when inside it (for error messages)."""
    try:
        return str(path.resolve().relative_to(paths.REPO))
    except ValueError:
        return str(path)


__all__ = ["FAMILIES", "KINDS", "ProbeSchemaError", "ManifestMismatch", "ProbeFile", "ManifestCheck",
           "canonical_json", "item_hash", "with_hash", "validate_item",
           "read_jsonl", "write_jsonl", "family_path", "load_family", "load_items",
           "read_manifest", "verify_manifest", "make_item"]
