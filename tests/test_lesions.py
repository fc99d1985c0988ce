"""Chapter 8: lesion rungs on the real SmolLM2, the damage share and its coverage, the map
and the recipe on fabricated sweeps, the notebook."""

import json

import numpy as np
import pandas as pd
import pytest

from gguf_fragility.engine.rungs import (
    absent_groups,
    lesion_of,
    recipe_rung,
    tensor_type_patterns,
    types_by_kind,
)
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.report import lesions as lesion_text
from gguf_fragility.stats import lesions, recipes, results
from gguf_fragility.stats.grid import Settings
from gguf_fragility.stats.relevance import BEYOND, EQUIVALENT
from gguf_fragility.store import write_table_atomic, write_tables
from gguf_fragility.testing import synthetic_results, with_lesion_rungs

SETTINGS = Settings(n_boot=400)
RUNGS = ("F16", "Q8_0", "Q3_K_M", "Q2_K")


# ----------------------------------------------------------------- names


@pytest.mark.parametrize("rung, expected", [
    ("Q8_0+ffn_down=Q2_K", ("ffn_down", "Q2_K")),
    ("Q8_0+ffn_down.last_third=Q2_K", ("ffn_down.last_third", "Q2_K")),
    ("Q8_0+first_third=Q3_K", ("first_third", "Q3_K")),
    ("Q2_K+ffn_down=Q4_K", None),  # a recipe: low everywhere but one group
    ("Q8_0+ffn_down=Q2_K+attn_v=Q2_K", None),  # two groups: not one lesion
    ("Q8_0+ffn_down=Q2_K+kv_q4_0", None),  # a KV rung on a lesion's file
    ("Q8_0", None), ("F16-floor", None), ("not a rung", None),
])
def test_lesion_of(rung, expected):
    assert lesion_of(rung) == expected


def test_recipe_rung_spells_the_grammar_and_refuses_a_bad_group():
    assert recipe_rung("Q2_K", ["ffn_down", "attn_v"], "Q4_K") == "Q2_K+ffn_down=Q4_K+attn_v=Q4_K"
    with pytest.raises(ValueError, match="unknown tensor group 'ffn_dwn'"):
        recipe_rung("Q2_K", ["ffn_dwn"], "Q4_K")


SMOL_NAMES = ["token_embd.weight", "output_norm.weight"] + [
    f"blk.{b}.{k}.weight" for b in range(30)
    for k in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
              "attn_norm", "ffn_norm")]


def test_absent_groups_finds_the_tied_output():
    ov = (("output", "Q2_K"), ("ffn_down", "Q2_K"), ("last_third", "Q2_K"),
          ("attn_v.first_third", "Q2_K"), ("token_embd", "Q2_K"))
    assert absent_groups(ov, SMOL_NAMES, 30) == ["output"]
    # a model cut to 4 blocks (0-1, 2, 3) has no block 29: the names of 30 blocks' thirds
    # still exist, but a depth group of 30 blocks looked up with n_blocks=3 ends at block 2
    assert absent_groups((("last_third", "Q2_K"),), ["blk.0.ffn_down.weight"], 3) == [
        "last_third"]


def test_types_by_kind_counts_tensors_per_kind():
    pairs = [("blk.0.ffn_down.weight", "Q3_K"), ("blk.1.ffn_down.weight", "Q3_K"),
             ("blk.1.attn_k.weight", "Q2_K"), ("blk.1.attn_k.bias", "F32"),
             ("blk.1.attn_norm.weight", "F32"), ("output.weight", "Q6_K")]
    assert types_by_kind(pairs, 2) == {"ffn_down": {"Q3_K": 2}, "attn_k": {"Q2_K": 1, "F32": 1},
                                       "output": {"Q6_K": 1}}


# ----------------------------------------------------------------- the share


