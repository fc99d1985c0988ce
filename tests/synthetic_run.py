"""Profiles over the synthetic models, and one synthetic run of chapters 5-8 (issue 24).

The run (:func:`run_chapters`) is executed once per test session by the ``synthetic_chapters``
fixture of ``conftest.py`` and read by the notebook tests of chapters 5 (``test_stats_notebook``),
6 (``test_site``), 7 (``test_axes``) and 8 (``test_lesions``); only the site test writes beside
it (its ``site/`` folder).
"""

import contextlib
from pathlib import Path
from typing import NamedTuple

import pytest

from gguf_fragility import paths
from gguf_fragility.artifacts import Results
from gguf_fragility.layout import outputs_root
from gguf_fragility.profile import Profile, load_profile
from gguf_fragility.testing import write_synthetic, write_synthetic_registry

SITE_RUNGS = ("F16", "Q8_0", "Q4_K_M", "Q2_K")  # the ladder of the in-process site tests
# the shared run: both chapter 7 axes of Q4_K_M / Q2_K and chapter 8's lesions of Q8_0 -> Q2_K
RUNGS = ("F16", "Q8_0", "Q4_K_M", "Q3_K_M", "Q2_K")
N_MODELS, N_FAMILIES, N_ITEMS, SEED = 2, 5, 60, 2
N_BOOT = 300  # not the profile default (10,000): chapter 5 must take the profile's value
CHAPTERS = ("05_stats", "06_transfer", "07_axes", "08_lesions")


@contextlib.contextmanager
def synthetic_registry():
    """``GGUF_FRAGILITY_REGISTRY`` names the synthetic models while the block runs (kernels too)."""
    reg = write_synthetic_registry(outputs_root() / "profiles")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GGUF_FRAGILITY_REGISTRY", str(reg))
        yield


def synthetic_profile(name: str, rungs: tuple[str, ...] = SITE_RUNGS, n_boot: int = 200) -> Profile:
    """A profile over the synthetic models, written as ``<name>.yaml`` beside the outputs."""
    path = outputs_root() / "profiles" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"models:\n  synth-0: {{rungs: {list(rungs)}}}\n"
                    f"  synth-1: {{rungs: {list(rungs)}}}\nn_boot: {n_boot}\n")
    with synthetic_registry():
        return load_profile(path)


class Chapters(NamedTuple):
    """The shared synthetic run after chapters 5-8 (read it; do not change it)."""

    profile: Profile  # over synth-0 and synth-1 with :data:`RUNGS`, n_boot :data:`N_BOOT`
    results: Results  # what was written: ladder, KV and imatrix rungs, lesion rungs
    executed: Path  # folder of the executed notebooks ``<chapter>.ipynb``


def run_chapters(name: str, no_llama: Path) -> Chapters:
    """
    Write the synthetic run ``name`` and execute chapters 5-8 on it by papermill.

    The kernels cannot import ``llama_cpp`` (``no_llama``: a folder with the blocking
    ``sitecustomize.py``, put on ``PYTHONPATH``): the statistics chapters run on a laptop
    without it.
    """
    import papermill

    profile = synthetic_profile(name, RUNGS, N_BOOT)
    r = write_synthetic(profile.layout, n_models=N_MODELS, n_families=N_FAMILIES,
                        n_items=N_ITEMS, rungs=RUNGS, seed=SEED, kv_weights="Q4_K_M",
                        imatrix_weights="Q2_K", lesions=True)
    executed = profile.layout.executed_dir
    executed.mkdir(parents=True, exist_ok=True)
    with synthetic_registry(), pytest.MonkeyPatch.context() as mp:  # the kernels load the profile
        mp.setenv("PYTHONPATH", str(no_llama))
        for nb in CHAPTERS:
            papermill.execute_notebook(
                str(paths.NOTEBOOKS / f"{nb}.ipynb"), str(executed / f"{nb}.ipynb"),
                parameters={"profile": str(outputs_root() / "profiles" / f"{name}.yaml")},
                kernel_name="python3", cwd=str(paths.NOTEBOOKS), progress_bar=False)
    return Chapters(profile, r, executed)
