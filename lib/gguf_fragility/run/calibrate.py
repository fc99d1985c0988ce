"""Calibration: which items does the reference really know?

A rung can only *lose* an item the reference answers correctly and robustly:

* log-likelihood items: correct, with a gold margin (log p(gold) − best other) above
  ``margin_threshold`` nats; a one-continuation item (LAMBADA's last word) has no other
  choice and so no margin: correct (its continuation is the greedy one) is enough;
* generative items: correct under greedy decoding with the default prompt **and** with one
  harmless variation (variant 1 of :mod:`gguf_fragility.probes.evaluate`: a different system message).

The reference's variant-0 answers are the F16 sweep cells themselves (same engine, same
items), so the sweep never evaluates the reference twice.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from gguf_fragility.engine.rungs import REFERENCE
from gguf_fragility.probes.evaluate import VARIANTS
from gguf_fragility.profile import Profile
from gguf_fragility.run.plan import plan_rung
from gguf_fragility.run.sweep import ensure_reference, evaluate_rung
from gguf_fragility.store import write_json_atomic, write_table_atomic


class Calibration(NamedTuple):
    """Result of :func:`calibrate`."""

    items: pd.DataFrame  # one row per item: correct_v0, correct_v1, margin, usable
    report: pd.DataFrame  # one row per family: accuracy + Wilson CI, n_usable, measurable
    gate_passed: bool
    message: str


def usable_flags(v0: pd.DataFrame, v1: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per item: the calibration verdict from the two reference passes."""
    out = v0[["model", "family", "item_id", "item_hash", "mode", "correct", "margin"]].rename(
        columns={"correct": "correct_v0"})
    v1_ok = dict(zip(v1.item_id, v1.correct, strict=True)) if len(v1) else {}
    out["correct_v1"] = out.item_id.map(v1_ok).astype("boolean")
    loglik = out["mode"] == "loglik"
    robust = (out.margin > threshold) | out.margin.isna()  # NaN: one continuation, no margin
    out["usable"] = (out.correct_v0 & loglik & robust) | (
        out.correct_v0 & ~loglik & out.correct_v1.fillna(False).astype(bool))
    out["usable"] = out.usable.astype(bool)
    return out


def family_report(items: pd.DataFrame, min_usable: int) -> pd.DataFrame:
    """Reference accuracy with Wilson 95% CI, usable count and measurability per family."""
    g = items.groupby(["model", "family"], sort=False)
    rep = g.agg(n=("correct_v0", "size"), n_correct=("correct_v0", "sum"),
                n_usable=("usable", "sum")).reset_index()
    lo, hi = proportion_confint(rep.n_correct.to_numpy(), rep.n.to_numpy(), method="wilson")
    rep["accuracy"] = rep.n_correct / rep.n
    rep["ci_low"], rep["ci_high"] = lo, hi
    rep["measurable"] = rep.n_usable >= min_usable
    return rep


def variant_agreement(items: pd.DataFrame) -> pd.DataFrame:
    """Per generative family: items right with the default prompt, and of those, with variant 1."""
    gen = items[items["mode"] == "generate"]
    return gen.groupby("family").agg(correct_v0=("correct_v0", "sum"),
                                     also_correct_v1=("correct_v1", lambda s: int(s.fillna(False).sum())))


def calibrate(profile: Profile, model: str) -> Calibration:
    """Run the reference on the battery (two prompt variants), decide usable items, gate.

    Writes ``<model>_items.parquet``, ``<model>_report.csv`` and ``<model>.json`` to
    ``outputs/<profile>/calibration/`` and the reference's full log-prob rows on the KL text
    sample to ``outputs/<profile>/sweep/<model>/_reference_logprobs.npz`` (kept while its
    parameters are unchanged: :func:`gguf_fragility.run.sweep.ensure_reference`).
    """
    plan = plan_rung(profile, model, REFERENCE)
    v0 = evaluate_rung(profile, plan)
    gen_ok = {f: set(g.item_id[g.correct]) for f, g in v0[v0["mode"] == "generate"].groupby("family")}
    v1 = evaluate_rung(profile, plan_rung(profile, model, REFERENCE, variant=1, keep=gen_ok))
    items = usable_flags(v0, v1, profile.margin_threshold)
    report = family_report(items, profile.min_usable)
    n_ok = int(report.measurable.sum())
    passed = n_ok >= profile.min_families
    not_measurable = ", ".join(report.family[~report.measurable]) or "none"
    message = (f"{model}: {n_ok} of {len(report)} families measurable (>= {profile.min_usable} "
               f"usable items); not measurable: {not_measurable}. " + (
                   "Sweep may run." if passed else
                   f"DO NOT RUN THE SWEEP: fewer than {profile.min_families} measurable families."))
    run = profile.layout
    write_table_atomic(items, run.calibration_items(model))
    write_table_atomic(report, run.calibration_report(model))
    usable_ids = sorted(items.item_id[items.usable])
    write_json_atomic(run.calibration_gate(model), {
        "model": model, "gate_passed": passed, "message": message,
        "variants": VARIANTS, "margin_threshold": profile.margin_threshold,
        "n_usable": len(usable_ids),
        "usable_ids_sha256": hashlib.sha256("\n".join(usable_ids).encode()).hexdigest()})
    ensure_reference(profile, model)
    return Calibration(items, report, passed, message)


__all__ = ["Calibration", "calibrate", "family_report", "usable_flags", "variant_agreement"]
