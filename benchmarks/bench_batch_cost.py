"""What a short batch costs on this machine, and what drafting from the reference's reply
would gain after a rung departs from it (issue 13).

Run::

    .venv/bin/python benchmarks/bench_batch_cost.py --model smollm2-135m \\
        --rungs Q8_0 Q4_K_M --items 6 --threads 2

(1) *Batch cost.* After a prompt of ``--context`` tokens on one sequence, the seconds to
decode k further tokens in one batch (median of ``--repeats``; the k tokens are dropped from
the cache after each try), for each k of ``--sizes``, and that over the seconds of k = 1.

(2) *Prompt lookup decoding, priced.* Speculative decoding needs a batch of 1 + d tokens to
cost well under 1 + d one-token steps. Prompt lookup decoding (Saxena 2023,
github.com/apoorvumang/prompt-lookup-decoding) drafts the d tokens that followed the longest
earlier occurrence (``--min-match`` to ``--max-match`` tokens) of the reply's last tokens,
here looked up in the reference's reply, then in the prompt. For the long-reply families the
F16 reference's replies and each rung's replies are decoded the sweep's way; from where a
rung's reply departs from the reference's, each step decodes the next token plus a draft of
up to ``--draft`` tokens and accepts the draft's prefix that equals the rung's reply. The
steps are priced with (1) and compared with one token per step. This replays the rung's own
replies; a real run would take its accepted tokens from batched rows, which a quantized rung
computes with other rounding (README, *Verified and grouped generation*).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gguf_fragility import probes
from gguf_fragility.engine.llama import Engine
from gguf_fragility.ladder.quantize import build_ladder
from gguf_fragility.layout import RunLayout
from gguf_fragility.probes.evaluate import build_request, evaluate_batch

LONG_REPLIES = ["math_word", "instruction_following", "code"]


def batch_seconds(engine: Engine, tokens: Sequence[int], context: int, sizes: Sequence[int],
                  repeats: int) -> dict[int, float]:
    """Median seconds to decode ``tokens[context:context + k]`` in one batch after
    ``tokens[:context]``, per k in ``sizes`` (sequence 0 of a fresh engine)."""
    if len(tokens) < context + max(sizes):
        raise ValueError(f"{len(tokens)} tokens; the batches need {context + max(sizes)}: "
                         f"lower --context or --sizes")
    list(engine.decode(tokens[:context], range(context), [(0,)] * context, [context - 1]))
    out = {}
    for k in sizes:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(engine.decode(tokens[context:context + k], range(context, context + k),
                               [(0,)] * k, range(k)))
            times.append(time.perf_counter() - t0)
            engine.drop(0, context)
        out[k] = float(np.median(times))
    return out


def lookup_draft(sources: Sequence[Sequence[int]], tail: Sequence[int], *, min_match: int,
                 max_match: int, draft: int) -> list[int]:
    """Up to ``draft`` tokens after the last occurrence in a source of the longest suffix of
    ``tail`` that occurs (``max_match`` down to ``min_match`` tokens; sources in order, the
    reference's reply first); [] if none."""
    for n in range(min(max_match, len(tail)), min_match - 1, -1):
        key = list(tail[-n:])
        for src in sources:
            for i in range(len(src) - n - 1, -1, -1):
                if list(src[i:i + n]) == key:
                    return list(src[i + n:i + n + draft])
    return []


def lookup_batches(reply: Sequence[int], start: int, sources: Sequence[Sequence[int]], *,
                   min_match: int, max_match: int, draft: int) -> list[int]:
    """Batch sizes of the steps that produce ``reply[start + 1:]`` by lookup drafting
    (``reply[start]`` comes from the row that found the departure, as in the sweep)."""
    sizes, j = [], start + 1
    while j < len(reply):
        d = lookup_draft(sources, reply[:j], min_match=min_match, max_match=max_match,
                         draft=draft)
        ok = 0
        while ok < len(d) and j + ok < len(reply) and d[ok] == reply[j + ok]:
            ok += 1
        sizes.append(1 + len(d))
        j += 1 + ok
    return sizes


def lookup_row(rung: str, cost: dict[int, float], replies: Sequence, drafts: Sequence,
               prompts: Sequence, *, min_match: int, max_match: int, draft: int) -> dict:
    """Seconds of one token per step against lookup drafting (batches priced by ``cost``,
    interpolated) over every reply's tokens after its departure from the reference."""
    def price(k: int) -> float:
        return float(np.interp(k, list(cost), list(cost.values())))

    plain = lookup = 0.0
    produced = steps = 0
    for r, ref_reply, prompt in zip(replies, drafts, prompts, strict=True):
        start = r.diverged_at if r.diverged_at >= 0 else len(r.gen_tokens)
        sizes = lookup_batches(r.gen_tokens, start, [ref_reply, prompt], min_match=min_match,
                               max_match=max_match, draft=draft)
        n = max(len(r.gen_tokens) - start - 1, 0)
        plain += price(1) * n
        lookup += sum(price(k) for k in sizes)
        produced, steps = produced + n, steps + len(sizes)
    return {"rung": rung, "min_match": min_match, "draft": draft, "tokens": produced,
            "one_token_steps_s": plain, "lookup_s": lookup, "speedup": plain / lookup if lookup else np.nan,
            "accepted_per_step": (produced - steps) / steps if steps else np.nan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="key in params/models.yaml")
    ap.add_argument("--rungs", nargs="+", default=["Q8_0", "Q4_K_M"])
    ap.add_argument("--families", nargs="+", default=LONG_REPLIES)
    ap.add_argument("--items", type=int, default=6, help="items per family")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--context", type=int, default=150, help="prompt tokens before the batch")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-match", type=int, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--max-match", type=int, default=8)
    ap.add_argument("--draft", type=int, nargs="+", default=[3, 7, 15])
    args = ap.parse_args()

    rungs = list(dict.fromkeys(["F16", *args.rungs]))
    ladder = build_ladder(args.model, rungs, run=RunLayout.of("bench"),
                          n_threads=args.threads).set_index("rung")
    items = [it for f in args.families for it in probes.load_family(f, n=args.items).items]
    kw = dict(n_ctx=2048, n_threads=args.threads, seed=0)
    with Engine(ladder.loc["F16", "file"], **kw) as ref:
        drafts = [list(e.result.gen_tokens) for e in evaluate_batch(ref, items, progress=False)]
        prompts = [ref.tokenize(build_request(ref, it).prompt) for it in items]
    long = max(range(len(items)), key=lambda i: len(prompts[i]) + len(drafts[i]))
    rows: list[dict] = []
    for rung in args.rungs:
        with Engine(ladder.loc[rung, "file"], **kw) as eng:  # timed on the fresh cache
            cost = batch_seconds(eng, prompts[long] + drafts[long], args.context, args.sizes,
                                 args.repeats)
            replies = [e.result for e in evaluate_batch(eng, items, drafts=drafts,
                                                        progress=False)]
        print(f"{rung}: batch of k tokens ÷ one token: " + ", ".join(
            f"k={k} {s / cost[1]:.2f} ({1000 * s:.1f} ms)" for k, s in cost.items()), flush=True)

        rows += [lookup_row(rung, cost, replies, drafts, prompts, min_match=m,
                            max_match=args.max_match, draft=d)
                 for m in args.min_match for d in args.draft]
    print(f"\n{args.model}, {args.items} items of {', '.join(args.families)}, "
          f"{args.threads} threads; matches of up to {args.max_match} tokens")
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
