"""Why a capability dies: the lesion map and the protective recipe it suggests (chapter 8).

A *lesion rung* (:func:`gguf_fragility.engine.rungs.lesion_of`) is the intact base
``Q8_0`` with one tensor group at a low type, e.g. ``Q8_0+ffn_down=Q2_K``. Each is swept
like any rung, on the same items against the same F16 reference. Here, per model:

- :func:`lesion_map` compares every lesion, the intact base and the full low rung (``Q2_K``)
  with the reference on chapter 5's three lenses (one :func:`~gguf_fragility.stats.grid.lens_grid`
  call: no new test), and :func:`damage_share` says which share of the full rung's margin
  loss each lesion alone reproduces, with a paired bootstrap interval;
- :func:`first_to_die` names the family that dies first on the plain ladder, and
  :func:`protective_recipe` the recipe rung that keeps that family's most damaging tensor
  kinds at a higher type and the rest at the low ftype. The recipe is then listed in the
  profile as a normal rung, so chapter 5 evaluates it like every other rung.

Usage::

    from gguf_fragility.stats import inputs, lesions
    r = inputs.load_results(profile.layout)
    t = lesions.analyse_lesions(profile, r)   # lesion_map.csv, lesion_shares.csv, ... in tables/
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np
import pandas as pd
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from scipy import stats as sps

from gguf_fragility.engine.rungs import (
    INTACT_BASE,
    KINDS,
    is_kv_rung,
    lesion_of,
    parse_weights,
    recipe_rung,
    split_group,
)
from gguf_fragility.profile import NOISE_FLOOR, Profile
from gguf_fragility.stats.deathorder import death_rungs
from gguf_fragility.stats.grid import (
    DEFAULT_SETTINGS,
    Settings,
    cell_rng,
    item_delta,
    lens_grid,
    validate_items,
)
from gguf_fragility.stats.inputs import Results
from gguf_fragility.stats.lenses import EQUIVALENT, LOSS
from gguf_fragility.stats.results import reference_rungs, settings_of
from gguf_fragility.store import write_tables

RECIPE_K = 2  # groups a recipe keeps at the higher type
RECIPE_TYPE = "Q4_K"  # the higher type of a recipe's kept groups
LESION_ROLE, BASE_ROLE, FULL_ROLE = "lesion", "intact base", "full rung"
SHARE_COLUMNS = ["model", "family", "rung", "group", "kind", "depth", "lesion_type",
                 "full_rung", "measurable", "n", "lesion_effect", "lesion_ci_low",
                 "lesion_ci_high", "full_effect", "full_ci_low", "full_ci_high", "share",
                 "share_ci_low", "share_ci_high", "share_method", "lesion_decision",
                 "full_decision", "full_loss_shown"]


def type_bits(typ: str) -> float:
    """Nominal bits per weight of a ggml type (``Q2_K`` -> 2.625), from gguf's block sizes."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[typ]]
    return 8.0 * size / block


class Share(NamedTuple):
    """Result of :func:`damage_share`."""

    estimate: float  # mean lesion change / mean full-rung change (1 = all of it)
    ci_low: float
    ci_high: float
    n: int  # items with a finite change at both rungs
    method: str  # "BCa", "percentile" (BCa undefined), "degenerate" or "" (no estimate)


