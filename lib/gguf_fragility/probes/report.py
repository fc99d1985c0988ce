"""Tables behind notebook ``02_probes``: family overview, rendered examples, token lengths, demo.

Each function is one notebook cell's call; none runs more than a handful of model calls
except :func:`token_lengths` (tokenization only) and :func:`scored_demo`.
:func:`chapter_tables` keeps the three that need the model (examples, lengths, demo) in
``outputs/<profile>/probes/<model>/``, reused while the probe set, the model file and the
settings are the same, so a rerun of the chapter loads no model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from gguf_fragility import paths, probes
from gguf_fragility.probes.build import SEED
from gguf_fragility.probes.evaluate import build_request, evaluate_items, results_frame
from gguf_fragility.probes.scorers import SCORERS, scorer_tag
from gguf_fragility.store import params_hash, read_table_checked, sha256_file, write_table_atomic


def battery_header(families: Sequence[str], root=None) -> str:
    """One line naming the frozen battery; refuses files built with another seed.

    Raises
    ------
    ValueError
        If ``data/probes`` was built with a seed other than :data:`build.SEED`.
    """
    man = probes.read_manifest(root)
    if man["seed"] != SEED:
        raise ValueError(f"data/probes was built with seed {man['seed']}, not {SEED}; "
                         "rebuild it with `make probes`")
    return f"probe set v{man['probe_set_version']} (seed {SEED}), {len(families)} families"


def family_table(root=None) -> pd.DataFrame:
    """One row per family from the manifest: items, datasets, kinds, scorers, licence, source."""
    man = probes.read_manifest(root)
    rows = [{"family": f, "n_items": e["n_items"],
             "datasets": ", ".join(f"{k} ({v})" for k, v in e["datasets"].items()),
             "kind": ", ".join(e["kinds"]), "scorers": ", ".join(e["scorers"]),
             "licence": e["licence"], "source": "; ".join(e["sources"]),
             "sha256": e["sha256"][:12]} for f, e in man["families"].items()]
    return pd.DataFrame(rows)


def validation_table(root=None) -> pd.DataFrame:
    """Schema + manifest check of every file (raises :class:`ProbeSchemaError` on a bad one)."""
    return pd.DataFrame([r._asdict() for r in probes.verify_manifest(root)])


def render_example(engine, item: dict, variant: int = 0) -> str:
    """The exact text the model sees for ``item``, continuations listed for log-likelihood items."""
    req = build_request(engine, item, variant)
    if req.mode == "generate":
        return (f"[{item['item_id']} | generate | max_tokens={req.max_tokens} | "
                f"stop={list(req.stop)}]\n{req.prompt}")
    conts = " | ".join(repr(c) for c in req.continuations)
    head = f"[{item['item_id']} | loglik | continuations: {conts}]\n"
    if len(set(req.contexts)) > 1:
        return head + "\n".join(f"context {i}: {c}" for i, c in enumerate(req.contexts))
    return head + req.prompt


def token_lengths(engine, families: Sequence[str], n_items: int | None = None) -> pd.DataFrame:
    """
    Prompt length in tokens of each item as this engine will see it.

    Returns
    -------
    pandas.DataFrame
        Columns ``family, item_id, mode, n_tokens`` (context + longest continuation for
        log-likelihood items; rendered prompt + ``max_tokens`` budget in ``n_budget`` for
        generative ones).
    """
    rows = []
    for fam in families:
        for it in probes.load_family(fam, n=n_items).items:
            req = build_request(engine, it)
            if req.mode == "loglik":
                n = max(len(engine.tokenize(c + x)) for c, x in zip(
                    req.contexts, req.continuations, strict=True))
                budget = n
            else:
                n = len(engine.tokenize(req.prompt))
                budget = n + req.max_tokens
            rows.append({"family": fam, "item_id": it["item_id"], "mode": req.mode,
                         "n_tokens": n, "n_budget": budget})
    return pd.DataFrame(rows)


def length_summary(lengths: pd.DataFrame, n_ctx: int) -> pd.DataFrame:
    """Per family: items, min / median / max token budget, and how many exceed ``n_ctx``."""
    g = lengths.groupby("family", sort=False).n_budget
    return pd.DataFrame({"items": g.size(), "min": g.min(), "median": g.median().astype(int),
                         "max": g.max(), "over_n_ctx": g.apply(lambda s: int((s > n_ctx).sum()))})


def scored_demo(engine, families: Sequence[str], n_items: int = 5) -> pd.DataFrame:
    """The first ``n_items`` of each family answered by ``engine`` with the scorer's verdict."""
    items = probes.load_items(families, n_items)
    df = results_frame(evaluate_items(engine, items, desc="demo"))
    golds = {it["item_id"]: (it["choices"][it["gold"]] if it["kind"] == "mc_loglik"
                             else " | ".join(it["gold"][:3]) or "(tests/checkers)")
             for it in items}
    df["gold"] = df.item_id.map(golds)
    df["answer"] = df.raw_output.where(df["mode"] == "generate", df.extracted)
    df["answer"] = df.answer.str.slice(0, 120)
    return df[["family", "item_id", "gold", "answer", "extracted", "score", "correct",
               "margin", "n_gen_tokens", "seconds", "scorer", "error"]]


