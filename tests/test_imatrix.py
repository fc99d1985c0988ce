"""imatrix rungs: the calibration texts stay apart from the probes, and llama-imatrix +
llama-quantize really build a different file from the same ftype on the real SmolLM2."""

import functools
import json
import shutil
from pathlib import Path

import pytest
from tiny_profile import link_built

from gguf_fragility import probes
from gguf_fragility.ladder import imatrix

SMOL = "smollm2-135m"


def test_frozen_texts_share_nothing_with_the_probes():
    for name in ("wiki", "code"):
        assert imatrix.check_text(name).stat().st_size > 50_000
        assert imatrix.probe_overlap(imatrix.text_path(name).read_text()) == []


def test_wiki_text_shares_no_passage_with_the_kl_sample():
    sample = [json.loads(line)["text"] for line in
              (imatrix.paths.DATA / "shift" / "wikipedia.jsonl").read_text().splitlines()]
    calib = set(imatrix.text_path("wiki").read_text().split("\n\n"))
    assert not calib & {p for text in sample for p in text.split("\n\n")}


def test_a_text_quoting_a_probe_item_is_refused(tmp_path):
    item = probes.load_family("reading", n=3).items[2]
    quoted = " ".join(item["context"].split()[:20])  # 20 words of its passage
    (tmp_path / "mine.txt").write_text("An honest start of a text. " + quoted + " And an end.")
    with pytest.raises(ValueError, match=rf"calibration text .*mine.txt shares 13-word sequences "
                                         rf"with 1 probe item\(s\), e.g. {item['item_id']}: .*"
                                         r"must not see the test items"):
        imatrix.check_text("mine", tmp_path)
    # twelve shared words are not an overlap, nor are thirteen numbers in a row
    (tmp_path / "mine.txt").write_text(" ".join(item["context"].split()[:12]) + " zebra. "
                                       + " ".join(map(str, range(2, 30))))
    assert imatrix.check_text("mine", tmp_path) == tmp_path / "mine.txt"


def test_a_missing_text_names_the_texts_there_are(tmp_path):
    (tmp_path / "wiki.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"calibration text .*web.txt does not exist "
                                                r"\(have: wiki\); run `python -m "
                                                r"gguf_fragility.ladder.imatrix`"):
        imatrix.text_path("web", tmp_path)


@pytest.mark.llama
@pytest.mark.slow
def test_imatrix_rung_on_real_smollm2(tmp_path, monkeypatch, smol_ladder):
    """Q4_K_M with a wiki importance matrix: the same tensor types as plain Q4_K_M, other
    bytes; its manifest row names the matrix; a changed text rebuilds matrix and rung.

    The matrices cover 2 chunks, not the production 16: what is checked is the rounding they
    move and their caching, which do not depend on the count (and 2 take a tenth of the time).
    """
    from gguf_fragility.ladder import quantize
    from gguf_fragility.ladder.quantize import build_reference, build_rung

    monkeypatch.setenv("GGUF_FRAGILITY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(imatrix, "CALIBRATION", tmp_path / "calibration")
    monkeypatch.setattr(quantize, "build_imatrix", functools.partial(imatrix.build_imatrix, chunks=2))
    shutil.copytree(imatrix.paths.DATA / "calibration", tmp_path / "calibration")
    link_built(Path(smol_ladder.file.iloc[0]).parent, tmp_path / "cache" / "models" / SMOL,
               ["source.gguf", "reference.gguf"])
    ref = build_reference(SMOL)
    plain = build_rung(ref, SMOL, "Q4_K_M", 2)
    row = build_rung(ref, SMOL, "Q4_K_M+imatrix_wiki", 2)
    assert row["tensors_by_type"] == plain["tensors_by_type"]
    assert row["sha256"] != plain["sha256"]  # the matrix moved the rounding
    assert row["imatrix_text"] == "wiki" and not row["reused"] and row["imatrix_s"] > 0
    side = json.loads((tmp_path / "cache/models" / SMOL / "imatrix-wiki.gguf.json").read_text())
    assert row["imatrix_sha256"] == side["sha256"] and side["chunks"] == 2
    assert row["imatrix_text_sha256"] == side["text_sha256"]
    again = build_rung(ref, SMOL, "Q4_K_M+imatrix_wiki", 2)
    assert again["reused"] and again["sha256"] == row["sha256"]
    assert again["imatrix_s"] == row["imatrix_s"]  # the recorded time of the one computation
    # another calibration text under the same name: a new matrix, a new rung
    wiki = tmp_path / "calibration" / "wiki.txt"
    wiki.write_text(imatrix.text_path("code").read_text())
    changed = build_rung(ref, SMOL, "Q4_K_M+imatrix_wiki", 2)
    assert not changed["reused"] and changed["imatrix_sha256"] != row["imatrix_sha256"]
    assert changed["sha256"] != row["sha256"]
