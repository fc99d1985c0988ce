"""The quant ladder: an F16 reference and its rungs, quantized by llama.cpp (in-process, or by
llama-quantize for a rung with an importance matrix or tensor-type overrides).

Files live in ``.cache/models/<key>/`` (``reference.gguf``, ``<RUNG>.gguf``), each
with a sidecar ``<file>.json`` recording its sha256 and how it was made. A rung is
rebuilt only when its file or sidecar is missing, its hash no longer matches (a truncated
or modified file), or the reference changed; each rebuild of an existing file is reported
in one line. The manifest (``ladder.csv`` + ``ladder.json``) goes to
``outputs/<profile>/ladder/<key>/``.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import llama_cpp
import llama_cpp._logger
import pandas as pd
from tqdm import tqdm

from gguf_fragility import paths
from gguf_fragility.engine.ftypes import ftype
from gguf_fragility.engine.gguf import (
    FLOAT_TYPES,
    GGMLQuantizationType,
    file_type_name,
    is_full_precision,
    kv_shape,
    open_gguf,
    tensor_census,
    write_f16_reference,
)
from gguf_fragility.engine.llama import Engine
from gguf_fragility.engine.rungs import (
    REFERENCE,
    WeightsSpec,
    absent_groups,
    parse_weights,
    tensor_type_patterns,
    types_by_kind,
)
from gguf_fragility.engine.tools import tool_path
from gguf_fragility.ladder import models
from gguf_fragility.ladder.imatrix import build_imatrix
from gguf_fragility.layout import RunLayout
from gguf_fragility.profile import DEFAULT_RUNGS, EngineParams
from gguf_fragility.store import (
    fresh_record,
    hold_lock,
    write_json_atomic,
    write_sidecar,
    write_table_atomic,
)

llama_cpp._logger.set_verbose(False)  # the quantizer logs every tensor to stderr otherwise



class Reference(NamedTuple):
    """The full-precision model every rung is compared with."""

    path: Path
    sha256: str
    kind: str  # "original F16" or "dequantized from Q4_1" ...
    source_sha256: str


def nominal_type(rung: str) -> str:
    """The ggml tensor type a rung asks for (``Q4_K_M`` -> ``Q4_K``; ``IQ4_XS`` -> ``IQ4_XS``)."""
    for name in (rung, rung.rsplit("_", 1)[0]):
        if name in GGMLQuantizationType.__members__:
            return name
    return rung


def build_reference(key: str) -> Reference:
    """The model's F16 reference: the source itself if full precision, else dequantized."""
    src = models.obtain(key)
    src_sha = json.loads((paths.model_dir(key) / "source.json").read_text())["sha256"]
    reader = open_gguf(src)
    if is_full_precision(reader):
        return Reference(src, src_sha, f"original {file_type_name(reader)}", src_sha)
    kind = f"dequantized from {file_type_name(reader)}"
    dst = paths.model_dir(key) / "reference.gguf"
    record = fresh_record(dst, {"source_sha256": src_sha})
    if record is None:
        write_f16_reference(src, dst)
        record = write_sidecar(dst, {"source_sha256": src_sha, "kind": kind})
    return Reference(dst, record["sha256"], record["kind"], src_sha)


def quantize(src: Path, dst: Path, rung: str, n_threads: int | None = None) -> float:
    """Quantize ``src`` into ``dst`` with ``llama_model_quantize``; returns seconds taken.

    Written to ``dst.tmp`` and renamed, so an interrupted run never leaves a complete-looking file.
    """
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype(rung)
    params.nthread = n_threads or os.cpu_count() or 1
    tmp = dst.with_name(dst.name + ".tmp")
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(),
                                        ctypes.byref(params))
    seconds = time.perf_counter() - t0
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed for {rung} ({src} -> {dst}, code {rc})")
    os.replace(tmp, dst)
    return seconds