def test_damage_share_hand_computed():
    # mean lesion change -1 nat, mean full change -2 nats: half the damage
    s = lesions.damage_share([-1, 0, -2, -1], [-2, -2, -2, -2], n_resamples=500, rng=0)
    assert s.estimate == pytest.approx(0.5) and s.n == 4
    assert s.ci_low <= 0.5 <= s.ci_high and s.method in ("BCa", "percentile")
    # every item loses 30% of the full change: every resample says 0.3
    p = lesions.damage_share([-0.3, -0.6, -0.15], [-1, -2, -0.5], rng=0)
    assert p == (pytest.approx(0.3), pytest.approx(0.3), pytest.approx(0.3), 3, "degenerate")
    # non-finite items are dropped before the ratio: (-1 - 3) / 2 over (-2 - 4) / 2
    q = lesions.damage_share([-1, np.nan, -3, -5], [-2, -1, -4, np.inf], n_resamples=200, rng=0)
    assert q.n == 2 and np.isnan(q.estimate)  # fewer than 3 items: no estimate
    r = lesions.damage_share([-1, 7, -3, -2], [-2, -1, -4, -3], n_resamples=200, rng=0)
    assert r.estimate == pytest.approx((1 / 4) / (-10 / 4))
    assert np.isnan(lesions.damage_share([1, 2, 3], [1, -1, 0]).estimate)  # zero full mean


def test_damage_share_bad_lengths():
    with pytest.raises(ValueError, match=r"lesion_delta has \(3,\) items, full_delta \(2,\)"):
        lesions.damage_share([1, 2, 3], [1, 2])


