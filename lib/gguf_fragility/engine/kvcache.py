"""The KV-cache axis: the bytes a KV cache takes.

A *KV-cache rung* ``<rung>+kv_<type>`` is the weights of ``<rung>`` (its ladder file, no new
file) run with llama.cpp's K and V cache stored in ``<type>`` (``-ctk``/``-ctv`` of
llama.cpp's tools) and flash attention on, which llama.cpp needs for a quantized V cache.
``<rung>+kv_f16`` is the control: the same flash-attention setting with an f16 cache, so
that ``X+kv_q4_0`` against ``X+kv_f16`` changes only the cache type. A plain rung keeps an
f16 cache with flash attention off (the engine's default).

Rung names are read by :func:`gguf_fragility.engine.rungs.parse_rung`, which also holds
:data:`~gguf_fragility.engine.rungs.KV_TYPES` (a test checks it against llama-cpp-python's
``GGML_TYPE_*`` constants). No llama.cpp import here: costs are computed where it is absent.

Usage::

    kv_cache_bytes(kv_shape(open_gguf(path)), n_ctx=2048, kv_cache="q8_0")
"""

from __future__ import annotations

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from gguf_fragility.engine.gguf import KvShape
from gguf_fragility.engine.rungs import KV_DEFAULT, KV_TYPES


def bytes_per_element(kv_cache: str) -> float:
    """Bytes one cached K or V element takes in ``kv_cache`` (f16: 2, q8_0: 34/32, q4_0: 18/32)."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(KV_TYPES[kv_cache])]
    return size / block


def kv_cache_bytes(shape: KvShape, n_ctx: int, kv_cache: str = KV_DEFAULT) -> int:
    """
    Bytes of llama.cpp's K and V cache for ``n_ctx`` cells of a model, both in ``kv_cache``.

    Parameters
    ----------
    shape : KvShape
        Layers, KV heads per layer and head sizes (:func:`gguf_fragility.engine.gguf.kv_shape`).
    n_ctx : int
        Cache cells (tokens): the profile's ``engine.n_ctx``. The engine's cache is unified
        across its sequences, so this is the whole cache, not a per-sequence one.
    kv_cache : {"f16", "q8_0", "q4_0"}, default "f16"

    Returns
    -------
    int
        ``n_ctx * sum over layers of heads_kv * (key_length + value_length)`` elements, each
        row stored in whole ggml blocks of the cache type.

    Raises
    ------
    ValueError
        If a layer's K or V row (heads × head size) is not a whole number of blocks, which
        llama.cpp cannot store in that type either.

    Notes
    -----
    llama.cpp may round the number of cells up (to a multiple of 256 in recent versions), so
    its own log line can show a slightly larger cache for an ``n_ctx`` that is not a
    multiple of 256. Recurrent and sliding-window layers are not modelled: every layer is
    counted as full attention, as in the models of this project (Llama, Qwen2).
    """
    if kv_cache not in KV_TYPES:
        raise ValueError(f"unknown KV-cache type {kv_cache!r}; use one of {', '.join(KV_TYPES)}")
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(KV_TYPES[kv_cache])]
    per_cell = 0
    for heads in shape.heads_kv:
        for width in (heads * shape.key_length, heads * shape.value_length):
            if width % block:
                raise ValueError(f"a KV row of {width} elements is not a multiple of the "
                                 f"{block}-element blocks of {kv_cache}")
            per_cell += width // block * size
    return n_ctx * per_cell
