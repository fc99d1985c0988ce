"""Tables behind notebook ``02_probes``: family overview, rendered examples, token lengths, demo.

Each function is one notebook cell's call; none runs more than a handful of model calls
except :func:`token_lengths` (tokenization only) and :func:`scored_demo`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from gguf_fragility import probes
from gguf_fragility.probes.build import SEED
from gguf_fragility.probes.evaluate import build_request, evaluate_items, results_frame


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


__all__ = ["battery_header", "demo_summary", "family_table", "length_summary", "render_example",
           "scored_demo", "token_lengths", "validation_table"]
