"""The acceptance battery of issue 29, run as a new user would: one case per invocation.

    python scripts/battery.py code                 # snapshot HEAD into <work>/code (then --code)
    python scripts/battery.py reference            # one uninterrupted smoke run (the yardstick)
    python scripts/battery.py kill --kills 0 5     # kill -9 moments 0..4 of ten, resuming after each
    python scripts/battery.py kill --kills 5 10    # moments 5..9, then the last resume and the comparison
    python scripts/battery.py readonly             # outputs folder mounted read-only (root) or chmod 555
    python scripts/battery.py fulldisk             # outputs on a small tmpfs that fills mid-sweep (root)
    python scripts/battery.py qwen                 # the Qwen GGUF as "your own model" (README recipe)
    python scripts/battery.py recheck              # an edited cell value
    python scripts/battery.py probefile            # a probe file that lost an item
    python scripts/battery.py again --folder kill  # compare a finished case with the reference again
    python scripts/battery.py summary              # every recorded line

Every case writes under ``--work`` (default ``/tmp/gguf-battery``), never into ``outputs/``,
prints one line per check (case, expected, observed, PASS/FAIL, wall seconds) and appends
it to ``<work>/results.tsv``. Each invocation is one CPU-heavy step: on a shared machine run
it under ``flock``. ``code`` snapshots the committed code and ``--code <work>/code`` runs it,
so edits made in the checkout while the battery runs do not mix into its runs. ``kill`` and
``fulldisk`` compare with the ``reference`` run's stored cells and tables: run it first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from gguf_fragility.layout import RunLayout, Table

REPO = Path(__file__).resolve().parents[1]
CLI = [str(REPO / ".venv" / "bin" / "gguf-fragility")]
CODE = REPO  # the code under test: the checkout, or a snapshot of it (``code``, ``--code``)
PROFILE = "smoke"
SEED = 29
N_KILLS = 10
# what differs between two uninterrupted runs: measured wall times, speeds and memory peaks
VOLATILE = {"seconds", "gen_tps", "prompt_tps", "load_s", "ttft_s", "ttft_s_median", "ttft_s_q25",
            "ttft_s_q75", "peak_rss_bytes"}
# stored results compared value by value; executed notebooks, site, logs and locks are not
RESULTS = ("sweep", "calibration", "tables", "ladder", "probes")


def record(work: Path, case: str, expected: str, observed: str, ok: bool, seconds: float) -> bool:
    """Print one battery line and append it to ``results.tsv``; returns ``ok``."""
    line = "\t".join([case, expected, " ".join(observed.split()), "PASS" if ok else "FAIL",
                      f"{seconds:.0f}s"])
    print(line, flush=True)
    with open(work / "results.tsv", "a") as f:
        f.write(line + "\n")
    return ok


def cli(args: list[str], outputs: Path, env: dict | None = None, kill_after: float | None = None,
        timeout: float = 1500) -> tuple[int | None, str, float]:
    """Run ``gguf-fragility`` with its outputs under ``outputs``; (exit code or None when
    killed, stderr+stdout text, seconds). ``kill_after``: SIGKILL its whole process group then."""
    full_env = {**os.environ, "GGUF_FRAGILITY_OUTPUTS": str(outputs),
                "PYTHONPATH": str(CODE / "lib"), "GGUF_FRAGILITY_CACHE": str(REPO / ".cache"),
                **(env or {})}
    log = outputs.parent / f"{outputs.name}.log"
    t0 = time.perf_counter()
    with open(log, "w") as out:
        p = subprocess.Popen(CLI + args, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=kill_after if kill_after is not None else timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = None if kill_after is not None else -9
    return rc, log.read_text(errors="replace"), time.perf_counter() - t0


def survivors(outputs: Path) -> tuple[list[int], list[int]]:
    """PIDs of processes still running for this outputs folder, two seconds after a kill:
    those whose environment names it (kernels, workers) and sandboxed model programs (they
    clear their environment: found by their ``gguf-fragility`` memory cgroup)."""
    time.sleep(2)
    mine = f"GGUF_FRAGILITY_OUTPUTS={outputs}".encode()
    ours, sandboxed = [], []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if mine in (d / "environ").read_bytes().split(b"\0"):
                    ours.append(int(d.name))
                elif "gguf-fragility/run-" in (d / "cgroup").read_text():
                    sandboxed.append(int(d.name))
            except OSError:
                continue
    return ours, sandboxed


def _volatile(name: str) -> bool:
    return name in VOLATILE


def snapshot(root: Path) -> dict[str, object]:
    """Every stored result under ``root`` as comparable values: Parquet tables column by
    column, CSV tables row by row, JSON results key by key (volatile fields left out)."""
    import pandas as pd

    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.split("/")[0] not in RESULTS:
            continue
        if path.suffix == ".parquet":
            t = pq.read_table(path)
            out[rel] = {c: t.column(c).to_pylist() for c in t.column_names if not _volatile(c)}
        elif path.suffix == ".csv":
            df = pd.read_csv(path)
            out[rel] = df[[c for c in df.columns if not _volatile(c)]].to_json(orient="split")
        elif path.suffix == ".json":
            obj = json.loads(path.read_text())
            out[rel] = {k: v for k, v in obj.items() if not _volatile(k)
                        and k != "content_sha256"} if isinstance(obj, dict) else obj
        elif path.suffix == ".npz":
            out[rel] = path.read_bytes()
    return out


def compare(a: dict, b: dict) -> list[str]:
    """Names of what differs between two snapshots (a missing file, a column, a field)."""
    diffs = [f"only in reference: {k}" for k in sorted(a.keys() - b.keys())]
    diffs += [f"only in this run: {k}" for k in sorted(b.keys() - a.keys())]
    for k in sorted(a.keys() & b.keys()):
        x, y = a[k], b[k]
        if x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            keys = sorted(k2 for k2 in x.keys() | y.keys() if x.get(k2) != y.get(k2))
            diffs.append(f"{k}: {', '.join(keys)}")
        else:
            diffs.append(k)
    return diffs


def leftovers(root: Path) -> list[str]:
    """Half-written files: ``*.tmp*`` under ``root``."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.tmp*"))


