"""Write imported lm-eval runs into a profile's outputs: cells, ladder, calibration, manifest.

    from gguf_fragility.interop.importer import import_lm_eval
    import_lm_eval(layout, "my-model", "runs/F16", {"Q2_K": "runs/Q2_K"})

The statistics chapters (05-08) then read the imported run exactly as a swept one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from gguf_fragility.artifacts import load_items
from gguf_fragility.engine.ftypes import ftype
from gguf_fragility.engine.gguf import open_gguf, tensor_census
from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE
from gguf_fragility.interop.lmeval import (
    LADDER_NAME,
    NO_MARGIN,
    ImportRefused,
    LmEvalRun,
    cell_rows,
    check_pairing,
    read_run,
)
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.store import (
    code_version,
    params_hash,
    sha256_file,
    write_json_atomic,
    write_table_atomic,
)


class Imported(NamedTuple):
    """Result of :func:`import_lm_eval`."""

    cells: pd.DataFrame  # one row per rung × family: rung, family, n, n_correct, path
    manifest: Path  # imported.json: where every rung came from


def nominal_bpw(rung: str) -> float:
    """Bits per weight of a rung's own ggml type (no file: K-quant fallbacks not counted)."""
    ftype(rung)  # refuses names llama.cpp does not know
    for name in (rung, rung.rsplit("_", 1)[0]):
        if name in GGMLQuantizationType.__members__:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
            return 8.0 * size / block
    raise ImportRefused(f"rung {rung!r}: no ggml type to read its bits per weight from; give "
                        f"--gguf {rung}=FILE")


def _ladder_row(model: str, rung: str, folder: Path, gguf: Path | None) -> dict:
    """The ladder-manifest row of one imported rung (real bpw when its GGUF is given)."""
    row = {"model": model, "rung": rung, "is_reference": rung == REFERENCE, "file": str(folder),
           "sha256": "", "file_size_bytes": math.nan, "n_params": math.nan,
           "bpw": nominal_bpw(rung), "bpw_source": "nominal (quant type; no GGUF given)",
           "reference_kind": LADDER_NAME, "imported": True}
    if gguf is not None:
        census = tensor_census(open_gguf(gguf))
        row.update(sha256=sha256_file(gguf), file_size_bytes=gguf.stat().st_size,
                   n_params=census.n_params, bpw=census.bpw, bpw_source=f"GGUF {gguf}")
    return row


def _refuse_own_run(layout: RunLayout, model: str) -> None:
    """Never overwrite a model this project swept itself."""
    lad = layout.ladder_csv(model)
    if lad.is_file() and "imported" not in pd.read_csv(lad, nrows=1).columns:
        raise ImportRefused(f"profile {layout.profile!r} already holds a run of {model!r} made by "
                            f"this project ({lad.parent}); import under another --model key or "
                            "--profile")


