"""This project's cells as lm-eval 0.4.x ``--log_samples`` files, one run folder per model × rung.

    gguf-fragility export-lm-eval --profile default --to exported/

writes ``exported/<model>/<rung>/samples_<family>_<stamp>.jsonl`` and ``results_<stamp>.json``
in lm-eval's layout, so tools that read lm-eval samples read our items, and
``gguf-fragility import-lm-eval`` reads them back (round trip, same statistics).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd

from gguf_fragility.artifacts import load_items, read_ladder
from gguf_fragility.interop.lmeval import EXTRAS, LETTERS, NUMERIC_EXTRAS
from gguf_fragility.layout import RunLayout
from gguf_fragility.store import code_version, write_json_atomic

FORMAT_VERSION = "0.4.x (gguf-fragility export)"  # what results_*.json says wrote it
STAMP = "gguf-fragility"  # the file-name date lm-eval puts after the task name


def _hash(text: str) -> str:
    """lm-eval's ``hash_string``: sha256 of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _num(x) -> float | None:
    """A float for JSON (None for NaN)."""
    x = float(x)
    return None if math.isnan(x) else x


def _choice_logprobs(row: pd.Series) -> list[float]:
    """The choice log-likelihoods of a log-likelihood row (its ``raw_output``), or []."""
    try:
        return [float(x) for x in json.loads(row.get("raw_output", ""))["logprobs"]]
    except (ValueError, KeyError, TypeError):
        return []


def sample_line(row: pd.Series, doc_id: int) -> dict:
    """One cell row as an lm-eval sample; the project's own per-item quantities ride in
    :data:`~gguf_fragility.interop.lmeval.EXTRAS` (``gguf_fragility``)."""
    doc = {"item_id": str(row["item_id"])}
    doc_hash = str(row.get("item_hash") or _hash(json.dumps(doc)))
    # the rendered prompt depends on the model's chat template, which a cell does not keep
    prompt_hash = _hash(f"{doc_hash}:variant{int(row.get('variant', 0))}")
    extras = {"correct": bool(row["correct"]), "extracted": str(row["extracted"]),
              **{k: _num(row[k]) for k in NUMERIC_EXTRAS if k in row.index}}
    base = {"doc_id": doc_id, "doc": doc, "doc_hash": doc_hash, "prompt_hash": prompt_hash,
            "filter": "none", EXTRAS: extras}
    if row["mode"] == "loglik":
        lps = _choice_logprobs(row)
        gold = next((i for i, lp in enumerate(lps) if lp == row["gold_logprob"]), -1)
        pairs = [[str(lp), "False"] for lp in lps]
        acc_norm = row.get("acc_norm", math.nan)
        return {**base, "target": str(gold) if gold >= 0 else str(row["extracted"]),
                "arguments": {f"gen_args_{i}": {"arg_0": "", "arg_1": f" {LETTERS[i]}"}
                              for i in range(len(lps))},
                "resps": [[p] for p in pairs], "filtered_resps": pairs,
                "metrics": ["acc", "acc_norm"], "target_hash": _hash(str(gold)),
                "acc": float(bool(row["correct"])),
                "acc_norm": float(row["correct"]) if pd.isna(acc_norm) else float(acc_norm)}
    raw = str(row.get("raw_output", row["extracted"]))
    return {**base, "target": "", "arguments": {"gen_args_0": {"arg_0": "", "arg_1": {}}},
            "resps": [[raw]], "filtered_resps": [str(row["extracted"])],
            "metrics": ["exact_match"], "target_hash": _hash(""),
            "exact_match": float(bool(row["correct"]))}


def export_lm_eval(layout: RunLayout, to: str | Path,
                   models: list[str] | None = None) -> pd.DataFrame:
    """
    Write a run's cells as lm-eval 0.4.x sample files, one folder per model × rung.

    Parameters
    ----------
    layout : RunLayout
        The run whose cells (``layout.sweep_dir``) are written.
    to : str or Path
        Output folder; ``<to>/<model>/<rung>/`` holds one ``samples_<family>_*.jsonl`` per
        family and a ``results_*.json``.
    models : list of str, optional
        Only these models (default every model of the run).

    Returns
    -------
    pandas.DataFrame
        One row per written samples file: model, rung, family, n, path.

    Raises
    ------
    ValueError
        A family that mixes log-likelihood and generated items (an lm-eval task has one
        output type).

    Notes
    -----
    ``doc_id`` is the item's position in the family sorted by item id, so every rung of a
    family numbers the same items alike; ``doc_hash`` is the probe's hash; ``prompt_hash``
    hashes the probe's hash and prompt variant (the rendered prompt is not stored).
    """
    items = load_items(layout, models)
    bpw = read_ladder(layout, sorted(items["model"].unique())).set_index(["model", "rung"])
    out, to = [], Path(to)
    for (model, rung), cells in items.groupby(["model", "rung"], sort=True):
        folder = to / model / rung
        configs, versions = {}, {}
        for family, cell in cells.groupby("family", sort=True):
            modes = set(cell["mode"])
            if len(modes) > 1:
                raise ValueError(f"family {family} of {model} mixes {' and '.join(sorted(modes))} "
                                 "items; an lm-eval task has one output type")
            kind = "multiple_choice" if modes == {"loglik"} else "generate_until"
            cell = cell.sort_values("item_id", ignore_index=True)
            path = folder / f"samples_{family}_{STAMP}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps(sample_line(row, i)) for i, row in cell.iterrows()]
            tmp = path.with_suffix(".part")
            tmp.write_text("\n".join(lines) + "\n")
            tmp.replace(path)
            configs[family] = {"task": family, "output_type": kind}
            versions[family] = 1.0
            out.append({"model": model, "rung": rung, "family": family, "n": len(cell),
                        "path": str(path)})
        b = bpw.loc[(model, rung), "bpw"] if (model, rung) in bpw.index else math.nan
        write_json_atomic(folder / f"results_{STAMP}.json", {
            "lm_eval_version": FORMAT_VERSION, "configs": configs, "versions": versions,
            "task_hashes": {}, "config": {"model": "gguf-fragility",
                                          "model_args": f"model={model},rung={rung},bpw={b}"},
            "gguf_fragility_code_version": code_version()})
    return pd.DataFrame(out)
