"""llama.cpp's own command-line tools, built by ``scripts/setup.sh`` from the same source and
``CMAKE_ARGS`` as the llama-cpp-python wheel (``scripts/build_llama_tools.sh``).

``.venv/llama_build.json`` records the build (version, cmake flags, tool paths)::

    from gguf_fragility.engine.tools import perplexity_kl, tool_path
    tool_path("llama-perplexity")
    perplexity_kl("F16.gguf", "Q2_K.gguf", text, n_ctx=256, work_dir=tmp)  # KLStats
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gguf_fragility import paths

TOOLS = ("llama-imatrix", "llama-perplexity", "llama-quantize")
BUILD_RECORD = paths.REPO / ".venv" / "llama_build.json"


def tool_path(name: str) -> Path:
    """Path of one of llama.cpp's tools: beside this Python (``.venv/bin``), else as recorded
    in ``.venv/llama_build.json``, else on ``PATH``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`TOOLS`.
    FileNotFoundError
        If the tool is nowhere; run ``bash scripts/setup.sh``.
    """
    if name not in TOOLS:
        raise ValueError(f"unknown llama.cpp tool {name!r}; setup builds {', '.join(TOOLS)}")
    here = Path(sys.executable).parent / name
    if here.is_file():
        return here
    if BUILD_RECORD.is_file():
        recorded = json.loads(BUILD_RECORD.read_text()).get("tools", {}).get(name)
        if recorded and Path(recorded).is_file():
            return Path(recorded)
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(f"{name} not found beside {sys.executable}, in {BUILD_RECORD} or on "
                            "PATH; run `bash scripts/setup.sh`, which builds it")


class KLStats(NamedTuple):
    """What ``llama-perplexity --kl-divergence`` prints at the end, and the tokens it used."""

    kl_mean: float  # "Mean    KLD"
    kl_median: float  # "Median  KLD"
    kl_p99: float  # "99.0%   KLD"
    same_top_rate: float  # "Same top p", as a share
    ppl_ratio: float  # "Mean PPL(Q)/PPL(base)"
    rms_dp: float  # "RMS Δp", as a share
    tokens: np.ndarray  # (n_chunks, n_ctx) int32, read from the base file's header
    log: str  # the whole output of the --kl-divergence run


_PATTERNS = {"kl_mean": r"Mean\s+KLD:\s+(\S+)", "kl_median": r"Median\s+KLD:\s+(\S+)",
             "kl_p99": r"99\.0%\s+KLD:\s+(\S+)", "same_top_rate": r"Same top p:\s+(\S+)",
             "ppl_ratio": r"Mean PPL\(Q\)/PPL\(base\)\s+:\s+(\S+)", "rms_dp": r"RMS Δp\s+:\s+(\S+)"}
_PERCENT = ("same_top_rate", "rms_dp")


def read_base_tokens(path: Path) -> np.ndarray:
    """The tokens in a ``--kl-divergence-base`` file: magic ``_logits_``, then int32 n_ctx,
    n_vocab, n_chunk and n_chunk * n_ctx tokens (``perplexity`` in perplexity.cpp)."""
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            raise ValueError(f"{path} is not a llama-perplexity log-probability file")
        n_ctx, _n_vocab, n_chunk = np.frombuffer(f.read(12), dtype="<i4")
        return np.frombuffer(f.read(4 * int(n_ctx) * int(n_chunk)), dtype="<i4").reshape(
            int(n_chunk), int(n_ctx))


def perplexity_kl(base_gguf: str | Path, rung_gguf: str | Path, text: str, *, n_ctx: int,
                  work_dir: str | Path, n_threads: int = 2, flash_attn: str = "off",
                  timeout_s: float = 600) -> KLStats:
    """KL divergence of ``rung_gguf`` from ``base_gguf`` measured by llama.cpp's own tool.

    Runs ``llama-perplexity -f text --kl-divergence-base base.kld`` on the base model, then
    ``--kl-divergence`` on the rung, both with ``-c n_ctx -b n_ctx`` (one chunk per decode)
    and ``-fa flash_attn``.

    Parameters
    ----------
    base_gguf, rung_gguf : str or Path
    text : str
        The text llama-perplexity tokenizes (written to ``work_dir/text.txt`` without a
        trailing newline, which ``-f`` would strip).
    n_ctx : int
        Tokens per chunk; the text must hold at least two chunks.
    work_dir : str or Path
        Where the text and the base log-probabilities (``base.kld``) are written; an existing
        ``base.kld`` is reused, so several rungs share one base run.
    n_threads : int, default 2
    flash_attn : {"off", "on", "auto"}, default "off"
        llama-perplexity's ``-fa``; the project's engine runs with it off.

    Returns
    -------
    KLStats

    Raises
    ------
    RuntimeError
        If llama-perplexity fails or prints no statistics (it prints none below 100 positions).
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    text_file, base = work / "text.txt", work / "base.kld"
    common = ["-c", str(n_ctx), "-b", str(n_ctx), "-t", str(n_threads), "-fa", flash_attn]
    exe = str(tool_path("llama-perplexity"))
    if not base.is_file():
        text_file.write_text(text.removesuffix("\n"))
        _run([exe, "-m", str(base_gguf), "-f", str(text_file), "--kl-divergence-base",
              str(base) + ".tmp", *common], timeout_s)
        Path(str(base) + ".tmp").replace(base)
    log = _run([exe, "-m", str(rung_gguf), "--kl-divergence-base", str(base), "--kl-divergence",
                *common], timeout_s)
    values = {}
    for field, pattern in _PATTERNS.items():
        m = re.search(pattern, log)
        if m is None:
            raise RuntimeError(f"llama-perplexity printed no {pattern!r}; its output ends:\n{log[-2000:]}")
        values[field] = float(m.group(1)) / (100.0 if field in _PERCENT else 1.0)
    return KLStats(**values, tokens=read_base_tokens(base), log=log)


def _run(cmd: list[str], timeout_s: float) -> str:
    """Run a tool; its combined output, or RuntimeError with the output's end."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          errors="replace")
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{out[-2000:]}")
    return out
