"""Issue 25 wired through the grid: every lens's decision is a relevance label against its
own margin, in its own unit; a rejection never sits beside a contrary decision; floor-less
fidelity cells never die; a shown loss smaller than the margin is a change, not a death; a
margin cell whose reference leaves no room for a loss beyond the margin is not judged."""

import numpy as np
import pandas as pd
import pytest

from gguf_fragility.profile import load_profile
from gguf_fragility.stats import relevance as rel
from gguf_fragility.stats import results
from gguf_fragility.stats import sequential as sq
from gguf_fragility.stats.lens.registry import LENSES
from gguf_fragility.testing import synthetic_results

SETTINGS = results.Settings(n_boot=100)
RUNGS = ("F16", "Q8_0", "Q4_K_M", "Q2_K")


@pytest.fixture(scope="module")
def synth():
    r = synthetic_results(n_models=2, n_families=5, n_items=80, rungs=RUNGS, seed=5)
    return r, results.stats_tables(r.items, r.ladder, r.costs, r.shift, settings=SETTINGS)


def test_every_row_states_unit_margin_and_a_label(synth):
    _, t = synth
    c = t.comparisons[t.comparisons["measurable"]]
    assert set(c["decision"]) <= {*rel.LABELS, "untestable"}
    assert (c["unit"].astype(str).str.len() > 0).all() and (c["equivalence_margin"] > 0).all()
    m = c[c["lens"] == "margin"]
    assert set(m["unit"]) == {"gold-answer probability (pp)", "reply per-token probability (pp)"}
    assert (m.loc[m["unit"].str.startswith("gold"), "equivalence_margin"]
            == SETTINGS.gold_prob_margin_pp).all()
    assert m["effect_nats"].notna().any()  # nats stay for experts


def test_a_rejection_never_sits_beside_a_contrary_decision(synth):
    _, t = synth
    c = t.comparisons
    assert c.loc[c["reject"].astype(bool), "decision"].isin([rel.BEYOND, rel.CHANGE]).all()
    beyond = c[c["decision"] == rel.BEYOND]
    assert len(beyond) and beyond["reject"].all()
    # the whole interval lies beyond the margin, on the lens's loss side
    for name, lens in LENSES.items():
        b = beyond[beyond["lens"] == name]
        worst = -b["ci_low"] if lens.loss_side == "above" else b["ci_high"]
        assert (worst < -b["equivalence_margin"] + 1e-12).all() or b.empty


def test_death_rungs_read_only_losses_beyond_the_margin(synth):
    _, t = synth
    c, d = t.comparisons, t.death_order
    for name in LENSES:
        dead = d[d[f"death_rung_{name}"].fillna("") != ""]
        for row in dead.itertuples():
            cell = c[(c["model"] == row.model) & (c["lens"] == name) & (c["family"] == row.family)
                     & (c["rung"] == getattr(row, f"death_rung_{name}"))]
            assert cell["decision"].iloc[0] == rel.BEYOND


def test_floor_less_fidelity_cells_never_die():
    r = synthetic_results(n_models=1, n_families=4, n_items=80, rungs=RUNGS, seed=1,
                          noise_floor=False)
    t = results.stats_tables(r.items, r.ladder, r.costs, r.shift, settings=SETTINGS)
    f = t.comparisons[(t.comparisons["lens"] == "fidelity") & t.comparisons["testable"]]
    # a shown change is labelled "no floor", never a loss or a plain change
    assert len(f) and not f["decision"].isin([rel.BEYOND, rel.CHANGE]).any()
    no_floor = (f["decision"] == rel.NO_FLOOR).sum()
    assert no_floor > 0
    assert (t.death_order["death_rung_fidelity"].fillna("") == "").all()
    assert (t.lens_summary.set_index("lens").loc["fidelity", "n_no_floor"] == no_floor)