def import_lm_eval(layout: RunLayout, model: str, reference: str | Path,
                   rungs: Mapping[str, str | Path], *, tasks: Mapping[str, str] | None = None,
                   filters: Mapping[str, str] | None = None,
                   ggufs: Mapping[str, str | Path] | None = None) -> Imported:
    """
    Import lm-eval 0.4.x ``--log_samples`` runs of one model as the profile's cells.

    Parameters
    ----------
    layout : RunLayout
        Where the cells go (``layout.sweep_dir/<model>/<rung>/<family>.parquet``).
    model : str
        The model key the chapters show.
    reference : str or Path
        lm-eval output folder of the reference (stored as rung ``F16``).
    rungs : mapping of str to path
        Quant type spelled as llama.cpp does (``Q4_K_M``) -> its lm-eval output folder.
    tasks : mapping of str to str, optional
        lm-eval task -> family name; default every task of the reference, named as the task.
    filters : mapping of str to str, optional
        lm-eval task -> filter whose answers are compared; default the reference's first.
    ggufs : mapping of str to path, optional
        Rung -> its GGUF file, for real bits per weight and sha256 (else the nominal bpw).

    Returns
    -------
    Imported
        Per rung × family item and correct counts and the manifest's path.

    Raises
    ------
    ImportRefused
        Anything :func:`~gguf_fragility.interop.lmeval.read_run` or
        :func:`~gguf_fragility.interop.lmeval.check_pairing` refuses; a task missing at a
        rung; a rung named ``F16``; a model this project swept itself.

    Notes
    -----
    Nothing is written until every rung has been read and checked. Correctness is lm-eval's
    own per-item metric (``acc`` or ``exact_match``); fidelity compares the argmax choice or
    the filtered answer with the reference's; the margin lens uses the raw choice
    log-likelihoods (gold minus best other; ``acc_norm`` divides by the choice's byte
    length and is kept beside it) and is not available for generate_until tasks.
    """
    if REFERENCE in rungs:
        raise ImportRefused(f"--rung {REFERENCE}: the reference is given by --reference")
    ggufs = {k: Path(v) for k, v in (ggufs or {}).items()}
    odd = sorted(set(ggufs) - set(rungs) - {REFERENCE})
    if odd:
        raise ImportRefused(f"--gguf {odd[0]}: no such rung; rungs are {REFERENCE}, "
                            f"{', '.join(rungs)}")
    _refuse_own_run(layout, model)
    runs: dict[str, LmEvalRun] = {REFERENCE: read_run(reference)}
    runs.update({r: read_run(d) for r, d in rungs.items()})
    ref = runs[REFERENCE]
    tasks = dict(tasks or {t: t for t in ref.tasks})
    for task in tasks:
        if task not in ref.tasks:
            raise ImportRefused(f"task {task}: not in the reference {ref.folder} (it has "
                                f"{', '.join(sorted(ref.tasks))})")
    chosen = {t: (filters or {}).get(t) or str(ref.tasks[t].samples["filter"].iloc[0])
              for t in tasks}
    for rung, run in runs.items():
        for task in tasks:
            if task not in run.tasks:
                raise ImportRefused(f"task {task}: rung {rung} has no samples_{task}_*.jsonl in "
                                    f"{run.folder}; run that task at every rung")
            check_pairing(task, chosen[task], ref.tasks[task], run.tasks[task], rung)
    ladder = pd.DataFrame([_ladder_row(model, r, run.folder, ggufs.get(r))
                           for r, run in runs.items() if r != NOISE_FLOOR])
    out = []
    for rung, run in runs.items():
        lrow = ladder.set_index("rung").loc[REFERENCE if rung == NOISE_FLOOR else rung]
        cfg = run.results.get("config", {})
        prov = {"model": model, "rung": rung, "quant_type": rung, "model_sha256": lrow.sha256,
                "bpw": float(lrow.bpw), "profile": layout.profile, "code_version": code_version(),
                "lm_eval_version": str(run.results.get("lm_eval_version")),
                "lmeval_model": str(cfg.get("model", "")),
                "lmeval_model_args": str(cfg.get("model_args", "")),
                "lmeval_folder": str(run.folder)}
        for task, family in tasks.items():
            t = run.tasks[task]
            df = cell_rows(t, chosen[task], prov).assign(family=family)
            df["params_hash"] = params_hash({"samples": df["lmeval_samples_sha256"].iloc[0],
                                             "filter": chosen[task], "family": family})
            path = layout.cell(model, rung, family)
            write_table_atomic(df, path)
            out.append({"rung": rung, "family": family, "task": task, "n": len(df),
                        "n_correct": int(df["correct"].sum()), "path": str(path)})
    write_table_atomic(ladder, layout.ladder_csv(model))
    report = pd.DataFrame({"model": model, "family": list(tasks.values()), "measurable": True,
                           "reason": "imported from lm-eval: no calibration run"})
    write_table_atomic(report, layout.calibration_report(model))
    manifest = layout.root / "imported" / f"{model}.json"
    write_json_atomic(manifest, {
        "model": model, "tasks": tasks, "filters": chosen,
        "rungs": {r: {"folder": str(run.folder), "lm_eval_version": run.results.get(
            "lm_eval_version"), "config": run.results.get("config", {}),
            "task_hashes": {t: run.tasks[t].task_hash for t in tasks},
            "task_versions": {t: run.tasks[t].version for t in tasks},
            "bpw": float(ladder.set_index("rung").bpw[r if r != NOISE_FLOOR else REFERENCE])}
            for r, run in runs.items()}})
    return Imported(pd.DataFrame(out), manifest)


class ImportedTables(NamedTuple):
    """Result of :func:`imported_tables`."""

    rungs: pd.DataFrame  # model, rung, folder, lm_eval_version, lmeval_model, model_args, bpw
    tasks: pd.DataFrame  # model, task, family, filter, output type, n items, margin lens


def imported_tables(layout: RunLayout) -> ImportedTables:
    """Where every imported rung came from and what each imported family can show (empty
    tables when nothing was imported); written to ``tables/imported_*.csv``."""
    rungs, tasks = [], []
    for path in sorted((layout.root / "imported").glob("*.json")):
        m = json.loads(path.read_text())
        for rung, r in m["rungs"].items():
            rungs.append({"model": m["model"], "rung": rung, "folder": r["folder"],
                          "lm_eval_version": r["lm_eval_version"],
                          "lmeval_model": r["config"].get("model", ""),
                          "model_args": r["config"].get("model_args", ""), "bpw": r["bpw"]})
        items = load_items(layout, [m["model"]])
        for task, family in m["tasks"].items():
            cell = items[(items.family == family) & (items.rung == REFERENCE)]
            gen = bool(cell["mode"].eq("generate").any())
            tasks.append({"model": m["model"], "task": task, "family": family,
                          "filter": m["filters"][task], "n_items": len(cell),
                          "metric": str(cell["lmeval_metric"].iloc[0]) if len(cell) else "",
                          "margin_lens": NO_MARGIN if gen else "choice log-likelihoods"})
    out = ImportedTables(pd.DataFrame(rungs, columns=["model", "rung", "folder", "lm_eval_version",
                                                      "lmeval_model", "model_args", "bpw"]),
                         pd.DataFrame(tasks, columns=["model", "task", "family", "filter",
                                                      "n_items", "metric", "margin_lens"]))
    write_table_atomic(out.rungs, layout.table(Table.IMPORTED_RUNGS))
    write_table_atomic(out.tasks, layout.table(Table.IMPORTED_TASKS))
    return out
