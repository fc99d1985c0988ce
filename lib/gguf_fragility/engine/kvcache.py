"""The KV-cache axis: rung names like ``Q4_K_M+kv_q8_0`` and the bytes a KV cache takes.

A *KV-cache rung* ``<rung>+kv_<type>`` is the weights of ``<rung>`` (its ladder file, no new
file) run with llama.cpp's K and V cache stored in ``<type>`` (``-ctk``/``-ctv`` of
llama.cpp's tools) and flash attention on, which llama.cpp needs for a quantized V cache.
``<rung>+kv_f16`` is the control: the same flash-attention setting with an f16 cache, so
that ``X+kv_q4_0`` against ``X+kv_f16`` changes only the cache type. A plain rung keeps an
f16 cache with flash attention off (the engine's default).

No llama.cpp import here: profiles are checked, and costs computed, where it is absent. A
test checks :data:`KV_TYPES` against llama-cpp-python's ``GGML_TYPE_*`` constants.

Usage::

    parse_rung("Q4_K_M+kv_q8_0")   # RungSpec(weights='Q4_K_M', kv_cache='q8_0')
    kv_cache_bytes(kv_shape(open_gguf(path)), n_ctx=2048, kv_cache="q8_0")
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from gguf_fragility.engine.ftypes import ftype
from gguf_fragility.engine.gguf import KvShape

# cache types a KV rung may name -> ggml type id (``enum ggml_type`` in ggml.h), spelled as
# llama.cpp's ``--cache-type-k`` spells them
KV_TYPES: dict[str, int] = {"f16": 1, "q8_0": 8, "q4_0": 2}
KV_DEFAULT = "f16"  # llama.cpp's default cache type (plain rungs)
KV_SUFFIX = "+kv_"
_KV_RUNG = re.compile(r"(?P<weights>[^+]+)\+kv_(?P<cache>[^+]*)")
_EXAMPLE = "e.g. 'Q4_K_M+kv_q8_0'"


class RungSpec(NamedTuple):
    """Result of :func:`parse_rung`: what a rung name asks for."""

    weights: str  # the ladder rung whose file is loaded (llama.cpp ftype name)
    kv_cache: str | None  # cache type of a KV rung (key of KV_TYPES); None for a plain rung

    @property
    def cache(self) -> str:
        """The cache type the rung runs with (f16 for a plain rung)."""
        return self.kv_cache or KV_DEFAULT

    @property
    def flash_attn(self) -> bool:
        """Flash attention: on for every KV rung (controls included), off for a plain rung."""
        return self.kv_cache is not None


def parse_rung(rung: str) -> RungSpec:
    """
    Split a rung name into its weights' rung and its KV-cache type.

    Parameters
    ----------
    rung : str
        A llama.cpp ftype name (``Q4_K_M``) or a KV-cache rung ``<ftype>+kv_<type>`` with
        ``<type>`` in {"f16", "q8_0", "q4_0"}.

    Returns
    -------
    RungSpec
        ``weights`` and ``kv_cache`` (None for a plain rung).

    Raises
    ------
    ValueError
        For an unknown ftype, an unknown cache type or a malformed suffix; the message
        names the value and the spelling to use.
    """
    if "+" not in rung:
        ftype(rung)
        return RungSpec(rung, None)
    m = _KV_RUNG.fullmatch(rung)
    types = ", ".join(KV_TYPES)
    if m is None:
        raise ValueError(f"rung {rung!r}: malformed KV-cache suffix; write "
                         f"<rung>{KV_SUFFIX}<type> with one suffix and <type> one of {types} "
                         f"({_EXAMPLE})")
    weights, cache = m.group("weights"), m.group("cache")
    if cache not in KV_TYPES:
        raise ValueError(f"rung {rung!r}: unknown KV-cache type {cache!r}; use one of {types}, "
                         f"spelled as llama.cpp's --cache-type-k ({_EXAMPLE})")
    try:
        ftype(weights)
    except ValueError as exc:
        raise ValueError(f"rung {rung!r}: its weights: {exc}") from None
    return RungSpec(weights, cache)


def is_kv_rung(rung: str) -> bool:
    """True for a KV-cache rung name (``<rung>+kv_<type>``), without validating it."""
    return KV_SUFFIX in rung


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