def quantize_with_tool(src: Path, dst: Path, spec: WeightsSpec, *, imatrix: Path | None,
                       tensor_types: list[str], n_threads: int | None = None) -> float:
    """Quantize ``src`` into ``dst`` with ``llama-quantize``; returns seconds taken.

    ``llama-quantize [--imatrix F] [--tensor-type P=T]... src dst.tmp FTYPE nthreads``: the
    command-line tool, because llama-cpp-python's quantize parameters cannot carry an
    importance matrix or tensor-type overrides. Renamed into place when complete.
    """
    tmp = dst.with_name(dst.name + ".tmp")
    cmd = [str(tool_path("llama-quantize"))]
    if imatrix is not None:
        cmd += ["--imatrix", str(imatrix)]
    for value in tensor_types:
        cmd += ["--tensor-type", value]
    cmd += [str(src), str(tmp), spec.ftype, str(n_threads or os.cpu_count() or 1)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-2000:]}")
    os.replace(tmp, dst)
    return seconds


def build_rung(ref: Reference, key: str, rung: str, n_threads: int | None = None) -> dict:
    """Build (or reuse) one rung and return its manifest row.

    A plain ftype is quantized in-process; a rung with an importance matrix or tensor-type
    overrides (:mod:`gguf_fragility.engine.rungs`) by ``llama-quantize``, its matrix
    computed first (:func:`gguf_fragility.ladder.imatrix.build_imatrix`). The sidecar
    records the matrix's sha256 and the ``--tensor-type`` values, so a change of either
    rebuilds the rung.
    """
    spec = parse_weights(rung)  # validate the name before any work
    im, tensor_types = None, []
    if rung == REFERENCE:
        path, record = ref.path, {"sha256": ref.sha256, "quantize_s": 0.0, "reused": True}
    else:
        path = paths.model_dir(key) / f"{rung}.gguf"
        expect = {"reference_sha256": ref.sha256, "rung": rung}
        if spec.imatrix is not None:
            im = build_imatrix(ref.path, ref.sha256, key, spec.imatrix, n_threads=n_threads)
            expect["imatrix_sha256"] = im.sha256
        if spec.overrides:
            reader = open_gguf(ref.path)
            n_blocks = len(kv_shape(reader).heads_kv)
            absent = absent_groups(spec.overrides, (t.name for t in reader.tensors), n_blocks)
            if absent:  # llama-quantize would silently build a copy of the base
                raise ValueError(f"rung {rung!r} of model {key!r}: group {absent[0]!r} names no "
                                 f"tensor of its reference {ref.path.name} (e.g. a model that "
                                 "ties its output matrix to token_embd stores no "
                                 f"output.weight); leave {rung!r} out of the profile's rungs")
            tensor_types = tensor_type_patterns(spec.overrides, n_blocks)
            expect["tensor_types"] = tensor_types
        record = fresh_record(path, expect)
        if record is None:
            if spec.in_process:
                seconds = quantize(ref.path, path, rung, n_threads)
            else:
                seconds = quantize_with_tool(ref.path, path, spec, imatrix=im and im.path,
                                             tensor_types=tensor_types, n_threads=n_threads)
            record = {**write_sidecar(path, {**expect, "quantize_s": seconds}), "reused": False}
        else:
            record = {**record, "reused": True}
    reader = open_gguf(path)
    census = tensor_census(reader, nominal_type(spec.ftype) if rung != REFERENCE else None)
    kinds = types_by_kind(((t.name, t.tensor_type.name) for t in reader.tensors),
                          len(kv_shape(reader).heads_kv))
    return {
        "model": key, "rung": rung, "is_reference": rung == REFERENCE, "file": str(path),
        "sha256": record["sha256"], "file_size_bytes": path.stat().st_size,
        "n_params": census.n_params, "bpw": census.bpw,
        "n_fallback_tensors": census.n_fallback, "fallback_params": census.fallback_params,
        "params_by_type": json.dumps(census.params_by_type, sort_keys=True),
        "tensors_by_type": json.dumps(census.tensors_by_type, sort_keys=True),
        "quantize_s": record["quantize_s"], "reused": record["reused"],
        "reference_kind": ref.kind,
        "imatrix_text": im.text if im else "", "imatrix_text_sha256": im.text_sha256 if im else "",
        "imatrix_sha256": im.sha256 if im else "", "imatrix_s": im.seconds if im else 0.0,
        "tensor_overrides": ",".join(f"{g}={t}" for g, t in spec.overrides),
        "types_by_kind": json.dumps(kinds, sort_keys=True),
    }


