"""Fabricated sweep outputs with the real input contract: fixtures for tests and benchmarks.

Not data. :func:`write_synthetic` lays them out where
:func:`gguf_fragility.artifacts.load_results` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gguf_fragility.artifacts import Results
from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE
from gguf_fragility.layout import RunLayout
from gguf_fragility.stats.grid import ITEM_COLUMNS, OPTIONAL_COLUMNS
from gguf_fragility.store import write_json_atomic, write_result_json, write_table_atomic

LADDER_BPW = {REFERENCE: 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q4_K_M": 4.89,
              "Q3_K_M": 3.91, "Q2_K": 3.0}  # typical real bpw, for synthetic ladders only


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames one under the other, with a fresh index."""
    return pd.concat(frames, ignore_index=True)


def _memory(costs: pd.DataFrame) -> pd.DataFrame:
    """Cost rows with llama.cpp-style memory columns: the KV buffer is ``kv_cache_bytes``,
    the planned memory the sum of the three buffers."""
    costs = costs.assign(kv_buffer_bytes=costs["kv_cache_bytes"])
    return costs.assign(planned_memory_bytes=costs["model_buffer_bytes"]
                        + costs["kv_buffer_bytes"] + costs["compute_buffer_bytes"])


def synthetic_results(*, n_models=2, n_families=13, n_items=500, rungs=tuple(LADDER_BPW),
                      seed=0, noise_floor=True) -> Results:
    """
    Fabricated sweep outputs with the input contract, families of graded fragility.

    Family ``f`` loses items below a family-specific bpw threshold (nested: an item dead
    at a rung stays dead lower down); a few wrong reference answers resurrect at random,
    and a few wrong answers change to another wrong answer (a flip that keeps accuracy).
    Every third family is generative (``mode`` "generate": ``margin`` and ``gold_logprob``
    NaN, ``ref_answer_logprob`` set); the others are 4-choice log-likelihood families.
    With ``noise_floor`` each model also gets the pseudo-rung
    :data:`~gguf_fragility.engine.rungs.NOISE_FLOOR` (no ladder row): the reference with 1% of
    its answers flipped and its log-probabilities jittered by 0.01 nats. Cost rows carry
    llama.cpp's planned memory (model, KV and compute buffers, their sum) and a peak RSS
    2 GB above the file, as a Python process's is. Not data.
    """
    rng = np.random.default_rng(seed)
    bpw = np.array([LADDER_BPW[r] for r in rungs])
    all_rungs = [*rungs, *([NOISE_FLOOR] if noise_floor else [])]
    frames, ladders, costs, shifts = [], [], [], []
    for m in range(n_models):
        model = f"synth-{m}"
        n_params = 1.35e8 * 10**m
        for f in range(n_families):
            gen = f % 3 == 2
            family = f"fam{f:02d}" + ("_gen" if gen else "")
            thresh = 2.2 + 4.0 * f / max(n_families - 1, 1)  # bpw at which deaths start
            p_death = 0.25 / (1 + np.exp((bpw - thresh) / 0.4)) * (bpw < 16)
            ref_ok = rng.random(n_items) < 0.75
            u = rng.random(n_items)  # nested deaths: dies at every rung with p_death > u
            ok = np.where(ref_ok[:, None], u[:, None] >= p_death[None, :],
                          rng.random((n_items, len(rungs))) < 0.04 * (bpw < 16))
            wrong0 = rng.integers(1, 4, n_items)  # the reference's wrong choice (1-3)
            regrab = rng.random((n_items, len(rungs))) < 0.03 * (bpw < 16)
            wrong = np.where(regrab, 1 + (wrong0[:, None] % 3), wrong0[:, None])
            choice = np.where(ok, 0, wrong)  # 0 = the gold choice
            margin = np.where(ref_ok, 0.5 + rng.exponential(2.0, n_items), -1.0)
            shrink = 3 * p_death[None, :] * rng.random((n_items, len(rungs)))
            m_r = margin[:, None] - shrink + 0.02 * rng.normal(size=(n_items, len(rungs))) * (bpw < 16)
            gold = -rng.exponential(1.0, n_items)[:, None] - shrink
            ref_lp = (-rng.exponential(3.0, n_items)[:, None] - 2 * shrink
                      + 0.02 * rng.normal(size=(n_items, len(rungs))) * (bpw < 16))
            kl = rng.exponential(0.02 + p_death, (n_items, len(rungs))) * (bpw < 16)
            same = (kl < 0.3).astype(float)
            if noise_floor:  # the reference again, other floating-point paths
                r0 = int(np.flatnonzero(bpw == 16)[0])
                flip = rng.random(n_items) < 0.01
                c_f = np.where(flip, np.where(choice[:, r0] == 0, wrong0, 0), choice[:, r0])
                jit = 0.01 * rng.normal(size=n_items)
                choice = np.c_[choice, c_f]
                ok = np.c_[ok, c_f == 0]
                m_r, gold = np.c_[m_r, m_r[:, r0] + jit], np.c_[gold, gold[:, r0] + jit]
                ref_lp = np.c_[ref_lp, ref_lp[:, r0] + jit]
                kl, same = np.c_[kl, np.zeros(n_items)], np.c_[same, np.ones(n_items)]
            letters = np.array(list("ABCD"))
            ids = np.array([f"{family}-{i:04d}" for i in range(n_items)])
            extracted = (np.char.add(np.where(choice == 0, "ans-", "wrong-"),
                                     np.char.add(np.repeat(ids[:, None], choice.shape[1], 1),
                                                 choice.astype(str)))
                         if gen else letters[choice])
            df = pd.DataFrame({
                "model": model, "rung": np.tile(all_rungs, n_items), "family": family,
                "item_id": np.repeat(ids, len(all_rungs)), "correct": ok.ravel(),
                "extracted": extracted.ravel(), "mode": "generate" if gen else "loglik",
                "usable": np.repeat(ref_ok & (rng.random(n_items) < 0.9), len(all_rungs)),
                "margin": np.nan if gen else m_r.ravel(),
                "gold_logprob": np.nan if gen else gold.ravel(),
                "ref_answer_logprob": ref_lp.ravel() if gen else np.nan,
                "answer_kl": kl.ravel(), "answer_same_top": same.ravel(),
                "n_gen_tokens": np.repeat(rng.integers(8, 200, n_items) if gen
                                          else np.zeros(n_items, int), len(all_rungs))})
            frames.append(df)
        size = (bpw * n_params / 8).astype(np.int64)
        ladders.append(pd.DataFrame({"model": model, "rung": rungs, "is_reference": bpw == 16,
                                     "bpw": bpw, "file_size_bytes": size}))
        costs.append(_memory(pd.DataFrame({
            "model": model, "rung": rungs, "model_buffer_bytes": (size * 0.99).astype(np.int64),
            "kv_cache_bytes": 48 * 2**20, "compute_buffer_bytes": 100 * 2**20,
            "peak_rss_bytes": (size * 1.1 + 2e9).astype(np.int64),
            "prompt_tps": 4e11 / size, "gen_tps": 3e10 / size, "ttft_s_median": size / 2e9})))
        shifts.append(pd.DataFrame({"model": model, "rung": rungs, "kl_mean": 2 / bpw**2,
                                    "kl_median": 1 / bpw**2, "kl_p99": 20 / bpw**2,
                                    "same_top_rate": 1 - 1 / bpw**1.5,
                                    "ppl_ratio": 1 + 1 / bpw**2}))
    return Results(_concat(frames)[[*ITEM_COLUMNS, *OPTIONAL_COLUMNS, "usable"]],
                   _concat(ladders), _concat(costs), _concat(shifts))


