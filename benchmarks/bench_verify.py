"""Generative families at log-likelihood speed: plain greedy generation vs verifying the
reference's reply (issue 13).

Run::

    .venv/bin/python benchmarks/bench_verify.py --model smollm2-135m \\
        --rungs F16 Q8_0 Q4_K_M Q2_K --items 8 --threads 2

For one model it loads the F16 reference, generates every item's reply (the drafts), then
for each rung runs, on the same items and in one process, (a) plain greedy generation,
(b) plain generation followed by the reference's reply teacher-forced in one batch (what
the sweep did before verification: the margin lens needs that log-probability), and (c) the
verified path (:func:`gguf_fragility.engine.greedy.greedy` with the reference's tokens as
the draft, which yields the teacher-forced log-probability from the same batch), all through
:func:`gguf_fragility.probes.evaluate.evaluate_item`.
Per family and rung it prints items/s of each path and the ratios, the share of items
fully verified (no token generated one at a time), the mean tokens generated one at a time
per item, and how many replies (tokens) and extracted answers agree between the two paths;
where replies differ it prints the rung's logit gap between the two tokens at the first
difference (expected: near-ties only). Timings are comparable only within one run on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd

from gguf_fragility import probes
from gguf_fragility.engine.llama import Engine, system_info
from gguf_fragility.ladder.quantize import build_ladder
from gguf_fragility.layout import RunLayout
from gguf_fragility.probes.evaluate import build_request, evaluate_item

GENERATIVE = [f for f, spec in probes.families.SPECS.items() if spec.gen is not None]


def first_gap(engine: Engine, item: dict, a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """|logit difference| under ``engine`` between two replies' tokens where they first part."""
    toks = engine.tokenize(build_request(engine, item).prompt)
    j = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    if j >= min(len(a), len(b)):
        return float("nan")  # one reply is a prefix of the other
    row = engine.logprob_rows(toks + list(a[:j]), [len(toks) + j - 1])[0]
    return float(abs(row[a[j]] - row[b[j]]))


def timed_items(engine: Engine, items: list[dict], drafts: dict | None) -> tuple[float, list]:
    """Seconds and results of evaluating ``items`` (with drafts when given)."""
    t0 = time.perf_counter()
    out = [evaluate_item(engine, it, draft=None if drafts is None else drafts[it["item_id"]]).result
           for it in items]
    return time.perf_counter() - t0, out


def teacher_forced_s(engine: Engine, items: list[dict], drafts: dict) -> float:
    """Seconds to score each reference reply teacher-forced (prompt + reply, one batch)."""
    t0 = time.perf_counter()
    for it in items:
        toks = engine.tokenize(build_request(engine, it).prompt)
        draft = list(drafts[it["item_id"]])
        if draft:
            engine.logprob_rows(toks + draft[:-1], range(len(toks) - 1, len(toks) + len(draft) - 1))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="key in params/models.yaml")
    ap.add_argument("--rungs", nargs="+", default=["F16", "Q8_0", "Q4_K_M", "Q2_K"])
    ap.add_argument("--families", nargs="+", default=GENERATIVE)
    ap.add_argument("--items", type=int, default=8, help="items per family")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--n-gpu-layers", type=int, default=0, help="-1 = all (CUDA build)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()

    rungs = list(dict.fromkeys(["F16", *args.rungs]))
    ladder = build_ladder(args.model, rungs, run=RunLayout.of("bench"),
                          n_threads=args.threads).set_index("rung")
    items = {f: probes.load_family(f, n=args.items).items for f in args.families}
    kw = dict(n_ctx=args.n_ctx, n_threads=args.threads, seed=0, n_gpu_layers=args.n_gpu_layers)
    with Engine(ladder.loc["F16", "file"], **kw) as ref:
        drafts = {it["item_id"]: evaluate_item(ref, it).result.gen_tokens
                  for f in args.families for it in items[f]}
    rows = []
    for rung in args.rungs:
        with Engine(ladder.loc[rung, "file"], **kw) as eng:
            for f in args.families:
                t_plain, plain = timed_items(eng, items[f], None)
                t_tf = t_plain + teacher_forced_s(eng, items[f], drafts)
                t_ver, ver = timed_items(eng, items[f], drafts)
                differ = [(it, p, v) for it, p, v in zip(items[f], plain, ver, strict=True)
                          if p.gen_tokens != v.gen_tokens]
                gaps = [first_gap(eng, it, p.gen_tokens, v.gen_tokens) for it, p, v in differ]
                n = len(items[f])
                rows.append({
                    "rung": rung, "family": f, "items": n,
                    "plain_items_per_s": n / t_plain, "plain_tf_items_per_s": n / t_tf,
                    "verified_items_per_s": n / t_ver, "speedup": t_plain / t_ver,
                    "speedup_vs_plain_tf": t_tf / t_ver,
                    "fully_verified": sum(v.diverged_at < 0 for v in ver) / n,
                    "tokens_generated_per_item": float(np.mean(
                        [len(v.gen_tokens) - v.n_verified for v in ver])),
                    "reply_tokens_per_item": float(np.mean([len(p.gen_tokens) for p in plain])),
                    "same_reply": n - len(differ),
                    "same_answer": sum(p.extracted == v.extracted for p, v in zip(plain, ver,
                                                                                  strict=True)),
                    "gaps_where_differ": [round(g, 4) for g in gaps]})
                print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(f"\n{args.model}, {args.items} items per family, {args.threads} threads, "
          f"llama-cpp-python {system_info()['llama_cpp_python']}")
    print(df.drop(columns=["gaps_where_differ"]).round(3).to_string(index=False))
    total = df.assign(plain_s=df["items"] / df.plain_items_per_s,
                      plain_tf_s=df["items"] / df.plain_tf_items_per_s,
                      verified_s=df["items"] / df.verified_items_per_s)
    print("\nall families (seconds):\n" + total.groupby("rung", sort=False)[
        ["plain_s", "plain_tf_s", "verified_s"]].sum().assign(
        speedup=lambda d: d.plain_s / d.verified_s,
        speedup_vs_plain_tf=lambda d: d.plain_tf_s / d.verified_s).round(2).to_string())
    if args.json:
        df.to_json(args.json, orient="records", indent=1)


if __name__ == "__main__":
    main()
