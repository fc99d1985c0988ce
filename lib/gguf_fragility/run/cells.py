"""Sweep cells: one model × rung × family of a rung's plan, evaluated and stored atomically.

A *cell* is one model × rung × family: ``outputs/<profile>/sweep/<model>/<rung>/<family>.parquet``,
written atomically. A cell whose stored ``params_hash`` matches the current parameters is
skipped, so a killed run resumes where it stopped and a changed parameter re-runs only the
cells it affects. Items come in each family's pre-registered order (the frozen probe file's
seeded order, :func:`gguf_fragility.probes.load_family`), so a stored cell of fewer items
than planned is *extended* (only the new items are scored and appended, the file rewritten
atomically with its new digest) and one of more items is used as its prefix
(:func:`stored_prefix`); it is never redone for its size. Every row carries its provenance
(model file sha256, quant type, probe file hash, scorer version, code version, llama.cpp
system info, params hash).

Cells are planned by :mod:`gguf_fragility.run.plan` and independent
(:func:`evaluate_cell`); a profile's ``scheduler`` key runs them
in-process (default) or as tasks on a Dask cluster (:mod:`gguf_fragility.run.cluster`);
:mod:`gguf_fragility.run.sweep` runs a whole rung.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from gguf_fragility import probes
from gguf_fragility.engine.llama import Engine, peak_rss_bytes, system_info, topk_rows
from gguf_fragility.engine.rungs import REFERENCE
from gguf_fragility.layout import RunLayout
from gguf_fragility.probes import codeexec
from gguf_fragility.probes.evaluate import ItemResult, evaluate_batch
from gguf_fragility.probes.scorers import DEFAULT_SETTINGS, ScoreSettings, scorer_tag
from gguf_fragility.run.plan import ANSWER_TOP_K, CellPlan, RungPlan, cell_hash
from gguf_fragility.run.shift import kl_topk
from gguf_fragility.store import code_version, read_table_checked, report_rebuild, write_table_atomic


def scorer_tags(pf: probes.ProbeFile) -> set[str]:
    """The current ``name@version`` of every scorer a family's items use."""
    return {scorer_tag(it["scorer"]) for it in pf.items}


def _stale_cell(stored: pd.DataFrame, phash: str, owner: dict[str, object],
                scorers: Collection[str]) -> str:
    """Why a readable cell cannot be reused ('' when it can): ``owner`` maps columns to the
    value every row must hold, ``scorers`` are the current ``name@version`` tags."""
    missing = sorted({"params_hash", "item_id", *owner} - set(stored.columns))
    if missing:
        return f"not a sweep cell (no column {', '.join(missing)})"
    for col, want in owner.items():
        other = sorted(str(v) for v in set(stored[col]) - {want})
        if other:
            return f"its rows belong to {col} {', '.join(other)}, not {want}"
    if stored.item_id.duplicated().any():
        return f"{int(stored.item_id.duplicated().sum())} duplicate item rows"
    if len(stored) and not (stored.params_hash == phash).all():
        return (f"made with other parameters (params_hash {stored.params_hash.iloc[0]}, "
                f"now {phash})")
    if "scorer" in stored.columns:
        old = sorted(set(stored.scorer) - set(scorers) - {""})
        if old:
            return (f"scored with {', '.join(old)}, now {', '.join(sorted(scorers))} "
                    "(gguf-fragility regrade re-scores stored outputs without a model)")
    nan = nan_logprob_items(stored)
    if nan:
        return (f"NaN log-probabilities where the rung must have them ({len(nan)} items: "
                f"{', '.join(nan[:3])}{' …' if len(nan) > 3 else ''})")
    return ""