def build_ladder(key: str, rungs: list[str] | tuple[str, ...] = DEFAULT_RUNGS, *,
                 run: RunLayout, n_threads: int | None = None) -> pd.DataFrame:
    """Build the reference and every rung of one model; write and return the manifest.

    Parameters
    ----------
    key : str
        Model key in ``params/models.yaml``.
    rungs : list of str
        Ladder rung names (``F16``, ``Q8_0``, ``Q4_K_M``, ``IQ3_XXS+imatrix_wiki``,
        ``Q8_0+ffn_down=Q2_K`` ...; :mod:`gguf_fragility.engine.rungs`). F16 is the reference.
    run : RunLayout
        Where the manifest goes (``run.ladder_dir(key)``).

    Returns
    -------
    DataFrame
        One row per rung: file, sha256, size, real bits per weight, tensor-type census,
        fallback count, quantize time, reference kind, the importance matrix (calibration
        text, its sha256 and the matrix's; empty for none) and the tensor-type overrides.
    """
    for rung in rungs:
        parse_weights(rung)
    # runs of other profiles share the model folder: one builder at a time, the others wait
    with hold_lock(paths.model_dir(key) / "ladder.lock", f"model folder {key}", wait=True):
        ref = build_reference(key)
        rows = [build_rung(ref, key, rung, n_threads)
                for rung in tqdm(list(rungs), desc=f"ladder {key}", unit="rung")]
    table = pd.DataFrame(rows)
    write_table_atomic(table, run.ladder_csv(key))
    write_json_atomic(run.ladder_dir(key) / "ladder.json", {
        "model": key, "reference_kind": ref.kind, "reference_sha256": ref.sha256,
        "source_sha256": ref.source_sha256, "rungs": rows})
    return table


def census_long(ladder: pd.DataFrame) -> pd.DataFrame:
    """The census as a long table: one row per rung × ggml type, with its share of weights."""
    rows = []
    for r in ladder.itertuples():
        counts = json.loads(r.params_by_type)
        for typ, n in sorted(counts.items()):
            rows.append({"model": r.model, "rung": r.rung, "ggml_type": typ, "params": n,
                         "share": n / r.n_params,
                         "float": GGMLQuantizationType[typ] in FLOAT_TYPES})
    return pd.DataFrame(rows)


def sanity_generations(ladder: pd.DataFrame, prompt: str, engine: EngineParams, *,
                       max_tokens: int = 8, chat: bool = False) -> pd.DataFrame:
    """Greedy answer of every rung to one short prompt (seed 000's ``2+2=`` check).

    Each rung is loaded with the profile's engine settings (``engine``, as every chapter
    loads it: GPU offload and batch size included). ``chat=True`` wraps the prompt in the
    model's chat template; otherwise it is raw text.
    """
    rows = []
    for r in tqdm(list(ladder.itertuples()), desc="sanity", unit="rung"):
        with Engine(r.file, **engine.settings(r.rung)) as eng:
            text = eng.render(prompt) if chat else prompt
            g = eng.generate(text, max_tokens=max_tokens, stop=["\n\n"])
            rows.append({"model": r.model, "rung": r.rung, "bpw": r.bpw, "prompt": prompt,
                         "answer": g.text, "gen_tps": g.gen_tps, "load_s": eng.load_s})
    return pd.DataFrame(rows)