def damage_share(lesion_delta, full_delta, *, n_resamples: int = 10_000, alpha: float = 0.05,
                 rng: np.random.Generator | int | None = None) -> Share:
    """
    Share of a full rung's mean damage that a lesion reproduces, with a paired bootstrap CI.

    Parameters
    ----------
    lesion_delta, full_delta : array_like of float, shape (n_items,)
        Per-item paired change against the reference (nats, negative = damage;
        :func:`gguf_fragility.stats.grid.item_delta`) under the lesion and under the full
        rung, aligned on item. Items where either is not finite are dropped.
    n_resamples : int, default 10000
    alpha : float, default 0.05
        The interval is ``1 - alpha``.
    rng : numpy.random.Generator, int or None

    Returns
    -------
    Share
        ``estimate = mean(lesion_delta) / mean(full_delta)``; its interval from
        :func:`scipy.stats.bootstrap` with ``paired=True`` (items resampled jointly, so the
        correlation between the two changes is kept), BCa, or the percentile interval when
        BCa is undefined; ``degenerate`` when every resample gives the same ratio (then the
        interval is the estimate). NaN with method "" for fewer than 3 items or a zero
        full-rung mean.

    Raises
    ------
    ValueError
        When the two arrays differ in length.

    Notes
    -----
    A ratio of means is unstable when the denominator's interval reaches zero: read a share
    only where the full rung's margin loss is shown (``full_loss_shown`` in
    :func:`lesion_map`'s shares). Shares of different groups need not add up to one: lesions
    interact, and the full rung's mix gives each group its own type (Q2_K keeps ``attn_v`` at
    Q4_K and ``ffn_down`` at Q3_K on Qwen2.5), while a lesion puts the group at the lesion
    type. Coverage of the 95% interval, simulated (normal changes, true share 0.4, 1,500 data
    sets, 999 resamples; ``tests/test_lesions.py`` repeats it with 400): 91.5% at 12 items,
    93.7% at 40. BCa undercovers a little at small samples [1]_; at the profile's 12 items
    read a 95% interval as about a 90% one.

    References
    ----------
    .. [1] Efron, B., Tibshirani, R. J. (1993). An Introduction to the Bootstrap, ch. 14
       (BCa) and ch. 9 (paired data). Chapman & Hall.
    .. [2] SciPy, ``scipy.stats.bootstrap``.
    """
    x, y = np.asarray(lesion_delta, float), np.asarray(full_delta, float)
    if x.shape != y.shape:
        raise ValueError(f"lesion_delta has {x.shape} items, full_delta {y.shape}; align "
                         "both on the same items")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or y.mean() == 0:
        return Share(np.nan, np.nan, np.nan, n, "")
    est = float(x.mean() / y.mean())

    def ratio(a, b, axis=-1):
        with np.errstate(divide="ignore", invalid="ignore"):
            return a.mean(axis) / b.mean(axis)

    if np.allclose(x, est * y):  # every resample has this ratio
        return Share(est, est, est, n, "degenerate")
    for method in ("BCa", "percentile"):
        res = sps.bootstrap((x, y), ratio, paired=True, vectorized=True,
                            n_resamples=n_resamples, confidence_level=1 - alpha,
                            method=method, random_state=rng)
        lo, hi = res.confidence_interval
        if np.isfinite(lo) and np.isfinite(hi):
            return Share(est, float(lo), float(hi), n, method)
    return Share(est, np.nan, np.nan, n, "")


class LesionMap(NamedTuple):
    """Result of :func:`lesion_map`; field name = CSV name."""

    lesion_map: pd.DataFrame  # model × lens × family × rung (lesions, base, full rung)
    lesion_shares: pd.DataFrame  # model × family × lesion: share of the full rung's damage


