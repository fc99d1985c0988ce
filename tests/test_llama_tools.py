"""llama.cpp's own tools as setup builds them, and the project's distribution shift against
``llama-perplexity --kl-divergence`` on the very same tokens (issue 15, parts 1 and 5), on the
real SmolLM2: F16 reference, Q8_0 and Q2_K, flash attention off on both sides."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_profile import tiny_profile_yaml

from gguf_fragility import paths
from gguf_fragility.profile import load_profile

pytestmark = pytest.mark.llama

SMOL = "smollm2-135m"
N_PASSAGES, N_CTX = 1, 128  # ~550 tokens: 4 chunks, 63 scored positions each


def test_setup_built_the_tools_and_recorded_the_build():
    from gguf_fragility.engine.tools import TOOLS, tool_path

    record = json.loads((paths.REPO / ".venv" / "llama_build.json").read_text())
    assert record["llama_cpp_python"] == "0.3.36"
    # the wheel's CMAKE_ARGS, plus static linking and no network code
    assert record["tools_cmake_args"][-len(record["cmake_args"].split()):] == record["cmake_args"].split()
    assert {"-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF"} <= set(record["tools_cmake_args"])
    for name in TOOLS:
        exe = tool_path(name)
        assert exe.parent == Path(sys.executable).parent  # .venv/bin, where setup put them
        assert Path(record["tools"][name]).resolve() == exe.resolve()
        out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
        assert "usage" in (out.stdout + out.stderr).lower(), (name, out.returncode)
        linked = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
        assert "libllama" not in linked and "libggml" not in linked  # static
    help_text = subprocess.run([tool_path("llama-perplexity"), "--help"], capture_output=True,
                               text=True, timeout=60)
    assert help_text.returncode == 0 and "--kl-divergence" in help_text.stdout + help_text.stderr


def test_unknown_tool_is_refused_with_the_known_ones():
    from gguf_fragility.engine.tools import tool_path

    with pytest.raises(ValueError, match="llama-server.*llama-imatrix, llama-perplexity"):
        tool_path("llama-server")


@pytest.fixture(scope="module")
def shift_run(tmp_path_factory, smol_ladder):
    """A profile with the F16/Q8_0/Q2_K ladder and the reference's store on one passage."""
    from gguf_fragility.ladder.quantize import build_ladder
    from gguf_fragility.run.sweep import ensure_reference

    root = tmp_path_factory.mktemp("kl")
    yaml = tiny_profile_yaml(["arithmetic"], 1, n_threads=2).replace(
        "rungs: [F16, Q2_K]", "rungs: [F16, Q8_0, Q2_K]").replace(
        "shift_passages: 2\nshift_tokens: 64", f"shift_passages: {N_PASSAGES}\nshift_tokens: {N_CTX}")
    (root / "kl.yaml").write_text(yaml + f"outputs: {str(root / 'outputs')!r}\n")
    profile = load_profile(root / "kl.yaml")
    assert (profile.shift_passages, profile.shift_tokens) == (N_PASSAGES, N_CTX)
    ladder = build_ladder(SMOL, ["F16", "Q8_0", "Q2_K"], run=profile.layout, n_threads=2)
    ensure_reference(profile, SMOL)
    return profile, ladder.set_index("rung").file, root / "llama-perplexity"


@pytest.mark.slow
@pytest.mark.parametrize("rung", ["Q8_0", "Q2_K"])
def test_kl_and_same_top_match_llama_perplexity_on_the_same_tokens(shift_run, rung):
    """Before issue 15 the project's mean KL was 16-22 % below llama-perplexity's (top-32 plus
    a tail bucket, every position of each window); now it must be within 2 %."""
    from gguf_fragility.engine.tools import perplexity_kl
    from gguf_fragility.run.shift import read_reference, sample_text
    from gguf_fragility.run.sweep import measure_shift

    profile, files, work = shift_run
    ours = measure_shift(profile, SMOL, rung)
    theirs = perplexity_kl(files["F16"], files[rung], sample_text(N_PASSAGES), n_ctx=N_CTX,
                           work_dir=work, n_threads=2, flash_attn="off")
    store = read_reference(profile.layout.reference_logprobs(SMOL))
    np.testing.assert_array_equal(theirs.tokens, store.chunks.tokens)  # the very same tokens
    assert ours["n_positions"] == len(theirs.tokens) * (N_CTX - 1 - N_CTX // 2) >= 100
    assert ours["flash_attn"] == "off"
    assert ours["kl_mean"] == pytest.approx(theirs.kl_mean, rel=0.02)
    assert ours["same_top_rate"] == pytest.approx(theirs.same_top_rate, rel=0.02)
    assert ours["ppl_ratio"] == pytest.approx(theirs.ppl_ratio, rel=0.02)
    assert ours["rms_dp"] == pytest.approx(theirs.rms_dp, rel=0.02)
    print(f"\n{rung}: project KL {ours['kl_mean']:.6f} same-top {ours['same_top_rate']:.4f} "
          f"ppl ratio {ours['ppl_ratio']:.4f} | llama-perplexity KL {theirs.kl_mean:.6f} "
          f"same-top {theirs.same_top_rate:.4f} ppl ratio {theirs.ppl_ratio:.4f}")