def _loss_sweep(n: int, deaths: int, gold: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One log-likelihood family of ``n`` items; Q2_K loses ``deaths`` of them (reference right);
    ``gold``: each family's gold-answer probability at F16 and Q2_K (default 0.61 at both)."""
    rows = []
    for family, (p_ref, p_rung) in (gold or {"f": (np.exp(-0.5),) * 2}).items():
        for i in range(n):
            for rung, p in (("F16", p_ref), ("Q2_K", p_rung)):
                dies = rung == "Q2_K" and i < deaths
                rows.append({"model": "m", "rung": rung, "family": family,
                             "item_id": f"{family}{i}", "correct": not dies,
                             "extracted": "B" if dies else "A", "mode": "loglik", "margin": 1.0,
                             "gold_logprob": np.log(p), "ref_answer_logprob": np.nan,
                             "answer_kl": 0.0, "answer_same_top": 1.0})
    ladder = pd.DataFrame({"model": "m", "rung": ["F16", "Q2_K"], "is_reference": [True, False],
                           "bpw": [16.0, 3.0], "file_size_bytes": [1600, 300]})
    return pd.DataFrame(rows), ladder


def test_a_loss_shown_but_smaller_than_the_margin_is_a_change_not_a_death():
    # 15 of 1,000 items die (1.5 points): McNemar rejects (p = 2^-14) but the whole
    # interval lies within the 3-point margin: equivalent, and no rejection is printed
    items, ladder = _loss_sweep(1000, 15)
    t = results.stats_tables(items, ladder, settings=SETTINGS)
    k = t.comparisons.query("lens == 'correctness'").iloc[0]
    assert k.ci_high < 0 and k.ci_low > -0.03 and k.p_value < 1e-4
    assert k.decision == rel.EQUIVALENT and not k.reject
    # 30 of 1,000 (3 points, on the margin): a change is shown, not a loss beyond it
    items, ladder = _loss_sweep(1000, 30)
    t = results.stats_tables(items, ladder, settings=SETTINGS)
    k = t.comparisons.query("lens == 'correctness'").iloc[0]
    assert k.reject and k.ci_high < 0 and k.ci_low < -0.03 < k.ci_high
    assert k.decision == rel.CHANGE
    assert (t.death_order["death_rung_correctness"].fillna("") == "").all()
    assert t.decision.set_index("rung").loc["Q2_K", "quality"] != rel.BEYOND
    # 80 of 1,000 (8 points): beyond the margin, and Q2_K dies
    items, ladder = _loss_sweep(1000, 80)
    t = results.stats_tables(items, ladder, settings=SETTINGS)
    assert t.comparisons.query("lens == 'correctness'").iloc[0].decision == rel.BEYOND
    assert t.death_order["death_rung_correctness"].iloc[0] == "Q2_K"


def test_a_margin_cell_without_room_is_not_judged():
    """The reference gives family "tiny"'s gold answer 2 points (a multi-token continuation,
    say) and Q2_K loses all of it: the mean change (-2 points) lies within the 3-point margin
    whatever the rung does, so its equivalence would be the unit's. It is labelled "no room"
    in the fixed grid (not counted as decided) and in the sequential design (not steered);
    family "room" (50 points at both) is shown equivalent by both."""
    items, ladder = _loss_sweep(400, 0, gold={"room": (0.5, 0.5), "tiny": (0.02, 1e-12)})
    t = results.stats_tables(items, ladder, settings=SETTINGS)
    m = t.comparisons.query("lens == 'margin'").set_index("family")
    assert m.loc["tiny", "effect"] == pytest.approx(-2.0)
    assert m.loc["tiny", "reference_pp"] == pytest.approx(2.0)
    assert m.loc["tiny", "ci_low"] > -3  # what used to be shown "equivalent"
    assert m.loc["tiny", "decision"] == rel.NO_ROOM and not m.loc["tiny", "reject"]
    assert m.loc["room", "decision"] == rel.EQUIVALENT
    summ = t.lens_summary.set_index("lens").loc["margin"]
    assert (summ.n_no_room, summ.n_decided) == (1, 1)
    positions = {(f, i): int(i[len(f):]) for f, i in zip(items.family, items.item_id, strict=True)}
    dec = sq.judge_items(items, ladder, {("m", r, f) for r in ("F16", "Q2_K") for f in ("room", "tiny")},
                         positions, SETTINGS, cap={})
    seq = dec.lenses.query("lens == 'margin'").set_index("family")
    assert seq.loc["tiny", "label"] == rel.NO_ROOM
    assert not seq.loc["tiny", "can_decide"] and not seq.loc["tiny", "decided"]
    assert seq.loc["tiny", "items"] == np.inf  # the looks never grow a cell for it
    assert seq.loc["room", "label"] == rel.EQUIVALENT and seq.loc["room", "decided"]


@pytest.mark.parametrize(("key", "value"), [("fidelity_margin", 0), ("gold_prob_margin_pp", 150),
                                            ("equivalence_margin", 1.5)])
def test_a_bad_margin_is_named_with_its_unit(tmp_path, key, value):
    p = tmp_path / "bad.yaml"
    p.write_text(f"models: {{}}\n{key}: {value}\n")
    with pytest.raises(ValueError, match=key) as e:
        load_profile(p)
    assert "points" in str(e.value)


def first_cells(decision_b: str) -> pd.DataFrame:
    """b (10 items) and z (64 items) lose alike at Q4_K_M; z's loss is shown beyond the
    margin, b's is ``decision_b``; a loses nothing."""
    return pd.DataFrame({
        "family": ["b", "b", "z", "z", "a", "a"], "rung": ["Q8_0", "Q4_K_M"] * 3,
        "bpw": [8.5, 4.9] * 3, "measurable": True,
        "effect": [0.0, -0.30, 0.0, -0.30, 0.0, -0.01],
        "ci_low": [-0.1, -0.55, -0.03, -0.42, -0.02, -0.03],
        "ci_high": [0.1, -0.04, 0.03, -0.18, 0.02, 0.01],
        "decision": [rel.UNDECIDED, decision_b, rel.EQUIVALENT, rel.BEYOND, rel.EQUIVALENT,
                     rel.EQUIVALENT]})


def test_first_to_die_names_inseparable_dead_families_as_tied():
    from gguf_fragility.report.pages import first_to_die_text
    from gguf_fragility.stats.deathorder import FirstDeath, first_death

    f = first_death(first_cells(rel.BEYOND), "correctness")
    assert isinstance(f, FirstDeath)
    assert (f.families, f.rung, f.bpw, f.tied) == (("b", "z"), "Q4_K_M", 4.9, True)
    assert first_to_die_text(f) == "b and z (tied)"
    maybe = f._replace(possible=("c", "d"))
    assert first_to_die_text(maybe) == ("b and z (tied); maybe c and d too "
                                        "(not shown beyond the margin)")
    none = first_death(first_cells(rel.BEYOND).assign(decision=rel.CHANGE), "correctness")
    assert none.families == () and none.rung == "" and np.isnan(none.bpw)
    assert first_to_die_text(none) == ""


def test_first_to_die_never_names_a_family_whose_loss_is_only_a_change():
    """b's loss is as large as z's, but its own verdict is "change, possibly within the
    margin": b did not die, so z alone is named (issue 25, gap 6); b cannot be shown less
    fragile than z, so it is marked possible, and a (a 1-point loss, shown smaller) is not."""
    from gguf_fragility.report.pages import first_to_die_text
    from gguf_fragility.stats.deathorder import first_death

    f = first_death(first_cells(rel.CHANGE), "correctness")
    assert (f.families, f.rung, f.tied, f.possible) == (("z",), "Q4_K_M", False, ("b",))
    assert first_to_die_text(f) == "z; maybe b too (not shown beyond the margin)"
    # a cell without room cannot lose the margin at all: never "maybe" (the default run's
    # margin lens named science_mc, whose reference gives its answers 0.00 points, so)
    f = first_death(first_cells(rel.NO_ROOM), "margin")
    assert (f.families, f.possible) == (("z",), ())
    # every cell with room lacks items (an imported family without log-probabilities): none
    empty = first_cells(rel.NO_ROOM).assign(decision=rel.NO_ROOM)
    empty.loc[empty.family == "a", ["effect", "ci_low", "ci_high", "decision"]] = [
        np.nan, np.nan, np.nan, rel.UNDECIDED]
    assert first_death(empty, "margin").families == ()


def test_the_counts_table_states_each_margin_in_points(synth):
    from gguf_fragility.report.pages import margin_text

    _, t = synth
    c = t.comparisons[t.comparisons["model"] == "synth-0"]
    assert margin_text(c[c["lens"] == "correctness"]) == "±3 points of accuracy"
    assert margin_text(c[c["lens"] == "fidelity"]) == "±3 points of flip rate"
    assert margin_text(c[c["lens"] == "margin"]) == (
        "±3 points of gold-answer probability; ±3 points of reply per-token probability")


def test_the_deaths_sentence_states_each_lens_margin(synth, tmp_path):
    """Issue 25 acceptance: "where families died" names the margin each loss lies beyond."""
    from gguf_fragility.layout import RunLayout
    from gguf_fragility.report.landing import deaths_markdown
    from gguf_fragility.store import write_tables

    _, t = synth
    run = RunLayout.of("unit", tmp_path)
    write_tables(t, run.tables_dir)
    dead = t.death_order[t.death_order["death_rung_correctness"].fillna("") != ""]
    assert len(dead)
    text = deaths_markdown(run, dead["model"].iloc[0])
    assert "on **correctness** (beyond ±3 points of accuracy), " in text
    for lens in ("fidelity", "margin"):
        if f"on **{lens}**" in text:
            assert f"on **{lens}** (beyond ±3 points of" in text
