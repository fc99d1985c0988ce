"""Reading, checking and rewriting GGUF files with the ``gguf`` package.

A file's name does not tell its real precision: llama.cpp silently falls back to
32-wide block types when a weight row is not a multiple of 256. This module
reads what is really inside (tensor types, bits per weight) and writes the F16
reference when the only available file is already quantized.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize

from gguf_fragility import paths
from gguf_fragility.engine.ftypes import FTYPE_NAMES

GGUF_MAGIC = b"GGUF"
FLOAT_TYPES = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}


class GGUFError(ValueError):
    """A file that is missing, not GGUF, truncated or not what was expected."""


class Census(NamedTuple):
    """What is really inside a GGUF: see :func:`tensor_census`."""

    n_params: int  # weights, all tensors
    n_bytes: int  # tensor data bytes
    bpw: float  # real bits per weight over all tensors (embeddings and output included)
    params_by_type: dict[str, int]  # ggml type name -> number of weights
    tensors_by_type: dict[str, int]  # ggml type name -> number of tensors
    n_fallback: int  # tensors quantized to a 32-block type where a 256-block type was asked
    fallback_params: int


def _advice(path: Path) -> str:
    """What to do about a bad file: never delete a user's own file."""
    try:
        path.resolve().relative_to(paths.model_cache().resolve())
    except ValueError:
        return ("It is not a file this project made: copy or convert it again, or point "
                f"source.path in {paths.registry()} at a complete GGUF.")
    return "This project made it in its model cache: rerun, and it is rebuilt or fetched again."


class _Cut(Exception):
    """Raised by :class:`_SizedReader` when the tensors end past the file's end."""

    def __init__(self, need: int):
        super().__init__(need)
        self.need = need


