"""A rung's plan: the profile resolved once into what every cell of one rung needs.

:func:`plan_rung` reads the ladder manifest once, parses the rung once
(:func:`~gguf_fragility.profile.rung_spec`: floor and KV cache included), takes the
engine settings from the profile's engine section
(:meth:`~gguf_fragility.profile.EngineParams.settings`) and lists the rung's cells with
their items, files and params hashes. The executors (:mod:`gguf_fragility.run.cluster`)
receive plans, not profiles: a Dask task is the plan of one cell.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from gguf_fragility import probes
from gguf_fragility.artifacts import load_measurable, read_ladder
from gguf_fragility.engine.llama import SCORING_VERSION, Engine
from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE, RungSpec
from gguf_fragility.layout import RunLayout
from gguf_fragility.probes.scorers import ScoreSettings
from gguf_fragility.profile import Profile, rung_spec
from gguf_fragility.store import params_hash

ANSWER_TOP_K = 32  # reference log-probs kept per item at the answer position


class CellPlan(NamedTuple):
    """One model × rung × family cell of a :class:`RungPlan`; nothing is run."""

    family: str
    variant: int  # prompt variant (1 only for calibration)
    items: probes.ProbeFile  # the family's items (after a ``keep`` filter)
    path: Path  # the cell's parquet file
    params_hash: str  # everything that can change its rows (:func:`cell_hash`)


class RungPlan(NamedTuple):
    """Result of :func:`plan_rung`: everything the cells of one rung need, resolved."""

    model: str
    rung: str  # as the profile names it (the noise floor and KV-cache rungs included)
    spec: RungSpec  # the ladder rung whose file is loaded, and the KV cache
    row: pd.Series  # that rung's ladder-manifest row (file, sha256, bpw ...) plus ``kv_cache``
    engine: dict  # Engine keyword arguments (EngineParams.settings of the rung)
    run: RunLayout  # where the cells are written and the reference cells read
    scoring: ScoreSettings  # the scorers' settings (the profile's allow_unisolated_code)
    cells: tuple[CellPlan, ...] = ()

    def open(self) -> Engine:
        """Load the rung's file with its engine settings."""
        return Engine(self.row.file, **self.engine)


def families_of(profile: Profile, model: str) -> list[str]:
    """The model's families in this profile, or every family of the frozen battery."""
    return list(profile.families_for(model) or probes.FAMILIES)


def looked_rungs(profile: Profile, model: str) -> list[str]:
    """The rungs a budgeted sweep's looks steer: the reference, the floor (when swept) and every
    ladder rung (KV-cache rungs are compared with their controls in chapter 7 and keep
    ``n_items``)."""
    rungs = [r for r in profile.models[model].rungs if rung_spec(r).kv_cache is None]
    if profile.noise_floor_for(model):
        rungs.insert(rungs.index(REFERENCE) + 1, NOISE_FLOOR)
    return rungs


def looked_families(profile: Profile, model: str) -> list[str]:
    """The model's families a budgeted sweep's looks steer: those of the profile that
    calibration found measurable (others keep ``n_items``)."""
    m = load_measurable(profile.layout, [model])
    return sorted(set(m.family[m.measurable.astype(bool)]) & set(families_of(profile, model)))


def manifest_row(run: RunLayout, model: str, rung: str, spec: RungSpec) -> pd.Series:
    """The ladder-manifest row of the file a rung loads, plus its ``kv_cache`` type.

    The row's name is the ladder rung whose file is loaded (the floor's is F16, a KV-cache
    rung's its weights' rung).
    """
    ladder = read_ladder(run, [model]).set_index("rung")
    if spec.weights not in ladder.index:
        raise ValueError(f"rung {rung!r} is not in the {model} ladder of profile {run.profile!r} "
                         f"({', '.join(ladder.index)}); run notebook 01_ladder first")
    return pd.concat([ladder.loc[spec.weights], pd.Series({"kv_cache": spec.cache})]).rename(
        spec.weights)


def cell_hash(engine: dict, rung_sha: str, item_hashes: Sequence[str], variant: int) -> str:
    """Hash of everything that can change a cell's rows, its items' hashes in their order.

    A stored cell is checked against the hash of its *own* items (its rows' ``item_hash``),
    so a cell of the first k items of the pre-registered order is recognised as a prefix of
    a plan of n items (:func:`gguf_fragility.run.cells.stored_prefix`).
    """
    return params_hash({"engine": engine, "model_sha256": rung_sha,
                        "items": list(item_hashes), "variant": variant,
                        "answer_top_k": ANSWER_TOP_K, "scoring_version": SCORING_VERSION})


def plan_rung(profile: Profile, model: str, rung: str, *, variant: int = 0,
              families: Sequence[str] | None = None,
              keep: Mapping[str, Collection[str]] | None = None,
              n_items: Mapping[str, int] | None = None) -> RungPlan:
    """
    The plan of one rung of one model: its file, settings and cells.

    Parameters
    ----------
    profile : Profile
    model, rung : str
    variant : {0, 1}, default 0
        Prompt variant of every cell (1 only for calibration).
    families : sequence of str, optional
        The cells' families; default :func:`families_of`.
    keep : mapping family -> item ids, optional
        Plan only these items of each family (calibration's second pass).
    n_items : mapping family -> int, optional
        Items of these families (the first n of the pre-registered order), instead of the
        profile's (a budgeted sweep's looks: :mod:`gguf_fragility.run.looks`).

    Raises
    ------
    FileNotFoundError, ValueError
        When the model has no ladder manifest, or the rung is not in it.
    """
    spec = rung_spec(rung)
    run = profile.layout
    row = manifest_row(run, model, rung, spec)
    engine = profile.engine.settings(rung)
    cells = []
    for family in families_of(profile, model) if families is None else families:
        pf = probes.load_family(family, n=(n_items or {}).get(family)
                                or profile.items_for(model, family))
        if keep is not None:
            wanted = set(keep.get(family, ()))
            pf = pf._replace(items=[it for it in pf.items if it["item_id"] in wanted])
        cells.append(CellPlan(family, variant, pf, run.cell(model, rung, family, variant),
                              cell_hash(engine, row.sha256, [it["hash"] for it in pf.items],
                                        variant)))
    return RungPlan(model, rung, spec, row, engine, run,
                    ScoreSettings(allow_unisolated_code=profile.allow_unisolated_code),
                    tuple(cells))


__all__ = ["ANSWER_TOP_K", "CellPlan", "RungPlan", "cell_hash", "families_of", "manifest_row",
           "plan_rung"]
