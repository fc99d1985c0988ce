"""The whole autopsy, as a user runs it: `gguf-fragility run` on a tiny profile, then the site;
what a run says on the terminal and in its events log; partial runs and failed checks.

The fast tests replace only the notebook execution (``test_run_lock.patched_env``); the
end-to-end test runs the real chapters on the real SmolLM2, as both README recipes do: the
command of ``make autopsy`` on a profile of the user's own model (``test_user_model``'s
setup: a local GGUF under another key in a folder whose path has spaces).
"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_run_lock import patched_env
from test_user_model import user_model_setup
from tiny_profile import link_built

from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.stats.sequential import ANYTIME_METHOD

MINE = "my-smol"
FAMILIES = ["science_mc", "string_ops"]  # one log-likelihood family, one generative
N_ITEMS = 3

TINY = f"""
# tiny: the smallest real run of every chapter (the user's SmolLM2 copy, two rungs, two
# cheap families)
models:
  my-smol:
    rungs: [F16, Q2_K]
families: {FAMILIES}
n_items: {N_ITEMS}
demo_items: 1
min_usable: 0
min_families: 1
shift_passages: 2
shift_tokens: 64
n_boot: 1000
engine: {{n_ctx: 1024, n_threads: 2}}
budget: {{max_items: {N_ITEMS}, look_items: 1}}  # budgeted, as the default: one look, no extension
"""


@pytest.mark.llama
@pytest.mark.slow
def test_run_command_executes_every_chapter_and_renders_the_site(tmp_path, smol_source,
                                                                 smol_ladder):
    """The suite's one CLI end-to-end run (issue 24: the user-model run it replaced differed
    only in the registry): every chapter, the site, the user's file untouched, then a rerun
    that rebuilds one torn cell, then the user's changed file refused by `fetch`.

    The user's file has the bytes of the session's SmolLM2 source, so its F16 reference and
    Q2_K rung are the session ladder's files (linked into the user's model cache, where
    chapter 1 finds them built: ``test_ladder`` builds and rebuilds ladders)."""
    env, run, mine = user_model_setup(tmp_path, smol_source, TINY, name="tiny")
    link_built(Path(smol_ladder.file.iloc[0]).parent, tmp_path / "cache" / "models" / MINE,
               ["reference.gguf", "Q2_K.gguf"])
    source_bytes = mine.stat().st_size
    done = subprocess.run([sys.executable, "-m", "gguf_fragility.cli", "run", "--profile", "tiny"],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    executed = sorted(p.name for p in (run / "notebooks").glob("*.ipynb"))
    assert executed == ["01_ladder__my-smol.ipynb", "02_probes.ipynb",
                        "03_calibrate__my-smol.ipynb",
                        "04_sweep__my-smol__F16-floor.ipynb",  # the noise floor
                        "04_sweep__my-smol__F16.ipynb",
                        "04_sweep__my-smol__Q2_K.ipynb", "05_stats.ipynb", "06_transfer.ipynb",
                        "07_axes.ipynb", "08_lesions.ipynb"]
    assert MINE in (run / "notebooks" / "02_probes.ipynb").read_text()
    ladder = pd.read_csv(RunLayout(run).ladder_csv(MINE)).set_index("rung")
    assert ladder.loc["F16", "sha256"] == smol_ladder.set_index("rung").loc["F16", "sha256"]
    # the user's file is read, never moved or changed
    assert mine.is_file() and mine.stat().st_size == source_bytes
    timings = pd.read_csv(RunLayout(run).timings)
    assert list(timings.stage.unique()) == ["ladder", "probes", "calibrate", "looks", "sweep",
                                            "stats", "transfer", "axes", "lesions"]
    assert "look 1: " in done.stderr  # the budgeted sweep's progress line
    assert "wall time per stage" in done.stdout
    rows = pd.concat(pd.read_parquet(p) for p in (run / "sweep").rglob("*.parquet"))
    assert len(rows) == 3 * len(FAMILIES) * N_ITEMS  # (F16, floor, Q2_K) x families x items
    assert set(rows.rung) == {"F16", "F16-floor", "Q2_K"}
    comparisons = pd.read_csv(RunLayout(run).table(Table.COMPARISONS))
    assert set(comparisons.family) == set(FAMILIES)
    assert set(comparisons.rung) == {"Q2_K"}  # the floor is a control, never a rung
    assert set(comparisons.lens) == {"correctness", "fidelity", "margin"}
    assert (comparisons.p_method == ANYTIME_METHOD).all()  # a budgeted run: the sequences
    assert "Budgeted sweep" in (run / "site" / "index.html").read_text()
    assert "site: claim check passed" in done.stdout
    # chapter 7 on a profile without KV or imatrix rungs says so (folded in from test_axes)
    assert pd.read_csv(RunLayout(run).table(Table.AXIS_COMPARISONS)).empty
    assert {"F16", "Q2_K"} <= set(pd.read_csv(RunLayout(run).table(Table.KV_COSTS)).rung)
    assert "no rung with a comparator" in (run / "notebooks" / "07_axes.ipynb").read_text()
    # a rerun finds every cell done but one torn cell, says so (a line its chapter's kernel
    # logged: the old code left it inside the executed notebook) and changes no row; one
    # stage's notebook is enough (calibration's cells are the reference's)
    torn = run / "sweep" / MINE / "F16" / "string_ops.parquet"
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    log = run / "events.log"
    before = log.read_text().splitlines() if log.is_file() else []
    again = subprocess.run([sys.executable, "-m", "gguf_fragility.cli", "run", "--profile", "tiny",
                            "--stages", "calibrate", "--no-site"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    said = [ln for ln in again.stderr.splitlines() if ln.startswith("gguf-fragility: rebuilding")]
    assert len(said) == 1 and said[0].startswith(f"gguf-fragility: rebuilding {torn}: "), \
        again.stderr[-3000:]
    logged = log.read_text().splitlines()[len(before):]
    assert [ln.split(" ", 1)[1] for ln in logged] == said  # timed, in outputs/<profile>/events.log
    rows2 = pd.concat(pd.read_parquet(p) for p in (run / "sweep").rglob("*.parquet"))
    key = ["rung", "family", "item_id", "raw_output", "correct", "params_hash"]
    pd.testing.assert_frame_equal(rows[key].reset_index(drop=True), rows2[key].reset_index(drop=True))
    # the user's file changed after its first run: named in one line, never to be deleted
    # (folded in from test_user_model: the run recorded its hash)
    with open(mine, "ab") as f:
        f.write(b"\x00" * 32)
    fetch = subprocess.run([sys.executable, "-m", "gguf_fragility.cli", "fetch", MINE], env=env,
                           capture_output=True, text=True, timeout=600)
    assert fetch.returncode == 2
    (line,) = fetch.stderr.splitlines()
    assert "sha256 of" in line and f"set source.sha256 of '{MINE}' to the new hash" in line
    assert "delete" not in line.lower()


def _cli(tmp_path, mode: str, *args: str) -> subprocess.CompletedProcess:
    """`gguf-fragility run --profile tiny <args>` with notebooks replaced (``mode``)."""
    (tmp_path / "profiles").mkdir(exist_ok=True)
    (tmp_path / "profiles" / "tiny.yaml").write_text("models:\n  smollm2-135m:\n    rungs: [F16]\n"
                                                     "families: [science_mc]\nn_items: 2\n")
    return subprocess.run([sys.executable, "-m", "gguf_fragility.cli", "run", "--profile", "tiny",
                           *args], env=patched_env(tmp_path, mode, tmp_path / f"{mode}.flag"),
                          capture_output=True, text=True, timeout=300)


def test_partial_run_skips_the_site_saying_so_in_one_line(tmp_path):
    """`--stages ladder`: the old code rendered the site from chapters that never ran and
    printed "claim check FAILED", then exited 0."""
    done = _cli(tmp_path, "fast", "--stages", "ladder")
    assert done.returncode == 0, done.stderr[-2000:]
    site_lines = [ln for ln in done.stdout.splitlines() if ln.startswith("site:")]
    assert site_lines == ["site: not rendered: this run left out stage(s) probes calibrate sweep "
                          "stats transfer axes lesions, whose numbers the site and its claim check "
                          "need; `gguf-fragility run --profile tiny` runs every stage (finished "
                          "work is reused) and renders it"], done.stdout
    assert "claim check" not in done.stderr and not (tmp_path / "outputs" / "tiny" / "site").exists()


def test_failed_claim_check_fails_the_run(tmp_path):
    """Every stage ran, and a chapter's prose holds a number no table has: the run lists it
    and exits 1 (the old code printed "claim check FAILED" and exited 0)."""
    done = _cli(tmp_path, "claim")
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "site: claim check FAILED" in done.stdout
    (listed,) = [ln for ln in done.stderr.splitlines() if ln.startswith("site: UNTRACEABLE ")]
    assert listed.startswith("site: UNTRACEABLE chapters/05_stats.html: 8123.47"), listed
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("gguf-fragility: error:")]
    assert len(errors) == 1 and "claim check failed: 1 number(s)" in errors[0], errors
    assert (tmp_path / "outputs" / "tiny" / "site" / "index.html").is_file()


def test_skipped_notebooks_are_events_on_the_terminal_and_in_the_log(tmp_path):
    """A sweep without calibration skips its notebook: the line goes to stderr (under the
    progress bar) and, timed, to outputs/<profile>/events.log (the old code printed it on
    stdout only)."""
    done = _cli(tmp_path, "fast", "--stages", "sweep", "--no-site")
    assert done.returncode == 0, done.stderr[-2000:]
    said = [ln for ln in done.stderr.splitlines() if ln.startswith("gguf-fragility: skipping")]
    assert len(said) == 2, done.stderr[-2000:]  # F16 and the noise floor
    assert said[0].startswith("gguf-fragility: skipping 04_sweep__smollm2-135m__F16.ipynb: "
                              "smollm2-135m has no calibration in profile 'tiny'")
    logged = (tmp_path / "outputs" / "tiny" / "events.log").read_text().splitlines()
    assert [ln.split(" ", 1)[1] for ln in logged] == said


def _notebook(path, *sources):
    """A notebook file whose first cell is its parameters cell."""
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)
    return path


def test_a_chapter_run_prints_no_kernel_warnings_and_a_failing_one_its_error(tmp_path):
    """A normal chapter printed ipykernel's "running over TCP without encryption" warning
    and, at shutdown, "ERROR | KeyboardInterrupt caught in kernel" on the terminal."""
    good = _notebook(tmp_path / "good.ipynb", "x = 1", "print('answer', x + 1)")
    bad = _notebook(tmp_path / "bad.ipynb", "x = 1", "raise ValueError(f'bad value {x}')")

    def terminal(notebook, runs: int) -> subprocess.CompletedProcess:
        code = (
            "from pathlib import Path\n"
            "from gguf_fragility.run.pipeline import ChapterError, Job, execute\n"
            f"for _ in range({runs}):\n"
            "    try:\n"
            f"        execute(Job('stats', Path({str(notebook)!r}), Path({str(tmp_path)!r}) / 'out'"
            f" / {notebook.name!r}, {{'x': 3}}))\n"
            "    except ChapterError as exc:\n"
            "        print('CHAPTER ERROR:', exc)\n")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)

    normal = terminal(good, 3)
    assert normal.returncode == 0, normal.stderr
    said = normal.stdout + normal.stderr
    assert "without encryption" not in said and "KeyboardInterrupt" not in said, said
    assert "WARNING" not in said and "ERROR" not in said, said
    assert "answer 4" in (tmp_path / "out" / "good.ipynb").read_text()
    failing = terminal(bad, 1)
    assert failing.stdout.startswith("CHAPTER ERROR: bad (x=3) stopped: ValueError: bad value 3 "
                                     "(details: ")
    assert "bad value 3" in (tmp_path / "out" / "bad.ipynb").read_text()  # traceback kept
