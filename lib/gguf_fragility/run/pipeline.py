"""The whole autopsy as papermill executions of the chapter notebooks.

``gguf-fragility run --profile default`` runs 01 per model, 02 once, 03 per model,
04 per model × rung, 05 and 06 once, each with injected parameters, and saves the
executed notebooks under ``outputs/<profile>/notebooks/``. Every notebook resumes from
what earlier runs stored, so a rerun after a kill repeats no finished work.

One run at a time writes an outputs folder: :func:`run_lock` takes ``outputs/<profile>/run.lock``
and a second run on the same folder refuses with the holder's PID and start time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import papermill as pm
from tqdm import tqdm

from gguf_fragility import paths
from gguf_fragility.layout import RunLayout
from gguf_fragility.profile import Profile, ProfileError, load_profile
from gguf_fragility.run.sweep import gate
from gguf_fragility.store import hold_lock, write_table_atomic


class Stage(NamedTuple):
    """A chapter and how often it runs."""

    name: str
    notebook: str  # file stem in notebooks/
    per: str  # "once" | "model" | "rung"


STAGES = (
    Stage("ladder", "01_ladder", "model"),
    Stage("probes", "02_probes", "once"),
    Stage("calibrate", "03_calibrate", "model"),
    Stage("sweep", "04_sweep", "rung"),
    Stage("stats", "05_stats", "once"),
    Stage("transfer", "06_transfer", "once"),
)


class Job(NamedTuple):
    """One papermill execution."""

    stage: str
    notebook: Path
    output: Path
    parameters: dict


def plan(profile: Profile, stages: list[str] | None = None) -> list[Job]:
    """Every notebook execution of a profile, in run order."""
    wanted = set(stages or [s.name for s in STAGES])
    unknown = wanted - {s.name for s in STAGES}
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are "
                         f"{', '.join(s.name for s in STAGES)}")
    jobs = []
    out = profile.layout.executed_dir
    for stage in STAGES:
        if stage.name not in wanted:
            continue
        src = paths.NOTEBOOKS / f"{stage.notebook}.ipynb"
        base = {"profile": profile.name}
        if stage.per == "once":
            jobs.append(Job(stage.name, src, out / f"{stage.notebook}.ipynb", base))
        for model, run in profile.models.items() if stage.per != "once" else ():
            if stage.per == "model":
                jobs.append(Job(stage.name, src, out / f"{stage.notebook}__{model}.ipynb",
                                {**base, "model": model}))
                continue
            for rung in run.rungs:
                jobs.append(Job(stage.name, src, out / f"{stage.notebook}__{model}__{rung}.ipynb",
                                {**base, "model": model, "rung": rung}))
    return jobs


def check_parameters(job: Job) -> None:
    """Fail before running when a notebook does not declare an injected parameter."""
    declared = pm.inspect_notebook(str(job.notebook))
    unknown = sorted(set(job.parameters) - set(declared))
    if unknown:
        raise ProfileError(f"{job.notebook.name} has no parameter(s) {unknown}; "
                           f"its parameters are {sorted(declared)}")


def execute(job: Job) -> float:
    """Run one notebook with papermill; returns wall seconds."""
    job.output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pm.execute_notebook(str(job.notebook), str(job.output), parameters=job.parameters,
                        kernel_name="python3", progress_bar=False, cwd=str(paths.NOTEBOOKS))
    return time.perf_counter() - t0


def _gate_refusal(run: RunLayout, job: Job) -> str:
    """Calibration's refusal message when a sweep job's model failed its gate, else ''."""
    if job.stage != "sweep":
        return ""
    try:
        gate(run, job.parameters["model"])
    except RuntimeError as exc:
        return str(exc)
    return ""


@contextlib.contextmanager
def run_lock(run: RunLayout) -> Iterator[Path]:
    """Hold the run's lock (``run.lock``) for a ``with`` block; re-entrant in one process.

    Raises
    ------
    gguf_fragility.store.LockHeld
        When another live process runs on the same outputs folder (PID and start time in
        the message). A lock left by a killed run is taken over (reported in one line).
    """
    with hold_lock(run.lock, f"outputs folder {run.root}") as path:
        yield path


def run(profile_name: str, stages: list[str] | None = None) -> pd.DataFrame:
    """Run a profile's notebooks in order; print and store the wall time of each stage.

    Returns
    -------
    DataFrame
        One row per executed notebook: stage, notebook, parameters, seconds.

    Raises
    ------
    gguf_fragility.store.LockHeld
        Another run is writing the same outputs folder; nothing was run.
    """
    profile = load_profile(profile_name)
    jobs = plan(profile, stages)
    for job in jobs:
        check_parameters(job)
    with run_lock(profile.layout):
        return _run_jobs(profile, jobs)


def _run_jobs(profile: Profile, jobs: list[Job]) -> pd.DataFrame:
    """Execute planned jobs in order (the caller holds the run's lock)."""
    rows = []
    bar = tqdm(jobs, desc=f"autopsy {profile.name}", unit="notebook")
    for job in bar:
        bar.set_postfix_str(job.output.stem)
        refusal = _gate_refusal(profile.layout, job)
        if refusal:
            print(f"skipping {job.output.name}: {refusal}")
            rows.append({"stage": job.stage, "notebook": job.output.name,
                         "parameters": str(job.parameters), "seconds": 0.0, "skipped": refusal})
            continue
        seconds = execute(job)
        rows.append({"stage": job.stage, "notebook": job.output.name,
                     "parameters": str(job.parameters), "seconds": round(seconds, 1), "skipped": ""})
    timings = pd.DataFrame(rows)
    if not timings.empty:
        write_table_atomic(timings, profile.layout.timings)
        per_stage = timings.groupby("stage", sort=False)["seconds"].sum()
        print("wall time per stage (s):")
        for stage, seconds in per_stage.items():
            print(f"  {stage:<10} {seconds:8.1f}")
        print(f"  {'total':<10} {per_stage.sum():8.1f}")
    return timings