def nan_logprob_items(cell: pd.DataFrame) -> list[str]:
    """Items of a cell with a NaN log-probability where an answered item has one.

    Every answered log-likelihood item has its gold choice's and each choice's log-prob
    (``gold_logprob``, ``raw_output``); every stored answer-position top-k is finite; the
    reference's (F16) replies have their own log-prob (``ref_answer_logprob``).
    """
    answered = cell.error.eq("") if "error" in cell else pd.Series(True, index=cell.index)
    bad = pd.Series(False, index=cell.index)
    if "answer_top_lp" in cell:
        bad |= cell.answer_top_lp.map(lambda lp: bool(np.isnan(np.asarray(lp, float)).any()))
    if {"mode", "gold_logprob", "raw_output"} <= set(cell.columns):
        loglik = answered & cell["mode"].eq("loglik")
        bad |= loglik & cell.gold_logprob.isna()
        bad |= loglik & cell.raw_output.map(_choice_logprobs_nan)
    if {"mode", "rung", "ref_answer_logprob", "gen_tokens"} <= set(cell.columns):
        replied = answered & cell["mode"].eq("generate") & cell.gen_tokens.map(len).gt(0)
        bad |= replied & cell.rung.eq(REFERENCE) & cell.ref_answer_logprob.isna()
    return sorted(cell.item_id[bad])


def _choice_logprobs_nan(raw: str) -> bool:
    """Whether a log-likelihood row's raw output (JSON) holds a NaN or null choice log-prob."""
    try:
        lps = json.loads(raw)["logprobs"]
    except (ValueError, KeyError, TypeError):
        return True
    return any(lp is None or np.isnan(lp) for lp in lps)


def _answer_shift(lp: np.ndarray | None, ref: dict | None) -> tuple[float, float, list, list]:
    """Answer-position KL / same-top against the reference's stored top-k (NaN if unknown)."""
    if lp is None:
        return np.nan, np.nan, [], []
    ids, top = topk_rows(lp[None, :], ANSWER_TOP_K)
    if ref is None:  # this is the reference
        return 0.0, 1.0, ids[0].tolist(), top[0].tolist()
    kl = kl_topk(np.asarray([ref["ids"]]), np.asarray([ref["lp"]]), lp[None, :])[0]
    return float(kl), float(ids[0, 0] == ref["ids"][0]), ids[0].tolist(), top[0].tolist()


