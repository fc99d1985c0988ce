"""Generative families at log-likelihood speed: plain greedy generation vs grouped and
verified generation (issue 13).

Run::

    .venv/bin/python benchmarks/bench_verify.py --model smollm2-135m \\
        --rungs F16 Q8_0 Q4_K_M Q2_K --items 8 --threads 2

For one model it loads the F16 reference and generates every item's reply the way the sweep
does (the drafts), then for each rung runs, on the same items and in one process:

(a) plain greedy generation, one item at a time, one token per decode step
    (:func:`gguf_fragility.probes.evaluate.evaluate_item`);
(a') plain generation followed by the reference's reply teacher-forced in one batch (what
    the margin lens would cost without verification);
(b) grouped generation, several items decoded together, one KV-cache sequence each
    (:func:`~gguf_fragility.probes.evaluate.evaluate_batch` without drafts: the
    reference's own path);
(c) the sweep's path: grouped, each item verifying the reference's reply first
    (:func:`~gguf_fragility.probes.evaluate.evaluate_batch` with drafts), which also yields
    the reply's teacher-forced log-probability.

Per family and rung it prints items/s of each path and the ratios, the share of items
fully verified (no token generated one at a time), the mean tokens generated one at a time
per item, and how many replies (tokens) and extracted answers of the sweep's path agree with
plain generation; where replies differ it prints the rung's logit gap between the two tokens
at the first difference. Timings are comparable only within one run on an otherwise idle
machine.
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
from gguf_fragility.probes.evaluate import build_request, evaluate_batch, evaluate_item

GENERATIVE = [f for f, spec in probes.families.SPECS.items() if spec.gen is not None]


def timed(run, *args, **kwargs) -> tuple[float, list]:
    """Seconds and item results of ``run(*args, **kwargs)`` (a list of ``Evaluated``)."""
    t0 = time.perf_counter()
    out = [e.result for e in run(*args, **kwargs)]
    return time.perf_counter() - t0, out


def teacher_forced_s(engine: Engine, items: list[dict], drafts: list) -> float:
    """Seconds to score each reference reply teacher-forced (prompt + reply, one batch): what
    the margin lens costs on top of plain generation."""
    t0 = time.perf_counter()
    for it, draft in zip(items, drafts, strict=True):
        toks = engine.tokenize(build_request(engine, it).prompt)
        if draft:
            engine.logprob_rows(toks + list(draft[:-1]),
                                range(len(toks) - 1, len(toks) + len(draft) - 1))
    return time.perf_counter() - t0


def plain_items(engine: Engine, items: list[dict]) -> list:
    """Each item on its own: one sequence, one token per decode step."""
    return [evaluate_item(engine, it) for it in items]


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
        drafts = {f: [e.result.gen_tokens for e in evaluate_batch(ref, items[f], progress=False)]
                  for f in args.families}
    rows = []
    for rung in args.rungs:
        with Engine(ladder.loc[rung, "file"], **kw) as eng:
            for f in args.families:
                t_plain, plain = timed(plain_items, eng, items[f])
                t_tf = t_plain + teacher_forced_s(eng, items[f], drafts[f])
                t_group, _ = timed(evaluate_batch, eng, items[f], progress=False)
                t_ver, ver = timed(evaluate_batch, eng, items[f], drafts=drafts[f],
                                   progress=False)
                differ = [(it, p, v) for it, p, v in zip(items[f], plain, ver, strict=True)
                          if p.gen_tokens != v.gen_tokens]
                gaps = [eng.parting_gap(eng.tokenize(build_request(eng, it).prompt), p.gen_tokens,
                                        v.gen_tokens) for it, p, v in differ]
                n = len(items[f])
                rows.append({
                    "rung": rung, "family": f, "items": n,
                    "plain_items_per_s": n / t_plain, "plain_tf_items_per_s": n / t_tf,
                    "grouped_items_per_s": n / t_group,
                    "verified_items_per_s": n / t_ver, "speedup": t_plain / t_ver,
                    "speedup_vs_plain_tf": t_tf / t_ver, "grouped_speedup": t_plain / t_group,
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
                      grouped_s=df["items"] / df.grouped_items_per_s,
                      verified_s=df["items"] / df.verified_items_per_s)
    print("\nall families (seconds):\n" + total.groupby("rung", sort=False)[
        ["plain_s", "plain_tf_s", "grouped_s", "verified_s"]].sum().assign(
        speedup=lambda d: d.plain_s / d.verified_s,
        speedup_vs_plain_tf=lambda d: d.plain_tf_s / d.verified_s,
        grouped_speedup=lambda d: d.plain_s / d.grouped_s).round(2).to_string())
    if args.json:
        df.to_json(args.json, orient="records", indent=1)


if __name__ == "__main__":
    main()
