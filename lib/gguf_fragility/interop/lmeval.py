"""Bring your own lm-evaluation-harness runs: its ``--log_samples`` output as this project's cells.

    gguf-fragility import-lm-eval --profile smoke --model my-model \\
        --reference runs/F16 --rung Q4_K_M=runs/Q4_K_M --rung Q2_K=runs/Q2_K

Each folder is one lm-eval 0.4.x run (``lm_eval ... --log_samples --output_path DIR``) of one
rung: ``samples_<task>_<date>.jsonl`` and ``results_<date>.json``, possibly one folder down
(lm-eval nests them under the sanitized model name). Every task becomes one family; its
samples become the per-item cells ``outputs/<profile>/sweep/<model>/<rung>/<task>.parquet``
that chapters 5-8 read, with a ladder manifest (``ladder.csv``) and a calibration report that
lets every imported family through (no calibration was run: the user chose the tasks).

Pairing is checked, never assumed: every rung must hold the reference's samples, matched by
``doc_id`` and by ``doc_hash`` / ``prompt_hash``, of the same task version and filter; any
difference is refused (:class:`ImportRefused`) naming the task, the count and the first doc.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from gguf_fragility.store import sha256_file

MC_METRIC = "acc"  # correctness of a multiple_choice task: argmax raw log-likelihood is gold
GEN_METRICS = ("exact_match",)  # correctness of a generate_until task, first one present
NEEDED = ("doc_id", "doc_hash", "prompt_hash", "filter", "resps", "filtered_resps", "target",
          "arguments", "metrics")  # fields every 0.4.x sample line has
LETTERS = "ABCDEFGHIJ"
NO_MARGIN = ("not available: lm-eval's generate_until samples hold no log-probabilities, so the "
             "margin lens has no value for this family")
LADDER_NAME = "lm-eval import"
EXTRAS = "gguf_fragility"  # a sample's extra field: this project's own per-item quantities
NUMERIC_EXTRAS = ("margin", "gold_logprob", "ref_answer_logprob", "answer_kl", "answer_same_top",
                  "n_gen_tokens")  # per-item numbers of our own exports (NaN -> null)
EXTRA_KEYS = ("correct", "extracted", *NUMERIC_EXTRAS)  # read back from EXTRAS when present


class ImportRefused(ValueError):
    """lm-eval output that cannot be imported as it is; one line naming what and where."""


class TaskRun(NamedTuple):
    """One task of one lm-eval run folder."""

    task: str
    samples: pd.DataFrame  # one row per (doc_id, filter): the sample lines as read
    path: Path  # the samples file
    version: object  # results.json versions[task]
    task_hash: str  # results.json task_hashes[task]
    output_type: str  # "multiple_choice" | "generate_until" | ...


class LmEvalRun(NamedTuple):
    """One lm-eval run folder: its results.json and its tasks."""

    folder: Path
    results: dict
    tasks: dict[str, TaskRun]


def _results_file(folder: Path) -> Path:
    """The single ``results_*.json`` of a run folder (lm-eval may nest it one level down)."""
    found = sorted(folder.glob("results_*.json")) + sorted(folder.glob("*/results_*.json"))
    if not found:
        raise ImportRefused(f"{folder}: no lm-eval results_*.json; give the --output_path folder "
                            "of one `lm_eval ... --log_samples` run")
    if len(found) > 1:
        raise ImportRefused(f"{folder}: {len(found)} lm-eval runs ({found[0].name}, "
                            f"{found[1].name} ...); keep one run per folder")
    return found[0]


def _read_samples(path: Path, task: str) -> pd.DataFrame:
    """The sample lines of one ``samples_<task>_*.jsonl`` (bad lines refused by number)."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ImportRefused(f"task {task}: {path} line {n} is not JSON ({exc}); the file is "
                                "cut or not lm-eval --log_samples output") from None
        lacking = [k for k in NEEDED if not isinstance(row, dict) or k not in row]
        if lacking:
            raise ImportRefused(f"task {task}: {path} line {n} lacks {', '.join(lacking)}: not "
                                "written by lm-eval 0.4.x --log_samples; rerun with lm-eval 0.4.x")
        rows.append(row)
    if not rows:
        raise ImportRefused(f"task {task}: {path} holds no samples; rerun lm_eval with "
                            "--log_samples")
    return pd.DataFrame(rows)