KV_FLIP = {"+kv_f16": 0.0, "+kv_q8_0": 0.02, "+kv_q4_0": 0.15}  # share of answers a cache flips
IMATRIX_MEND = -0.15  # share of items an imatrix mends (negative: a gain; see with_axis_rungs)


def with_axis_rungs(r: Results, weights: str = "Q4_K_M", effects: dict[str, float] = KV_FLIP,
                    *, seed: int = 0, only: str | None = None) -> Results:
    """
    Add rungs ``<weights><suffix>`` to synthetic results: copies of the ``weights`` rung's
    rows, one per ``suffix: share`` of ``effects``.

    A positive share flips that share of items right to wrong and lowers every
    log-probability by ``share`` nats; a negative share mends (wrong to right, the gold
    answer) and raises them by ``-share``; 0.01 nats of jitter each. ``only``: a substring
    of the families changed (the others copied with jitter only). KV rungs (``+kv_<type>``)
    get cost rows with ``kv_cache`` and ``kv_cache_bytes`` (and the KV buffer); other rungs a ladder row with
    the weights' bpw. Not data.
    """
    rng = np.random.default_rng(seed)
    base = r.items[r.items.rung == weights]
    frames, costs, ladders = [r.items], [r.costs], [r.ladder]
    gold = np.where(base["mode"] == "generate", "ans-" + base["item_id"] + "0", "A")
    for suffix, share in effects.items():
        rung = weights + suffix
        on = base["family"].str.contains(only) if only else np.ones(len(base), bool)
        hit = (rng.random(len(base)) < abs(share)) & on
        jit = 0.01 * rng.normal(size=len(base)) - share * on
        correct = base.correct & ~hit if share >= 0 else base.correct | hit
        extracted = (np.where(hit & base.correct, "axis-flip", base.extracted) if share >= 0
                     else np.where(hit, gold, base.extracted))
        frames.append(base.assign(
            rung=rung, correct=correct, extracted=extracted, margin=base.margin + jit,
            gold_logprob=base.gold_logprob + jit, ref_answer_logprob=base.ref_answer_logprob + jit))
        cost = r.costs[r.costs.rung == weights].assign(rung=rung)
        if suffix.startswith("+kv_"):
            cache = suffix.removeprefix("+kv_")
            costs.append(_memory(cost.assign(kv_cache=cache, kv_cache_bytes=(
                2**20 * {"f16": 48, "q8_0": 25.5, "q4_0": 13.5}[cache]))))
        else:
            costs.append(cost)
            ladders.append(r.ladder[r.ladder.rung == weights].assign(rung=rung))
    return r._replace(items=_concat(frames), costs=_concat(costs), ladder=_concat(ladders))