def demo_summary(demo: pd.DataFrame) -> pd.DataFrame:
    """Per family of :func:`scored_demo`: items, correct answers and mean score."""
    return demo.groupby("family", sort=False).agg(
        n=("correct", "size"), correct=("correct", "sum"), mean_score=("score", "mean")).round(2)


class ProbeChapter(NamedTuple):
    """Result of :func:`chapter_tables`: what chapter 2 shows of the model."""

    examples: pd.DataFrame  # family, text: each family's first item as the model sees it
    lengths: pd.DataFrame  # :func:`token_lengths`
    demo: pd.DataFrame  # :func:`scored_demo`
    is_chat: bool  # the model renders prompts with its chat template
    n_ctx: int  # the engine's context size
    computed: tuple[str, ...]  # tables computed in this call (the others were reused)


def chapter_tables(folder: Path, families: Sequence[str], demo_items: int, inputs: dict,
                   load_engine: Callable) -> ProbeChapter:
    """Chapter 2's model tables, each reused from ``folder`` while it is fresh.

    Parameters
    ----------
    folder : Path
        Where the tables are kept (``outputs/<profile>/probes/<model>``).
    families : sequence of str
    demo_items : int
        Items per family in the scored demo.
    inputs : dict
        What else can change the tables (the model file's sha256, engine settings, scoring
        version), JSON-able.
    load_engine : callable
        Returns the loaded reference engine; called only when a table must be computed.

    Returns
    -------
    ProbeChapter

    Notes
    -----
    Each table is a Parquet file written atomically with its content digest and the hash of
    its inputs (``manifest.json``'s sha256 for the probe set, ``families``, ``demo_items``,
    the scorer versions and ``inputs``); a table that is stale, edited or unreadable is named
    in one line and computed again (:func:`gguf_fragility.store.read_table_checked`).
    """
    key = params_hash({"probe_set_sha256": sha256_file(Path(paths.PROBES) / "manifest.json"),
                       "families": list(families), "demo_items": demo_items,
                       "scorers": sorted(scorer_tag(n) for n in SCORERS), **inputs})
    engine, tables, computed, facts = None, {}, [], {}
    makers = {
        "examples": lambda e: pd.DataFrame({"family": list(families), "text": [
            render_example(e, probes.load_family(f, n=1).items[0]) for f in families]}),
        "lengths": lambda e: token_lengths(e, families),
        "demo": lambda e: scored_demo(e, families, demo_items)}
    try:
        for name, make in makers.items():
            path = Path(folder) / f"{name}.parquet"
            stored = read_table_checked(path, {"params_hash": key})
            if stored is not None:
                tables[name], facts = stored.frame, stored.record
                continue
            engine = engine or load_engine()
            facts = {"params_hash": key, "is_chat": bool(engine.is_chat), "n_ctx": int(engine.n_ctx)}
            tables[name] = make(engine)
            write_table_atomic(tables[name], path, facts)
            computed.append(name)
    finally:
        if engine is not None:
            engine.close()
    return ProbeChapter(tables["examples"], tables["lengths"], tables["demo"],
                        bool(facts["is_chat"]), int(facts["n_ctx"]), tuple(computed))


__all__ = ["ProbeChapter", "battery_header", "chapter_tables", "demo_summary", "family_table",
           "length_summary", "render_example", "scored_demo", "token_lengths", "validation_table"]