@pytest.mark.parametrize("n, low", [(12, 0.87), (40, 0.91)])
def test_damage_share_interval_covers_the_true_share(n, low):
    """400 data sets with a known share of 0.4: the 95% paired BCa interval covers it close
    to 95% of the time (binomial SE 1.1 points). At 12 items, the profile's size, BCa
    undercovers a little (91.5% over 1,500 data sets; damage_share's Notes): the bound is
    lower there, but a collapse (e.g. a percentile interval of the wrong statistic) fails."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(400):
        full = rng.normal(-1.0, 0.6, n)  # nats: the full rung's per-item change
        lesion = 0.4 * full + rng.normal(0, 0.3, n)  # E[lesion] / E[full] = 0.4
        s = lesions.damage_share(lesion, full, n_resamples=999, rng=rng)
        hits += s.ci_low <= 0.4 <= s.ci_high
    assert low <= hits / 400 <= 0.985


# ----------------------------------------------------------------- the map and the recipe


@pytest.fixture(scope="module")
def fabricated():
    return with_lesion_rungs(synthetic_results(n_models=1, n_families=4, n_items=80,
                                               rungs=RUNGS, seed=1))


def test_lesion_map_finds_the_fabricated_damage(fabricated):
    m = lesions.lesion_map(fabricated.items, fabricated.ladder, settings=SETTINGS)
    cells = m.lesion_map
    assert set(cells.role) == {"lesion", "intact base", "full rung"}
    assert set(cells.rung) == {"Q8_0", "Q2_K", *lesions_in(fabricated)}  # no Q3_K_M
    margin = cells[cells.lens == "margin"].set_index(["rung", "family"])
    loss_at_q2k = margin.loc["Q2_K"].query("decision == @BEYOND").index
    assert len(loss_at_q2k) >= 2
    # ffn_down reproduces 80% of Q2_K's change per item: a loss wherever Q2_K's is large
    assert (margin.loc["Q8_0+ffn_down=Q2_K"].loc[loss_at_q2k, "decision"] == BEYOND).all()
    # attn_k changes nothing: equivalent within the margin (points) everywhere
    assert (margin.loc["Q8_0+attn_k=Q2_K", "decision"] == EQUIVALENT).all()
    row = cells[(cells.rung == "Q8_0+ffn_down.last_third=Q2_K")]
    assert row.empty  # not fabricated
    kinds = cells.drop_duplicates("rung").set_index("rung")
    assert kinds.loc["Q8_0+last_third=Q2_K", ["group", "kind", "depth"]].tolist() == [
        "last_third", "", "last_third"]
    sh = m.lesion_shares.set_index(["rung", "family"])
    for rung, (share, _) in {"Q8_0+ffn_down=Q2_K": (0.8, 0), "Q8_0+last_third=Q2_K": (0.5, 0)}.items():
        s = sh.loc[rung].loc[loss_at_q2k]
        assert ((s.share_ci_low <= share + 0.02) & (share - 0.02 <= s.share_ci_high)).all()
    assert sh.loc["Q8_0+attn_k=Q2_K"].loc[loss_at_q2k, "share"].abs().max() < 0.05


def lesions_in(r):
    """The lesion rungs of a fabricated sweep."""
    return {x for x in r.items.rung.unique() if lesion_of(x)}


def test_protective_recipe_keeps_the_damaging_kinds_and_skips_what_the_mix_keeps(fabricated):
    m = lesions.lesion_map(fabricated.items, fabricated.ladder, settings=SETTINGS)
    first = recipes.first_to_die(fabricated.items, fabricated.ladder, settings=SETTINGS)
    fam = first.family.iloc[0]
    rec = recipes.protective_recipe(m.lesion_shares, fam, model="synth-0")
    assert rec.rung == "Q2_K+ffn_down=Q4_K" and rec.groups == ("ffn_down",)  # attn_k: no loss
    with pytest.raises(ValueError, match="every damaging kind \\(ffn_down\\) is already at Q4_K"):
        recipes.protective_recipe(m.lesion_shares, fam, model="synth-0",
                                  low_types={"ffn_down": {"Q4_K": 30}})
    assert recipes.protective_recipe(m.lesion_shares, fam, model="synth-0", high_type="Q5_K",
                                     low_types={"ffn_down": {"Q4_K": 30}}).rung == \
        "Q2_K+ffn_down=Q5_K"
    with pytest.raises(ValueError, match="k=0"):
        recipes.protective_recipe(m.lesion_shares, fam, model="synth-0", k=0)
    with pytest.raises(ValueError, match="no kind lesion of model 'synth-0' lowers the margin "
                                         "of family 'nope'"):
        recipes.protective_recipe(m.lesion_shares, "nope", model="synth-0")


def test_first_to_die_is_chapter_5s_and_ignores_lesions_and_recipes(fabricated):
    from gguf_fragility.stats.deathorder import first_death

    r = fabricated
    first = recipes.first_to_die(r.items, r.ladder, settings=SETTINGS)
    # the same grid without any lesion rung gives the same answer
    plain = r.items[~r.items.rung.map(lambda x: lesion_of(x) is not None)]
    again = recipes.first_to_die(plain, r.ladder, settings=SETTINGS)
    pd.testing.assert_frame_equal(first, again)
    cmp = results.stats_tables(plain, r.ladder, settings=SETTINGS).comparisons
    f = first_death(cmp[cmp.lens == "margin"], "margin")
    assert list(first.family) == list(f.families) and (first.death_rung == f.rung).all()
    assert (first.basis == (recipes.TIED_FIRST if f.tied else recipes.DIES_FIRST)).all()


def test_first_to_die_names_none_when_no_loss_is_beyond_the_margin(fabricated):
    """Issue 25 gap 5: with every rung's answers the reference's, nothing died: no family is
    named (no "largest mean loss" fallback), no recipe is built, and the findings say so with
    the margin."""
    r = fabricated
    ref = r.items[r.items.rung == "F16"]
    intact = pd.concat([ref.assign(rung=x) if x != "F16" else ref for x in r.items.rung.unique()])
    first = recipes.first_to_die(intact, r.ladder, settings=SETTINGS)
    assert first.family.tolist() == [""] and first.basis.tolist() == [recipes.NO_DEATH]
    maps = lesions.lesion_map(r.items, r.ladder, settings=SETTINGS)
    rec = recipes.recipe_table(r._replace(items=intact), maps, settings=SETTINGS)
    assert rec.recipe.tolist() == [""]
    t = recipes.LesionTables(maps.lesion_map, maps.lesion_shares, rec,
                             pd.DataFrame(columns=recipes.COMP_COLUMNS))
    text = lesion_text.chapter_findings(t)
    assert ("No recipe: on the plain ladder no family shows a loss beyond ±3 points of "
            "gold-answer probability") in text


def test_lesion_shares_are_in_the_margin_lens_points(fabricated):
    """Issue 25 gap 3: a lesion's change is in the margin lens's points (the lesion map's
    unit) with its margin beside it; ffn_down moves 80% of Q2_K's probability change."""
    from gguf_fragility.stats.lens.margin import SCALES

    m = lesions.lesion_map(fabricated.items, fabricated.ladder, settings=SETTINGS)
    sh = m.lesion_shares
    assert set(sh.unit) <= set(SCALES.values()) and (sh.margin == 3.0).all()
    cells = m.lesion_map.query("lens == 'margin'").set_index(["rung", "family"])
    for row in sh.itertuples():
        lo, hi = cells.loc[(row.rung, row.family), ["ci_low", "ci_high"]]
        assert (row.lesion_ci_low, row.lesion_ci_high) == (lo, hi)
    big = sh[(sh.rung == "Q8_0+ffn_down=Q2_K") & (sh.full_effect < -3)]
    assert len(big) and ((big.lesion_effect / big.full_effect - 0.8).abs() < 0.05).all()


