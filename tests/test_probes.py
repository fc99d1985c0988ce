"""Probe schema, frozen files, manifest and deterministic builds."""

from __future__ import annotations

import json

import pytest

from gguf_fragility import paths, probes
from gguf_fragility.probes import ProbeSchemaError, build, make_item, read_jsonl, sources, validate_item
from gguf_fragility.store import sha256_file

GENERATED = ["arithmetic", "string_ops", "structured_output"]


def good_item():
    return make_item("arithmetic", "generated", "seed1", "0001", kind="generate",
                     question="What is 2 + 2?", instruction="Answer with the number only.",
                     gold=["4"], scorer="numeric")


def write_lines(path, items):
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")


def test_good_item_validates():
    validate_item(good_item())


def test_schema_rejects_missing_gold_naming_file_line_field(tmp_path):
    bad = good_item()
    del bad["gold"]
    f = tmp_path / "arithmetic.jsonl"
    write_lines(f, [good_item(), bad])
    with pytest.raises(ProbeSchemaError) as err:
        read_jsonl(f)
    msg = str(err.value)
    assert "arithmetic.jsonl line 2" in msg and "'gold'" in msg and "missing" in msg


@pytest.mark.parametrize("field, value, needle", [
    ("kind", "chat", "use one of"),
    ("scorer", "fuzzy", "known scorers"),
    ("family", "poetry", "use one of"),
    ("choices", ["a", "b"], "must be null"),
    ("gold", "4", "expected"),
])
def test_schema_rejects_bad_values(field, value, needle):
    item = good_item()
    item[field] = value
    item = probes.with_hash(item)  # the hash is right: only the field is wrong
    with pytest.raises(ProbeSchemaError, match=needle) as err:
        validate_item(item, "x.jsonl line 3")
    assert f"'{field}'" in str(err.value) and "x.jsonl line 3" in str(err.value)


def test_schema_rejects_hand_edit_by_hash():
    item = good_item()
    item["gold"] = ["5"]
    with pytest.raises(ProbeSchemaError, match="'hash'"):
        validate_item(item)


def test_schema_rejects_mc_gold_out_of_range():
    item = make_item("science_mc", "arc", "validation", "q1", kind="mc_loglik",
                     question="Which?", choices=["a", "b"], gold=2, scorer="mc_loglik",
                     params={"mc_style": "cloze"})
    with pytest.raises(ProbeSchemaError, match="choice index in 0..1"):
        validate_item(item)


def test_duplicate_ids_and_bad_json_named(tmp_path):
    f = tmp_path / "arithmetic.jsonl"
    write_lines(f, [good_item(), good_item()])
    with pytest.raises(ProbeSchemaError, match="line 2: field 'item_id'.*duplicates line 1"):
        read_jsonl(f)
    f.write_text('{"item_id": \n', encoding="utf-8")
    with pytest.raises(ProbeSchemaError, match="line 1: not valid JSON"):
        read_jsonl(f)