def clean_error(text: str) -> bool:
    """A one-line ``gguf-fragility: error:`` and no traceback."""
    return "Traceback" not in text and "gguf-fragility: error:" in text


def reference(work: Path, _args) -> None:
    out = work / "reference"
    shutil.rmtree(out, ignore_errors=True)
    rc, text, s = cli(["run", "--profile", PROFILE], out)
    (work / "reference_seconds").write_text(f"{s:.1f}\n")
    record(work, "reference", "exit 0", f"exit {rc}; {len(snapshot(out / PROFILE))} stored results",
           rc == 0, s)


def _against_reference(work: Path, case: str, root: Path, t0: float) -> None:
    diffs = compare(snapshot(work / "reference" / PROFILE), snapshot(root))
    record(work, case, "every stored cell and table identical to the uninterrupted run",
           "identical" if not diffs else "differ: " + "; ".join(diffs[:8]), not diffs,
           time.perf_counter() - t0)


def kill(work: Path, args) -> None:
    """kill -9 (the run's whole process group) at seeded moments, resume after each."""
    out = work / "kill"
    first, last = args.kills
    if first == 0:
        shutil.rmtree(out, ignore_errors=True)
    total = float((work / "reference_seconds").read_text())
    rng = random.Random(SEED)
    moments = sorted(rng.uniform(5, total) for _ in range(N_KILLS))
    gaps = [m - p for m, p in zip(moments, [0.0, *moments], strict=False)]
    for i in range(first, min(last, N_KILLS)):
        wait = gaps[i] + 4  # a resume first spends ~4 s importing and checking what is stored
        rc, text, s = cli(["run", "--profile", PROFILE], out, kill_after=wait)
        alive, sandboxed = survivors(out)
        for pid in alive:  # started by this battery: end them so the next resume is alone
            os.kill(pid, signal.SIGKILL)
        state = "finished before the kill" if rc is not None else "killed"
        record(work, f"kill-{i}", "killed; nothing left running",
               f"{state} after {s:.0f}s (moment {wait:.0f}s); {len(alive)} processes and "
               f"{len(sandboxed)} sandboxed programs left running",
               not alive and not sandboxed and rc in (None, 0), s)
    if last < N_KILLS:
        return
    t0 = time.perf_counter()
    rc, text, s = cli(["run", "--profile", PROFILE], out)
    rebuilt = sum("rebuilding" in ln for ln in text.splitlines())
    record(work, "kill-resume", "exit 0", f"exit {rc}; {rebuilt} rebuilding lines; "
           f"{len(leftovers(out / PROFILE))} *.tmp files left", rc == 0, s)
    _against_reference(work, "kill-compare", out / PROFILE, t0)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def readonly(work: Path, _args) -> None:
    """A read-only outputs folder: empty, and holding a finished run."""
    base = work / "readonly"
    shutil.rmtree(base, ignore_errors=True)
    for what in ("empty", "finished"):
        ro = base / what
        ro.mkdir(parents=True)
        if what == "finished":
            shutil.copytree(work / "reference" / PROFILE, ro / PROFILE)
        root = os.geteuid() == 0
        if root:
            _mount("--bind", "-o", "ro", str(ro), str(ro))
        else:
            for p in [ro, *ro.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o555)
        try:
            rc, text, s = cli(["run", "--profile", PROFILE], ro)
        finally:
            if root:
                subprocess.run(["umount", str(ro)], check=False)
        lines = [ln for ln in text.splitlines() if "error" in ln.lower()]
        record(work, f"readonly-{what}", "exit 2; one line naming the folder and what to do",
               f"exit {rc}; {lines[-1] if lines else text.strip().splitlines()[-1:]}",
               rc == 2 and clean_error(text) and str(ro) in text, s)