def _bpw(ladder: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Real bits per weight of each (model, rung) of the ladder."""
    lad = ladder.drop_duplicates(["model", "rung"])
    return dict(zip(zip(lad["model"].astype(str), lad["rung"].astype(str), strict=True),
                    lad["bpw"].astype(float), strict=True))


def lesion_map(items: pd.DataFrame, ladder: pd.DataFrame, *,
               settings: Settings = DEFAULT_SETTINGS) -> LesionMap:
    """
    Per model: every lesion's damage per family on three lenses, and its share of the full
    rung's damage.

    Parameters
    ----------
    items : pandas.DataFrame
        The sweep's item rows (:func:`gguf_fragility.stats.inputs.load_items`).
    ladder : pandas.DataFrame
        The ladder manifests (``model, rung, is_reference, bpw``).
    settings : Settings
        Level, McNemar variant, margins, bootstrap (:func:`~gguf_fragility.stats.results.settings_of`).

    Returns
    -------
    LesionMap
        ``lesion_map``: :func:`~gguf_fragility.stats.grid.lens_grid`'s columns for the rungs
        of one family of tests per model (the lesions, the intact base ``Q8_0`` and each
        lesion type's full rung, e.g. ``Q2_K``, when swept), each against the reference,
        plus ``role`` ({"lesion", "intact base", "full rung"}), ``group``, ``kind``,
        ``depth`` and ``lesion_type``. ``lesion_shares``: :data:`SHARE_COLUMNS`, one row per
        model × measurable family × lesion whose full rung was swept: the margin-lens mean
        changes (nats) of the lesion and of the full rung on the items both scored, the
        share (:func:`damage_share`) and both decisions. Empty tables without lesion rungs.

    Notes
    -----
    The fixed sequence of each family of tests runs from the lowest bpw up (chapter 5's
    design): the full rung first, then the lesions of the largest groups; a lesion is
    tested only after every lower-bpw rung showed a loss in that family. *Undecided* is not
    *harmless*.
    """
    refs = reference_rungs(ladder)
    bpw = _bpw(ladder)
    maps, shares = [], []
    for model, sub in items.groupby("model", sort=True):
        ref = refs.get(str(model))
        present = set(sub["rung"].astype(str))
        lesions = sorted(r for r in present if lesion_of(r) is not None)
        if ref is None or not lesions:
            continue
        full = sorted({lesion_of(r)[1] for r in lesions} & present)
        roles = {**{r: LESION_ROLE for r in lesions}, **{r: FULL_ROLE for r in full},
                 **({INTACT_BASE: BASE_ROLE} if INTACT_BASE in present else {})}
        rows = sub[sub["rung"].astype(str).isin([ref, *roles])]
        cmp = lens_grid(rows, {model: ref}, bpw, settings=settings).comparisons
        cmp.insert(4, "role", cmp["rung"].map(roles))
        grp = cmp["rung"].map(lambda r: lesion_of(r) or ("", ""))
        cmp.insert(5, "group", grp.str[0])
        cmp.insert(6, "lesion_type", grp.str[1])
        kd = cmp["group"].map(lambda g: split_group(g) if g else (None, None))
        cmp.insert(6, "kind", kd.str[0].fillna(""))
        cmp.insert(7, "depth", kd.str[1].fillna(""))
        maps.append(cmp)
        shares.append(_shares(rows, ref, lesions, set(full), cmp, settings))
    if not maps:
        return LesionMap(pd.DataFrame(), pd.DataFrame(columns=SHARE_COLUMNS))
    return LesionMap(pd.concat(maps, ignore_index=True),
                     pd.concat(shares, ignore_index=True)[SHARE_COLUMNS])


def _shares(rows: pd.DataFrame, ref: str, lesions: list[str], full: set[str],
            cmp: pd.DataFrame, s: Settings) -> pd.DataFrame:
    """:func:`damage_share` of every lesion × family of one model (margin lens)."""
    df = validate_items(rows, {rows["model"].iloc[0]: ref})
    model = str(df["model"].iloc[0])
    wide = df.set_index(["family", "item_id", "rung"])[
        ["correct", "extracted", "mode", "margin", "gold_logprob", "ref_answer_logprob",
         "answer_kl", "answer_same_top"]].unstack("rung")
    dec = cmp[cmp["lens"] == "margin"].set_index(["family", "rung"])
    fams = wide.index.get_level_values("family").to_numpy()
    out = []
    for family in sorted(set(fams)):
        w = wide[fams == family]
        for rung in lesions:
            group, typ = lesion_of(rung)
            if typ not in full:
                continue
            kind, depth = split_group(group)
            d_l, d_f = item_delta(w, ref, rung), item_delta(w, ref, typ)
            sh = damage_share(d_l, d_f, n_resamples=s.n_boot, alpha=s.alpha,
                              rng=cell_rng(s.seed, model, family, rung, "share"))
            ok = np.isfinite(d_l) & np.isfinite(d_f)
            fd, ld = dec.loc[(family, typ)], dec.loc[(family, rung)]
            out.append({"model": model, "family": family, "rung": rung, "group": group,
                        "kind": kind or "", "depth": depth or "", "lesion_type": typ,
                        "full_rung": typ, "measurable": bool(fd["measurable"]), "n": sh.n,
                        "lesion_effect": d_l[ok].mean() if ok.any() else np.nan,
                        "lesion_ci_low": ld["ci_low"], "lesion_ci_high": ld["ci_high"],
                        "full_effect": d_f[ok].mean() if ok.any() else np.nan,
                        "full_ci_low": fd["ci_low"], "full_ci_high": fd["ci_high"],
                        "share": sh.estimate, "share_ci_low": sh.ci_low,
                        "share_ci_high": sh.ci_high, "share_method": sh.method,
                        "lesion_decision": ld["decision"],
                        "full_decision": fd["decision"],
                        "full_loss_shown": fd["decision"] == LOSS})
    return pd.DataFrame(out, columns=SHARE_COLUMNS)


def first_to_die(items: pd.DataFrame, ladder: pd.DataFrame, *, lens: str = "margin",
                 low: str = "Q2_K", settings: Settings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """
    Per model, the family that dies first on the plain ladder (no lesion, recipe or KV rung).

    The plain rungs are compared with the reference exactly as chapter 5 compares them
    (:func:`~gguf_fragility.stats.grid.lens_grid`, then
    :func:`~gguf_fragility.stats.deathorder.death_rungs`), so the answer does not change
    when a recipe is added to the profile. The first to die is the measurable family whose
    death rung on ``lens`` has the highest bpw; ties go to the larger mean loss at ``low``.
    With no death on ``lens``, the family with the larger mean loss at ``low`` is named and
    ``basis`` says so.

    Returns
    -------
    pandas.DataFrame
        ``model, family, death_rung, death_bpw, low, low_effect, low_decision, basis``.
    """
    plain = items[items["rung"].astype(str).map(_plain)]
    refs = reference_rungs(ladder)
    grid = lens_grid(plain, refs, _bpw(ladder), settings=settings).comparisons
    deaths = death_rungs(grid)
    rows = []
    for model, g in grid[(grid["lens"] == lens) & grid["measurable"]].groupby("model"):
        at_low = g[g["rung"] == low].set_index("family")
        if at_low.empty:
            continue
        d = deaths[(deaths["model"] == model) & (deaths["lens"] == lens)]
        d = d[d["death_rung"].fillna("").astype(str) != ""]
        if len(d):
            top = d[d["death_bpw"] == d["death_bpw"].max()]
            fam = min(top["family"], key=lambda f: (at_low.loc[f, "effect"], f))
            dr = top.set_index("family").loc[fam]
            basis = f"dies first on the {lens} lens (highest-bpw death rung)"
            death_rung, death_bpw = dr["death_rung"], float(dr["death_bpw"])
        else:
            fam = min(at_low.index, key=lambda f: (at_low.loc[f, "effect"], f))
            basis = (f"no family shown to die on the {lens} lens: the family with the "
                     f"largest mean loss at {low}")
            death_rung, death_bpw = "", np.nan
        rows.append({"model": model, "family": fam, "death_rung": death_rung,
                     "death_bpw": death_bpw, "low": low,
                     "low_effect": float(at_low.loc[fam, "effect"]),
                     "low_decision": at_low.loc[fam, "decision"], "basis": basis})
    return pd.DataFrame(rows, columns=["model", "family", "death_rung", "death_bpw", "low",
                                       "low_effect", "low_decision", "basis"])


def _plain(rung: str) -> bool:
    """A rung of the plain ladder (a bare ftype) or the noise floor."""
    return rung == NOISE_FLOOR or (not is_kv_rung(rung) and parse_weights(rung).in_process)


class Recipe(NamedTuple):
    """Result of :func:`protective_recipe`."""

    model: str
    family: str  # the family it protects
    rung: str  # e.g. "Q2_K+ffn_down=Q4_K+attn_v=Q4_K"
    groups: tuple[str, ...]  # kept at ``high_type``, most damaging first
    skipped: tuple[str, ...]  # damaging kinds the low ftype's mix already keeps at >= high
    high_type: str
    basis: str  # which lesions were ranked


def protective_recipe(shares: pd.DataFrame, family: str, *, model: str, k: int = RECIPE_K,
                      high_type: str = RECIPE_TYPE, low: str = "Q2_K",
                      low_types: dict | None = None) -> Recipe:
    """
    The recipe rung that keeps one family's ``k`` most damaging tensor kinds at a higher type.

    Parameters
    ----------
    shares : pandas.DataFrame
        :func:`lesion_map`'s ``lesion_shares``.
    family, model : str
        The family to protect (:func:`first_to_die`) and its model.
    k : int, default :data:`RECIPE_K`
    high_type : str, default :data:`RECIPE_TYPE`
    low : str, default "Q2_K"
        The ftype of everything else.
    low_types : dict, optional
        ``{kind: {type: n_tensors}}`` of the ``low`` rung's file (the ladder's
        ``types_by_kind``): a kind the low mix already stores at ``high_type`` or above in
        every tensor is skipped (raising it would do nothing, or lower it).

    Returns
    -------
    Recipe

    Raises
    ------
    ValueError
        When ``k < 1``, or no kind lesion of ``model`` damages ``family`` (mean margin
        change below zero), naming the family and model.

    Notes
    -----
    Only kind lesions are ranked (a recipe by kind is a partition of the tensors; depth
    groups overlap them), by their mean margin change on ``family`` (most negative first),
    and only those whose margin loss is shown in the lesion map; when none is, the single
    most damaging kind is kept and ``basis`` says so.
    """
    if k < 1:
        raise ValueError(f"k={k}: a recipe keeps at least one group (k >= 1)")
    s = shares[(shares["model"] == model) & (shares["family"] == family)
               & (shares["depth"].fillna("") == "") & (shares["kind"].isin(KINDS))]
    s = s[s["lesion_effect"] < 0].sort_values(["lesion_effect", "group"])
    if s.empty:
        raise ValueError(f"no kind lesion of model {model!r} lowers the margin of family "
                         f"{family!r}: there is nothing to protect; sweep the kind lesions "
                         f"(e.g. 'Q8_0+ffn_down=Q2_K') first")
    shown = s[s["lesion_decision"] == LOSS]
    pool, basis = ((shown, "lesions with a margin loss shown") if len(shown) else
                   (s.iloc[:1], "no kind lesion shows a margin loss: the most damaging one"))
    keep, skipped = [], []
    for g in pool["group"]:
        held = (low_types or {}).get(g, {})
        if held and min(type_bits(t) for t in held) >= type_bits(high_type):
            skipped.append(g)
        elif len(keep) < k:
            keep.append(g)
    if not keep:
        raise ValueError(f"model {model!r}, family {family!r}: every damaging kind "
                         f"({', '.join(skipped)}) is already at {high_type} or above in "
                         f"{low}'s mix; choose a higher type than {high_type}")
    return Recipe(model, family, recipe_rung(low, keep, high_type), tuple(keep),
                  tuple(skipped), high_type, basis)


def recipe_table(r: Results, maps: LesionMap, *, settings: Settings = DEFAULT_SETTINGS,
                 rungs_by_model: dict | None = None) -> pd.DataFrame:
    """
    Per model: the family that dies first, the recipe that would protect it, and whether the
    profile lists it (``in_profile``). One row per model with lesions.
    """
    if maps.lesion_shares.empty:
        return pd.DataFrame(columns=["model", "family", "basis", "death_rung", "low",
                                     "low_effect", "low_decision", "recipe", "groups",
                                     "skipped", "high_type", "groups_basis", "in_profile"])
    lows = sorted(set(maps.lesion_shares["full_rung"]))
    first = first_to_die(r.items, r.ladder, low=lows[0], settings=settings)
    rows = []
    for f in first.itertuples():
        lad = r.ladder[(r.ladder["model"] == f.model) & (r.ladder["rung"] == f.low)]
        low_types = (json.loads(lad["types_by_kind"].iloc[0])
                     if "types_by_kind" in lad and len(lad)
                     and isinstance(lad["types_by_kind"].iloc[0], str) else None)
        rec = protective_recipe(maps.lesion_shares, f.family, model=f.model, low=f.low,
                                low_types=low_types)
        listed = (rungs_by_model or {}).get(f.model, ())
        rows.append({"model": f.model, "family": f.family, "basis": f.basis,
                     "death_rung": f.death_rung, "low": f.low, "low_effect": f.low_effect,
                     "low_decision": f.low_decision, "recipe": rec.rung,
                     "groups": ",".join(rec.groups), "skipped": ",".join(rec.skipped),
                     "high_type": rec.high_type, "groups_basis": rec.basis,
                     "in_profile": rec.rung in listed})
    return pd.DataFrame(rows)


COMP_COLUMNS = ["model", "rung", "role", "family", "protected", "lens", "n", "effect",
                "ci_low", "ci_high", "unit", "decision", "bpw", "file_size_bytes", "quality"]


def recipe_comparison(comparisons: pd.DataFrame, decision: pd.DataFrame,
                      recipes: pd.DataFrame, near: str = "Q3_K_M") -> pd.DataFrame:
    """
    Chapter 5's own numbers for each recipe rung beside the low rung and ``near``.

    One row per model × rung ({low, recipe, near}) × measurable family on the margin and
    correctness lenses, copied from chapter 5's ``comparisons`` (effect, interval, decision)
    with the rung's ``bpw``, ``file_size_bytes`` and ``quality`` from its ``decision``
    matrix, and ``protected`` = the family the recipe protects. Rungs chapter 5 did not
    evaluate (a recipe not yet in the profile) are absent.
    """
    rows = []
    for rec in recipes.itertuples():
        roles = {rec.low: "low rung", rec.recipe: "recipe", near: "standard rung near it"}
        c = comparisons[(comparisons["model"] == rec.model) & comparisons["rung"].isin(roles)
                        & comparisons["lens"].isin(["margin", "correctness"])
                        & comparisons["measurable"].astype(bool)]
        d = decision[decision["model"] == rec.model][["rung", "file_size_bytes", "quality"]]
        c = c.merge(d, on="rung", how="left")
        rows.append(c.assign(role=c["rung"].map(roles), protected=c["family"] == rec.family))
    if not rows:
        return pd.DataFrame(columns=COMP_COLUMNS)
    return pd.concat(rows, ignore_index=True)[COMP_COLUMNS].sort_values(
        ["model", "lens", "family", "bpw"], ascending=[True, False, True, True],
        ignore_index=True)


class LesionTables(NamedTuple):
    """Chapter 8's tables; field name = CSV name in ``tables/``."""

    lesion_map: pd.DataFrame
    lesion_shares: pd.DataFrame
    lesion_recipe: pd.DataFrame  # per model: first-to-die family, its recipe, in the profile?
    recipe_comparison: pd.DataFrame  # chapter 5's cells of the low rung, recipe and Q3_K_M


def analyse_lesions(profile: Profile, r: Results) -> LesionTables:
    """The lesion map, the recipe and its comparison with the profile's settings, written to
    ``tables/``; the comparison reads chapter 5's ``comparisons.csv`` and ``decision.csv``
    there (empty when chapter 5 has not run)."""
    s = settings_of(profile)
    maps = lesion_map(r.items, r.ladder, settings=s)
    rec = recipe_table(r, maps, settings=s,
                       rungs_by_model={m: run.rungs for m, run in profile.models.items()})
    tdir = profile.layout.tables_dir
    ch5 = [tdir / "comparisons.csv", tdir / "decision.csv"]
    comp = (recipe_comparison(*(pd.read_csv(f) for f in ch5), rec)
            if len(rec) and all(f.is_file() for f in ch5) else pd.DataFrame(columns=COMP_COLUMNS))
    tables = LesionTables(maps.lesion_map, maps.lesion_shares, rec, comp)
    write_tables(tables, tdir)
    return tables


# ----------------------------------------------------------------- sentences


_UNIT_WORDS = {"flip rate (fraction)": "excess flip rate", "accuracy (fraction)": "accuracy"}


def _ci(e, lo, hi, unit="nats") -> str:
    """``-0.123 (-0.200 to -0.050 nats)`` as the findings print an effect."""
    return f"{e:.3f} ({lo:.3f} to {hi:.3f} {_UNIT_WORDS.get(unit, unit)})"


def lesion_sentence(shares: pd.DataFrame, model: str) -> str:
    """
    One sentence for a model: the lesion that reproduces most of the full rung's margin loss
    on the family the full rung hurts most (where that loss is shown), with intervals.

    Every number is a cell of ``lesion_shares.csv``.
    """
    s = shares[(shares["model"] == model) & shares["measurable"].astype(bool)]
    if s.empty:
        return f"**{model}**: no lesion rung was swept."
    shown = s[s["full_loss_shown"].astype(bool)]
    if shown.empty:
        return (f"**{model}**: the full {s['full_rung'].iloc[0]} rung shows no margin loss on "
                "any family in the lesion map's family of tests, so no share of its damage "
                "can be attributed.")
    worst = shown.sort_values(["full_effect", "family"]).iloc[0]
    fam = shown[shown["family"] == worst["family"]]
    top = fam.sort_values(["lesion_effect", "group"]).iloc[0]
    kinds = fam[fam["depth"] == ""].sort_values(["lesion_effect", "group"])
    depths = fam[fam["kind"] == ""].sort_values(["lesion_effect", "group"])
    full = _ci(worst["full_effect"], worst["full_ci_low"], worst["full_ci_high"])
    alone = _ci(top["lesion_effect"], top["lesion_ci_low"], top["lesion_ci_high"])
    out = (f"**{model}**: at {worst['full_rung']}, {worst['family']}'s margin changes by "
           f"{full}; the `{top['group']}` lesion alone (`{top['rung']}`) costs {alone}, "
           f"a share of {top['share']:.2f} "
           f"({top['share_ci_low']:.2f} to {top['share_ci_high']:.2f}) of that loss "
           f"({top['lesion_decision']})")
    if len(kinds) and kinds.iloc[0]["group"] != top["group"]:
        k = kinds.iloc[0]
        out += f"; among tensor kinds `{k['group']}` {k['share']:.2f} " \
               f"({k['share_ci_low']:.2f} to {k['share_ci_high']:.2f})"
    if len(depths) and depths.iloc[0]["group"] != top["group"]:
        d = depths.iloc[0]
        out += f"; among thirds the {d['group'].replace('_', ' ')} {d['share']:.2f} " \
               f"({d['share_ci_low']:.2f} to {d['share_ci_high']:.2f})"
    return out + "."


def lesion_findings(t: LesionTables) -> str:
    """
    Generated paragraphs for chapter 8: per model the intact base against the reference,
    the lesions with a loss shown, the headline share and the recipe. Every number is a
    cell of a table in ``tables/``.
    """
    if t.lesion_map.empty:
        return ("This profile lists no lesion rung (`Q8_0+<group>=<TYPE>`): there is no "
                "lesion map. The `lesions` profile sweeps one per tensor kind and third.")
    out = []
    m = t.lesion_map[t.lesion_map["measurable"].astype(bool)]
    for model, g in m.groupby("model", sort=True):
        para = [lesion_sentence(t.lesion_shares, model)]
        base = g[(g["role"] == BASE_ROLE) & (g["lens"] == "margin")]
        if len(base):
            eq = base[base["decision"] == EQUIVALENT]
            para.append(f"The intact base {INTACT_BASE} against the reference on the margin "
                        f"lens: equivalent within ±{base['equivalence_margin'].iloc[0]:g} nats "
                        f"on {len(eq)} of {len(base)} families"
                        + (f" (not shown on {', '.join(base.loc[base['decision'] != EQUIVALENT, 'family'])})"
                           if len(eq) < len(base) else "") + ".")
        for lens in ("margin", "fidelity"):
            loss = g[(g["role"] == LESION_ROLE) & (g["lens"] == lens) & (g["decision"] == LOSS)]
            n_les = g.loc[(g["role"] == LESION_ROLE) & (g["lens"] == lens), "rung"].nunique()
            if len(loss):
                cells = ", ".join(f"`{r.group}` on {r.family} {_ci(r.effect, r.ci_low, r.ci_high, r.unit)}"
                                  for r in loss.sort_values(["effect", "group"]).itertuples())
                para.append(f"On the {lens} lens, loss shown for: {cells}.")
            else:
                para.append(f"On the {lens} lens no single lesion of {n_les} shows a loss "
                            "after the correction (undecided is not harmless).")
        rec = t.lesion_recipe[t.lesion_recipe["model"] == model]
        for r in rec.itertuples():
            para.append(f"Recipe for {r.family} ({r.basis}): `{r.recipe}`"
                        + ("" if r.in_profile else
                           f" (not in this profile yet: add it to the rungs of {model} and "
                           "rerun; the second run reuses every stored cell)") + ".")
        out.append(" ".join(para))
    out.append(recipe_findings(t.recipe_comparison, t.lesion_recipe))
    return "\n\n".join(x for x in out if x)


def recipe_findings(comp: pd.DataFrame, recipes: pd.DataFrame) -> str:
    """The recipe against the low rung and the standard rung near it, in chapter 5's own
    numbers (``recipe_comparison.csv``)."""
    out = []
    for rec in recipes.itertuples():
        c = comp[(comp["model"] == rec.model) & (comp["lens"] == "margin")]
        if rec.recipe not in set(c["rung"]):
            continue
        prot = c[c["protected"].astype(bool)].set_index("role")
        size = c.drop_duplicates("rung").set_index("role")
        parts = [f"**{rec.model}**, recipe `{rec.recipe}` at {size.loc['recipe', 'bpw']:.2f} "
                 "bpw"]
        for role in ("low rung", "standard rung near it"):
            if role in size.index:
                parts.append(f"{size.loc[role, 'rung']} at {size.loc[role, 'bpw']:.2f} bpw")
        s = ", against ".join(parts) + f". On {rec.family}, the family it protects: "
        s += "; ".join(f"{p.rung} {_ci(p.effect, p.ci_low, p.ci_high, p.unit)}, {p.decision}"
                       for p in prot.reset_index().sort_values("bpw").itertuples()) + "."
        others = c[~c["protected"].astype(bool)]
        for rung, h in others.groupby("rung", sort=False):
            lost = h[h["decision"] == LOSS]["family"]
            s += (f" {rung}: loss shown on {len(lost)} of {len(h)} other families"
                  + (f" ({', '.join(lost)})" if len(lost) else "") + ".")
        out.append(s)
    return "\n\n".join(out)
