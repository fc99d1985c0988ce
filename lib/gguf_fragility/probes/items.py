"""One probe item as data: its canonical JSON, its hash, and how a builder assembles one.

Imported by every family builder (:mod:`.generators`, :mod:`.sources`); the schema checks of
frozen files are in :mod:`gguf_fragility.probes`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """Canonical JSON used for hashing and writing: sorted keys, no spaces, UTF-8 text."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def item_hash(item: dict) -> str:
    """sha256 hex digest of the canonical JSON of ``item`` without its ``hash`` field."""
    body = {k: v for k, v in item.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def with_hash(item: dict) -> dict:
    """Return a copy of ``item`` with its ``hash`` field (re)computed."""
    out = {k: v for k, v in item.items() if k != "hash"}
    out["hash"] = item_hash(out)
    return out


def make_item(family: str, dataset: str, split: str, original_id: str | int, *, kind: str,
              question: str, gold: int | list[str], scorer: str, context: str = "",
              instruction: str = "", choices: list[str] | None = None,
              params: dict | None = None, meta: dict | None = None) -> dict:
    """Assemble a schema-complete item (id ``<family>/<dataset>/<original_id>``) with its hash."""
    oid = str(original_id)
    item = {"item_id": f"{family}/{dataset}/{oid}", "family": family,
            "source": {"dataset": dataset, "split": split, "original_id": oid}, "kind": kind,
            "context": context, "question": question, "instruction": instruction,
            "choices": choices, "gold": gold, "scorer": scorer, "params": params or {},
            "meta": meta or {}}
    return with_hash(item)
