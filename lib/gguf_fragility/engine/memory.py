"""llama.cpp's own memory accounting of a loaded model: the buffers it logs at load.

llama.cpp logs each buffer it allocates (``load_tensors: CPU_Mapped model buffer size =
256.63 MiB``, ``llama_kv_cache: CPU KV buffer size = 45.00 MiB``, ``sched_reserve: CPU
compute buffer size = 99.38 MiB``); :func:`llama_log` captures the log through its callback
(``llama_log_set``), whatever llama-cpp-python's ``verbose``, and :func:`planned_memory`
reads the figures. :class:`gguf_fragility.engine.llama.Engine` records them as
``Engine.memory``. Usage::

    with llama_log() as model_log:
        llm = llama_cpp.Llama(model_path=path, verbose=False)
    planned_memory(model_log, model_log)
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import llama_cpp


class PlannedMemory(NamedTuple):
    """The memory llama.cpp allocates for one loaded rung: see :func:`planned_memory`."""

    model_bytes: int  # weights: every "model buffer" (mapped file, repacked copies, devices)
    kv_bytes: int  # K and V cache (and recurrent state) at the context's n_ctx and cache type
    compute_bytes: int  # compute graphs' buffers plus the logits output buffer
    total_bytes: int  # their sum: what a user plans with (host and devices together)


# "<func>: <buffer> <kind> buffer size = <MiB> MiB", as llama.cpp logs each buffer it allocates
# (llama-model.cpp load_tensors, llama-kv-cache.cpp, llama-memory-recurrent.cpp,
# llama-context.cpp); the figure is printed in MiB with two decimals
_BUFFER_LINE = re.compile(r"\S+\s+(model|KV|RS|compute|output) buffer size =\s*([0-9.]+) MiB")
_KIND = {"model": "model", "KV": "kv", "RS": "kv", "compute": "compute", "output": "compute"}
_LOG_LOCK = threading.Lock()  # llama.cpp has one log callback per process


@contextmanager
def llama_log() -> Iterator[list[str]]:
    """The lines llama.cpp logs while the block runs (filled in when it ends).

    Every message also goes on to llama-cpp-python's own callback
    (``llama_cpp._logger.llama_log_callback``, which prints it or not by ``verbose``), and
    that callback is set back afterwards: the capture sees every level whatever ``verbose``
    says, since llama.cpp calls the callback before any filtering.
    """
    from llama_cpp import _logger

    forward = _logger.llama_log_callback
    pieces: list[bytes] = []

    @llama_cpp.llama_log_callback
    def tee(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        pieces.append(text or b"")
        forward(level, text, user_data)

    lines: list[str] = []
    with _LOG_LOCK:
        llama_cpp.llama_log_set(tee, ctypes.c_void_p(0))
        try:
            yield lines
        finally:
            llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
            lines += b"".join(pieces).decode(errors="replace").splitlines()


def planned_memory(model_log: Sequence[str], context_log: Sequence[str]) -> PlannedMemory | None:
    """
    llama.cpp's own memory accounting of a model and a context, from its load-time log.

    Parameters
    ----------
    model_log : sequence of str
        Lines logged while the model was loaded (``load_tensors: CPU_Mapped model buffer
        size = 256.60 MiB``).
    context_log : sequence of str
        Lines logged while the context in use was created (``llama_kv_cache: CPU KV buffer
        size = 45.00 MiB``, ``llama_context: CPU output buffer size = 0.19 MiB``,
        ``sched_reserve: CPU compute buffer size = 99.38 MiB``).

    Returns
    -------
    PlannedMemory or None
        Bytes per kind, each the sum over the buffers (and devices) of that kind; None when
        the log lacks a model, a KV or a compute buffer line (another llama.cpp's wording).

    Notes
    -----
    These are the buffers llama.cpp allocates at load, the figures its tools print: the
    weights (with mmap, the mapped tensor data), the KV cache of ``n_ctx`` cells in the
    cache type (the engine's cache is unified across sequences), the logits output buffer
    and the compute buffers reserved for the largest graph (``n_ubatch`` tokens; for a
    small model mostly its logits, ``n_vocab`` floats per token). They leave out the
    process itself (the Python interpreter, libraries, tokenizer), which peak RSS counts. The C API offers
    ``llama_model_size`` (tensor bytes, no repacking) but nothing for the KV or compute
    buffers, hence the log. A CPU backend that repacks some quantized tensors (its
    ``CPU_REPACK`` buffer, e.g. Q4_0 and Q4_K on AVX2) holds them twice, in the mapped file
    and repacked, so the weights can take more than the file. Figures are logged in MiB
    with two decimals: each is exact to about 5 KiB.
    """
    found = {"model": 0, "kv": 0, "compute": 0}
    seen = set()
    for kinds, log in ((("model",), model_log), (("kv", "compute"), context_log)):
        for line in log:
            m = _BUFFER_LINE.search(line)
            if m and _KIND[m.group(1)] in kinds:
                found[_KIND[m.group(1)]] += round(float(m.group(2)) * 2**20)
                seen.add(m.group(1))
    if not ({"model", "compute"} <= seen and seen & {"KV", "RS"}):
        return None
    return PlannedMemory(found["model"], found["kv"], found["compute"], sum(found.values()))
