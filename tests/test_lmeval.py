"""Issue 28: lm-evaluation-harness runs in (import) and out (export).

The fixture ``tests/data/lmeval/{F16,Q2_K}`` is real lm-eval 0.4.9.1 output (``--model gguf``
against ``llama_cpp.server`` on SmolLM2's F16 and Q2_K), made by
``scripts/make_lmeval_fixture.sh``; refusal tests corrupt copies of it.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gguf_fragility import cli
from gguf_fragility.artifacts import load_items, read_ladder
from gguf_fragility.interop.export import export_lm_eval
from gguf_fragility.interop.importer import import_lm_eval
from gguf_fragility.interop.lmeval import ImportRefused
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.report import site
from gguf_fragility.run import pipeline
from gguf_fragility.stats.grid import Settings, lens_grid
from gguf_fragility.testing import write_synthetic

FIX = Path(__file__).parent / "data" / "lmeval"
MODEL = "smollm2-135m"


def _samples(rung: str, task: str) -> list[dict]:
    """The fixture's sample lines of one rung and task, read with json alone."""
    (path,) = (FIX / rung).glob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    """Writable copies of the reference and Q2_K folders."""
    ref, q2 = tmp_path / "F16", tmp_path / "Q2_K"
    shutil.copytree(FIX / "F16", ref)
    shutil.copytree(FIX / "Q2_K", q2)
    return ref, q2


def _import(tmp_path: Path, ref: Path, q2: Path):
    return import_lm_eval(RunLayout(tmp_path / "out" / "imp"), MODEL, ref, {"Q2_K": q2})


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The frozen fixture imported once; the cells' items table."""
    layout = RunLayout(tmp_path_factory.mktemp("lmeval") / "imp")
    done = import_lm_eval(layout, MODEL, FIX / "F16", {"Q2_K": FIX / "Q2_K"})
    return layout, done, load_items(layout)


def test_imported_correctness_is_lm_evals_own_metric_per_item(imported):
    _, done, items = imported
    assert set(done.cells.family) == {"arc_mini", "arith_mini"}
    for rung in ("F16", "Q2_K"):
        for task, metric, filt in (("arc_mini", "acc", "none"),
                                   ("arith_mini", "exact_match", "strict-match")):
            want = {s["doc"]["item_id"]: s[metric] == 1.0 for s in _samples(rung, task)
                    if s["filter"] == filt}
            got = items[(items.rung == rung) & (items.family == task)].set_index("item_id")
            assert len(got) == len(want) == 8
            assert got.correct.to_dict() == want


def test_mc_margin_and_answer_come_from_the_choice_loglikelihoods(imported):
    _, _, items = imported
    s = _samples("Q2_K", "arc_mini")[2]
    lps = [float(r[0]) for r in s["filtered_resps"]]
    gold = int(s["target"])
    row = items[(items.rung == "Q2_K") & (items.item_id == s["doc"]["item_id"])].iloc[0]
    assert row.margin == pytest.approx(lps[gold] - max(lp for i, lp in enumerate(lps) if i != gold))
    assert row.extracted == "ABCD"[int(np.argmax(lps))]
    assert row.acc_norm == s["acc_norm"]


def test_generative_answers_are_the_filtered_ones_and_margin_is_not_available(imported):
    layout, _, items = imported
    gen = items[items.family == "arith_mini"]
    s = _samples("Q2_K", "arith_mini")
    strict = {x["doc"]["item_id"]: x["filtered_resps"][0] for x in s if x["filter"] == "strict-match"}
    assert gen[gen.rung == "Q2_K"].set_index("item_id").extracted.to_dict() == strict
    assert gen.margin.isna().all() and gen.gold_logprob.isna().all()
    assert all("not available" in json.loads(d)["margin"] for d in gen.detail)
    manifest = json.loads((layout.root / "imported" / f"{MODEL}.json").read_text())
    assert manifest["rungs"]["Q2_K"]["lm_eval_version"] == "0.4.9.1"
    assert manifest["filters"]["arith_mini"] == "strict-match"
    assert read_ladder(layout).set_index("rung").bpw.to_dict() == {"F16": 16.0, "Q2_K": 2.625}


def _edit_lines(folder: Path, task: str, edit) -> None:
    """Rewrite one samples file of a copied folder through ``edit(list of dicts) -> lines``."""
    (path,) = folder.glob(f"samples_{task}_*.jsonl")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("\n".join(edit(rows)) + "\n")


def _set(rows, doc_id, key, value, filt=None):
    for r in rows:
        if r["doc_id"] == doc_id and (filt is None or r["filter"] == filt):
            r[key] = value
    return [json.dumps(r) for r in rows]


def _results(folder: Path, edit) -> None:
    (path,) = folder.glob("results_*.json")
    res = json.loads(path.read_text())
    edit(res)
    path.write_text(json.dumps(res))