def read_run(folder: str | Path) -> LmEvalRun:
    """
    Read one lm-eval 0.4.x run folder (one rung).

    Parameters
    ----------
    folder : str or Path
        ``--output_path`` of one ``lm_eval --log_samples`` run (or the model folder in it).

    Returns
    -------
    LmEvalRun
        ``results`` is the parsed ``results_*.json``; ``tasks`` maps each task to its samples.

    Raises
    ------
    ImportRefused
        No such folder, no results or samples file, several runs in the folder, another
        lm-eval version, a line that is not JSON or lacks a 0.4.x field, a duplicate sample.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportRefused(f"{folder}: no such folder; give the --output_path of an lm-eval run")
    res_path = _results_file(folder)
    try:
        results = json.loads(res_path.read_text())
    except ValueError as exc:
        raise ImportRefused(f"{res_path} is not JSON ({exc}); rerun lm_eval") from None
    version = str(results.get("lm_eval_version", "unknown"))
    if not version.startswith("0.4."):
        raise ImportRefused(f"{res_path}: written by lm-eval {version}; this importer reads "
                            "lm-eval 0.4.x output (rerun with lm-eval 0.4.x)")
    stamp = res_path.stem.removeprefix("results_")
    files = sorted(res_path.parent.glob(f"samples_*_{stamp}.jsonl"))
    if not files:
        raise ImportRefused(f"{res_path.parent}: no samples_<task>_{stamp}.jsonl; rerun lm_eval "
                            "with --log_samples")
    tasks = {}
    for path in files:
        task = path.stem.removeprefix("samples_").removesuffix(f"_{stamp}")
        df = _read_samples(path, task)
        dup = df.duplicated(["doc_id", "filter"])
        if dup.any():
            raise ImportRefused(f"task {task}: {int(dup.sum())} duplicate samples in {folder} "
                                f"(first doc_id {df.doc_id[dup].iloc[0]}); rerun that rung")
        cfg = results.get("configs", {}).get(task, {})
        tasks[task] = TaskRun(task, df, path, results.get("versions", {}).get(task),
                              str(results.get("task_hashes", {}).get(task, "")),
                              str(cfg.get("output_type", "")))
    return LmEvalRun(folder, results, tasks)


def _first(ids) -> str:
    """The smallest doc id of a collection, for messages."""
    return str(sorted(ids)[0])


def check_pairing(task: str, filt: str, ref: TaskRun, rung: TaskRun, rung_name: str) -> None:
    """
    Refuse a rung whose samples of ``task`` are not the reference's.

    Raises
    ------
    ImportRefused
        Another task version, no samples with the reference's filter, missing or extra
        docs, docs or prompts that differ (``doc_hash`` / ``prompt_hash``); the message names
        the task, the count and the first mismatching ``doc_id``.
    """
    where = f"task {task}: rung {rung_name}"
    if ref.version != rung.version:
        raise ImportRefused(f"{where} ran task version {rung.version}, the reference "
                            f"{ref.version}; rerun both with the same task version")
    if ref.output_type != rung.output_type:
        raise ImportRefused(f"{where} is {rung.output_type or 'of unknown type'}, the reference "
                            f"{ref.output_type}; rerun both with the same task config")
    mine = rung.samples[rung.samples["filter"] == filt].set_index("doc_id")
    if mine.empty:
        raise ImportRefused(f"{where} has no samples with filter {filt!r} (it has "
                            f"{', '.join(sorted(set(rung.samples['filter'])))}); rerun it with "
                            "the reference's task config")
    base = ref.samples[ref.samples["filter"] == filt].set_index("doc_id")
    lacking, extra = set(base.index) - set(mine.index), set(mine.index) - set(base.index)
    if lacking:
        raise ImportRefused(f"{where} lacks {len(lacking)} of the reference's {len(base)} "
                            f"samples (first doc_id {_first(lacking)}); run it with the same "
                            "--limit / samples")
    if extra:
        raise ImportRefused(f"{where} has {len(extra)} samples the reference lacks (first doc_id "
                            f"{_first(extra)}); run both with the same --limit / samples")
    mine = mine.loc[base.index]
    for col, what in (("doc_hash", "other documents (another dataset or data version)"),
                      ("prompt_hash", "other prompts (another template, few-shot count or "
                                      "few-shot seed)")):
        odd = base.index[base[col].to_numpy() != mine[col].to_numpy()]
        if len(odd):
            raise ImportRefused(f"{where}: {len(odd)} of {len(base)} samples have {what} than "
                                f"the reference ({col}; first doc_id {_first(odd)})")


def _gold_index(sample: pd.Series, conts: list[str]) -> int:
    """The gold choice of a multiple-choice sample (its target: an index or the choice text)."""
    target = str(sample["target"]).strip()
    if target.isdigit():
        return int(target)
    stripped = [c.strip() for c in conts]
    return stripped.index(target) if target in stripped else -1


def _mc_row(s: pd.Series) -> dict:
    """Cell fields of one multiple-choice sample: correctness from ``acc``, fidelity from the
    argmax choice, margin from the raw choice log-likelihoods."""
    lps = [float(r[0]) for r in s["filtered_resps"]]
    greedy = [str(r[1]) == "True" for r in s["filtered_resps"]]
    conts = [a.get("arg_1", "") for a in s["arguments"].values()]
    gold = _gold_index(s, conts)
    pred = int(np.argmax(lps)) if lps else -1  # ties go to the first choice, as lm-eval's acc
    others = [lp for i, lp in enumerate(lps) if i != gold]
    ok = 0 <= gold < len(lps)
    margin = lps[gold] - max(others) if ok and others else math.nan
    return {"mode": "loglik", "correct": float(s[MC_METRIC]) == 1.0,
            "extracted": LETTERS[pred] if 0 <= pred < len(LETTERS) else str(pred),
            "raw_output": json.dumps({"logprobs": lps, "is_greedy": greedy}),
            "score": float(s[MC_METRIC]), "acc_norm": float(s.get("acc_norm", math.nan)),
            "gold_logprob": lps[gold] if ok else math.nan, "margin": margin,
            "detail": json.dumps({"pred": pred, "gold": gold, "margin": "raw log-likelihoods "
                                  "(acc_norm divides by the choice's length in bytes)"})}


def _gen_row(s: pd.Series, metric: str) -> dict:
    """Cell fields of one generate_until sample: correctness from ``metric``, fidelity from
    the filtered answer; no log-probabilities, so no margin."""
    raw = s["resps"][0][0] if s["resps"] and s["resps"][0] else ""
    answer = s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
    return {"mode": "generate", "correct": float(s[metric]) == 1.0, "extracted": str(answer),
            "raw_output": str(raw), "score": float(s[metric]), "acc_norm": math.nan,
            "gold_logprob": math.nan, "margin": math.nan,
            "detail": json.dumps({"margin": NO_MARGIN})}


def task_metric(t: TaskRun, filt: str) -> str:
    """The per-item metric that decides correctness: ``acc`` or the first of :data:`GEN_METRICS`."""
    listed = set(t.samples.loc[t.samples["filter"] == filt, "metrics"].iloc[0])
    want = (MC_METRIC,) if t.output_type == "multiple_choice" else GEN_METRICS
    for m in want:
        if m in listed and m in t.samples.columns:
            return m
    raise ImportRefused(f"task {t.task}: its samples have metrics {', '.join(sorted(listed))}, "
                        f"none of {', '.join(want)} that decides an item's correctness")


def cell_rows(t: TaskRun, filt: str, provenance: dict) -> pd.DataFrame:
    """The cell of one task at one rung: one row per doc, in doc order, with provenance."""
    metric = task_metric(t, filt)
    s = t.samples[t.samples["filter"] == filt].sort_values("doc_id")
    mc = t.output_type == "multiple_choice"
    rows = []
    for _, sample in s.iterrows():
        doc = sample.get("doc") if isinstance(sample.get("doc"), dict) else {}
        item_id = str(doc.get("item_id") or f"{t.task}/{sample['doc_id']}")
        row = {"item_id": item_id, "family": t.task, "variant": 0,
               **(_mc_row(sample) if mc else _gen_row(sample, metric)),
               "ref_answer_logprob": math.nan, "answer_kl": math.nan, "answer_same_top": math.nan}
        extras = sample.get(EXTRAS)
        if isinstance(extras, dict):
            row.update({k: math.nan if extras[k] is None else extras[k]
                        for k in EXTRA_KEYS if k in extras})
        rows.append({**row, "error": "", "scorer": f"lm-eval:{metric}",
                     "item_hash": str(sample["doc_hash"]), "lmeval_doc_id": int(sample["doc_id"]),
                     "lmeval_prompt_hash": str(sample["prompt_hash"]),
                     "lmeval_filter": filt, "lmeval_metric": metric})
    df = pd.DataFrame(rows)
    for key, value in provenance.items():
        df[key] = value
    df["lmeval_task_hash"] = t.task_hash
    df["lmeval_task_version"] = str(t.version)
    df["lmeval_samples_sha256"] = sha256_file(t.path)
    return df
