"""A lens is one unit: a toy lens added to a temporary registry reaches every table, and no
module outside ``stats/lens/`` compares lens names."""

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from gguf_fragility.stats import results
from gguf_fragility.stats.deathorder import death_rungs
from gguf_fragility.stats.grid import ITEM_COLUMNS
from gguf_fragility.stats.lens import registry
from gguf_fragility.stats.lens.base import Lens, PlannedMde
from gguf_fragility.stats.relevance import BEYOND, LABELS, UNDECIDED
from gguf_fragility.stats.settings import MDE_POWER, Settings
from gguf_fragility.testing import synthetic_results

LIB = Path(__file__).resolve().parents[1] / "lib" / "gguf_fragility"
SETTINGS = Settings(n_boot=200)
TOLERATED = 0.02  # the toy lens's tolerated disagreement rate


class Agreement(Lens):
    """Toy lens, defined only here: share of items whose extracted answer the rung keeps."""

    name = "agreement"
    unit = mde_unit = "agreement change (fraction)"
    columns = ("disagreements",)

    def cell(self, wide, ref, rung, floor):
        ext, present = wide["extracted"], wide["correct"].notna()
        both = (present[ref] & present[rung]).to_numpy()
        return {"n": int(both.sum()),
                "_changed": ext[rung].to_numpy(object)[both] != ext[ref].to_numpy(object)[both]}

    def item_effects(self, wide, ref, rung, floor):
        present = wide["correct"].notna()
        both = present[ref] & present[rung]
        ids = both[both].index
        ids = ids.droplevel("family") if "family" in ids.names else ids
        return pd.Series(-self.cell(wide, ref, rung, floor)["_changed"].astype(float), index=ids)

    def statistics(self, rows, s):
        k = np.array([int(c.sum()) for c in rows["_changed"]])
        n = rows["n"].to_numpy(np.int64)
        lo = np.where(k > 0, sps.beta.ppf(s.alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, sps.beta.ppf(1 - s.alpha / 2, k + 1, n - k), 1.0)
        p = sps.binom.sf(k - 1, n, TOLERATED)  # H0: at most the tolerated disagreement
        p_beyond = sps.binom.sf(k - 1, n, TOLERATED + self.margin(s))  # H0: within the margin
        return pd.DataFrame({"effect": -k / n, "ci_low": -hi, "ci_high": -lo, "p_value": p,
                             "p_beyond": p_beyond,
                             "p_seq": p, "min_p": TOLERATED ** n, "disagreements": k,
                             "p_method": "exact binomial against 2% disagreement"},
                            index=rows.index)

    def mde(self, rows, level, s):
        z = sps.norm.isf(level) + sps.norm.isf(1 - MDE_POWER)
        return PlannedMde(z * np.sqrt(0.25 / rows["n"].to_numpy(float)),
                          np.full(len(rows), "normal approximation", dtype=object))


@pytest.fixture(scope="module")
def toy_tables():
    """The statistics tables of a small synthetic sweep, without and with the toy lens."""
    r = synthetic_results(n_models=1, n_families=4, n_items=60, seed=3)
    plain = results.stats_tables(r.items, r.ladder, r.costs, r.shift, settings=SETTINGS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.LENSES, "agreement", Agreement())
        toy = results.stats_tables(r.items, r.ladder, r.costs, r.shift, settings=SETTINGS)
    assert "agreement" not in registry.LENSES  # the registry is restored
    return r, plain, toy


def test_toy_lens_reaches_grid_decisions_and_death_order(toy_tables):
    r, plain, toy = toy_tables
    cmp = toy.comparisons
    mine = cmp[cmp["lens"] == "agreement"]
    cells = plain.comparisons.drop_duplicates(["model", "family", "rung"])
    assert len(mine) == len(cells) == 4 * 6  # every family × non-reference rung
    assert (mine["unit"] == Agreement.unit).all()
    assert (mine["equivalence_margin"] == SETTINGS.equivalence_margin).all()
    assert (mine["mde_basis"] == "normal approximation").all()
    assert set(mine["decision"]) <= {*LABELS, "untestable"}
    # the grid hands the lens the reference's and the rung's answers on the same items
    it = r.items.pivot_table(index=["family", "item_id"], columns="rung", values="extracted",
                             aggfunc="first")
    q2 = mine[(mine["family"] == "fam03") & (mine["rung"] == "Q2_K")].iloc[0]
    fam = it.loc["fam03"]
    assert q2["disagreements"] == int((fam["Q2_K"] != fam["F16"]).sum()) > 0
    assert q2["effect"] == pytest.approx(-q2["disagreements"] / q2["n"])
    # synthetic deaths change answers at the low rungs: the toy lens shows losses there
    loss = mine[mine["decision"] == BEYOND]
    assert len(loss) and (loss["ci_high"] < 0).all() and loss["reject"].all()
    # decisions: the toy lens's counts per rung are the grid's decisions
    dm = toy.decision.set_index("rung")
    for rung, g in mine[mine["measurable"]].groupby("rung"):
        assert dm.loc[rung, "n_loss_agreement"] == (g["decision"] == BEYOND).sum()
        assert dm.loc[rung, "n_undecided_agreement"] == (g["decision"] == UNDECIDED).sum()
    # death order: the toy lens's death rung is the top of its unbroken run of losses
    want = death_rungs(mine).set_index("family")["death_rung"]
    got = toy.death_order.set_index("family")["death_rung_agreement"].fillna("")
    assert got.to_dict() == want.to_dict() and (want != "").any()
    assert "agreement" in set(toy.lens_summary["lens"])
    # adding a lens changes nothing the other lenses computed
    other = cmp[cmp["lens"] != "agreement"].reset_index(drop=True)
    pd.testing.assert_frame_equal(other[plain.comparisons.columns], plain.comparisons)
    pd.testing.assert_frame_equal(toy.death_order[plain.death_order.columns], plain.death_order)


# ----------------------------------------------------------------- no name dispatch


def _literals(node) -> set[str]:
    """The string constants of a node that is a constant or a literal collection."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {e.value for e in node.elts if isinstance(e, ast.Constant)
                and isinstance(e.value, str)}
    return set()


def lens_name_uses(source: str, names: set[str], columns: set[str]) -> list[int]:
    """
    Lines of ``source`` that compare or select a lens by its name: a comparison or ``isin``
    with the name, a ``lens`` argument defaulting to it, a query string testing ``lens``
    against it, or, for names that are not also item columns, any literal of it.
    """
    tree, hits = ast.parse(source), []
    alts = "|".join(map(re.escape, names))
    query = re.compile(rf"\blens\b[^'\"]*['\"]({alts})['\"]")
    for node in ast.walk(tree):
        found = set()
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= {node.value} - columns if node.value in names else set()
            found |= {"query"} if query.search(node.value) else set()
        elif isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found |= _literals(operand) & names
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr == "isin":
                for a in node.args:
                    found |= _literals(a) & names
            for kw in node.keywords:
                if kw.arg and "lens" in kw.arg:
                    found |= _literals(kw.value) & names
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            sig = node.args
            args = [*sig.posonlyargs, *sig.args]
            pairs = [*zip(args[len(args) - len(sig.defaults):], sig.defaults, strict=True),
                     *zip(sig.kwonlyargs, sig.kw_defaults, strict=True)]
            for arg, default in pairs:
                if "lens" in arg.arg and default is not None:
                    found |= _literals(default) & names
        if found:
            hits.append(node.lineno)
    return sorted(set(hits))


def test_the_name_check_catches_dispatch_and_spares_columns():
    names, columns = {"correctness", "fidelity", "margin"}, {"margin"}
    bad = ['x = g[g["lens"] == "margin"]', 'y = lens != "fidelity"',
           'z = c["lens"].isin(["margin", "correctness"])', 'def f(lens: str = "margin"): pass',
           'for lens in ("margin", "fidelity"): pass', 'q = t.query("lens == \'margin\'")',
           'k = LENSES["correctness"]', 'first(items, lens="margin")']
    for line in bad:
        assert lens_name_uses(line, names, columns), line
    fine = ['w = wide["margin"][b]', 'cols = ("correct", "margin", "gold_logprob")',
            'for c in ("margin", "gold_logprob"): pass', 'x = f"death_rung_{lens}"']
    for line in fine:
        assert not lens_name_uses(line, names, columns), line


def test_no_lens_name_comparisons_outside_the_lens_modules():
    names, columns = set(registry.LENSES), set(ITEM_COLUMNS)
    lens_dir = LIB / "stats" / "lens"
    found = {}
    for path in sorted(LIB.rglob("*.py")):
        if lens_dir in path.parents:
            continue
        lines = lens_name_uses(path.read_text(), names, columns)
        if lines:
            found[str(path.relative_to(LIB))] = lines
    assert not found, f"lens names compared outside stats/lens/ (file: lines): {found}"
