"""The whole autopsy as papermill executions of the chapter notebooks.

``gguf-fragility run --profile default`` runs 01 per model, 02 for the profile's first
model, 03 per model, 04 per model × rung (KV-cache and lesion rungs included), 05, 06, 07
and 08 once, each with injected parameters, and saves the executed notebooks under
``outputs/<profile>/notebooks/``. Every notebook resumes from what earlier runs stored, so a
rerun after a kill repeats no finished work.

An error inside a chapter stops the run with :class:`ChapterError`: one line with the
exception's type and message and the path of the executed notebook, which holds the
traceback.

One run at a time writes an outputs folder: :func:`run_lock` takes ``outputs/<profile>/run.lock``
and a second run on the same folder refuses with the holder's PID and start time.

Rebuilt files, lock takeovers and skipped notebooks are events (:mod:`gguf_fragility.events`):
one line each in ``outputs/<profile>/events.log``; after each chapter the run prints the
events its kernel logged (whose cell outputs stay in the executed notebook).
A SIGTERM (:func:`stop_on_sigterm`) stops the run with :class:`Terminated`, naming the
notebook it stopped, after releasing the lock.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import papermill as pm
from jupyter_client.manager import AsyncKernelManager
from papermill.exceptions import PapermillExecutionError
from tqdm import tqdm

from gguf_fragility import events, paths
from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE
from gguf_fragility.errors import write_failure
from gguf_fragility.layout import RunLayout
from gguf_fragility.profile import Profile, ProfileError, load_profile, with_budget_minutes
from gguf_fragility.run.looks import Judge, run_looks
from gguf_fragility.run.sweep import gate
from gguf_fragility.store import hold_lock, write_table_atomic


class Stage(NamedTuple):
    """A chapter and how often it runs."""

    name: str
    notebook: str  # file stem in notebooks/
    per: str  # "once" | "first" (once, for the profile's first model) | "model" | "rung"


# 02_probes shows the battery through one model's tokenizer and chat template. It runs once,
# for the first model of the profile (the model it needs is always there, whatever the
# profile lists), not per model: its tables are model-independent, and a per-model run
# would add each extra model's F16 demo generations (minutes for a 1.5B model on 2 cores).
STAGES = (
    Stage("ladder", "01_ladder", "model"),
    Stage("probes", "02_probes", "first"),
    Stage("calibrate", "03_calibrate", "model"),
    Stage("sweep", "04_sweep", "rung"),
    Stage("stats", "05_stats", "once"),
    Stage("transfer", "06_transfer", "once"),
    Stage("axes", "07_axes", "once"),
    Stage("lesions", "08_lesions", "once"),
)


class ChapterError(RuntimeError):
    """A chapter notebook that raised: its one-line message and where the details are."""


class Terminated(Exception):
    """The run got SIGTERM; ``str()`` names what it was running (empty: between notebooks)."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` in the block, so ``with`` blocks (the run's lock)
    unwind and the user reads one line instead of a silent end."""

    def _raise(signum, frame):
        raise Terminated("")

    before = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class ChapterKernel(AsyncKernelManager):
    """The kernel of one chapter: local IPC sockets, and no interrupt when it is shut down.

    jupyter_client's default is TCP on localhost, for which ipykernel warns on every start
    that the traffic is not encrypted; a chapter's kernel is this machine's child, so its
    sockets are files next to its connection file (the private runtime folder) instead.
    A graceful shutdown first sends SIGINT, which an idle kernel still handling its last
    message logs as ``ERROR | KeyboardInterrupt caught in kernel`` on the terminal; a
    finished chapter has nothing to interrupt, so the shutdown request goes alone (a kernel
    that does not stop is still killed after ``shutdown_wait_time``).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(transport="ipc", **kwargs)

    async def _async_interrupt_kernel(self) -> None:
        if not self.shutting_down:
            await super()._async_interrupt_kernel()


class Job(NamedTuple):
    """One papermill execution."""

    stage: str
    notebook: Path
    output: Path
    parameters: dict


def left_out(stages: list[str] | None) -> list[str]:
    """The stages a ``--stages`` selection does not run, in run order (empty: all of them)."""
    return [s.name for s in STAGES if stages and s.name not in stages]


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
        elif stage.per == "first":
            first = next(iter(profile.models))
            jobs.append(Job(stage.name, src, out / f"{stage.notebook}.ipynb",
                            {**base, "model": first}))
        for model in profile.models if stage.per in ("model", "rung") else ():
            if stage.per == "model":
                jobs.append(Job(stage.name, src, out / f"{stage.notebook}__{model}.ipynb",
                                {**base, "model": model}))
                continue
            for rung in sweep_rungs(profile, model):
                jobs.append(Job(stage.name, src, out / f"{stage.notebook}__{model}__{rung}.ipynb",
                                {**base, "model": model, "rung": rung}))
    return jobs


def sweep_rungs(profile: Profile, model: str) -> list[str]:
    """The rungs chapter 4 sweeps for a model: the profile's, plus the noise floor right after
    the reference when ``noise_floor`` is on."""
    rungs = list(profile.models[model].rungs)
    if profile.noise_floor_for(model):
        rungs.insert(rungs.index(REFERENCE) + 1, NOISE_FLOOR)
    return rungs


