"""Decided cells per lens: the budgeted, sequential sweep against the fixed design (issue 27).

Run, after the setup stages of the profile (``gguf-fragility run --profile default --stages
ladder probes calibrate``), with nothing else on the machine::

    .venv/bin/python benchmarks/bench_sequential.py --profile default [--budget-minutes 10]
        [--models smollm2-135m] [--extend-minutes 5] [--fixed-scale 2]

It copies ``outputs/<profile>`` (ladders, probe tables, calibration and the reference's
stored cells; no sweep cell of another rung) twice under a scratch folder and runs, one after
the other, the profile's ``sweep`` and ``stats`` stages in each copy:

* **fixed**: the profile without its ``budget`` (every cell gets the fixed design's
  ``n_items``), judged by the fixed-sample tests;
* **sequential**: the profile with its budget, judged by the anytime-valid sequences (with
  ``--models``, both arms keep only those models of the profile). Its
  looks get ``--budget-minutes`` (default: the seconds the fixed arm spent scoring items, the
  sum of its new rows' ``seconds``: the fixed sweep less its model loads, KL shift and cost
  measurements, which the sequential arm's chapter 4 does alike), so that both sweeps take
  about the same wall time, the sequential arm paying its looks' model loads and judging
  out of its budget.

With ``--fixed-scale 2`` the fixed arm gets twice the profile's items per family (and the
sequential arm, as always, the fixed arm's scoring seconds): both designs at a longer equal
wall time. With ``--fixed-from`` an earlier run's fixed arm (same machine, same setup under
``outputs/<profile>``) is read instead of run again, e.g. to compare a change of the looks.

Prints per arm the sweep's wall seconds and the decided cells per model × lens (loss beyond
the margin shown, or equivalence within it: ``tables/lens_summary.csv``'s ``n_decided``), the
totals and their ratio. Both sweeps run the real llama.cpp; quote the figures with the date
and the machine (Measurements page).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import yaml

from gguf_fragility.engine.rungs import REFERENCE
from gguf_fragility.layout import RunLayout, Table, outputs_root
from gguf_fragility.paths import REPO, profiles_dir
from gguf_fragility.profile import Profile, load_profile

SETUP = ("ladder", "probes", "calibration")  # what the setup stages leave under outputs/<profile>
LOGPROBS = RunLayout(Path()).reference_logprobs("m").name  # the reference's KL rows, per model


class Arm(NamedTuple):
    """One design's run: its sweep wall seconds and decided cells per model × lens."""

    name: str
    sweep_s: float
    looks_s: float  # of which the budgeted looks (0 for the fixed design)
    scoring_s: float  # seconds of the items this run scored (its rows' ``seconds``)
    decided: pd.DataFrame  # model, lens, n_cells, n_decided


def scored_seconds(root: Path) -> float:
    """Sum of the ``seconds`` of every stored sweep row under a run's folder."""
    return float(sum(pd.read_parquet(p, columns=["seconds"])["seconds"].sum()
                     for p in (root / "sweep").glob("*/*/*.parquet")))


def copy_setup(profile: str, scratch: Path) -> Path:
    """``outputs/<profile>``'s setup (and the reference's stored cells) under ``scratch``."""
    src = outputs_root() / profile
    missing = [d for d in SETUP if not (src / d).is_dir()]
    if missing:
        raise SystemExit(f"{src} lacks {missing}: run `gguf-fragility run --profile {profile} "
                         "--stages ladder probes calibrate` first")
    dst = scratch / profile
    for d in SETUP:
        shutil.copytree(src / d, dst / d)
    for model in load_profile(profile).models:  # calibration scored the reference's cells
        ref, logprobs = src / "sweep" / model / REFERENCE, src / "sweep" / model / LOGPROBS
        if ref.is_dir():
            shutil.copytree(ref, dst / "sweep" / model / REFERENCE)
        if logprobs.is_file():
            shutil.copy2(logprobs, dst / "sweep" / model / LOGPROBS)
    return dst


def run_arm(name: str, profile: str, outputs: Path, extra: list[str],
            profiles: Path | None = None) -> Arm:
    """``gguf-fragility run --stages sweep stats --no-site`` on one copy (profiles looked up in
    ``profiles``, default ``params/``); its decided cells."""
    env = {**os.environ, "GGUF_FRAGILITY_OUTPUTS": str(outputs)}
    if profiles is not None:
        env["GGUF_FRAGILITY_PROFILES"] = str(profiles)
    cmd = [str(REPO / ".venv" / "bin" / "gguf-fragility"), "run", "--profile", profile,
           "--stages", "sweep", "stats", "--no-site", *extra]
    print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
    root = outputs / profile
    before = scored_seconds(root)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=REPO)
    print(f"[{name}] {time.perf_counter() - t0:.0f} s in all", flush=True)
    return stored_arm(root, name, scored_seconds(root) - before)


