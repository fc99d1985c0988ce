"""How close the project's scoring gets to llama.cpp's own prompt throughput (issue 7).

Run::

    .venv/bin/python benchmarks/bench_throughput.py --model smollm2-135m --rung F16 \\
        --items 299 --threads 2

On one loaded rung and the same items it measures, in one process:

1. **raw**: llama-cpp-python's ``Llama.eval`` of the item token streams concatenated into
   windows of ``--window`` tokens (default ``n_ctx``; logits only at the end of each
   ``n_batch`` chunk), as many tokens in total as the project's scorer decoded: the
   practical limit on this machine;
2. **project**: :func:`gguf_fragility.probes.evaluate.evaluate_item` on the log-likelihood family
   (``--family``, default ``science_mc`` = ARC-Challenge) and, separately, on a generative
   family (``--gen-family``, default ``arithmetic``): tokens/s and items/s;
3. **naive**: every choice scored from an empty KV cache (context + continuation
   re-evaluated each time, no prefix reuse), logits only at the continuation's positions,
   as the seeds ``000_*``/``003_*`` did with one call per choice. This is a stronger
   baseline than their ``create_completion(echo=True, logprobs=...)``, which also computes
   logits at every prompt position.

Tokens are counted where they are decoded (every ``llama_decode`` batch of the context,
whoever calls it), so reused KV cache is not counted and re-evaluated tokens are. It
prints tokens/s, items/s, the ratios project ÷ raw tokens/s (goal >= 0.9) and project ÷
naive items/s (goal >= 2.5 on ARC-style multiple choice), the largest log-prob difference
between project and naive (a correctness check) and the peak RSS. The rung file comes
from ``build_ladder(model, [rung], run=RunLayout.of("bench"))`` (cached under ``.cache/models``).
Timings are only comparable within one run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import NamedTuple

import numpy as np

from gguf_fragility import probes
from gguf_fragility.engine.greedy import log_softmax
from gguf_fragility.engine.llama import Engine, peak_rss_bytes, system_info
from gguf_fragility.ladder.quantize import build_ladder
from gguf_fragility.layout import RunLayout
from gguf_fragility.probes.evaluate import build_request, evaluate_item


class Timing(NamedTuple):
    """One measured phase."""

    name: str
    seconds: float
    tokens: int  # tokens decoded by llama.cpp during the phase
    items: int
    decode_calls: int

    @property
    def tps(self) -> float:
        """Decoded tokens per second."""
        return self.tokens / self.seconds

    @property
    def ips(self) -> float:
        """Items per second."""
        return self.items / self.seconds if self.items else float("nan")


class DecodeCounter:
    """Counts tokens and calls of every ``llama_decode`` made through one loaded model."""

    def __init__(self, engine: Engine) -> None:
        self.tokens = self.calls = 0
        ctx = engine.llm._ctx
        inner = ctx.decode

        def counted(batch):
            self.tokens += batch.batch.n_tokens
            self.calls += 1
            return inner(batch)

        ctx.decode = counted  # instance attribute: Engine._decode and Llama.eval both call it

    def snapshot(self) -> tuple[int, int]:
        """(tokens, calls) so far."""
        return self.tokens, self.calls


def timed(name: str, counter: DecodeCounter, n_items: int, fn) -> tuple[Timing, object]:
    """Run ``fn()`` once and return its timing and result."""
    t0_tok, t0_calls = counter.snapshot()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    tok, calls = counter.snapshot()
    return Timing(name, dt, tok - t0_tok, n_items, calls - t0_calls), out


def project_loglik(engine: Engine, items: list[dict]) -> list:
    """The project's scorer, item by item."""
    return [evaluate_item(engine, it).result for it in items]


def naive_loglik(engine: Engine, items: list[dict]) -> list[list[float]]:
    """Each choice's log-prob from an empty KV cache: context + continuation, no reuse."""
    out = []
    for it in items:
        req = build_request(engine, it)
        lps = []
        for ctx, cont in zip(req.contexts, req.continuations, strict=True):
            ctx_ids = engine.tokenize(ctx)
            whole = engine.tokenize(ctx + cont)
            cont_ids = whole[len(ctx_ids):] if whole[:len(ctx_ids)] == ctx_ids else (
                engine.llm.tokenize(cont.encode(), add_bos=False, special=False))
            whole = ctx_ids + cont_ids
            engine._reset()  # no prefix reuse: the whole sequence is decoded again
            rows = engine._decode(whole, 0, range(len(ctx_ids) - 1, len(whole) - 1))
            lp = log_softmax(rows)
            lps.append(float(lp[np.arange(len(cont_ids)), cont_ids].sum()))
        out.append(lps)
    return out


