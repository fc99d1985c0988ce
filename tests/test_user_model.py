"""Issue 17: the README's "Your own model" recipe, as a new user follows it.

The user's model is a local copy of SmolLM2 under another key, in a folder whose path has
spaces; the profile lists only that model. The registry and profiles are test files
(``GGUF_FRAGILITY_REGISTRY``, ``GGUF_FRAGILITY_PROFILES``); ``params/`` is never edited.
The whole run of every chapter on such a setup, and a changed file refused afterwards, are
the suite's one CLI end-to-end test,
``test_pipeline.test_run_command_executes_every_chapter_and_renders_the_site``.
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


def user_model_setup(tmp_path, source, profile_yaml: str, name: str = "mine"):
    """Environment, run folder and model file of a user with only their own model.

    ``source`` is copied to ``my models dir/SmolLM2 copy.gguf`` under ``tmp_path``, registered
    as ``my-smol`` (kind local), and ``profile_yaml`` written as profile ``name``; outputs and
    the model cache are folders of ``tmp_path``.
    """
    models = tmp_path / "my models dir"
    models.mkdir()
    mine = models / "SmolLM2 copy.gguf"
    shutil.copy(source, mine)
    (tmp_path / "models.yaml").write_text(REGISTRY.format(path=mine))
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / f"{name}.yaml").write_text(profile_yaml)
    env = {**os.environ, "GGUF_FRAGILITY_REGISTRY": str(tmp_path / "models.yaml"),
           "GGUF_FRAGILITY_PROFILES": str(profiles),
           "GGUF_FRAGILITY_OUTPUTS": str(tmp_path / "outputs"),
           "GGUF_FRAGILITY_CACHE": str(tmp_path / "cache")}
    return env, tmp_path / "outputs" / name, mine


@pytest.fixture
def user_setup(tmp_path, smol_source):
    """Environment, outputs folder and model folder of a user with only their own model."""
    return user_model_setup(tmp_path, smol_source, MINE)


def _cli(env, *args, timeout=1500):
    return subprocess.run([sys.executable, "-m", "gguf_fragility.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


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

