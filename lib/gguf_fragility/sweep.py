"""Item-level evaluation of one rung on the probe battery, stored as resumable cells.

A *cell* is one model × rung × family: ``outputs/<profile>/sweep/<model>/<rung>/<family>.parquet``,
written atomically. A cell whose stored ``params_hash`` matches the current parameters is
skipped, so a killed run resumes where it stopped and a changed parameter re-runs only the
cells it affects. Every row carries its provenance (model file sha256, quant type, probe
file hash, scorer version, code version, llama.cpp system info, params hash).

Cells are independent (:func:`evaluate_cell`); a profile's ``scheduler`` key runs them
in-process (default) or as tasks on a Dask cluster (:mod:`gguf_fragility.cluster`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import paths, probes
from .evaluate import ItemResult, evaluate_item, regrade_result
from .infer import SCORING_VERSION, Engine, peak_rss_bytes, system_info
from .ladder import load_manifest
from .params import Profile, as_dict
from .shift import kl_topk, load_reference, rung_shift, sample_tokens, topk_rows
from .store import code_version, params_hash, write_json_atomic, write_table_atomic

ANSWER_TOP_K = 32  # reference log-probs kept per item at the answer position


def families_of(profile: Profile, model: str) -> list[str]:
    """The model's families in this profile, or every family of the frozen battery."""
    return list(profile.families_for(model) or probes.FAMILIES)


def rung_row(profile: Profile, model: str, rung: str) -> pd.Series:
    """The ladder-manifest row of one rung (file, sha256, bpw ...)."""
    ladder = load_manifest(profile.name, model).set_index("rung")
    if rung not in ladder.index:
        raise ValueError(f"rung {rung!r} is not in the {model} ladder of profile {profile.name!r} "
                         f"({', '.join(ladder.index)}); run notebook 01_ladder first")
    return ladder.loc[rung]


def open_engine(profile: Profile, path: str | Path) -> Engine:
    """Load a rung with the profile's engine settings (identical for every rung)."""
    e = profile.engine
    return Engine(path, n_ctx=e.n_ctx, n_threads=e.n_threads, seed=e.seed,
                  n_gpu_layers=e.n_gpu_layers, n_batch=e.n_batch)


def cell_path(profile: str, model: str, rung: str, family: str, variant: int = 0) -> Path:
    """Where one cell is stored (variant 1 is calibration's prompt variation)."""
    if variant:
        return paths.calibration_dir(profile) / model / f"v{variant}" / f"{family}.parquet"
    return paths.sweep_dir(profile) / model / rung / f"{family}.parquet"


def cell_hash(profile: Profile, rung_sha: str, pf: probes.ProbeFile, variant: int) -> str:
    """Hash of everything that can change a cell's rows."""
    return params_hash({"engine": as_dict(profile)["engine"], "model_sha256": rung_sha,
                        "items": [it["hash"] for it in pf.items], "variant": variant,
                        "answer_top_k": ANSWER_TOP_K,
                        "scoring_version": SCORING_VERSION})


def is_done(path: Path, phash: str) -> bool:
    """True when a stored cell exists and was made with the same parameters."""
    if not path.is_file():
        return False
    stored = pd.read_parquet(path, columns=["params_hash"])
    return len(stored) > 0 and bool((stored.params_hash == phash).all())


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
             reference: dict[str, dict] | None) -> pd.DataFrame:
    """Evaluate one family's items on a loaded rung; one row per item with provenance."""
    rows = []
    for item in tqdm(pf.items, desc=f"{provenance['rung']} {pf.family}", unit="item", leave=False):
        engine.answer_logprobs = None
        res = evaluate_item(engine, item, variant)
        ref = None if reference is None else reference.get(item["item_id"])
        kl, same, ids, lps = _answer_shift(engine.answer_logprobs, ref)
        if reference is not None and ref is None:
            kl, same = np.nan, np.nan
        rows.append({**res._asdict(), "answer_kl": kl, "answer_same_top": same,
                     "answer_top_ids": ids, "answer_top_lp": lps})
    df = pd.DataFrame(rows, columns=[*ItemResult._fields, "answer_kl", "answer_same_top",
                                     "answer_top_ids", "answer_top_lp"])
    for key, value in provenance.items():
        df[key] = value
    df["probe_file_sha256"] = pf.sha256
    return df