def raw_eval(engine: Engine, stream: list[int], total: int, window: int) -> int:
    """``Llama.eval`` of ``total`` tokens of ``stream`` (cycled) in windows from an empty cache."""
    done = 0
    pos = 0
    while done < total:
        n = min(window, total - done)
        chunk = [stream[(pos + i) % len(stream)] for i in range(n)]
        pos += n
        engine._reset()
        engine.llm.eval(chunk)
        done += n
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="key in params/models.yaml")
    ap.add_argument("--rung", default="F16", help="llama.cpp quant type, e.g. F16, Q8_0, Q4_K_M")
    ap.add_argument("--family", default="science_mc", help="log-likelihood family (ARC-Challenge)")
    ap.add_argument("--items", type=int, default=299, help="items of --family")
    ap.add_argument("--gen-family", default="arithmetic", help="generative family; '' to skip")
    ap.add_argument("--gen-items", type=int, default=50)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--n-gpu-layers", type=int, default=0, help="-1 = all (CUDA build)")
    ap.add_argument("--window", type=int, default=None, help="raw eval window (default n_ctx)")
    ap.add_argument("--no-naive", action="store_true", help="skip the (slow) naive baseline")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    window = args.window or args.n_ctx

    ladder = build_ladder(args.model, [args.rung], run=RunLayout.of("bench"),
                          n_threads=args.threads)
    path = ladder.set_index("rung").loc[args.rung, "file"]
    engine = Engine(path, n_ctx=args.n_ctx, n_threads=args.threads, seed=0,
                    n_gpu_layers=args.n_gpu_layers, n_batch=args.n_batch)
    counter = DecodeCounter(engine)
    items = probes.load_family(args.family, n=args.items).items
    info = system_info()
    print(f"{args.model} {args.rung} ({path}); threads={args.threads} n_ctx={args.n_ctx} "
          f"n_batch={args.n_batch} n_gpu_layers={args.n_gpu_layers}; {os.cpu_count()} CPUs; "
          f"llama-cpp-python {info['llama_cpp_python']}; load {engine.load_s:.2f} s")
    print(f"  {info['system_info']}")

    # the item token streams (contexts as the scorer builds them), for the raw eval
    stream = [t for it in items for t in engine.tokenize(build_request(engine, it).contexts[0])]
    engine._reset()
    engine.llm.eval(stream[:64])  # warm-up: page the weights in, not timed

    proj, results = timed("project", counter, len(items), lambda: project_loglik(engine, items))
    raw, _ = timed("raw", counter, 0, lambda: raw_eval(engine, stream, proj.tokens, window))
    rows = [proj, raw]
    max_diff = float("nan")
    if not args.no_naive:
        naive, naive_lps = timed("naive", counter, len(items), lambda: naive_loglik(engine, items))
        rows.append(naive)
        proj_lps = [json.loads(r.raw_output)["logprobs"] for r in results]
        max_diff = max(abs(a - b) for p, q in zip(proj_lps, naive_lps, strict=True)
                       for a, b in zip(p, q, strict=True))
        flips = sum(int(np.argmax(p) != np.argmax(q)) for p, q in zip(proj_lps, naive_lps,
                                                                       strict=True))
    gen = None
    if args.gen_family:
        gitems = probes.load_family(args.gen_family, n=args.gen_items).items
        gen, gres = timed("generate", counter, len(gitems),
                          lambda: [evaluate_item(engine, it).result for it in gitems])
        rows.append(gen)
    errors = sum(bool(r.error) for r in results)

    print(f"\n{'phase':<10} {'family':<14} {'items':>6} {'tokens':>8} {'calls':>7} {'s':>8} "
          f"{'tok/s':>8} {'items/s':>8}")
    fam = {"project": args.family, "raw": f"window {window}", "naive": args.family,
           "generate": args.gen_family}
    for t in rows:
        print(f"{t.name:<10} {fam[t.name]:<14} {t.items:>6} {t.tokens:>8,} {t.decode_calls:>7,} "
              f"{t.seconds:>8.2f} {t.tps:>8.1f} {t.ips:>8.2f}")
    ratios = {"project_over_raw_tps": proj.tps / raw.tps}
    print(f"\nproject / raw tokens/s   = {ratios['project_over_raw_tps']:.2f}  (goal >= 0.9)")
    if not args.no_naive:
        ratios["project_over_naive_ips"] = proj.ips / naive.ips
        ratios["naive_tokens_over_project_tokens"] = naive.tokens / proj.tokens
        print(f"project / naive items/s  = {ratios['project_over_naive_ips']:.2f}  (goal >= 2.5); "
              f"naive decodes {ratios['naive_tokens_over_project_tokens']:.2f}x the tokens")
        print(f"max |log-prob project - naive| = {max_diff:.2e} nats; "
              f"items whose chosen answer differs: {flips} of {len(items)}")
    if gen is not None:
        n_gen = sum(r.n_gen_tokens for r in gres)
        print(f"generate: {n_gen} generated tokens, median gen {np.nanmedian([r.gen_tps for r in gres]):.1f}"
              f" tok/s, median prompt {np.nanmedian([r.prompt_tps for r in gres]):.1f} tok/s")
    print(f"scoring errors: {errors}; peak RSS {peak_rss_bytes() / 2**20:,.0f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "system_info": info, "max_logprob_diff": max_diff,
                       "chosen_answer_flips": flips if not args.no_naive else None,
                       "peak_rss_bytes": peak_rss_bytes(), **ratios,
                       "phases": [{**t._asdict(), "tps": t.tps, "ips": t.ips} for t in rows]},
                      fh, indent=2)
    engine.close()


if __name__ == "__main__":
    main()
