"""Reading what the chapters stored: ladder manifests, calibration, sweep cells, costs, shifts.

The one reader that ``run`` (a sweep reads chapter 1's manifest and chapter 3's verdicts) and
``stats`` (chapters 5–8 read everything) share, so neither imports the other. Pure pandas
over a :class:`~gguf_fragility.layout.RunLayout`: nothing here loads a model, so the
statistics chapters run where llama.cpp is not installed.

Every stored result with a content digest is checked on every read (:func:`store.read_table_checked`,
:func:`store.read_result_json`): one whose values no longer hash as written is named in one
line and refused with what to run to rebuild it, never used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from gguf_fragility.layout import RunLayout
from gguf_fragility.store import read_result_json, read_table_checked

# llama.cpp's buffers at load, as a rung's _cost.json records them (bytes)
MEMORY_COLUMNS = ("model_buffer_bytes", "kv_buffer_bytes", "compute_buffer_bytes",
                  "planned_memory_bytes")


class Results(NamedTuple):
    """Inputs to the statistics chapters, as the sweep writes them."""

    items: pd.DataFrame
    ladder: pd.DataFrame
    costs: pd.DataFrame | None  # None when no rung has a _cost.json
    shift: pd.DataFrame | None  # None when no rung has a _shift.json


def load_results(run: RunLayout) -> Results:
    """
    Read the sweep cells, ladders and (if present) cost and shift records of a run.

    Parameters
    ----------
    run : RunLayout
        The sweep cells with calibration's usable flag (:func:`load_items`), the ladder
        manifests of the models in them (:func:`read_ladder`), and the per-rung
        ``_cost.json`` / ``_shift.json`` records (:func:`load_costs`, :func:`load_shift`).

    Returns
    -------
    Results
        ``costs``/``shift`` are None when no rung has measured them.

    Raises
    ------
    FileNotFoundError
        If there are no sweep cells, or a model in them has no ladder manifest.
    ValueError
        If a stored cell, calibration or record no longer hashes as written.
    """
    items = load_items(run)
    ladder = read_ladder(run, sorted(items["model"].astype(str).unique()))
    costs, shift = load_costs(run), load_shift(run)
    return Results(items, ladder, costs if len(costs) else None, shift if len(shift) else None)


def _checked(path: Path, rebuild: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A stored parquet table that still hashes as written (else one line, then ValueError)."""
    stored = read_table_checked(path)
    if stored is None:
        raise ValueError(f"{path} cannot be used (see the line above); {rebuild} to rebuild it")
    return stored.frame if columns is None else stored.frame[list(columns)]


def read_cell(path: Path) -> pd.DataFrame:
    """One stored sweep cell (``sweep/<model>/<rung>/<family>.parquet``), digest checked."""
    return _checked(path, f"run 04_sweep for {path.parts[-3]} {path.parts[-2]}")


def read_calibration_items(run: RunLayout, model: str) -> pd.DataFrame:
    """Calibration's per-item verdicts of one model (``usable``), digest checked.

    Raises
    ------
    FileNotFoundError
        When the model has no calibration.
    """
    path = run.calibration_items(model)
    if not path.is_file():
        raise FileNotFoundError(f"{model} has no calibration in profile {run.profile!r} "
                                f"({path}); run 03_calibrate first")
    return _checked(path, f"run 03_calibrate for {model}")


def load_items(run: RunLayout, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Every stored sweep row of a run, with calibration's item ``usable`` flag and its
    family ``measurable`` gate joined (both False where calibration has not run)."""
    cells = [p for p in run.cells() if models is None or p.parts[-3] in models]
    if not cells:
        raise FileNotFoundError(f"no sweep cells under {run.sweep_dir}; run 04_sweep")
    items = pd.concat([read_cell(p) for p in cells], ignore_index=True)
    usable = [read_calibration_items(run, m)[["model", "item_id", "usable"]]
              for m in items.model.unique() if run.calibration_items(m).is_file()]
    if usable:
        items = items.merge(pd.concat(usable), on=["model", "item_id"], how="left")
        items["usable"] = items.usable.fillna(False).astype(bool)
    else:
        items["usable"] = False
    return items.merge(load_measurable(run, items.model.unique()), on=["model", "family"],
                       how="left").assign(measurable=lambda d: d.measurable.fillna(False)
                                          .astype(bool))


def load_measurable(run: RunLayout, models: Sequence[str]) -> pd.DataFrame:
    """Calibration's gate per model × family: ``model, family, measurable`` (see 03_calibrate)."""
    frames = [pd.read_csv(f, usecols=["model", "family", "measurable"])
              for f in (run.calibration_report(m) for m in models)
              if f.is_file()]
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=["model", "family", "measurable"]))


def read_record(path: Path) -> dict:
    """A rung's ``_cost.json`` or ``_shift.json``, digest checked.

    Raises
    ------
    ValueError
        When it is absent, or no longer hashes as written (named in one line first).
    """
    record = read_result_json(path)
    if record is None:
        raise ValueError(f"{path} cannot be used (missing, or see the line above); run "
                         f"04_sweep for {path.parts[-3]} {path.parts[-2]} to rebuild it")
    return record


def load_costs(run: RunLayout) -> pd.DataFrame:
    """Per model × rung: file size, planned memory, peak RSS, tokens/s, time to first token."""
    return pd.DataFrame([read_record(p) for p in run.rung_jsons("_cost.json")])


def load_shift(run: RunLayout) -> pd.DataFrame:
    """Per model × rung: KL divergence statistics on the text sample."""
    return pd.DataFrame([read_record(p) for p in run.rung_jsons("_shift.json")])


def read_ladder(run: RunLayout, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Ladder manifests (``ladder.csv``) of the given models, or of every model in the run.

    Raises
    ------
    FileNotFoundError
        If a requested model (or, with ``models`` None, every model) has no manifest.
    """
    files = ([run.ladder_csv(m) for m in models] if models is not None else run.ladder_csvs())
    missing = [f for f in files if not f.is_file()]
    if missing or not files:
        raise FileNotFoundError(f"no ladder manifest {missing[0] if missing else run.root / 'ladder'}"
                                "; run notebook 01_ladder first")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


__all__ = ["MEMORY_COLUMNS", "Results", "load_costs", "load_items", "load_measurable",
           "load_results", "load_shift", "read_calibration_items", "read_cell", "read_ladder",
           "read_record"]