def _reference_answers(profile: str, model: str, family: str) -> dict[str, dict] | None:
    path = cell_path(profile, model, "F16", family)
    if not path.is_file():
        return None
    ref = pd.read_parquet(path, columns=["item_id", "answer_top_ids", "answer_top_lp"])
    return {r.item_id: {"ids": list(r.answer_top_ids), "lp": list(r.answer_top_lp)}
            for r in ref.itertuples() if len(r.answer_top_ids)}


class CellRun(NamedTuple):
    """Result of :func:`evaluate_cell`."""

    path: Path  # the cell's parquet file
    ran: bool  # False when a stored cell with the same params_hash was reused
    load_s: float  # seconds spent loading the rung for this cell; nan if none was loaded here
    peak_rss_bytes: int  # peak RSS of the process that ran the cell; 0 when reused


class LazyEngine:
    """A rung loaded on first use, so a fully resumed rung loads nothing."""

    def __init__(self, profile: Profile, file: str | Path) -> None:
        self.profile, self.file, self.engine, self.load_s = profile, file, None, float("nan")

    def get(self) -> Engine:
        """The loaded engine (loading it now if needed)."""
        if self.engine is None:
            self.engine = open_engine(self.profile, self.file)
            self.load_s = self.engine.load_s
        return self.engine

    def close(self) -> None:
        """Free the model if it was loaded."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def plan_cell(profile: Profile, model: str, rung: str, family: str, *, variant: int = 0,
              keep: Collection[str] | None = None) -> tuple[probes.ProbeFile, Path, str]:
    """A cell's items (after the ``keep`` filter), file and params hash; nothing is run."""
    row = rung_row(profile, model, rung)
    pf = probes.load_family(family, n=profile.items_for(model, family))
    if keep is not None:
        keep = set(keep)
        pf = pf._replace(items=[it for it in pf.items if it["item_id"] in keep])
    return pf, cell_path(profile.name, model, rung, family, variant), cell_hash(
        profile, row.sha256, pf, variant)


def evaluate_cell(profile: Profile, model: str, rung: str, family: str, *, variant: int = 0,
                  keep: Collection[str] | None = None,
                  engine: LazyEngine | None = None) -> CellRun:
    """Run (or resume) one model × rung × family cell and write it atomically.

    Parameters
    ----------
    profile : Profile
    model, rung, family : str
    variant : {0, 1}, default 0
        Prompt variant (1 only for calibration).
    keep : collection of str, optional
        Evaluate only these item ids of the family (calibration's second pass).
    engine : LazyEngine, optional
        A rung already (or lazily) loaded by the caller and left open; when None the cell
        loads the rung itself, only if the cell is not done, and closes it afterwards.

    Returns
    -------
    CellRun
        The cell's path, whether it ran, the load time and the process's peak RSS.

    Notes
    -----
    A cell is independent of every other cell of its rung: this is the unit that
    :mod:`gguf_fragility.cluster` sends to Dask workers. A non-reference rung reads the
    F16 cell of the same family (answer-position KL), so F16 must be swept first.
    """
    pf, path, phash = plan_cell(profile, model, rung, family, variant=variant, keep=keep)
    if is_done(path, phash):
        return CellRun(path, False, float("nan"), 0)
    row = rung_row(profile, model, rung)
    lazy = engine or LazyEngine(profile, row.file)
    load_before = lazy.engine is not None
    try:
        eng = lazy.get() if pf.items else None  # an empty cell needs no model
        ref = None if rung == "F16" else _reference_answers(profile.name, model, family)
        df = run_cell(eng, pf, variant=variant, reference=ref,
                      provenance={**_provenance(profile, model, rung, row), "params_hash": phash})
        write_table_atomic(df, path)
    finally:
        if engine is None:
            lazy.close()
    load_s = lazy.load_s if eng is not None and not load_before else float("nan")
    return CellRun(path, True, load_s, peak_rss_bytes())


def _provenance(profile: Profile, model: str, rung: str, row: pd.Series) -> dict:
    """Columns stamped on every row of a cell (llama.cpp facts of the process that ran it)."""
    return {"model": model, "rung": rung, "quant_type": rung, "model_sha256": row.sha256,
            "bpw": float(row.bpw), "code_version": code_version(), "profile": profile.name,
            **{f"llama_{k}": v for k, v in system_info().items()}}