def test_generators_are_byte_identical_across_builds(tmp_path):
    a = build.build(tmp_path / "a", GENERATED, progress=False)
    b = build.build(tmp_path / "b", GENERATED, progress=False)
    for name in [f"{f}.jsonl" for f in GENERATED] + ["manifest.json", "README.md"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a.sha256 == b.sha256
    c = build.build(tmp_path / "c", ["arithmetic"], seed=7, progress=False)
    assert c.sha256["arithmetic"] != a.sha256["arithmetic"]


def test_generated_answers_are_right(tmp_path):
    build.build(tmp_path, GENERATED, progress=False)
    for it in read_jsonl(tmp_path / "arithmetic.jsonl"):
        m = it["meta"]
        want = {"+": m["a"] + m["b"], "-": m["a"] - m["b"], "*": m["a"] * m["b"]}[m["op"]]
        assert it["gold"] == [str(want)]
    for it in read_jsonl(tmp_path / "string_ops.jsonl"):
        task, q = it["meta"]["task"], it["question"]
        if task == "reverse":
            assert it["gold"] == [q.split("'")[1][::-1]]
        if task == "count":
            letter, word = q.split("'")[1], q.split("'")[3]
            assert it["gold"] == [str(word.count(letter))]
        if task == "sort":
            words = q.split(": ")[1].rstrip(".").split(", ")
            assert it["gold"][0] == ", ".join(sorted(words))


def _wheels_cached() -> bool:
    folder = paths.cache_root() / "downloads"
    return all(sorted(folder.glob(f"{p.replace('-', '_')}-{v}-*.whl"))
               for p, v in sources.WHEELS.items())


def test_committed_files_match_manifest():
    rows = probes.verify_manifest()
    assert {r.family for r in rows} == set(probes.FAMILIES)
    assert all(r.sha256_ok and r.count_ok for r in rows)
    assert all(r.n_items >= 200 for r in rows), rows


@pytest.mark.skipif(not _wheels_cached(), reason="data wheels not in .cache/downloads")
def test_full_rebuild_reproduces_committed_files(tmp_path):
    build.build(tmp_path, progress=False)
    for f in sorted(paths.PROBES.iterdir()):
        assert (tmp_path / f.name).read_bytes() == f.read_bytes(), f.name


def test_reference_solutions_pass_their_tests():
    """A few HumanEval/MBPP references must pass in the sandbox (checks harness assembly)."""
    from gguf_fragility.probes.codeexec import build_program, run_python
    items = probes.load_family("code").items
    picked = [i for i in items if i["source"]["dataset"] == "humaneval"][:2] + [
        i for i in items if i["source"]["dataset"] == "mbpp"][:2]
    for it in picked:
        code = it["params"]["reference"]
        if it["params"]["harness"] == "mbpp":
            code = code.replace("\r\n", "\n")
        res = run_python(build_program(code, it["params"]), timeout_s=20)
        assert res.passed, (it["item_id"], res.stderr[-500:])


def test_load_family_prefix_and_unknown():
    pf = probes.load_family("arithmetic", n=5)
    assert len(pf.items) == 5 and pf.sha256 == sha256_file(pf.path)
    with pytest.raises(ValueError, match="unknown family"):
        probes.load_family("poetry")


def test_file_that_left_its_manifest_is_refused(tmp_path):
    """A frozen file whose items were changed (each item still valid) fails the manifest."""
    build.build(tmp_path, ["arithmetic"], progress=False)
    f = tmp_path / "arithmetic.jsonl"
    assert probes.verify_manifest(tmp_path)[0].sha256_ok
    lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
    f.write_text("".join(lines[:-1]), encoding="utf-8")  # one item dropped, the rest intact
    with pytest.raises(ProbeSchemaError, match="holds 299 items, manifest.json records 300"):
        probes.verify_manifest(tmp_path)
    lenient = probes.verify_manifest(tmp_path, strict=False)[0]
    assert not lenient.sha256_ok and not lenient.count_ok and lenient.n_errors == 0


@pytest.fixture
def tampered(tmp_path):
    """A built arithmetic file and a way to tamper with it (each item left valid)."""
    build.build(tmp_path, ["arithmetic"], progress=False)
    return tmp_path, tmp_path / "arithmetic.jsonl"


def test_load_family_refuses_a_file_that_lost_an_item(tampered):
    """The loader of calibrate, sweep and regrade (old code: 299 items used silently)."""
    root, f = tampered
    assert len(probes.load_family("arithmetic", root).items) == 300
    lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
    f.write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(ProbeSchemaError) as err:
        probes.load_family("arithmetic", root, n=5)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(f)), msg
    assert "holds 299 items, manifest.json records 300" in msg and "make probes" in msg