def _check_cells(root: Path) -> list[str]:
    """Stored Parquet results that do not read or do not hash as written."""
    sys.path.insert(0, str(CODE / "lib"))
    from gguf_fragility.store import _META_KEY, check_digest, table_digest

    bad = []
    for path in sorted(root.rglob("*.parquet")):
        try:
            t = pq.read_table(path)
            meta = json.loads((t.schema.metadata or {}).get(_META_KEY, b"{}"))
            check_digest(meta.get("content_sha256"), table_digest(t))
        except Exception as exc:  # any failure is a corrupt file for this check
            bad.append(f"{path.relative_to(root)} ({type(exc).__name__})")
    return bad


def fulldisk(work: Path, args) -> None:
    """Outputs on a tmpfs that fills during the sweep's cell writes; then more space and a
    resume. The folder starts as the reference run stopped before its sweep's last two rungs
    (ladder, probes and calibration done), so the case costs a sweep, not a whole run."""
    mnt = work / "fulldisk"
    subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
    shutil.rmtree(mnt, ignore_errors=True)
    mnt.mkdir(parents=True)
    _mount("-t", "tmpfs", "-o", "size=2g", "tmpfs", str(mnt))
    try:
        later = ("site", "site_src", "figures", "tables", "claim_check.csv", "timings.csv")
        shutil.copytree(work / "reference" / PROFILE, mnt / PROFILE, ignore=lambda d, names: [
            n for n in names if n in later or n in ("F16-floor", "Q2_K") or n.startswith("04_")
            or n.startswith("0") and n[1] in "5678" and n.endswith(".ipynb")])
        st = os.statvfs(mnt)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        size = used + args.room
        _mount("-o", f"remount,size={size}", str(mnt))
        rc, text, s = cli(["run", "--profile", PROFILE], mnt)
        errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
        record(work, "fulldisk-run", f"exit 2; one line: no space, what to do ({args.room} B free)",
               f"exit {rc}; {errors[-1] if errors else text.strip().splitlines()[-1:]}",
               rc == 2 and clean_error(text) and "space" in text.lower(), s)
        bad, tmp = _check_cells(mnt / PROFILE), leftovers(mnt / PROFILE)
        record(work, "fulldisk-files", "no corrupt result, no *.tmp left",
               f"{len(bad)} corrupt {bad[:3]}; {len(tmp)} *.tmp {tmp[:3]}", not bad and not tmp, 0)
        _mount("-o", "remount,size=2g", str(mnt))
        t0 = time.perf_counter()
        rc, text, s = cli(["run", "--profile", PROFILE], mnt)
        record(work, "fulldisk-resume", "exit 0 after freeing space", f"exit {rc}", rc == 0, s)
        _against_reference(work, "fulldisk-compare", mnt / PROFILE, t0)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


QWEN_SOURCE = REPO / ".cache" / "models" / "qwen2.5-coder-1.5b" / "source.gguf"


def qwen(work: Path, args) -> None:
    """README "Your own model": a registry entry of kind local and a profile naming it."""
    import yaml

    base = work / "qwen"
    shutil.rmtree(base, ignore_errors=True)
    (base / "profiles").mkdir(parents=True)
    registry = yaml.safe_load((CODE / "params" / "models.yaml").read_text())
    registry["models"]["my-qwen"] = {
        "family": "Qwen2.5", "display": "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (my own file)",
        "licence": "Apache-2.0", "source": {"kind": "local", "path": str(QWEN_SOURCE),
                                            "sha256": None}}
    (base / "models.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    (base / "profiles" / "mine.yaml").write_text(yaml.safe_dump({
        "models": {"my-qwen": {"rungs": ["F16", "Q2_K"]}},
        "families": ["knowledge_mc", "science_mc"], "n_items": 3, "demo_items": 1, "min_usable": 1,
        "min_families": 1, "shift_passages": 1, "shift_tokens": 128, "n_boot": 200,
        "noise_floor": False, "engine": {"n_ctx": 1024, "n_threads": 2}}))
    env = {"GGUF_FRAGILITY_REGISTRY": str(base / "models.yaml"),
           "GGUF_FRAGILITY_PROFILES": str(base / "profiles"),
           "GGUF_FRAGILITY_CACHE": str(base / "cache")}
    rc, text, s = cli(["run", "--profile", "mine"], base / "outputs", env=env,
                      timeout=args.timeout)
    tail = text.strip().splitlines()[-1:] if rc else ""
    acc = RunLayout(base / "outputs" / "mine").table(Table.ACCURACY)
    record(work, "qwen-own-model", "exit 0; accuracy per rung of my-qwen",
           f"exit {rc}; {acc.name} {'written' if acc.is_file() else 'absent'} {tail}",
           rc == 0 and acc.is_file(), s)