REFUSALS = {
    "other_docs": (lambda q2: _edit_lines(q2, "arc_mini", lambda r: _set(r, 3, "doc_hash", "x")),
                   ["task arc_mini", "1 of 8 samples have other documents", "first doc_id 3"]),
    "other_prompt": (lambda q2: _edit_lines(q2, "arith_mini",
                                            lambda r: _set(r, 5, "prompt_hash", "x")),
                     ["task arith_mini", "1 of 8 samples have other prompts", "first doc_id 5"]),
    "other_task_version": (lambda q2: _results(q2, lambda r: r["versions"].update(arc_mini=2.0)),
                           ["task arc_mini", "task version 2.0, the reference 1.0"]),
    "missing_sample": (lambda q2: _edit_lines(q2, "arc_mini", lambda r: [
        json.dumps(x) for x in r if x["doc_id"] != 6]),
        ["task arc_mini", "lacks 1 of the reference's 8 samples", "first doc_id 6"]),
    "duplicate_sample": (lambda q2: _edit_lines(q2, "arc_mini", lambda r: [
        json.dumps(x) for x in [*r, r[4]]]), ["task arc_mini", "1 duplicate samples",
                                              "first doc_id 4"]),
    "other_filter": (lambda q2: _edit_lines(q2, "arith_mini", lambda r: [
        json.dumps({**x, "filter": "custom"}) for x in r if x["filter"] == "strict-match"]),
        ["task arith_mini", "no samples with filter 'strict-match'", "custom"]),
    "bad_json_line": (lambda q2: _edit_lines(q2, "arc_mini", lambda r: [
        json.dumps(x) for x in r][:1] + ['{"doc_id": 1, "do']),
        ["task arc_mini", "line 2 is not JSON"]),
    "other_lm_eval_version": (lambda q2: _results(q2, lambda r: r.update(lm_eval_version="0.3.0")),
                              ["written by lm-eval 0.3.0", "reads lm-eval 0.4.x"]),
    "older_sample_format": (lambda q2: _edit_lines(q2, "arith_mini", lambda r: [
        json.dumps({k: v for k, v in x.items() if k != "prompt_hash"}) for x in r]),
        ["task arith_mini", "line 1 lacks prompt_hash", "lm-eval 0.4.x"]),
    "empty_folder": (lambda q2: [p.unlink() for p in list(q2.iterdir())],
                     ["Q2_K: no lm-eval results_*.json"]),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_task_count_and_first_doc(tmp_path, case):
    ref, q2 = _copy(tmp_path)
    corrupt, words = REFUSALS[case]
    corrupt(q2)
    with pytest.raises(ImportRefused) as err:
        _import(tmp_path, ref, q2)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    assert not (tmp_path / "out").exists()  # nothing written before every rung was checked


@pytest.mark.slow
def test_cli_import_then_chapters_5_6_and_site(tmp_path, monkeypatch, capsys):
    """Import the real fixture with the CLI, run chapters 5-6 as the pipeline does, render."""
    monkeypatch.setenv("GGUF_FRAGILITY_OUTPUTS", str(tmp_path / "outputs"))
    args = ["import-lm-eval", "--profile", "smoke", "--model", "lm-eval-smol",
            "--reference", str(FIX / "F16"), "--rung", f"Q2_K={FIX / 'Q2_K'}"]
    assert cli.main([*args[:-2], "--rung", "Q2_K"]) == 2
    assert "expected --rung NAME=VALUE" in capsys.readouterr().err
    assert cli.main(args) == 0
    assert "arith_mini" in capsys.readouterr().out
    layout = RunLayout.of("smoke")
    pipeline.run("smoke", ["stats", "transfer"])
    acc = pd.read_csv(layout.table(Table.ACCURACY)).set_index(["family", "rung"])
    for rung in ("F16", "Q2_K"):
        for task, metric, filt in (("arc_mini", "acc", "none"),
                                   ("arith_mini", "exact_match", "strict-match")):
            lm = [s[metric] for s in _samples(rung, task) if s["filter"] == filt]
            assert acc.loc[(task, rung), "n"] == len(lm) == 8
            assert acc.loc[(task, rung), "n_correct"] == sum(lm)  # lm-eval's own acc, per item
    cmp = pd.read_csv(layout.table(Table.COMPARISONS)).set_index(["lens", "family"])
    assert cmp.loc[("margin", "arith_mini"), "n"] == 0  # no log-probs: margin not available
    assert cmp.loc[("margin", "arc_mini"), "n"] == 8
    rendered = site.render(layout, check_claims=False)
    page = (rendered.site_dir / "chapters" / "09_imported.html").read_text()
    for word in ("arc_mini", "arith_mini", "Q2_K", "0.4.9.1", "not available"):
        assert word in page
    assert (rendered.site_dir / "chapters" / "05_stats.html").is_file()


def _grid(layout: RunLayout) -> pd.DataFrame:
    items = load_items(layout).assign(measurable=True)
    bpw = {(r.model, r.rung): r.bpw for r in read_ladder(layout).itertuples()}
    cmp = lens_grid(items, {"synth-0": "F16"}, bpw, settings=Settings(n_boot=200)).comparisons
    cols = ["lens", "family", "rung", "n", "effect", "ci_low", "ci_high", "p_value", "decision"]
    return cmp[cols].sort_values(["lens", "family", "rung"], ignore_index=True)


def test_export_then_import_gives_identical_statistics(tmp_path):
    ours = RunLayout(tmp_path / "ours")
    write_synthetic(ours, n_models=1, n_families=3, n_items=40, rungs=("F16", "Q4_K_M", "Q2_K"))
    written = export_lm_eval(ours, tmp_path / "exported")
    assert {Path(p).name for p in written.path} >= {"samples_fam02_gen_gguf-fragility.jsonl"}
    ex = tmp_path / "exported" / "synth-0"
    back = RunLayout(tmp_path / "back")
    import_lm_eval(back, "synth-0", ex / "F16", {r: ex / r for r in ("Q4_K_M", "Q2_K",
                                                                     "F16-floor")})
    pd.testing.assert_frame_equal(_grid(back), _grid(ours))