def evaluate_rung(profile: Profile, model: str, rung: str, *, variant: int = 0,
                  items_filter: dict[str, set[str]] | None = None,
                  usable: dict[str, bool] | None = None) -> pd.DataFrame:
    """Run (or resume) every family cell of one rung and return all its rows.

    Parameters
    ----------
    variant : {0, 1}
        Prompt variant (1 only for calibration).
    items_filter : dict family -> item ids, optional
        Evaluate only these items of each family (calibration's second pass).
    usable : dict item_id -> bool, optional
        Calibration verdicts, copied onto each row.

    Notes
    -----
    With ``profile.scheduler`` None the cells run here, one after another, on one loaded
    rung; otherwise they are Dask tasks (see :func:`gguf_fragility.cluster.run_cells`).
    Either way the cells are the same files, so the rows do not depend on the scheduler.
    """
    from .cluster import Cell, run_cells  # late: cluster imports this module

    row = rung_row(profile, model, rung)
    cells = [Cell(model, rung, family, variant,
                  None if items_filter is None else frozenset(items_filter.get(family, ())))
             for family in families_of(profile, model)]
    runs = run_cells(profile, cells)
    frames = [pd.read_parquet(r.path) for r in runs]
    ran = [r for r in runs if r.ran]
    if ran and variant == 0:
        loads = [r.load_s for r in ran if not np.isnan(r.load_s)]
        _write_cost(profile, model, rung, row, float(np.median(loads)) if loads else np.nan,
                    max(r.peak_rss_bytes for r in ran), pd.concat(frames))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if usable is not None and not out.empty:
        out["usable"] = out.item_id.map(usable).fillna(False).astype(bool)
    return out


def _write_cost(profile: Profile, model: str, rung: str, row: pd.Series, load_s: float,
                peak_rss: int, rows: pd.DataFrame) -> None:
    """Cost figures of a rung measured where its cells really ran.

    Under a Dask scheduler the figures come from workers that may share the machine's
    cores, so tokens/s are lower than a serial run's; ``scheduler`` records which it was.
    """
    gen = rows[rows["mode"] == "generate"]
    q = gen.ttft_s.quantile([0.25, 0.5, 0.75]) if len(gen) else pd.Series([np.nan] * 3)
    write_json_atomic(paths.sweep_dir(profile.name) / model / rung / "_cost.json", {
        "model": model, "rung": rung, "file_size_bytes": int(row.file_size_bytes),
        "peak_rss_bytes": int(peak_rss), "load_s": load_s,
        "prompt_tps": float(gen.prompt_tps.median()), "gen_tps": float(gen.gen_tps.median()),
        "ttft_s_median": float(q.iloc[1]), "ttft_s_q25": float(q.iloc[0]),
        "ttft_s_q75": float(q.iloc[2]), "n_generations": len(gen),
        "scheduler": profile.scheduler or "in-process"})


def load_items(profile: str, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Every stored sweep row of a profile, with calibration's item ``usable`` flag and its
    family ``measurable`` gate joined (both False where calibration has not run)."""
    frames = []
    for path in sorted(paths.sweep_dir(profile).glob("*/*/*.parquet")):
        model = path.parts[-3]
        if models is None or model in models:
            frames.append(pd.read_parquet(path))
    if not frames:
        raise FileNotFoundError(f"no sweep cells under {paths.sweep_dir(profile)}; run 04_sweep")
    items = pd.concat(frames, ignore_index=True)
    usable = []
    for model in items.model.unique():
        cal = paths.calibration_dir(profile) / f"{model}_items.parquet"
        if cal.is_file():
            usable.append(pd.read_parquet(cal, columns=["model", "item_id", "usable"]))
    if usable:
        items = items.merge(pd.concat(usable), on=["model", "item_id"], how="left")
        items["usable"] = items.usable.fillna(False).astype(bool)
    else:
        items["usable"] = False
    return items.merge(load_measurable(profile, items.model.unique()), on=["model", "family"],
                       how="left").assign(measurable=lambda d: d.measurable.fillna(False)
                                          .astype(bool))


def load_measurable(profile: str, models: Sequence[str]) -> pd.DataFrame:
    """Calibration's gate per model × family: ``model, family, measurable`` (see 03_calibrate)."""
    frames = [pd.read_csv(f, usecols=["model", "family", "measurable"])
              for f in (paths.calibration_dir(profile) / f"{m}_report.csv" for m in models)
              if f.is_file()]
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=["model", "family", "measurable"]))