def check_parameters(job: Job) -> None:
    """Fail before running when a notebook does not declare an injected parameter."""
    declared = pm.inspect_notebook(str(job.notebook))
    unknown = sorted(set(job.parameters) - set(declared))
    if unknown:
        raise ProfileError(f"{job.notebook.name} has no parameter(s) {unknown}; "
                           f"its parameters are {sorted(declared)}")


def execute(job: Job) -> float:
    """Run one notebook with papermill; returns wall seconds.

    Raises
    ------
    ChapterError
        When a cell raises: ``<notebook> stopped: <Type>: <message> (details: <executed copy>)``
        instead of papermill's traceback dump; the executed copy keeps the traceback.
    """
    job.output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(job.notebook), str(job.output), parameters=job.parameters,
                            kernel_name="python3", progress_bar=False, cwd=str(paths.NOTEBOOKS),
                            kernel_manager_class=ChapterKernel)
    except PapermillExecutionError as exc:
        raise ChapterError(chapter_message(job, exc.ename, exc.evalue)) from None
    return time.perf_counter() - t0


def describe(job: Job) -> str:
    """``<notebook> (profile=…, model=…)``: a job as messages name it."""
    return f"{job.notebook.stem} ({', '.join(f'{k}={v}' for k, v in job.parameters.items())})"


def chapter_message(job: Job, ename: str, evalue: str) -> str:
    """The error a user reads when a chapter fails (multi-line messages keep one line each)."""
    lines = str(evalue).strip().splitlines() or [""]
    failed = _WRITE_ERROR.match(lines[0]) if ename in _OS_ERRORS else None
    line = failed and write_failure(int(failed["errno"]), failed["file"], failed["strerror"])
    lines[0] = f"{describe(job)} stopped: {line or f'{ename}: {lines[0]}'}"
    lines[-1] += f" (details: {job.output})"
    return "\n".join(lines)


_OS_ERRORS = {"OSError", "PermissionError", "NotADirectoryError"}
_WRITE_ERROR = re.compile(r"\[Errno (?P<errno>\d+)\] (?P<strerror>[^:]+)(?:: '(?P<file>.*)')?$")


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

    Notes
    -----
    Events in the block, of this process and of those it starts (chapter kernels), go to
    ``run.events_log`` (:func:`gguf_fragility.events.logging_to`).
    """
    with events.logging_to(run.events_log), hold_lock(run.lock, f"outputs folder {run.root}") as path:
        yield path


def run(profile_name: str, stages: list[str] | None = None, *, budget_minutes: float | None = None,
        judge: Judge | None = None) -> pd.DataFrame:
    """Run a profile's notebooks in order; print and store the wall time of each stage.

    Parameters
    ----------
    profile_name : str
    stages : list of str, optional
        Only these stages (default: all).
    budget_minutes : float, optional
        ``--budget``: the budget's wall minutes (a budget with defaults if the profile has none).
    judge : Judge, optional
        The sequential decisions a budgeted sweep needs (:mod:`gguf_fragility.run.looks`;
        the command line passes :func:`gguf_fragility.stats.sequential.judge_run`).

    Returns
    -------
    DataFrame
        One row per executed notebook: stage, notebook, parameters, seconds.

    Raises
    ------
    gguf_fragility.store.LockHeld
        Another run is writing the same outputs folder; nothing was run.
    Terminated
        SIGTERM arrived (under :func:`stop_on_sigterm`) while a notebook ran; it is named.
    """
    profile = load_profile(profile_name)
    if budget_minutes is not None:
        profile = with_budget_minutes(profile, budget_minutes)
    if profile.budget is not None and judge is None:
        raise ValueError(f"profile {profile.name!r} has a budget, whose looks need the sequential "
                         "statistics: run it with `gguf-fragility run`")
    jobs = plan(profile, stages)
    for job in jobs:
        check_parameters(job)
    with run_lock(profile.layout):
        return _run_jobs(profile, jobs, judge)


def _run_jobs(profile: Profile, jobs: list[Job], judge: Judge | None = None) -> pd.DataFrame:
    """Execute planned jobs in order (the caller holds the run's lock); a budgeted profile's
    looks run before its first sweep notebook."""
    rows = []
    bar = tqdm(jobs, desc=f"autopsy {profile.name}", unit="notebook")
    looked = profile.budget is None
    for job in bar:
        if job.stage == "sweep" and not looked:
            t0, looked = time.perf_counter(), True
            run_looks(profile, judge, progress=lambda line: tqdm.write(line, file=sys.stderr))
            rows.append({"stage": "looks", "notebook": "", "parameters": str(profile.budget),
                         "seconds": round(time.perf_counter() - t0, 1), "skipped": ""})
        bar.set_postfix_str(job.output.stem)
        refusal = _gate_refusal(profile.layout, job)
        if refusal:
            events.emit(f"gguf-fragility: skipping {job.output.name}: {refusal}")
            rows.append({"stage": job.stage, "notebook": job.output.name,
                         "parameters": str(job.parameters), "seconds": 0.0, "skipped": refusal})
            continue
        mark = events.end(profile.layout.events_log)
        try:
            seconds = execute(job)
        except (Terminated, KeyboardInterrupt) as stop:  # name the notebook it stopped
            raise type(stop)(describe(job)) from None
        finally:  # what the chapter's kernel logged, even when it stopped
            for line in events.since(profile.layout.events_log, mark):
                tqdm.write(line, file=sys.stderr)
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
