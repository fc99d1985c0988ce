"""Issue 17: the README's "Your own model" recipe, end to end, as a new user follows it.

The user's model is a local copy of SmolLM2 under another key, in a folder whose path has
spaces; the profile lists only that model. The registry and profiles are test files
(``GGUF_FRAGILITY_REGISTRY``, ``GGUF_FRAGILITY_PROFILES``); ``params/`` is never edited.
"""

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.llama, pytest.mark.slow]

REGISTRY = """models:
  my-smol:
    family: SmolLM2
    display: my SmolLM2 copy
    licence: Apache-2.0
    source: {{kind: local, path: "{path}", sha256: null}}
"""

MINE = """# mine: only the user's model, the smallest run of every chapter
models:
  my-smol:
    rungs: [F16, Q2_K]
families: [science_mc, string_ops]
n_items: 3
demo_items: 1
min_usable: 0
min_families: 1
shift_passages: 1
shift_tokens: 64
n_boot: 500
engine: {n_ctx: 1024, n_threads: 2}
"""


@pytest.fixture
def user_setup(tmp_path, smol_source):
    """Environment, outputs folder and model folder of a user with only their own model."""
    models = tmp_path / "my models dir"
    models.mkdir()
    mine = models / "SmolLM2 copy.gguf"
    shutil.copy(smol_source, mine)
    (tmp_path / "models.yaml").write_text(REGISTRY.format(path=mine))
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "mine.yaml").write_text(MINE)
    env = {**os.environ, "GGUF_FRAGILITY_REGISTRY": str(tmp_path / "models.yaml"),
           "GGUF_FRAGILITY_PROFILES": str(profiles),
           "GGUF_FRAGILITY_OUTPUTS": str(tmp_path / "outputs"),
           "GGUF_FRAGILITY_CACHE": str(tmp_path / "cache")}
    return env, tmp_path / "outputs" / "mine", mine


def _cli(env, *args, timeout=1500):
    return subprocess.run([sys.executable, "-m", "gguf_fragility.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_user_model_only_profile_runs_every_chapter_and_renders_the_site(user_setup):
    env, run, mine = user_setup
    done = _cli(env, "run", "--profile", "mine")
    assert done.returncode == 0, done.stderr[-3000:]
    executed = sorted(p.name for p in (run / "notebooks").glob("*.ipynb"))
    assert executed == ["01_ladder__my-smol.ipynb", "02_probes.ipynb",
                        "03_calibrate__my-smol.ipynb", "04_sweep__my-smol__F16-floor.ipynb",
                        "04_sweep__my-smol__F16.ipynb", "04_sweep__my-smol__Q2_K.ipynb",
                        "05_stats.ipynb", "06_transfer.ipynb", "07_axes.ipynb",
                        "08_lesions.ipynb"]
    assert "my-smol" in (run / "notebooks" / "02_probes.ipynb").read_text()
    assert (run / "ladder" / "my-smol" / "ladder.csv").is_file()
    assert (run / "site" / "index.html").is_file()
    assert mine.is_file()  # the user's file is read, never moved or changed


def test_bad_user_model_file_stops_in_one_line(user_setup):
    env, run, mine = user_setup
    mine.write_bytes(b"PK\x03\x04 this is a zip, not a GGUF" * 10)
    done = _cli(env, "run", "--profile", "mine", "--stages", "ladder", "--no-site", timeout=600)
    assert done.returncode == 2
    err = [x for x in done.stderr.splitlines() if x.startswith("gguf-fragility: error:")]
    assert len(err) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "PapermillExecutionError" not in done.stderr
    assert "01_ladder (profile=mine, model=my-smol) stopped: GGUFError: " in err[0]
    assert f"{mine} is not a GGUF file" in err[0]
    assert f"(details: {run / 'notebooks' / '01_ladder__my-smol.ipynb'})" in err[0]
    assert "delete" not in err[0].lower()
    assert mine.is_file()


def test_changed_user_model_is_never_to_be_deleted(user_setup):
    env, run, mine = user_setup
    assert _cli(env, "fetch", "my-smol", timeout=600).returncode == 0  # records the hash
    with open(mine, "ab") as f:
        f.write(b"\x00" * 32)
    done = _cli(env, "fetch", "my-smol", timeout=600)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "sha256 of" in line and "set source.sha256 of 'my-smol' to the new hash" in line
    assert "delete" not in line.lower()