def test_a_profile_setting_the_removed_nats_margin_is_refused(tmp_path):
    import dataclasses

    from gguf_fragility.profile import load_profile

    p = tmp_path / "old.yaml"
    p.write_text("models: {}\nmargin_equivalence_nats: 0.1\n")
    with pytest.raises(ValueError, match="margin_equivalence_nats: removed") as e:
        load_profile(p)
    assert "gold_prob_margin_pp" in str(e.value) and "reply_prob_margin_pp" in str(e.value)
    assert "margin_equivalence_nats" not in {f.name for f in dataclasses.fields(SETTINGS)}


def test_chapter_5_leaves_lesions_out_and_keeps_a_recipe(fabricated):
    t = results.stats_tables(*with_recipe(fabricated), settings=SETTINGS)
    assert set(t.decision.rung) == {*RUNGS, "Q2_K+ffn_down=Q4_K"}
    assert set(t.comparisons.rung) == {"Q8_0", "Q3_K_M", "Q2_K", "Q2_K+ffn_down=Q4_K"}


def with_recipe(r, recipe="Q2_K+ffn_down=Q4_K"):
    """Fabricated items and ladder plus a recipe rung (Q2_K's answers at 3.4 bpw)."""
    rec = r.items[r.items.rung == "Q2_K"].assign(rung=recipe)
    lad = r.ladder[r.ladder.rung == "Q2_K"].assign(rung=recipe, bpw=3.4)
    return pd.concat([r.items, rec]), pd.concat([r.ladder, lad])


def test_recipe_comparison_copies_chapter_5s_cells(fabricated):
    t = results.stats_tables(*with_recipe(fabricated), settings=SETTINGS)
    rec = pd.DataFrame({"model": ["synth-0"], "family": ["fam01"], "low": ["Q2_K"],
                        "recipe": ["Q2_K+ffn_down=Q4_K"]})
    comp = recipes.recipe_comparison(t.comparisons, t.decision, rec)
    assert set(comp.role) == {"low rung", "recipe", "standard rung near it"}
    got = comp.query("lens == 'margin' and rung == 'Q2_K' and family == 'fam01'").iloc[0]
    want = t.comparisons.query("lens == 'margin' and rung == 'Q2_K' and family == 'fam01'").iloc[0]
    assert (got.effect, got.ci_low, got.decision) == (want.effect, want.ci_low, want.decision)
    assert comp.query("rung == 'Q2_K+ffn_down=Q4_K'").bpw.eq(3.4).all()
    assert comp.query("family == 'fam01'").protected.all()
    assert not comp.query("family != 'fam01'").protected.any()


def test_lesion_sentence_states_the_share_with_its_interval(fabricated):
    m = lesions.lesion_map(fabricated.items, fabricated.ladder, settings=SETTINGS)
    text = lesion_text.lesion_sentence(m.lesion_shares, "synth-0")
    sh = m.lesion_shares
    worst = sh[sh.full_loss_shown].sort_values("full_effect").iloc[0]
    top = sh[sh.family == worst.family].sort_values("lesion_effect").iloc[0]
    assert top.group == "ffn_down"
    assert (f"a share of {top.share:.2f} ({top.share_ci_low:.2f} to {top.share_ci_high:.2f})"
            in text)
    assert f"{worst.full_effect:.1f}" in text and "`Q8_0+ffn_down=Q2_K`" in text
    assert f"points of {worst.unit.split(' (')[0]}), a loss beyond ±3 points" in text
    none = m.lesion_shares.assign(full_loss_shown=False)
    assert "shows no loss beyond ±3 points of" in lesion_text.lesion_sentence(none, "synth-0")


@pytest.mark.slow
def test_notebook_08_on_synthetic_sweep_without_llama_cpp(synthetic_chapters):
    """Notebook 08 reads only ``profile``, runs where llama.cpp is absent, writes its tables,
    and proposes a recipe; the landing page states one lesion sentence per model (the shared
    synthetic run, chapter 5 executed before it)."""
    run = synthetic_chapters.profile.layout
    shares = pd.read_csv(run.table(Table.LESION_SHARES))
    assert set(shares.group) == {"ffn_down", "attn_k", "last_third"}
    rec = pd.read_csv(run.table(Table.LESION_RECIPE))
    assert rec.recipe.iloc[0].startswith("Q2_K+ffn_down=Q4_K") and not rec.in_profile.iloc[0]
    assert (run.figures_dir / "lesion_map.svg").is_file()
    assert "not in this profile yet" in (synthetic_chapters.executed / "08_lesions.ipynb").read_text()
    from gguf_fragility.report.landing import details_markdown
    landing = details_markdown(run)
    assert "## Why it dies: lesions" in landing and "**synth-0**: at Q2_K" in landing


