"""Two `gguf-fragility run` on one outputs folder cannot collide (issue 14, item 4); a
killed run is taken over and a SIGTERM-ed one says so and releases its lock (issue 29).

The runs are the real command line in subprocesses; only the notebook execution is replaced
(a sitecustomize patches ``pipeline.execute``) so that the first run stays inside its run for
as long as the test needs, and no model is loaded. ``test_pipeline.py`` reuses it.
"""

import json
import os
import signal
import subprocess
import sys
import time

PATCH = """\
import json, os, time
from pathlib import Path
from gguf_fragility.run import pipeline

def _execute(job):
    Path(os.environ["GF_TEST_FLAG"]).write_text(str(os.getpid()))
    if os.environ["GF_TEST_EXECUTE"] == "hang":
        time.sleep(600)
    if os.environ["GF_TEST_EXECUTE"] == "claim" and job.stage == "stats":  # a number in prose
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text(json.dumps({"cells": [{"cell_type": "markdown", "metadata": {},
            "source": "# A chapter\\n\\nAccuracy fell by 8123.47 points."}], "metadata": {},
            "nbformat": 4, "nbformat_minor": 5}))
    return 0.0

pipeline.execute = _execute
"""

TINY = """
models:
  smollm2-135m:
    rungs: [F16]
families: [science_mc]
n_items: 2
"""


def patched_env(tmp_path, mode: str, flag) -> dict:
    """Environment of a CLI run on ``tmp_path/profiles`` and ``tmp_path/outputs`` whose
    notebooks are replaced: ``hang`` (sleeps), ``fast`` (returns), ``claim`` (writes chapter 5
    as saying "Accuracy fell by 8123.47 points"); each writes ``flag``."""
    site = tmp_path / f"site_{mode}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(PATCH)
    pythonpath = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath, "GF_TEST_EXECUTE": mode, "GF_TEST_FLAG": str(flag),
            "GGUF_FRAGILITY_PROFILES": str(tmp_path / "profiles"),
            "GGUF_FRAGILITY_OUTPUTS": str(tmp_path / "outputs")}


def _cmd() -> list[str]:
    return [sys.executable, "-m", "gguf_fragility.cli", "run", "--profile", "tiny",
            "--stages", "probes", "--no-site"]


def test_second_run_on_same_outputs_refuses_and_killed_run_is_taken_over(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny.yaml").write_text(TINY)
    lock = tmp_path / "outputs" / "tiny" / "run.lock"
    flag1 = tmp_path / "first.flag"
    first = subprocess.Popen(_cmd(), env=patched_env(tmp_path, "hang", flag1), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not flag1.is_file():  # the first run is inside its run (executing a notebook)
            assert first.poll() is None, "the first run ended early"
            assert time.monotonic() < deadline, "the first run never reached its notebooks"
            time.sleep(0.1)
        flag2 = tmp_path / "second.flag"
        second = subprocess.run(_cmd(), env=patched_env(tmp_path, "fast", flag2), capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        msg = second.stderr.strip().splitlines()[-1]
        assert f"PID {first.pid} (started " in msg and str(lock) in msg, msg
        assert "in use by" in msg
        assert not flag2.exists()  # refused before running anything
        held = json.loads(lock.read_text())
        assert held["pid"] == first.pid and held["started"]
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # like a crash or an OOM kill: no cleanup runs
        first.wait()
    flag3 = tmp_path / "third.flag"
    third = subprocess.run(_cmd(), env=patched_env(tmp_path, "fast", flag3), capture_output=True,
                           text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-2000:]
    assert flag3.is_file()  # it ran its notebook
    takeover = [ln for ln in third.stderr.splitlines() if "taking over the lock" in ln]
    assert len(takeover) == 1 and f"PID {first.pid}" in takeover[0], third.stderr[-2000:]
    assert lock.read_text() == ""  # released cleanly: the next run reports no takeover
    # the takeover is an event of the run: one timed line in outputs/<profile>/events.log
    (logged,) = (lock.parent / "events.log").read_text().splitlines()
    stamp, message = logged.split(" ", 1)
    assert message == takeover[0] and stamp[:4].isdigit() and "T" in stamp, logged


def test_sigterm_stops_the_run_in_one_line_and_releases_the_lock(tmp_path):
    """`kill <pid>` (SIGTERM) on a run: it names the notebook it stopped and says a rerun
    resumes, exits 143, and leaves the lock released (the next run takes nothing over).
    The old code died without a word and left its PID in the lock file."""
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny.yaml").write_text(TINY)
    lock = tmp_path / "outputs" / "tiny" / "run.lock"
    flag = tmp_path / "first.flag"
    run = subprocess.Popen(_cmd(), env=patched_env(tmp_path, "hang", flag), start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not flag.is_file():
            assert run.poll() is None, "the run ended early"
            assert time.monotonic() < deadline, "the run never reached its notebooks"
            time.sleep(0.1)
        run.send_signal(signal.SIGTERM)  # to the CLI process only, as `kill PID` does
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 143, (run.returncode, err[-2000:])
    (line,) = [ln for ln in err.splitlines() if ln.startswith("gguf-fragility:")]
    assert line == ("gguf-fragility: stopped by SIGTERM during 02_probes (profile=tiny, "
                    "model=smollm2-135m) of `gguf-fragility run --profile tiny --stages probes "
                    "--no-site`; finished work is kept: run the same command again to resume"), line
    assert lock.read_text() == ""  # released: not a killed holder
    again = subprocess.run(_cmd(), env=patched_env(tmp_path, "fast", tmp_path / "again.flag"),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "taking over" not in again.stderr, again.stderr[-2000:]
