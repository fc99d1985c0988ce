"""What the statistics read: the sweep's stored cells, calibration's gates, ladders, costs.

Pure pandas over a :class:`~gguf_fragility.layout.RunLayout`; nothing here loads a model,
so the statistics chapter runs where llama.cpp is not installed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

import pandas as pd

from gguf_fragility.layout import RunLayout


class Results(NamedTuple):
    """Inputs to :func:`stats_tables`, as the sweep writes them."""

    items: pd.DataFrame
    ladder: pd.DataFrame
    costs: pd.DataFrame | None  # None when no rung has a _cost.json
    shift: pd.DataFrame | None  # None when no rung has a _shift.json


def load_results(run: RunLayout) -> Results:
    """
    Read the sweep cells, ladders and (if present) cost and shift tables of a profile.

    Parameters
    ----------
    profile : str
        Run profile; files come from :mod:`gguf_fragility.paths`:
        the sweep cells with calibration's usable flag (:func:`gguf_fragility.run.sweep.load_items`),
        ``ladder_dir(profile, model)/ladder.csv``, and the per-rung ``_cost.json`` /
        ``_shift.json`` files (:func:`~gguf_fragility.run.sweep.load_costs`, ``load_shift``).

    Returns
    -------
    Results
        ``costs``/``shift`` are None when no rung has measured them.

    Raises
    ------
    FileNotFoundError
        If there are no sweep cells, or a model in them has no ladder manifest.
    """
    items = load_items(run)  # every cell, with calibration's usable flag joined
    ladder = read_ladder(run, sorted(items["model"].astype(str).unique()))
    costs, shift = load_costs(run), load_shift(run)
    return Results(items, ladder, costs if len(costs) else None, shift if len(shift) else None)


def load_items(run: RunLayout, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Every stored sweep row of a profile, with calibration's item ``usable`` flag and its
    family ``measurable`` gate joined (both False where calibration has not run)."""
    frames = []
    for path in run.cells():
        model = path.parts[-3]
        if models is None or model in models:
            frames.append(pd.read_parquet(path))
    if not frames:
        raise FileNotFoundError(f"no sweep cells under {run.sweep_dir}; run 04_sweep")
    items = pd.concat(frames, ignore_index=True)
    usable = []
    for model in items.model.unique():
        cal = run.calibration_items(model)
        if cal.is_file():
            usable.append(pd.read_parquet(cal, columns=["model", "item_id", "usable"]))
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


def _load_json_rows(run: RunLayout, name: str) -> pd.DataFrame:
    rows = [json.loads(p.read_text()) for p in run.rung_jsons(name)]
    return pd.DataFrame(rows)


def load_costs(run: RunLayout) -> pd.DataFrame:
    """Per model × rung: file size, peak RSS, tokens/s, time to first token."""
    return _load_json_rows(run, "_cost.json")


def load_shift(run: RunLayout) -> pd.DataFrame:
    """Per model × rung: KL divergence statistics on the text sample."""
    return _load_json_rows(run, "_shift.json")




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