def stored_arm(root: Path, name: str, scoring: float) -> Arm:
    """An arm from a run's folder: its sweep seconds (``timings.csv``) and decided cells
    (``scoring``: the seconds of the items it scored)."""
    if not (root / "tables" / Table.LENS_SUMMARY.file_name).is_file():
        raise SystemExit(f"{root} holds no finished run of this benchmark (no "
                         f"tables/{Table.LENS_SUMMARY.file_name}): give --fixed-from the scratch "
                         "folder of an earlier run, or leave it out")
    timings = pd.read_csv(root / "timings.csv")
    sweep = timings[timings["stage"].isin(["sweep", "looks"])]
    summary = pd.read_csv(root / "tables" / Table.LENS_SUMMARY.file_name)
    print(f"[{name}] sweep {sweep['seconds'].sum():.0f} s, of which {scoring:.0f} s scoring "
          "items", flush=True)
    return Arm(name, float(sweep["seconds"].sum()),
               float(timings.loc[timings["stage"] == "looks", "seconds"].sum()), scoring,
               summary[["model", "lens", "n_cells", "n_decided"]])


def scaled(data: dict, scale: float) -> dict:
    """A profile's YAML as the fixed design: without its ``budget``, every item count
    (``n_items``, each model's, ``family_items_cap``) times ``scale`` (rounded up)."""
    def times(n: int) -> int:
        return math.ceil(n * scale)
    out = {k: v for k, v in data.items() if k != "budget"}
    out["n_items"] = times(data.get("n_items", Profile.n_items))
    out["family_items_cap"] = {f: times(n) for f, n in data.get("family_items_cap", {}).items()}
    out["models"] = {m: {**v, "n_items": times(v["n_items"])} if (v or {}).get("n_items") else v
                     for m, v in data["models"].items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default", help="a profile with a budget (params/)")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="the sequential arm's look minutes (default: the fixed arm's seconds "
                         "scoring items)")
    ap.add_argument("--models", nargs="+", default=None,
                    help="only these models of the profile (both arms; default: all)")
    ap.add_argument("--scratch", default=None, help="folder for the two copies (default: a temp)")
    ap.add_argument("--fixed-from", default=None,
                    help="a scratch folder of an earlier run of this benchmark on this machine and "
                         "profile: reuse its fixed arm instead of running it again (the fixed "
                         "design's code unchanged since)")
    ap.add_argument("--fixed-scale", type=float, default=1.0,
                    help="the fixed arm's items per family times this (n_items, each model's "
                         "n_items and family_items_cap; default 1: the fixed design as the "
                         "profile has it): both designs at a longer equal wall time")
    ap.add_argument("--extend-minutes", type=float, default=None,
                    help="then rerun the sequential arm with this budget: it continues the "
                         "undecided cells (a user who runs longer)")
    args = ap.parse_args()
    prof = load_profile(args.profile)
    if prof.budget is None:
        raise SystemExit(f"profile {args.profile!r} has no budget: nothing to compare")
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench_sequential_"))
    print(f"scratch: {scratch}; machine: {os.cpu_count()} CPUs, {sys.platform}", flush=True)
    data = yaml.safe_load((profiles_dir() / f"{args.profile}.yaml").read_text())
    if args.models:
        unknown = set(args.models) - set(data["models"])
        if unknown:
            raise SystemExit(f"--models {sorted(unknown)}: not in the profile's models "
                             f"{sorted(data['models'])}")
        data["models"] = {m: v for m, v in data["models"].items() if m in args.models}
    seq_yaml = scratch / "sequential-params" / f"{args.profile}.yaml"
    fixed_yaml = scratch / "fixed-params" / f"{args.profile}.yaml"
    for path, profile in ((seq_yaml, data), (fixed_yaml, scaled(data, args.fixed_scale))):
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(profile, sort_keys=False))
    copied = scored_seconds(copy_setup(args.profile, scratch / "sequential"))  # the reference's
    if args.fixed_from:
        root = Path(args.fixed_from) / "fixed" / args.profile
        fixed = stored_arm(root, "fixed", scored_seconds(root) - copied)
    else:
        copy_setup(args.profile, scratch / "fixed")
        fixed = run_arm("fixed", args.profile, scratch / "fixed", [], profiles=fixed_yaml.parent)
    minutes = args.budget_minutes or max(fixed.scoring_s / 60, 1.0)
    seq = run_arm("sequential", args.profile, scratch / "sequential",
                  ["--budget", f"{minutes:.2f}m"], profiles=seq_yaml.parent)
    table = fixed.decided.merge(seq.decided, on=["model", "lens"], suffixes=("_fixed", "_sequential"))
    print()
    print(table.to_string(index=False))
    a, b = int(table["n_decided_fixed"].sum()), int(table["n_decided_sequential"].sum())
    print(f"\nsweep wall: fixed {fixed.sweep_s:.0f} s, sequential {seq.sweep_s:.0f} s "
          f"(looks {seq.looks_s:.0f} s, budget {minutes:.2f} min)")
    print(f"decided cells: fixed {a}, sequential {b}, ratio {b / a if a else float('inf'):.2f}"
          " (goal: >= 2)")
    if args.extend_minutes:
        more = run_arm("extended", args.profile, scratch / "sequential",
                       ["--budget", f"{args.extend_minutes:.2f}m"], profiles=seq_yaml.parent)
        seq_csv = pd.read_csv(scratch / "sequential" / args.profile / "tables"
                              / Table.SEQUENTIAL.file_name)
        print(f"\nextended by {args.extend_minutes:g} min: sweep {more.sweep_s:.0f} s (looks "
              f"{more.looks_s:.0f} s), now {int(seq_csv['looks'].max())} looks; decided cells "
              f"{b} -> {int(more.decided['n_decided'].sum())}")
        print(more.decided.to_string(index=False))


if __name__ == "__main__":
    main()