def run_cell(engine: Engine | None, pf: probes.ProbeFile, *, variant: int, provenance: dict,
             reference: dict[str, dict] | None,
             settings: ScoreSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Evaluate one family's items on a loaded rung; one row per item with provenance.

    With a ``reference`` (every rung but F16), a generative item verifies the reference's
    reply tokens as its draft, and ``ref_answer_logprob`` is that reply teacher-forced under
    this rung (the margin lens); at the reference it is the log-probability of its own reply.
    ``settings`` (the plan's scorer settings) reach the text scorers.
    """
    refs = [None if reference is None else reference.get(item["item_id"]) for item in pf.items]
    drafts = [(ref or {}).get("tokens") or None for ref in refs]
    done = evaluate_batch(engine, pf.items, variant, drafts,
                          desc=f"{provenance['rung']} {pf.family}", settings=settings)
    rows = []
    for ref, draft, (res, answer_lp, reply_lp) in zip(refs, drafts, done, strict=True):
        ref_lp = reply_lp if reference is None or draft else np.nan  # no reference reply
        kl, same, ids, lps = _answer_shift(answer_lp, ref)
        if reference is not None and ref is None:
            kl, same = np.nan, np.nan
        rows.append({**res._asdict(), "answer_kl": kl, "answer_same_top": same,
                     "answer_top_ids": ids, "answer_top_lp": lps, "ref_answer_logprob": ref_lp})
    df = pd.DataFrame(rows, columns=[*ItemResult._fields, "answer_kl", "answer_same_top",
                                     "answer_top_ids", "answer_top_lp", "ref_answer_logprob"])
    for key, value in provenance.items():
        df[key] = value
    df["probe_file_sha256"] = pf.sha256
    return df


def _reference_answers(run: RunLayout, model: str, family: str) -> dict[str, dict] | None:
    """Per item of the stored F16 cell: its answer-position top-k and reply tokens.

    Raises
    ------
    ValueError
        When the F16 cell exists but is not intact (reported in one line first): the rung
        would be compared with a reference that is not the one computed.
    """
    path = run.cell(model, REFERENCE, family)
    if not path.is_file():
        return None
    stored = read_table_checked(path)
    if stored is None:
        raise ValueError(f"the reference cell {path} cannot be used (see the line above); run "
                         f"the F16 rung again (03_calibrate or 04_sweep) to rebuild it")
    return {r.item_id: {"ids": list(r.answer_top_ids), "lp": list(r.answer_top_lp),
                        "tokens": [int(t) for t in r.gen_tokens]}
            for r in stored.frame.itertuples() if len(r.answer_top_ids)}


class CellRun(NamedTuple):
    """Result of :func:`evaluate_cell`."""

    path: Path  # the cell's parquet file
    ran: bool  # False when a stored cell with the same params_hash was reused
    load_s: float  # seconds spent loading the rung for this cell; nan if none was loaded here
    peak_rss_bytes: int  # peak RSS of the process that ran the cell; 0 when reused
    memory: tuple | None = None  # the loaded rung's Engine.memory (llama.cpp's buffers)
    scored: int = 0  # items scored now (the new ones of an extended cell)
    seconds: float = 0.0  # wall seconds of those items


def stored_prefix(plan: RungPlan, cell: CellPlan) -> pd.DataFrame | None:
    """
    The stored rows of a cell that are a prefix of its planned items, or None.

    Parameters
    ----------
    plan : RungPlan
    cell : CellPlan

    Returns
    -------
    pandas.DataFrame or None
        The stored rows (all of them: a cell of more items than planned is its plan's
        prefix and more) when the cell is intact, is this cell's, was made with these
        parameters *for its own items* (its ``params_hash`` is
        :func:`~gguf_fragility.run.plan.cell_hash` of its rows' ``item_hash`` in row
        order) and its items and the planned ones agree on their common prefix; None when
        absent or empty, or when it fails a check: the caller rebuilds it.

    Notes
    -----
    This is the one checked read of a stored cell. A cell that exists but fails a check
    (unreadable, values that no longer hash as written, no content digest, another cell's
    rows, other parameters, rows scored by another version of a scorer than the current
    ``name@version`` of its items (:func:`scorer_tags`), NaN log-probabilities, items not
    in the pre-registered order) is reported in one line, file and reason. A scorer's new
    version thus re-scores stored cells (``gguf-fragility regrade`` does it without a model).

    Cells stored before extension existed hold the hash of exactly their items, so a plan
    of the same size finds them done as before.
    """
    stored = read_table_checked(cell.path)
    if stored is None or stored.frame.empty:
        return None
    rows = stored.frame
    if "item_hash" not in rows.columns:
        report_rebuild(cell.path, "not a sweep cell (no column item_hash)")
        return None
    own = [str(h) for h in rows.item_hash]
    planned = [it["hash"] for it in cell.items.items]
    k = min(len(own), len(planned))
    prefix = own[:k] == planned[:k]  # else only say so when nothing more telling is wrong
    phash = (cell_hash(plan.engine, plan.row.sha256, own, cell.variant) if prefix
             else str(rows.params_hash.iloc[0]) if "params_hash" in rows.columns else "")
    why = _stale_cell(rows, phash, cell_owner(plan.model, plan.rung, cell.family, cell.variant),
                      scorer_tags(cell.items))
    if not why and not prefix:
        why = (f"its items are not the first {len(own)} of the family's pre-registered order "
               "(another probe set or order)")
    if why:
        report_rebuild(cell.path, why)
        return None
    return rows


def cell_done(plan: RungPlan, cell: CellPlan) -> bool:
    """Whether a stored cell holds every planned item (see :func:`stored_prefix`)."""
    rows = stored_prefix(plan, cell)
    return rows is not None and len(rows) >= len(cell.items.items) > 0


class LazyEngine:
    """A rung loaded on first use, so a fully resumed rung loads nothing."""

    def __init__(self, plan: RungPlan) -> None:
        self.plan = plan
        self.engine, self.load_s = None, float("nan")

    def get(self) -> Engine:
        """The loaded engine (loading it now if needed)."""
        if self.engine is None:
            self.engine = self.plan.open()
            self.load_s = self.engine.load_s
        return self.engine

    def close(self) -> None:
        """Free the model if it was loaded (also on leaving a ``with`` block)."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def __enter__(self) -> LazyEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cell_owner(model: str, rung: str, family: str, variant: int = 0) -> dict[str, object]:
    """The provenance values every row of this cell holds (checked by :func:`stored_prefix`)."""
    return {"model": model, "rung": rung, "family": family, "variant": variant}


def evaluate_cell(plan: RungPlan, cell: CellPlan, engine: LazyEngine | None = None) -> CellRun:
    """Run (or resume) one cell of a rung's plan and write it atomically.

    Parameters
    ----------
    plan : RungPlan
        The rung (:func:`~gguf_fragility.run.plan.plan_rung`).
    cell : CellPlan
        One of its cells.
    engine : LazyEngine, optional
        The rung already (or lazily) loaded by the caller and left open; when None the cell
        loads the rung itself, only if the cell is not done, and closes it afterwards.

    Returns
    -------
    CellRun
        The cell's path, whether it ran, the load time and the process's peak RSS.

    Notes
    -----
    A cell is independent of every other cell of its rung: a plan of this one cell is what
    :mod:`gguf_fragility.run.cluster` sends to Dask workers. A non-reference rung reads the
    F16 cell of the same family (answer-position KL), so F16 must be swept first.
    """
    old = stored_prefix(plan, cell)
    have = 0 if old is None else len(old)
    if have >= len(cell.items.items) > 0:
        return CellRun(cell.path, False, float("nan"), 0)
    new = cell.items._replace(items=cell.items.items[have:])  # only the items not stored
    if any(it["scorer"] == "code_exec" for it in new.items):  # refuse before loading
        codeexec.require_isolation(allow_unisolated=plan.scoring.allow_unisolated_code)
    lazy = engine or LazyEngine(plan)
    load_before = lazy.engine is not None
    try:
        eng = lazy.get() if new.items else None  # an empty cell needs no model
        ref = None if plan.spec.is_reference else _reference_answers(plan.run, plan.model, cell.family)
        t0 = time.perf_counter()
        df = run_cell(eng, new, variant=cell.variant, reference=ref,
                      provenance={**_provenance(plan), "params_hash": cell.params_hash},
                      settings=plan.scoring)
        seconds = time.perf_counter() - t0
        if old is not None:  # extended: earlier rows kept as they are, under the new hash
            df = pd.concat([old.assign(params_hash=cell.params_hash), df], ignore_index=True)
        write_table_atomic(df, cell.path)
    finally:
        if engine is None:
            lazy.close()
    load_s = lazy.load_s if eng is not None and not load_before else float("nan")
    return CellRun(cell.path, True, load_s, peak_rss_bytes(), eng.memory if eng is not None else None,
                   len(new.items), seconds)


def _provenance(plan: RungPlan) -> dict:
    """Columns stamped on every row of a cell (llama.cpp facts of the process that ran it)."""
    spec, row = plan.spec, plan.row
    return {"model": plan.model, "rung": plan.rung, "quant_type": row.name,
            "model_sha256": row.sha256, "bpw": float(row.bpw), "kv_cache_type_k": spec.cache,
            "kv_cache_type_v": spec.cache, "flash_attn": spec.flash_attn,
            "code_version": code_version(), "profile": plan.run.profile,
            **{f"llama_{k}": v for k, v in system_info().items()}}
