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
    with pytest.raises(ProbeSchemaError, match="sha256/count differ from manifest.json"):
        probes.verify_manifest(tmp_path)
    lenient = probes.verify_manifest(tmp_path, strict=False)[0]
    assert not lenient.sha256_ok and not lenient.count_ok

