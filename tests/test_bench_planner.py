"""The planner benchmark's bound (benchmarks/bench_planner.py ``best``): the most verdicts any
allocation of a budget reaches, checked against a case solved by hand."""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd

from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE
from gguf_fragility.paths import REPO

_spec = importlib.util.spec_from_file_location("bench_planner",
                                               REPO / "benchmarks" / "bench_planner.py")
bp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bp)


def test_best_allocation_by_hand():
    """Every item costs 1 s; the reference starts at 2 items, every other cell at 1 (the first
    look: 4 s). Verdicts: Q2_K on ``a`` by fidelity at 3 items (its floor too), Q8_0 on ``a``
    by correctness and margin at 5, Q8_0 on ``b`` at 4. By hand: all four cost 16 s after the
    first look; the Q8_0 pair on ``a`` (7 s) with either other verdict 11 or 12 s (3
    verdicts); the two single verdicts 10 s (2); with 10 s no third fits. A verdict no
    item decides (inf) is never counted."""
    cells = [("m", REFERENCE, "a"), ("m", NOISE_FLOOR, "a"), ("m", "Q2_K", "a"),
             ("m", "Q8_0", "a"), ("m", REFERENCE, "b"), ("m", "Q8_0", "b")]
    pooled = bp.Pooled(pd.DataFrame(), {k: np.cumsum(np.ones(10)) for k in cells}, pd.DataFrame(),
                       {}, cells, dict.fromkeys(cells, 10))
    profile = SimpleNamespace(items_for=lambda m, f: 2, first_items_for=lambda m, f: 1)
    first = {("m", "Q2_K", "a", "fidelity"): 3.0, ("m", "Q8_0", "a", "correctness"): 5.0,
             ("m", "Q8_0", "a", "margin"): 5.0, ("m", "Q8_0", "b", "correctness"): 4.0,
             ("m", "Q2_K", "a", "correctness"): math.inf}
    known = bp.Hindsight(first, 4)
    got = {after: bp.best(pooled, known, profile, 4.0 + after) for after in (10, 11, 15, 16, 100)}
    assert got == {10: 2, 11: 3, 15: 3, 16: 4, 100: 4}