# synthetic lesions: rung -> (share of the Q2_K rung's per-item change it reproduces, bpw)
LESIONS = {"Q8_0+ffn_down=Q2_K": (0.8, 7.0), "Q8_0+attn_k=Q2_K": (0.0, 8.3),
           "Q8_0+last_third=Q2_K": (0.5, 6.5)}


def with_lesion_rungs(r: Results, lesions: dict | None = None, *, seed: int = 0) -> Results:
    """
    Add lesion rungs to synthetic results that have ``Q8_0`` and ``Q2_K``: on each item a
    lesion moves the margin lens's probabilities (the gold answer's, the reference reply's
    per token) ``share`` of the way from Q8_0's to Q2_K's, so its change in points is
    ``share`` times Q2_K's (the margin column in nats likewise; 0.01 nats of jitter), and it
    loses an answer Q2_K lost with probability ``share``. ``lesions``: rung -> (share, bpw),
    default :data:`LESIONS`. Not data.
    """
    rng = np.random.default_rng(seed)
    key = ["model", "family", "item_id"]
    base = r.items[r.items.rung == "Q8_0"].sort_values(key, ignore_index=True)
    low = r.items[r.items.rung == "Q2_K"].sort_values(key, ignore_index=True)
    frames, ladders = [r.items], [r.ladder]
    for rung, (share, bpw) in (lesions or LESIONS).items():
        cols = {}
        t = np.where(base["n_gen_tokens"] >= 1, base["n_gen_tokens"], 1.0)  # per token
        for c, k in (("margin", None), ("gold_logprob", 1.0), ("ref_answer_logprob", t)):
            if k is None:
                mid = base[c] + share * (low[c] - base[c])
            else:  # interpolate the (per-token) probability, not its log
                p0, p1 = np.exp(base[c] / k), np.exp(low[c] / k)
                mid = k * np.log(p0 + share * (p1 - p0))
            cols[c] = mid + 0.01 * rng.normal(size=len(base))
        lost = base.correct & ~low.correct & (rng.random(len(base)) < share)
        frames.append(base.assign(rung=rung, correct=base.correct & ~lost,
                                  extracted=np.where(lost, low.extracted, base.extracted),
                                  **cols))
        lad = r.ladder[r.ladder.rung == "Q8_0"]
        ladders.append(lad.assign(rung=rung, bpw=bpw,
                                  file_size_bytes=(lad.file_size_bytes * bpw / 8.5).astype(int)))
    return r._replace(items=_concat(frames), ladder=_concat(ladders))