# ----------------------------------------------------------------- real llama.cpp


@pytest.mark.llama
@pytest.mark.slow
def test_lesion_rungs_on_smollm2_have_exactly_the_requested_types(tmp_path, smol_ladder):
    """A kind lesion and a depth lesion built from the real SmolLM2 reference by
    llama-quantize, read back with gguf's reader: the group has the requested type, every
    other tensor plain Q8_0's type."""
    from gguf_fragility.engine.gguf import open_gguf
    from gguf_fragility.ladder.quantize import build_ladder

    rungs = ["F16", "Q8_0", "Q8_0+ffn_down=Q2_K", "Q8_0+last_third=Q4_0"]
    lad = build_ladder("smollm2-135m", rungs, run=RunLayout.of("lesion-test", tmp_path),
                       n_threads=2).set_index("rung")
    base = {t.name: t.tensor_type.name for t in open_gguf(lad.loc["Q8_0", "file"]).tensors}
    n_blocks = 1 + max(int(n.split(".")[1]) for n in base if n.startswith("blk."))
    assert n_blocks == 30
    last = range(20, 30)  # 30 blocks: thirds 0-9, 10-19, 20-29
    for rung, typ, hit in (
            ("Q8_0+ffn_down=Q2_K", "Q2_K", lambda n: ".ffn_down." in n),  # rows 1536 wide
            ("Q8_0+last_third=Q4_0", "Q4_0",  # a 32-block type: every 576-wide row takes it
             lambda n: n.startswith("blk.") and int(n.split(".")[1]) in last)):
        got = {t.name: (t.tensor_type.name, len(t.shape))
               for t in open_gguf(lad.loc[rung, "file"]).tensors}
        assert set(got) == set(base)
        quantized = {n for n, (_, dims) in got.items() if dims > 1}  # norms stay F32
        target = {n for n in quantized if hit(n)}
        assert target and all(got[n][0] == typ for n in target), rung
        assert all(got[n][0] == base[n] for n in set(got) - target), rung
        assert lad.loc[rung, "tensor_overrides"] == rung.split("+", 1)[1]
        kinds = json.loads(lad.loc[rung, "types_by_kind"])
        if rung.startswith("Q8_0+ffn_down"):
            assert kinds["ffn_down"] == {"Q2_K": 30} and kinds["ffn_up"] == {"Q8_0": 30}
        assert lad.loc[rung, "bpw"] < lad.loc["Q8_0", "bpw"]
    assert len(target) == 10 * 7  # 7 quantized kinds in each of the last 10 blocks


@pytest.mark.llama
def test_lesion_of_a_group_the_model_lacks_is_refused(tmp_path, smol_ladder):
    """SmolLM2 ties its output matrix to token_embd (no output.weight): a lesion of
    ``output`` would silently be a copy of Q8_0, so the ladder refuses it by name."""
    from gguf_fragility.ladder.quantize import build_ladder

    with pytest.raises(ValueError, match=r"rung 'Q8_0\+output=Q2_K' of model 'smollm2-135m': "
                                         r"group 'output' names no tensor .*leave "
                                         r"'Q8_0\+output=Q2_K' out of the profile's rungs"):
        build_ladder("smollm2-135m", ["F16", "Q8_0+output=Q2_K"],
                     run=RunLayout.of("lesion-test", tmp_path))


def test_tensor_patterns_of_the_smollm2_test_rungs():
    """The patterns the real test builds, checked against the tensor names by hand."""
    import re
    (p,) = tensor_type_patterns((("last_third", "Q4_0"),), 30)
    regex, typ = p.rsplit("=", 1)
    hits = [n for n in SMOL_NAMES if re.search(regex, n)]
    assert typ == "q4_0" and len(hits) == 10 * 9 and all(int(n.split(".")[1]) >= 20 for n in hits)


