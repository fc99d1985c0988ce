"""Extension instead of redo (issue 27): a cell's items come in the family's pre-registered
order, a stored cell of fewer items is extended (only the new items scored) and one of more
items is used as its prefix; real llama.cpp on the real SmolLM2 (Q2_K, one family)."""

import shutil

import pandas as pd
import pytest
from tiny_profile import copy_tiny_run, tiny_profile_yaml

from gguf_fragility import probes
from gguf_fragility.profile import load_profile

SMOL = "smollm2-135m"
FAMILY = "science_mc"  # log-likelihood: cheap on the tiny model
SCORES = ["item_id", "item_hash", "raw_output", "extracted", "correct", "gold_logprob", "margin",
          "answer_kl", "answer_same_top", "answer_top_ids", "ref_answer_logprob"]


def test_item_order_is_a_prefix_whatever_n():
    """The first n items of a family are the same for every n (the pre-registered order)."""
    for family in probes.FAMILIES:
        twelve, more = probes.load_family(family, n=12), probes.load_family(family, n=24)
        ids12, ids24 = [it["item_id"] for it in twelve.items], [it["item_id"] for it in more.items]
        assert ids24[:len(ids12)] == ids12
        assert len(ids24) == min(24, probes.read_manifest()["families"][family]["n_items"])


def _profile(folder, name, n_items):
    (folder / f"{name}.yaml").write_text(tiny_profile_yaml([FAMILY], n_items, n_threads=2)
                                         + f"outputs: {str(folder / 'outputs')!r}\n")
    return load_profile(folder / f"{name}.yaml")


def _run(profile, rung):
    from gguf_fragility.run.cells import evaluate_cell
    from gguf_fragility.run.plan import plan_rung

    plan = plan_rung(profile, SMOL, rung)
    (cell,) = plan.cells
    return evaluate_cell(plan, cell), pd.read_parquet(cell.path)


@pytest.mark.llama
def test_cell_is_extended_not_redone(tmp_path, tiny_run):
    """2 items, then 4: only the 2 new ones are scored, the first 2 rows stay as they were,
    and the cell equals a one-shot 4-item cell; asking 2 again reuses the 4-item cell."""
    copy_tiny_run(tiny_run, tmp_path / "outputs", "ext", [FAMILY])
    (tmp_path / "outputs/ext/sweep" / SMOL / "Q2_K" / f"{FAMILY}.parquet").unlink()
    two, four = _profile(tmp_path, "ext", 2), _profile(tmp_path, "ext", 4)
    ref, _ = _run(four, "F16")  # the stored 3-item reference cell gains one item
    assert (ref.ran, ref.scored) == (True, 1)

    first, rows2 = _run(two, "Q2_K")
    assert (first.ran, first.scored, len(rows2)) == (True, 2, 2)
    more, rows4 = _run(four, "Q2_K")
    assert (more.ran, more.scored, len(rows4)) == (True, 2, 4)
    pd.testing.assert_frame_equal(rows4.iloc[:2].drop(columns="params_hash"),
                                  rows2.drop(columns="params_hash"))
    assert rows4.params_hash.nunique() == 1
    again, rows = _run(two, "Q2_K")  # fewer items asked: the stored cell is its prefix
    assert (again.ran, again.scored) == (False, 0)
    pd.testing.assert_frame_equal(rows, rows4)

    shutil.copytree(tmp_path / "outputs/ext", tmp_path / "once/outputs/once")
    (tmp_path / "once/outputs/once/sweep" / SMOL / "Q2_K" / f"{FAMILY}.parquet").unlink()
    one_shot, rows_once = _run(_profile(tmp_path / "once", "once", 4), "Q2_K")
    assert (one_shot.ran, one_shot.scored) == (True, 4)
    pd.testing.assert_frame_equal(rows_once[SCORES], rows4[SCORES])
    assert (rows_once.params_hash == rows4.params_hash).all()


@pytest.mark.llama
def test_cell_of_other_items_is_rebuilt(tmp_path, tiny_run, capsys):
    """A stored cell whose items are not a prefix of the order is named and rebuilt, never mixed."""
    copy_tiny_run(tiny_run, tmp_path / "outputs", "ext", [FAMILY])
    path = tmp_path / "outputs/ext/sweep" / SMOL / "Q2_K" / f"{FAMILY}.parquet"
    from gguf_fragility.store import read_table_checked, write_table_atomic

    rows = read_table_checked(path).frame
    write_table_atomic(rows.iloc[::-1].reset_index(drop=True), path)  # another order
    run, stored = _run(_profile(tmp_path, "ext", 3), "Q2_K")
    assert (run.ran, run.scored) == (True, 3)
    said = capsys.readouterr()
    assert "pre-registered order" in said.out + said.err
    assert list(stored.item_id) == list(rows.item_id)
