"""Logic of the benchmarks checked by hand: the planner benchmark's bound (bench_planner.py
``best``: the most verdicts any allocation of a budget reaches) and the sequential
benchmark's fixed arm at a longer time (bench_sequential.py ``scaled``)."""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd

from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE
from gguf_fragility.paths import REPO


def _bench(name: str):
    """A benchmark script of ``benchmarks/`` as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bp = _bench("bench_planner")


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


def test_fixed_arm_scaled():
    """``--fixed-scale``: the fixed arm drops the budget and multiplies every item count,
    rounding up (the profile's, a model's own, each family's cap); a model without its own
    count keeps none; scale 1 is the profile as written."""
    bs = _bench("bench_sequential")
    data = {"models": {"a": {"rungs": ["F16", "Q2_K"]}, "b": {"rungs": ["F16"], "n_items": 12}},
            "families": ["lambada"], "n_items": 64, "family_items_cap": {"lambada": 5},
            "budget": {"minutes": 14}}
    twice = bs.scaled(data, 2)
    assert "budget" not in twice and twice["n_items"] == 128
    assert twice["family_items_cap"] == {"lambada": 10}
    assert twice["models"] == {"a": {"rungs": ["F16", "Q2_K"]},
                               "b": {"rungs": ["F16"], "n_items": 24}}
    assert bs.scaled(data, 1.5)["family_items_cap"] == {"lambada": 8}
    assert bs.scaled(data, 1) == {k: v for k, v in data.items() if k != "budget"}
