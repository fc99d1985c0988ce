"""Time the whole statistics grid: 2 models × 7 rungs × 13 families × 500 items, 10,000 resamples.

Run::

    .venv/bin/python benchmarks/bench_stats.py [--n-boot 10000] [--repeat 3]

Prints the best wall time of :func:`gguf_fragility.stats.results.stats_tables` (grid, death
order with rank intervals, decision matrix) on synthetic sweeps: ``nested`` (deaths nested
down the ladder, as real damage mostly is) and ``independent`` (every rung flips items
independently: many more distinct per-item patterns, the bootstrap's worst case).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from gguf_fragility.stats import results
from gguf_fragility.testing import synthetic_results


def independent_flips(r: results.Results, seed: int = 0) -> results.Results:
    """Re-draw every non-reference answer independently (10% flip rate) per rung."""
    rng = np.random.default_rng(seed)
    items = r.items.copy()
    ref = items.merge(r.ladder[["model", "rung", "is_reference"]], on=["model", "rung"],
                      how="left").fillna({"is_reference": False})  # the floor has no ladder row
    ref_ok = ref[ref.is_reference].set_index(["model", "family", "item_id"])["correct"]
    key = items.set_index(["model", "family", "item_id"]).index
    base = ref_ok.reindex(key).to_numpy(bool)
    flip = (rng.random(len(items)) < 0.10) & ~ref["is_reference"].to_numpy(bool)
    items["correct"] = base ^ flip
    items["extracted"] = np.where(items["correct"], "A", "B")
    return r._replace(items=items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    base = synthetic_results(n_models=2, n_families=13, n_items=500, seed=0)
    cases = {"nested": base, "independent": independent_flips(base)}
    n_rows = len(base.items)
    print(f"grid: 2 models x 7 rungs x 13 families x 500 items = {n_rows:,} item rows; "
          f"n_boot = {args.n_boot:,}; {os.cpu_count()} CPUs")
    for name, r in cases.items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            t = results.stats_tables(r.items, r.ladder, r.costs, r.shift,
                                     settings=results.Settings(n_boot=args.n_boot))
            times.append(time.perf_counter() - t0)
        print(f"{name:>12}: best {min(times):.2f} s, median {np.median(times):.2f} s "
              f"({len(t.comparisons)} comparisons, {len(t.death_order)} death-order rows)")


if __name__ == "__main__":
    main()
