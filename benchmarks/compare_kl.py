"""The project's distribution shift against ``llama-perplexity --kl-divergence`` (issue 15).

Run::

    .venv/bin/python benchmarks/compare_kl.py --profile default --model smollm2-135m \\
        --rungs Q8_0 Q4_K_M Q2_K --threads 2

With the profile's text sample (``shift_passages`` passages, chunks of ``shift_tokens``) it
builds the model's ladder and the reference's store in a private outputs folder, then for each
rung prints the project's statistics (:func:`gguf_fragility.run.sweep.measure_shift`) beside
llama-perplexity's on the same tokens (checked: the base file's tokens equal the store's),
both with flash attention off, and the seconds each took. Timings are comparable only within
one run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gguf_fragility.engine.tools import perplexity_kl
from gguf_fragility.ladder.quantize import build_ladder
from gguf_fragility.profile import load_profile
from gguf_fragility.run.shift import read_reference, sample_text
from gguf_fragility.run.sweep import ensure_reference, measure_shift


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rungs", nargs="+", default=["Q8_0", "Q2_K"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--outputs", type=Path, default=None, help="default: a temporary folder")
    args = ap.parse_args()
    out = args.outputs or Path(tempfile.mkdtemp(prefix="compare-kl-"))
    profile = dataclasses.replace(load_profile(args.profile), outputs=str(out))
    ladder = build_ladder(args.model, ["F16", *args.rungs], run=profile.layout,
                          n_threads=args.threads).set_index("rung")
    t0 = time.perf_counter()
    ref_path = ensure_reference(profile, args.model)
    ref_s = time.perf_counter() - t0
    store = read_reference(ref_path)
    print(f"reference store {ref_path}: {ref_path.stat().st_size / 2**20:.0f} MiB, "
          f"{len(store.chunks.tokens)} chunks x {store.chunks.n_ctx} tokens, "
          f"{len(store.target_logprob)} scored positions, {ref_s:.1f} s")
    rows = []
    for rung in args.rungs:
        t0 = time.perf_counter()
        ours = measure_shift(profile, args.model, rung)
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = perplexity_kl(ladder.loc["F16", "file"], ladder.loc[rung, "file"],
                               sample_text(profile.shift_passages), n_ctx=profile.shift_tokens,
                               work_dir=out / "llama-perplexity", n_threads=args.threads)
        theirs_s = time.perf_counter() - t0
        if not np.array_equal(theirs.tokens, store.chunks.tokens):
            raise SystemExit("llama-perplexity evaluated other tokens than the project")
        rows.append({"rung": rung, "n_positions": ours["n_positions"],
                     "kl_project": ours["kl_mean"], "kl_llama": theirs.kl_mean,
                     "kl_rel_diff": ours["kl_mean"] / theirs.kl_mean - 1,
                     "same_top_project": ours["same_top_rate"], "same_top_llama": theirs.same_top_rate,
                     "ppl_ratio_project": ours["ppl_ratio"], "ppl_ratio_llama": theirs.ppl_ratio,
                     "rms_dp_project": ours["rms_dp"], "rms_dp_llama": theirs.rms_dp,
                     "s_project": round(ours_s, 1), "s_llama_incl_base": round(theirs_s, 1)})
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).round(6).to_string(index=False))


if __name__ == "__main__":
    main()