def _load_json_rows(profile: str, name: str) -> pd.DataFrame:
    rows = [json.loads(p.read_text()) for p in sorted(paths.sweep_dir(profile).glob(f"*/*/{name}"))]
    return pd.DataFrame(rows)


def load_costs(profile: str) -> pd.DataFrame:
    """Per model × rung: file size, peak RSS, tokens/s, time to first token."""
    return _load_json_rows(profile, "_cost.json")


def load_shift(profile: str) -> pd.DataFrame:
    """Per model × rung: KL divergence statistics on the text sample."""
    return _load_json_rows(profile, "_shift.json")


def regrade(profile: str) -> pd.DataFrame:
    """Re-score every stored cell from its raw outputs with the current scorers (no model run).

    Returns one row per cell: how many items changed verdict.
    """
    items = {}
    summary = []
    for path in sorted(paths.sweep_dir(profile).glob("*/*/*.parquet")):
        df = pd.read_parquet(path)
        family = path.stem
        if family not in items:
            items[family] = {it["item_id"]: it for it in probes.load_family(family).items}
        new = [regrade_result(r, items[family][r["item_id"]]) for r in df.to_dict("records")]
        before = df.correct.copy()
        df["score"] = [s.score for s in new]
        df["correct"] = [bool(s.correct) for s in new]
        df["extracted"] = [s.extracted for s in new]
        df["scorer"] = [items[family][i]["scorer"] for i in df.item_id]
        write_table_atomic(df, path)
        summary.append({"cell": str(path.relative_to(paths.sweep_dir(profile))),
                        "n": len(df), "changed": int((before != df.correct).sum())})
    return pd.DataFrame(summary)


def gate(profile: str, model: str) -> None:
    """Refuse to sweep a model whose calibration did not pass, repeating calibration's message."""
    path = paths.calibration_dir(profile) / f"{model}.json"
    if not path.is_file():
        raise RuntimeError(f"{model} has no calibration in profile {profile!r}; run 03_calibrate first")
    record = json.loads(path.read_text())
    if not record["gate_passed"]:
        raise RuntimeError(record["message"])


def measure_shift(profile: Profile, model: str, rung: str) -> dict:
    """KL divergence of a rung against the stored reference on the text sample (cached)."""
    root = paths.sweep_dir(profile.name) / model
    ref_path = root / "_reference_topk.npz"
    if not ref_path.is_file():
        raise FileNotFoundError(f"{ref_path} is missing; run 03_calibrate for {model} first")
    row = rung_row(profile, model, rung)
    out = root / rung / "_shift.json"
    key = params_hash({"rung_sha": row.sha256, "ref": ref_path.stat().st_size,
                       "passages": profile.shift_passages, "tokens": profile.shift_tokens,
                       "k": profile.shift_top_k, "engine": as_dict(profile)["engine"]})
    if out.is_file() and json.loads(out.read_text()).get("params_hash") == key:
        return json.loads(out.read_text())
    engine = open_engine(profile, row.file)
    windows = sample_tokens(engine, profile.shift_passages, profile.shift_tokens)
    result = {"model": model, "rung": rung, "bpw": float(row.bpw), "params_hash": key,
              **rung_shift(engine, windows, load_reference(ref_path))}
    engine.close()
    write_json_atomic(out, result)
    return result


def sweep_rung(profile: Profile, model: str, rung: str) -> pd.DataFrame:
    """Notebook 04's one call: gate, evaluate every family cell, measure the KL shift."""
    gate(profile.name, model)
    cal = pd.read_parquet(paths.calibration_dir(profile.name) / f"{model}_items.parquet")
    rows = evaluate_rung(profile, model, rung, usable=dict(zip(cal.item_id, cal.usable, strict=True)))
    measure_shift(profile, model, rung)
    return rows