def recipe_frames(decision: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A recipe row and its chapter-5 cells: the recipe at ``decision`` on the family it
    protects (arithmetic), Q2_K and Q3_K_M beside it, and one other family (reading)."""
    rec = pd.DataFrame({"model": ["m"], "family": ["arithmetic"], "recipe": ["Q2_K+ffn_down=Q4_K"]})
    rows = [("Q2_K", "low rung", "arithmetic", True, BEYOND, 3.36),
            ("Q2_K+ffn_down=Q4_K", "recipe", "arithmetic", True, decision, 3.9),
            ("Q3_K_M", "standard rung near it", "arithmetic", True, BEYOND, 4.13),
            ("Q2_K", "low rung", "reading", False, BEYOND, 3.36),
            ("Q2_K+ffn_down=Q4_K", "recipe", "reading", False, "undecided", 3.9),
            ("Q3_K_M", "standard rung near it", "reading", False, "undecided", 4.13)]
    comp = pd.DataFrame(rows, columns=["rung", "role", "family", "protected", "decision", "bpw"]
                        ).assign(model="m", lens="margin", effect=-0.5, ci_low=-0.9,
                                 ci_high=-0.1, unit="gold-answer probability (pp)")
    return comp, rec


@pytest.mark.parametrize("decision, verdict", [
    (EQUIVALENT, "keeps arithmetic within the margin (equivalence shown)"),
    (BEYOND, "does not keep arithmetic alive: its loss beyond the margin is still shown"),
    ("undecided", "loss beyond the margin is not shown, nor is equivalence: undecided, which "
                  "is not safe"),
])
def test_recipe_verdict_reads_the_decision_never_a_missing_p(decision, verdict):
    comp, rec = recipe_frames(decision)
    text = lesion_text.recipe_findings(comp, rec)
    assert verdict in text
    assert "at 3.90 bpw, against Q2_K at 3.36 bpw and Q3_K_M at 4.13 bpw" in text
    assert "-0.5 (-0.9 to -0.1 points of gold-answer probability)" in text
    assert "Q2_K: loss beyond the margin on 1 of 1 other families (reading)" in text
    assert "Q3_K_M: loss beyond the margin on 0 of 1 other families." in text


def test_the_landing_page_states_the_recipe_verdict_once_it_is_swept(tmp_path, fabricated):
    from gguf_fragility.report.landing import _lesion_sentences  # the landing page's section

    run = RunLayout.of("smoke", tmp_path)
    maps = lesions.lesion_map(fabricated.items, fabricated.ladder, settings=SETTINGS)
    write_table_atomic(maps.lesion_shares.assign(model="m"), run.table(Table.LESION_SHARES))
    comp, rec = recipe_frames("undecided")
    write_table_atomic(rec, run.table(Table.LESION_RECIPE))
    write_table_atomic(comp.iloc[:0], run.table(Table.RECIPE_COMPARISON))
    assert "protective recipe" not in _lesion_sentences(run)  # listed, not swept yet
    write_table_atomic(comp, run.table(Table.RECIPE_COMPARISON))
    landing = _lesion_sentences(run)
    assert "**m**: recipe `Q2_K+ffn_down=Q4_K` at 3.90 bpw" in landing
    assert "undecided, which is not safe" in landing


def test_a_profile_without_lesions_gets_empty_tables_and_says_so(tmp_path):
    r = synthetic_results(n_models=1, n_families=3, n_items=30, rungs=("F16", "Q8_0", "Q2_K"))
    m = lesions.lesion_map(r.items, r.ladder, settings=SETTINGS)
    assert m.lesion_map.empty and m.lesion_shares.empty
    assert list(m.lesion_shares.columns) == lesions.SHARE_COLUMNS
    rec = recipes.recipe_table(r, m, settings=SETTINGS)
    assert rec.empty
    t = recipes.LesionTables(m.lesion_map, m.lesion_shares, rec,
                             pd.DataFrame(columns=recipes.COMP_COLUMNS))
    assert "no lesion rung" in lesion_text.chapter_findings(t)
    for f in write_tables(t, tmp_path):  # the claim check and the site read them back
        back = pd.read_csv(f)
        assert back.empty and len(back.columns) > 0, f.name


def test_a_table_without_columns_is_refused_before_it_is_written(tmp_path):
    with pytest.raises(ValueError, match="no columns"):
        write_table_atomic(pd.DataFrame(), tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()