def recheck(work: Path, _args) -> None:
    """Last battery's case: a cell value edited, its digest left as written."""
    import pyarrow as pa

    out = work / "recheck"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(work / "reference", out)
    cell = next(p for p in sorted((out / PROFILE / "sweep").rglob("*.parquet"))
                if "Q2_K" in p.parts)
    t = pq.read_table(cell)
    flipped = pa.array([not v for v in t.column("correct").to_pylist()])
    edited = t.set_column(t.column_names.index("correct"), "correct", flipped)
    pq.write_table(edited.replace_schema_metadata(t.schema.metadata), cell)  # digest kept
    rc, text, s = cli(["run", "--profile", PROFILE, "--stages", "sweep"], out)
    shown = [ln for ln in text.splitlines() if "rebuilding" in ln and cell.name in ln]
    record(work, "recheck-edited-cell", "'rebuilding <cell>' on the terminal, then exit 0",
           f"exit {rc}; {shown[0][:160] if shown else 'no rebuilding line'}", rc == 0 and bool(shown), s)
    after = pq.read_table(cell).column("correct").to_pylist()
    record(work, "recheck-cell-values", "cell values back to the true ones",
           "restored" if after != flipped.to_pylist() else "still edited",
           after != flipped.to_pylist(), 0)


def probefile(work: Path, _args) -> None:
    """A copy of the code whose probe file lost its last item (manifest unchanged): refused
    on every path that reads items (``recheck`` first: it makes the outputs folder)."""
    out = work / "recheck"
    clone = work / "clone"
    shutil.rmtree(clone, ignore_errors=True)
    for d in ("lib", "notebooks", "params", "data", "report"):
        shutil.copytree(CODE / d, clone / d,  # kernel-ipc-*: sockets kernels leave in notebooks/
                        ignore=shutil.ignore_patterns("__pycache__", "kernel-ipc-*"))
    shutil.copy(CODE / "_quarto.yml", clone / "_quarto.yml")
    fam = clone / "data" / "probes" / "arithmetic.jsonl"
    fam.write_text("".join(fam.read_text().splitlines(keepends=True)[:-1]))
    env = {"PYTHONPATH": str(clone / "lib")}
    for cmd in (["regrade", "--profile", PROFILE],
                ["run", "--profile", PROFILE, "--stages", "calibrate", "sweep"]):
        rc, text, s = cli(cmd, out, env=env)
        err = [ln for ln in text.splitlines() if "error" in ln.lower()]
        record(work, f"recheck-probe-{cmd[0]}", "exit 2; refused naming the probe file",
               f"exit {rc}; {err[0][:160] if err else 'no error line'}",
               rc == 2 and clean_error(text) and "arithmetic.jsonl" in text, s)


def code(work: Path, _args) -> None:
    """Snapshot the committed code (``git archive HEAD``) into ``<work>/code``: every later case
    given ``--code <work>/code`` runs it, whatever is edited in the checkout meanwhile."""
    dst = work / "code"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive.stdout, check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                          capture_output=True).stdout.strip()
    record(work, "code", "a snapshot of HEAD", f"{head} in {dst}", True, 0)


def again(work: Path, args) -> None:
    """Compare a case's finished folder (``--folder kill``) with the reference once more."""
    _against_reference(work, f"{args.folder}-compare", work / args.folder / PROFILE,
                       time.perf_counter())


def summary(work: Path, _args) -> None:
    print((work / "results.tsv").read_text() if (work / "results.tsv").is_file() else "no results")


CASES = {f.__name__: f for f in (code, reference, kill, readonly, fulldisk, qwen, recheck,
                                  probefile, again, summary)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("case", choices=list(CASES))
    p.add_argument("--work", type=Path, default=Path("/tmp/gguf-battery"))
    p.add_argument("--kills", type=int, nargs=2, default=[0, N_KILLS], metavar=("FIRST", "END"))
    p.add_argument("--room", type=int, default=300_000,
                   help="fulldisk: free bytes left on the tmpfs (fills during the sweep)")
    p.add_argument("--timeout", type=float, default=1500, help="qwen: seconds before giving up")
    p.add_argument("--folder", default="kill", help="again: the case folder to compare")
    p.add_argument("--code", type=Path, help="run this snapshot of the code (from the `code` "
                                               "case) instead of the checkout")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    global CODE
    CODE = args.code.resolve() if args.code else REPO
    CASES[args.case](args.work, args)


if __name__ == "__main__":
    main()