class _SizedReader(GGUFReader):
    """gguf's reader, faster on large metadata arrays, that measures where the tensors end
    before viewing them, so a cut file fails with the bytes it needs rather than numpy's
    view error.

    gguf's own reader views every element of a metadata array through ``np.memmap``
    slicing: a 49,152-token vocabulary and its merges made that 250,000 memmap views and
    about 3 s per open on SmolLM2-135M (10 s on Qwen2.5-Coder-1.5B), paid by every engine
    load and ladder step. Here the file is viewed as a plain array (still mapped, not read)
    and arrays of scalars or strings are walked directly; the fields come out exactly as
    gguf builds them (same parts, data indices and types), byte-swapped files take gguf's
    own path.
    """

    def __setattr__(self, name: str, value) -> None:
        if name == "data" and isinstance(value, np.memmap):  # gguf's __init__ maps the file
            value = value.view(np.ndarray)  # the same mapped bytes without memmap's per-slice cost
        super().__setattr__(name, value)

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list, list[int], list]:
        if raw_type != GGUFValueType.ARRAY or self.byte_order != "I":
            return super()._get_field_parts(orig_offs, raw_type)
        data = self.data
        raw_itype, count = data[orig_offs:orig_offs + 4], data[orig_offs + 4:orig_offs + 12]
        if len(count) < 8:
            raise ValueError(f"metadata array header at byte {orig_offs} runs past the file's end")
        raw_itype, count = raw_itype.view(np.uint32), count.view(np.uint64)
        itype, n, offs = GGUFValueType(int(raw_itype[0])), int(count[0]), orig_offs + 12
        parts: list[np.ndarray] = [raw_itype, count]
        scalar = self.gguf_scalar_to_np.get(itype)
        if scalar is not None:
            values = data[offs:offs + n * np.dtype(scalar).itemsize].view(scalar)
            if len(values) < n:
                raise ValueError(f"metadata array at byte {orig_offs} runs past the file's end")
            parts += [values[i:i + 1] for i in range(n)]  # one part per element, as gguf
            return 12 + int(values.nbytes), parts, list(range(2, n + 2)), [GGUFValueType.ARRAY, itype]
        if itype != GGUFValueType.STRING:  # nested arrays: gguf's own walk
            return super()._get_field_parts(orig_offs, raw_type)
        for _ in range(n):
            length = data[offs:offs + 8]
            end = offs + 8 + (int(length.view(np.uint64)[0]) if len(length) == 8 else 0)
            if len(length) < 8 or end > len(data):
                raise ValueError(f"metadata string at byte {offs} runs past the file's end")
            parts += [length.view(np.uint64), data[offs + 8:end]]
            offs = end
        return offs - orig_offs, parts, list(range(3, 2 * n + 2, 2)), [GGUFValueType.ARRAY, itype]

    def _build_tensors(self, start_offs: int, fields: list) -> None:
        need = start_offs
        for field in fields:
            dims, raw_dtype, offset = field.parts[3], field.parts[4], field.parts[5]
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(int(raw_dtype[0]))]
            need = max(need, start_offs + int(offset[0]) + int(np.prod(dims)) * size // block)
        if need > len(self.data):
            raise _Cut(need)
        super()._build_tensors(start_offs, fields)


def open_gguf(path: str | os.PathLike) -> GGUFReader:
    """Open a GGUF after checking it exists, has the GGUF magic and is complete.

    Raises
    ------
    GGUFError
        Naming the file, what is wrong with it and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"GGUF file not found: {path}. {_advice(path)}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{path} is not a GGUF file (first bytes {magic!r}, expected {GGUF_MAGIC!r}). "
                        f"Point source.path in {paths.registry()} at a .gguf model file "
                        "(convert other formats with llama.cpp's convert_hf_to_gguf.py).")
    size = path.stat().st_size
    try:
        return _SizedReader(path)
    except _Cut as cut:
        raise GGUFError(f"{path} is truncated: its tensors need {cut.need} bytes, the file has "
                        f"{size}. {_advice(path)}") from None
    except Exception as exc:  # gguf raises bare ValueError/IndexError/KeyError on a cut header
        raise GGUFError(f"{path} is damaged or truncated: its header (metadata and tensor list) "
                        f"cannot be read from its {size} bytes. "
                        f"{_advice(path)}") from exc


def file_type_name(reader: GGUFReader) -> str:
    """llama.cpp's name of the file type recorded in ``general.file_type`` (e.g. ``Q4_K_M``)."""
    field = reader.fields.get("general.file_type")
    if field is None:
        return "unknown"
    code = int(field.contents())
    return FTYPE_NAMES.get(code, f"ftype {code}")


def is_full_precision(reader: GGUFReader) -> bool:
    """True when every tensor is F32, F16 or BF16."""
    return all(t.tensor_type in FLOAT_TYPES for t in reader.tensors)


def tensor_census(reader: GGUFReader, nominal: str | None = None) -> Census:
    """Count weights per ggml type and the real bits per weight.

    Parameters
    ----------
    reader : GGUFReader
    nominal : str, optional
        The ggml type the rung asked for (e.g. ``"Q2_K"``). When it is a 256-block type,
        quantized tensors stored in a 32-block type are counted as fallbacks.

    Notes
    -----
    K-quants and i-quants need rows that are a multiple of 256; llama.cpp
    (``llama_tensor_get_type``) then falls back to Q4_0/Q5_0/Q5_1/Q8_0/IQ4_NL.
    """
    nominal_block = GGML_QUANT_SIZES[GGMLQuantizationType[nominal]][0] if nominal else None
    params: Counter[str] = Counter()
    tensors: Counter[str] = Counter()
    n_fb = fb_params = n_bytes = 0
    for t in reader.tensors:
        name = t.tensor_type.name
        params[name] += int(t.n_elements)
        tensors[name] += 1
        n_bytes += int(t.n_bytes)
        block = GGML_QUANT_SIZES[t.tensor_type][0]
        if nominal_block == 256 and t.tensor_type not in FLOAT_TYPES and block == 32:
            n_fb += 1
            fb_params += int(t.n_elements)
    n_params = sum(params.values())
    return Census(n_params, n_bytes, 8.0 * n_bytes / n_params, dict(params), dict(tensors),
                  n_fb, fb_params)


_MISSING = object()  # no default: a missing metadata field is an error


class KvShape(NamedTuple):
    """What sizes a model's KV cache: see :func:`kv_shape`."""

    heads_kv: tuple[int, ...]  # KV heads of each layer (n_layer entries)
    key_length: int  # elements per K head
    value_length: int  # elements per V head


def kv_shape(reader: GGUFReader) -> KvShape:
    """Layers, KV heads and head sizes from a GGUF's ``<arch>.*`` metadata.

    ``attention.head_count_kv`` may be one number or one per layer (absent: as many as
    ``attention.head_count``, no grouped-query attention); ``attention.key_length`` and
    ``value_length`` default to ``embedding_length / head_count``, as in llama.cpp's loader.

    Raises
    ------
    GGUFError
        If the architecture, block count, head count or embedding length is missing.
    """
    arch = _meta(reader, "general.architecture")

    def get(key: str, default=_MISSING):
        return _meta(reader, f"{arch}.{key}", default)

    n_layer, n_head = int(get("block_count")), get("attention.head_count")
    heads = get("attention.head_count_kv", n_head)
    heads = [int(h) for h in heads] if isinstance(heads, list) else [int(heads)] * n_layer
    n_head = max(n_head) if isinstance(n_head, list) else int(n_head)
    head = int(get("embedding_length")) // n_head
    return KvShape(tuple(heads), int(get("attention.key_length", head)),
                   int(get("attention.value_length", head)))


def _meta(reader: GGUFReader, name: str, default=_MISSING):
    """The value of metadata field ``name``, or ``default`` (missing and no default: error)."""
    field = reader.fields.get(name)
    if field is not None:
        return field.contents()
    if default is _MISSING:
        raise GGUFError(f"GGUF metadata {name!r} is missing; cannot size the KV cache")
    return default


def _copy_metadata(reader: GGUFReader, writer: GGUFWriter, overrides: dict[str, int]) -> None:
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.alignment"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        value = overrides.get(name, field.contents())
        writer.add_key_value(name, value, vtype, sub_type=sub)


def write_f16_reference(src: Path, dst: Path) -> None:
    """Write an F16 GGUF whose weights are the dequantized weights of ``src``.

    1-D tensors (norms, biases) stay F32 as ``convert_hf_to_gguf.py`` writes them.
    The file is written to ``dst.tmp`` and renamed, so a cut-off never leaves a
    file that looks complete.
    """
    reader = open_gguf(src)
    arch = str(reader.fields["general.architecture"].contents())
    tmp = dst.with_name(dst.name + ".tmp")
    writer = GGUFWriter(tmp, arch)
    align = reader.fields.get("general.alignment")
    if align is not None:
        writer.data_alignment = int(align.contents())
    _copy_metadata(reader, writer, {"general.file_type": 1})
    for t in reader.tensors:
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            data = np.asarray(t.data)
        else:
            data = dequantize(t.data, t.tensor_type)
        data = data.reshape(tuple(int(d) for d in reversed(t.shape)))
        writer.add_tensor(t.name, data.astype(np.float32 if data.ndim == 1 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, dst)
