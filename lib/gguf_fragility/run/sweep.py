"""One rung of one model on the whole battery: its cells, its cost and its text shift.

Notebook 04's call is :func:`sweep_rung`. Cells (:mod:`gguf_fragility.run.cells`) run where
the profile's ``scheduler`` says (:mod:`gguf_fragility.run.cluster`); this module adds what
belongs to a whole rung: calibration's gate, the cost figures, the KL shift on the text
sample, and re-grading stored cells without a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gguf_fragility import probes
from gguf_fragility.artifacts import MEMORY_COLUMNS, read_calibration_items, read_cell, read_record
from gguf_fragility.engine.gguf import kv_shape, open_gguf
from gguf_fragility.engine.kvcache import kv_cache_bytes
from gguf_fragility.engine.llama import FLASH_ATTN, system_info
from gguf_fragility.engine.memory import PlannedMemory
from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE
from gguf_fragility.layout import RunLayout
from gguf_fragility.probes.evaluate import detail_json, regrade_result
from gguf_fragility.probes.scorers import scorer_tag
from gguf_fragility.profile import Profile
from gguf_fragility.run.cells import CellRun, stored_prefix
from gguf_fragility.run.cluster import run_cells
from gguf_fragility.run.plan import RungPlan, families_of, looked_families, looked_rungs, plan_rung
from gguf_fragility.run.shift import (
    POSITIONS,
    SAMPLE,
    read_reference,
    reference_shift,
    rung_shift,
    sample_chunks,
    write_reference,
)
from gguf_fragility.store import (
    StaleContent,
    params_hash,
    read_result_json,
    read_table_checked,
    report_rebuild,
    sha256_file,
    write_result_json,
    write_table_atomic,
)


def evaluate_rung(profile: Profile, plan: RungPlan,
                  usable: dict[str, bool] | None = None) -> pd.DataFrame:
    """Run (or resume) every cell of a rung's plan and return all its rows.

    Parameters
    ----------
    profile : Profile
        Its ``scheduler``, and the cost record's settings.
    plan : RungPlan
        The rung and its cells (:func:`~gguf_fragility.run.plan.plan_rung`; calibration's
        second pass plans variant 1 of some items).
    usable : dict item_id -> bool, optional
        Calibration verdicts, copied onto each row.

    Notes
    -----
    With ``profile.scheduler`` None the cells run here, one after another, on one loaded
    rung; otherwise they are Dask tasks (see :func:`gguf_fragility.run.cluster.run_cells`).
    Either way the cells are the same files, so the rows do not depend on the scheduler.
    """
    runs = run_cells(plan, profile.scheduler)
    frames = [read_cell(r.path).iloc[:len(c.items.items)]  # a larger stored cell: its prefix
              for r, c in zip(runs, plan.cells, strict=True)]
    variant = plan.cells[0].variant if plan.cells else 0
    if frames and variant == 0:
        _write_cost(profile, plan, [r for r in runs if r.ran], pd.concat(frames))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if usable is not None and not out.empty:
        out["usable"] = out.item_id.map(usable).fillna(False).astype(bool)
    return out


def planned_memory(plan: RungPlan, stored: dict | None = None,
                   loaded: PlannedMemory | None = None) -> dict:
    """
    llama.cpp's planned memory of a rung loaded with its plan's engine settings.

    Parameters
    ----------
    plan : RungPlan
    stored : dict, optional
        The rung's cost record; its figures are reused when its ``memory_params_hash``
        (rung file sha256, the plan's engine settings,
        llama-cpp-python version) is the current one.
    loaded : PlannedMemory, optional
        ``Engine.memory`` of the rung as its cells loaded it (the same settings): taken
        as it is.

    Returns
    -------
    dict
        :data:`~gguf_fragility.artifacts.MEMORY_COLUMNS` (bytes; None each when
        llama.cpp's log was not recognised) and ``memory_params_hash``.

    Notes
    -----
    Otherwise the rung is loaded here, with the settings its cells use, and freed: the
    figures are, as above, :attr:`Engine.memory <gguf_fragility.engine.llama.Engine>` (weights, KV
    cache at ``engine.n_ctx``, compute buffers, as llama.cpp logs them at load). A load
    of its own, so every rung of a run has the figures even when all its cells were reused.
    """
    key = params_hash({"model_sha256": plan.row.sha256, "engine": plan.engine,
                       "llama_cpp_python": system_info()["llama_cpp_python"]})
    if loaded is None and stored is not None and stored.get("memory_params_hash") == key:
        return {c: stored.get(c) for c in (*MEMORY_COLUMNS, "memory_params_hash")}
    if loaded is None:
        with plan.open() as engine:
            loaded = engine.memory
    return {**dict(zip(MEMORY_COLUMNS, loaded or [None] * len(MEMORY_COLUMNS), strict=True)),
            "memory_params_hash": key}


def _write_cost(profile: Profile, plan: RungPlan, ran: list[CellRun], rows: pd.DataFrame) -> None:
    """Cost figures of a rung: its planned memory, and what was measured where its cells ran.

    The planned memory (:func:`planned_memory`; as the cells' own load measured it when
    they ran) is recorded for every rung, also when all its cells were reused: then a
    stored record only gains it (its measured figures kept), and a missing one is written
    with ``peak_rss_bytes`` None and ``load_s`` NaN (nothing was loaded for the cells).
    ``peak_rss_bytes`` is the peak resident memory of the process(es) that ran the cells,
    a secondary figure: it counts the interpreter and every library besides the model.

    Under a Dask scheduler the figures come from workers that may share the machine's
    cores, so tokens/s are lower than a serial run's; ``scheduler`` records which it was.
    ``kv_cache_bytes`` is computed, not measured: the K and V cache of ``engine.n_ctx``
    cells in the rung's cache type (:func:`~gguf_fragility.engine.kvcache.kv_cache_bytes`).
    Tokens/s and time to first token are medians over the generative items of each item's
    share of the batches it was decoded in (replies decoded together share a batch's
    seconds), so they are throughputs of the sweep's grouped generation, alike for every rung
    because the groups are.

    The record carries a content digest (:func:`~gguf_fragility.store.write_result_json`);
    one that no longer hashes as written (or has no digest) is named in one line and
    written anew, as a missing one is.
    """
    model, rung, row = plan.model, plan.rung, plan.row
    path = profile.layout.cost_json(model, rung)
    stored = read_result_json(path)
    memory = planned_memory(plan, stored, next((r.memory for r in ran if r.memory is not None), None))
    if not ran and stored is not None:
        if stored.get("memory_params_hash") != memory["memory_params_hash"]:
            write_result_json(path, {**stored, **memory})
        return
    loads = [r.load_s for r in ran if not np.isnan(r.load_s)]
    gen = rows[rows["mode"] == "generate"]
    n_ctx = plan.engine["n_ctx"]
    q = gen.ttft_s.quantile([0.25, 0.5, 0.75]) if len(gen) else pd.Series([np.nan] * 3)
    write_result_json(path, {
        "model": model, "rung": rung, "file_size_bytes": int(row.file_size_bytes), **memory,
        "peak_rss_bytes": max(r.peak_rss_bytes for r in ran) if ran else None,
        "load_s": float(np.median(loads)) if loads else np.nan,
        "prompt_tps": float(gen.prompt_tps.median()), "gen_tps": float(gen.gen_tps.median()),
        "ttft_s_median": float(q.iloc[1]), "ttft_s_q25": float(q.iloc[0]),
        "ttft_s_q75": float(q.iloc[2]), "n_generations": len(gen),
        "kv_cache": row.kv_cache, "n_ctx": n_ctx,
        "kv_cache_bytes": kv_cache_bytes(kv_shape(open_gguf(row.file)), n_ctx, row.kv_cache),
        "scheduler": profile.scheduler or "in-process"})


def regrade(run: RunLayout) -> pd.DataFrame:
    """Re-score every stored cell from its raw outputs with the current scorers (no model run).

    Returns one row per cell: how many items changed verdict.
    """
    items = {}
    summary = []
    for path in run.cells():
        stored = read_table_checked(path)  # an edited or corrupted cell is not re-scored
        if stored is None:  # (the line above named it; the next sweep rebuilds it)
            continue
        df, family = stored.frame, path.stem
        if family not in items:
            items[family] = {it["item_id"]: it for it in probes.load_family(family).items}
        new = [regrade_result(r, items[family][r["item_id"]]) for r in df.to_dict("records")]
        before = df.correct.copy()
        df["score"] = [s.score for s in new]
        df["correct"] = [bool(s.correct) for s in new]
        df["extracted"] = [s.extracted for s in new]
        df["detail"] = [detail_json(s.detail) for s in new]
        df["scorer"] = [scorer_tag(items[family][i]["scorer"]) for i in df.item_id]
        write_table_atomic(df, path)
        summary.append({"cell": str(path.relative_to(run.sweep_dir)),
                        "n": len(df), "changed": int((before != df.correct).sum())})
    return pd.DataFrame(summary)


def gate(run: RunLayout, model: str) -> None:
    """Refuse to sweep a model whose calibration did not pass, repeating calibration's message."""
    path = run.calibration_gate(model)
    if not path.is_file():
        raise RuntimeError(f"{model} has no calibration in profile {run.profile!r}; "
                           "run 03_calibrate first")
    record = json.loads(path.read_text())
    if not record["gate_passed"]:
        raise RuntimeError(record["message"])


def reference_params(profile: Profile, plan: RungPlan) -> str:
    """Hash of everything that makes the reference's store (see :func:`ensure_reference`);
    ``plan`` is the F16 rung's."""
    return params_hash({"model_sha256": plan.row.sha256,
                        "sample_sha256": sha256_file(SAMPLE) if SAMPLE.is_file() else "missing",
                        "passages": profile.shift_passages, "tokens": profile.shift_tokens,
                        "positions": POSITIONS, "rows": "uint16 (llama-perplexity)",
                        "flash_attn": FLASH_ATTN, "engine": plan.engine})


def ensure_reference(profile: Profile, model: str) -> Path:
    """The reference's full log-prob rows on the text sample, (re)built unless stored with
    these parameters.

    A stored file is reused only when it reads whole (every byte of its rows, CRC checked)
    and its recorded parameters hash (F16 sha256, text sample sha256, passages, tokens,
    positions, flash attention, engine settings) equals the current one; otherwise the
    reason is reported in one line and the F16 rung is scored again
    (:func:`~gguf_fragility.run.shift.write_reference`, streamed chunk by chunk).
    """
    plan = plan_rung(profile, model, REFERENCE, families=())
    path = profile.layout.reference_logprobs(model)
    key = reference_params(profile, plan)
    if path.is_file():
        try:
            stored = read_reference(path).params_hash
        except StaleContent as exc:
            report_rebuild(path, str(exc))
        except Exception as exc:  # truncated zip, bad CRC, missing array, not an npz
            report_rebuild(path, f"unreadable ({type(exc).__name__}: {exc})")
        else:
            if stored == key:
                return path
            report_rebuild(path, f"made with other parameters (params_hash {stored or 'none'}, "
                                 f"now {key})")
    with plan.open() as engine:
        chunks = sample_chunks(engine, profile.shift_passages, profile.shift_tokens)
        write_reference(engine, chunks, path, key)
    return path


def measure_shift(profile: Profile, model: str, rung: str) -> dict:
    """KL divergence of a rung against the stored reference on the text sample (cached).

    The cache (``_shift.json``) is reused only when it was computed from this rung file
    (sha256), this reference store (sha256 of its bytes) and these sample and engine
    settings; a stale reference store is rebuilt first (:func:`ensure_reference`). The
    reference's own row comes from its store (:func:`~gguf_fragility.run.shift.reference_shift`:
    a second identical run would cost a full pass of the largest file for KL = 0). The row
    records the positions scored and the flash-attention setting
    (:class:`~gguf_fragility.run.shift.ShiftStats`).
    """
    if not profile.layout.reference_logprobs(model).is_file():
        raise FileNotFoundError(f"{profile.layout.reference_logprobs(model)} is missing; "
                                f"run 03_calibrate for {model} first")
    ref_path = ensure_reference(profile, model)
    plan = plan_rung(profile, model, rung, families=())
    row = plan.row
    out = profile.layout.shift_json(model, rung)
    key = params_hash({"rung_sha": row.sha256, "reference_sha256": sha256_file(ref_path),
                       "passages": profile.shift_passages, "tokens": profile.shift_tokens,
                       "positions": POSITIONS, "flash_attn": FLASH_ATTN,
                       "engine": plan.engine})
    stored = read_result_json(out)
    if stored is not None:
        if stored.get("params_hash") == key:
            return stored
        report_rebuild(out, "made from another rung file, reference store or settings "
                            f"(params_hash {stored.get('params_hash')}, now {key})")
    result = {"model": model, "rung": rung, "bpw": float(row.bpw), "params_hash": key}
    store = read_reference(ref_path, verify=False)  # read whole just above
    if plan.spec.is_reference:
        result.update(reference_shift(store)._asdict())
    else:
        with plan.open() as engine:
            result.update(rung_shift(engine, store)._asdict())
    write_result_json(out, result)
    return result


def rung_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per family of one rung: items, accuracy (all and usable), answer KL, errors, and for
    generative families how many replies were the reference's reply verified whole
    (``replies_verified``) and the mean tokens generated one at a time per item."""
    gen = rows["mode"] == "generate"
    rows = rows.assign(
        _verified=(gen & (rows.diverged_at < 0) & (rows.n_verified > 0)).where(gen),
        _generated=(rows.gen_tokens.map(len) - rows.n_verified).where(gen))
    return rows.groupby("family").agg(
        n=("correct", "size"), accuracy=("correct", "mean"), n_usable=("usable", "sum"),
        usable_accuracy=("correct", lambda s: s[rows.loc[s.index, "usable"]].mean()),
        answer_kl=("answer_kl", "mean"), answer_same_top=("answer_same_top", "mean"),
        replies_verified=("_verified", lambda s: s.sum(min_count=1)),
        tokens_generated=("_generated", "mean"),
        errors=("error", lambda s: int((s != "").sum()))).round(3)


def rung_figures(profile: Profile, model: str, rung: str) -> pd.DataFrame:
    """The rung's text-sample shift and its cost, one column each (what 04 shows)."""
    shift = read_record(profile.layout.shift_json(model, rung))
    shift.pop("params_hash", None)
    cost = profile.layout.cost_json(model, rung)
    cost = read_record(cost) if cost.is_file() else {}
    return pd.DataFrame({"shift": pd.Series(shift), "cost": pd.Series(cost)})


def floor_report(profile: Profile, model: str) -> pd.DataFrame:
    """Does the noise floor really take other floating-point paths? Per family: items whose
    per-choice log-probs (or generated text) are bit-identical to the reference's, the largest
    log-prob difference, and items whose extracted answer differs."""
    run = profile.layout
    rows = []
    for family in families_of(profile, model):
        ref, floor = (read_cell(run.cell(model, r, family)).set_index("item_id")
                      for r in (REFERENCE, NOISE_FLOOR))
        floor = floor.loc[ref.index.intersection(floor.index)]
        ref = ref.loc[floor.index]
        loglik = ref["mode"] == "loglik"
        lp_ref = [json.loads(x)["logprobs"] for x in ref.raw_output[loglik]]
        lp_floor = [json.loads(x)["logprobs"] for x in floor.raw_output[loglik]]
        diffs = [np.max(np.abs(np.subtract(a, b))) for a, b in zip(lp_ref, lp_floor, strict=True)]
        gen = ~loglik
        rows.append({"family": family, "n": len(ref),
                     "logprobs_identical": int(sum(d == 0 for d in diffs)),
                     "max_abs_logprob_diff": float(max(diffs)) if diffs else np.nan,
                     "text_identical": int((ref.raw_output[gen] == floor.raw_output[gen]).sum()),
                     "answer_flips": int((ref.extracted != floor.extracted).sum())})
    return pd.DataFrame(rows)


def budgeted_items(profile: Profile, model: str, rung: str) -> dict[str, int]:
    """
    Chapter 4's items per family of a rung in a budgeted run: what its looks left.

    The looks (:mod:`gguf_fragility.run.looks`) own a budgeted run's steered cells
    (:func:`~gguf_fragility.run.plan.looked_rungs` x
    :func:`~gguf_fragility.run.plan.looked_families`), so chapter 4 plans each at the items its
    stored cell holds (one the looks never reached, e.g. when the clock stopped the first
    look: its first items, :meth:`~gguf_fragility.profile.Profile.first_items_for`) and adds
    none: the budget bounds the sweep. Other cells (empty here) keep ``n_items``.
    """
    if profile.budget is None or rung not in looked_rungs(profile, model):
        return {}
    fams = looked_families(profile, model)
    fixed = plan_rung(profile, model, rung, families=fams)
    out = {}
    for cell in fixed.cells:
        rows = stored_prefix(fixed, cell)
        out[cell.family] = len(rows) if rows is not None else profile.first_items_for(
            model, cell.family)
    return out


def sweep_rung(profile: Profile, model: str, rung: str) -> pd.DataFrame:
    """Notebook 04's one call: gate, evaluate every family cell (a budgeted run's steered cells
    as its looks left them: :func:`budgeted_items`), measure the KL shift."""
    gate(profile.layout, model)
    cal = read_calibration_items(profile.layout, model)
    plan = plan_rung(profile, model, rung, n_items=budgeted_items(profile, model, rung))
    rows = evaluate_rung(profile, plan, usable=dict(zip(cal.item_id, cal.usable, strict=True)))
    measure_shift(profile, model, rung)
    return rows