def write_synthetic(run: RunLayout, *, kv_weights: str | None = None,
                    imatrix_weights: str | None = None, lesions: bool = False,
                    **kwargs) -> Results:
    """Write :func:`synthetic_results` where :func:`load_results` reads (one parquet per cell);
    with ``kv_weights``, KV-cache rungs of that rung too, with ``imatrix_weights`` imatrix
    rungs of that rung (:func:`with_axis_rungs`): ``+imatrix_wiki`` mends every family,
    ``+imatrix_code`` the generative families only; with ``lesions``, the lesion rungs of
    :func:`with_lesion_rungs`."""
    r = synthetic_results(**kwargs)
    seed = kwargs.get("seed", 0)
    if kv_weights is not None:
        r = with_axis_rungs(r, kv_weights, seed=seed)
    if imatrix_weights is not None:
        r = with_axis_rungs(r, imatrix_weights, {"+imatrix_wiki": IMATRIX_MEND}, seed=seed)
        r = with_axis_rungs(r, imatrix_weights, {"+imatrix_code": IMATRIX_MEND}, seed=seed + 1,
                            only="_gen")
    if lesions:
        r = with_lesion_rungs(r, seed=seed)
    for (model, rung, family), cell in r.items.groupby(["model", "rung", "family"]):
        write_table_atomic(cell.drop(columns="usable").assign(provenance="synthetic"),
                           run.cell(model, rung, family))
    for model, lad in r.ladder.groupby("model"):
        write_table_atomic(lad, run.ladder_csv(model))
        usable = r.items[r.items.model == model].drop_duplicates("item_id")
        write_table_atomic(usable[["model", "item_id", "usable"]],
                           run.calibration_items(model))
        report = usable.groupby(["model", "family"], as_index=False)["usable"].sum()
        write_table_atomic(report.rename(columns={"usable": "n_usable"})
                           .assign(measurable=lambda d: d.n_usable >= 1),
                           run.calibration_report(model))
    for where, table in ((run.cost_json, r.costs), (run.shift_json, r.shift)):
        for row in table.to_dict("records"):
            write_result_json(where(row["model"], row["rung"]), row)
    write_json_atomic(run.sweep_dir / "SYNTHETIC.json",
                      {"note": "fabricated by testing.write_synthetic", **json.loads(
                          json.dumps(kwargs, default=str))})
    return r


def write_synthetic_registry(folder: Path, n_models: int = 2) -> Path:
    """A model registry naming the synthetic models ``synth-0`` … (for profiles over them).

    Each entry is a ``local`` source pointing at a placeholder file, so a profile over the
    synthetic models passes :func:`gguf_fragility.profile.load_profile`; nothing opens the
    file. Point ``GGUF_FRAGILITY_REGISTRY`` at the returned path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# fabricated by gguf_fragility.testing: synthetic models, no weights", "models:"]
    for m in range(n_models):
        placeholder = folder / f"synth-{m}.gguf"
        placeholder.write_bytes(b"synthetic: not a model")
        lines += [f"  synth-{m}:", "    family: synthetic", f"    display: synth-{m}",
                  "    licence: none (fabricated)",
                  f"    source: {{kind: local, path: {json.dumps(str(placeholder))}}}"]
    path = folder / "synthetic-models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