def test_load_family_refuses_an_item_edited_with_its_hash_recomputed(tampered):
    """Each item still validates (its hash matches its content); only the manifest's file
    sha256 tells (old code: the edited gold answer was used silently)."""
    root, f = tampered
    items = read_jsonl(f)
    items[3] = probes.with_hash({**items[3], "gold": ["12345"]})
    validate_item(items[3])
    probes.write_jsonl(f, items)
    with pytest.raises(ProbeSchemaError, match=r"arithmetic.jsonl: its sha256 \w+… is not the "
                                               r"\w+… manifest.json records .*make probes"):
        probes.load_family("arithmetic", root)
    with pytest.raises(ProbeSchemaError, match="manifest.json records"):
        probes.load_items(["arithmetic"], 2, root)


def test_load_family_refuses_a_family_missing_from_the_manifest(tampered):
    root, _ = tampered
    man = json.loads((root / "manifest.json").read_text())
    del man["families"]["arithmetic"]
    (root / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ProbeSchemaError, match="has no entry for family 'arithmetic'"):
        probes.load_family("arithmetic", root)
    (root / "manifest.json").unlink()
    with pytest.raises(ProbeSchemaError, match="manifest.json is missing or unreadable"):
        probes.load_family("arithmetic", root)


# ---------------------------------------------------------------- chapter 2's stored tables
CH2_FAMILIES = ["arithmetic", "science_mc"]


@pytest.mark.llama
def test_chapter_tables_are_reused_while_fresh_and_rebuilt_when_not(smol_ladder, tmp_path,
                                                                    monkeypatch, capsys):
    """Chapter 2 ran in full on every run (old code: no stored tables at all)."""
    import shutil

    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from gguf_fragility.engine.llama import Engine
    from gguf_fragility.probes.report import chapter_tables

    f16 = smol_ladder.set_index("rung").loc["F16", "file"]
    loads = []

    def load():
        loads.append(1)
        return Engine(f16, n_ctx=1024, n_threads=2, seed=0)

    folder = tmp_path / "probes" / "smollm2-135m"
    inputs = {"model_sha256": smol_ladder.set_index("rung").loc["F16", "sha256"]}
    first = chapter_tables(folder, CH2_FAMILIES, 1, inputs, load)
    assert first.computed == ("examples", "lengths", "demo") and len(loads) == 1
    assert list(first.demo.family) == CH2_FAMILIES and len(first.lengths) == 300 + 299
    again = chapter_tables(folder, CH2_FAMILIES, 1, inputs, load)
    assert again.computed == () and len(loads) == 1  # no model loaded
    for a, b in zip(first[:3], again[:3], strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert (again.is_chat, again.n_ctx) == (first.is_chat, first.n_ctx) == (True, 1024)
    # an edited demo verdict (metadata kept): named and computed again, the rest reused
    demo = folder / "demo.parquet"
    table = pq.read_table(demo)
    i = table.column_names.index("correct")
    pq.write_table(table.set_column(i, "correct", pc.invert(table.column("correct"))), demo)
    capsys.readouterr()
    fixed = chapter_tables(folder, CH2_FAMILIES, 1, inputs, load)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "rebuilding" in ln]
    assert fixed.computed == ("demo",) and len(loads) == 2
    assert len(lines) == 1 and str(demo) in lines[0] and "edited or corrupted" in lines[0]
    assert list(fixed.demo.correct) == list(first.demo.correct)
    # another probe set (manifest.json changed): every table is stale
    probe_copy = tmp_path / "data_probes"
    shutil.copytree(paths.PROBES, probe_copy)
    man = json.loads((probe_copy / "manifest.json").read_text())
    (probe_copy / "manifest.json").write_text(json.dumps({**man, "probe_set_version": "x"}))
    monkeypatch.setattr(paths, "PROBES", probe_copy)
    capsys.readouterr()
    assert chapter_tables(folder, CH2_FAMILIES, 1, inputs, load).computed == (
        "examples", "lengths", "demo")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "rebuilding" in ln]
    assert len(lines) == 3 and all("made with other inputs" in ln for ln in lines), lines

