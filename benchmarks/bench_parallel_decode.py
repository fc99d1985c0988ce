"""How much decoding several items at once would buy: greedy decode steps over S sequences
in one batch (issue 13's next lever, measured before it is built).

Run::

    .venv/bin/python benchmarks/bench_parallel_decode.py --model qwen2.5-coder-1.5b \\
        --rung Q8_0 --sequences 1 2 4 8 --steps 32 --threads 2

For each S it puts S different ``math_word`` prompts on sequences 0..S-1 of one context
(each prompt prefilled on its own), then runs ``--steps`` greedy decode steps in which one
batch carries the last token of every sequence (llama.cpp's ``llama-parallel`` and
``llama-batched-bench`` do the same). It prints reply tokens per second over all sequences,
the speed-up over S = 1, and, for sequence 0, whether its greedy tokens are those it gets
alone (S = 1) and the largest logit difference of its rows from the S = 1 rows: a row that
depends on what else is in the batch would make a reply depend on its neighbours.
Timings are comparable only within one run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from gguf_fragility import probes
from gguf_fragility.engine.llama import Engine, system_info
from gguf_fragility.ladder.quantize import build_ladder
from gguf_fragility.layout import RunLayout
from gguf_fragility.probes.evaluate import build_request


def parallel_greedy(engine: Engine, prompts: list[list[int]], steps: int) -> tuple[float, np.ndarray,
                                                                                  np.ndarray]:
    """Seconds of ``steps`` batched decode steps over ``len(prompts)`` sequences, the greedy
    tokens (S, steps) and sequence 0's logits rows (steps, n_vocab)."""
    engine._reset()
    last, pos = [], []
    for s, p in enumerate(prompts):  # prefill each prompt on its own sequence
        row = engine._decode_batch(p, range(len(p)), [(s,)] * len(p), [len(p) - 1])[0]
        last.append(int(row.argmax()))
        pos.append(len(p))
    toks, rows0 = np.zeros((len(prompts), steps), np.int64), []
    t0 = time.perf_counter()
    for k in range(steps):
        toks[:, k] = last
        rows = engine._decode_batch(last, pos, [(s,) for s in range(len(prompts))],
                                    range(len(prompts)))
        rows0.append(rows[0].copy())
        last = [int(r.argmax()) for r in rows]
        pos = [p + 1 for p in pos]
    return time.perf_counter() - t0, toks, np.stack(rows0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="key in params/models.yaml")
    ap.add_argument("--rung", default="Q8_0")
    ap.add_argument("--sequences", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=32, help="decode steps per sequence")
    ap.add_argument("--family", default="math_word")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    ladder = build_ladder(args.model, ["F16", args.rung], run=RunLayout.of("bench"),
                          n_threads=args.threads).set_index("rung")
    s_max = max(args.sequences)
    items = probes.load_family(args.family, n=s_max).items
    with Engine(ladder.loc[args.rung, "file"], n_ctx=1024 * s_max, n_threads=args.threads,
                seed=0, n_seq_max=s_max) as eng:
        prompts = [eng.tokenize(build_request(eng, it).prompt) for it in items]
        rows, ref_toks, ref_rows = [], None, None
        for s in args.sequences:
            secs, toks, rows0 = parallel_greedy(eng, prompts[:s], args.steps)
            if ref_toks is None:
                ref_toks, ref_rows = toks[0], rows0
            rows.append({"sequences": s, "seconds": secs,
                         "tokens_per_s": s * args.steps / secs,
                         "seq0_same_tokens": bool((toks[0] == ref_toks).all()),
                         "seq0_max_logit_diff": float(np.abs(rows0 - ref_rows).max())})
    df = pd.DataFrame(rows)
    df["speedup"] = df["tokens_per_s"] / df["tokens_per_s"].iloc[0]
    print(f"{args.model} {args.rung}, {args.steps} steps, {args.threads} threads, "
          f"llama-cpp-python {system_info()['llama_cpp_python']}")
    print(df.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
