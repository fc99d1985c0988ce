"""Names spelled in one place (issue 24): table file names live in ``layout.Table``; the
reference rung and the noise floor in ``engine.rungs`` and the parsed rung spec.

The grep-style tests read every module, test, script and notebook code cell as Python and
look at its string literals (docstrings and comments may name a file for the reader).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest

from gguf_fragility import paths
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.store import write_tables

NAMES = "|".join(re.escape(t.value) for t in Table)
TABLE_FILE = re.compile(rf"\b(?:{NAMES})\.csv\b|\bstats_config\.json\b")


def sources() -> list[tuple[str, str]]:
    """(name, Python source) of every module, test, script, benchmark and notebook code cell."""
    out = []
    for folder in ("lib", "tests", "scripts", "benchmarks"):
        out += [(str(f.relative_to(paths.REPO)), f.read_text())
                for f in sorted((paths.REPO / folder).rglob("*.py"))]
    for nb in sorted(paths.NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        out += [(f"{nb.relative_to(paths.REPO)}[{i}]", "".join(c["source"]))
                for i, c in enumerate(cells) if c["cell_type"] == "code"]
    return out


def literals(source: str, name: str):
    """Every string constant of ``source`` that is not a docstring, with its line."""
    tree = ast.parse(source, name)
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def calls_with_literal(source: str, name: str, funcs: set[str]):
    """``f(..., "text")`` calls of the functions named ``funcs`` with a string literal."""
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Call):
            f = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                node.func, "id", "")
            if f in funcs:
                for a in node.args:
                    if isinstance(a, ast.Constant) and isinstance(a.value, str):
                        yield node.lineno, a.value


def test_no_module_spells_a_table_file_name():
    found = [f"{name}:{line}: {text!r}" for name, src in sources()
             if name not in ("lib/gguf_fragility/layout.py", "tests/test_spellings.py")
             for line, text in literals(src, name) if TABLE_FILE.search(text)]
    found += [f"{name}:{line}: table({text!r})" for name, src in sources()
              if name != "tests/test_spellings.py"
              for line, text in calls_with_literal(src, name, {"read_table", "table"})
              if text in {t.value for t in Table}]
    assert found == [], "spell these as gguf_fragility.layout.Table members:\n" + "\n".join(found)


def test_the_grep_sees_a_spelled_table_name():
    """The check above is not vacuous: it finds the spellings it forbids."""
    src = ('"""Docstrings may say comparisons.csv."""\nimport x\n'
           'p = run.tables_dir / "death_order.csv"\nq = read_table(run, "decision")\n')
    assert [t for _, t in literals(src, "x") if TABLE_FILE.search(t)] == ["death_order.csv"]
    assert list(calls_with_literal(src, "x", {"read_table"})) == [(4, "decision")]


def test_every_chapter_table_is_a_table_name():
    from gguf_fragility.stats.axes import AxesTables
    from gguf_fragility.stats.recipes import LesionTables
    from gguf_fragility.stats.results import StatsTables
    from gguf_fragility.stats.transfer import TransferTables

    for tables in (StatsTables, TransferTables, AxesTables, LesionTables):
        assert {Table.of(f) for f in tables._fields} <= set(Table)


def test_an_unknown_table_is_named_with_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown table 'comparison'; tables are: .*comparisons"):
        RunLayout(tmp_path).table("comparison")

    class Typo(NamedTuple):
        death_ordr: pd.DataFrame

    with pytest.raises(ValueError, match="unknown table 'death_ordr'"):
        write_tables(Typo(pd.DataFrame({"a": [1]})), tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_table_is_written_where_the_layout_finds_it(tmp_path):
    class Two(NamedTuple):
        death_order: pd.DataFrame
        kv_costs: pd.DataFrame

    run = RunLayout(tmp_path / "p")
    written = write_tables(Two(pd.DataFrame({"a": [1]}), pd.DataFrame({"b": [2.5]})),
                           run.tables_dir)
    assert written == [run.table(Table.DEATH_ORDER), run.table(Table.of("kv_costs"))]
    assert pd.read_csv(run.table(Table.KV_COSTS))["b"].tolist() == [2.5]
    assert run.table(Table.DEATH_ORDER).name == Path(written[0]).name


# ----------------------------------------------------------------- the reference and the floor

RUNG_NAMES = {"engine/rungs.py", "engine/ftypes.py"}  # llama.cpp's ftype and tensor-type tables


def test_no_module_spells_the_reference_or_the_floor():
    from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE

    found = [f"{name}:{line}: {text!r}" for name, src in sources()
             if name.startswith(("lib/", "notebooks/")) and name.split("gguf_fragility/")[-1]
             not in RUNG_NAMES
             for line, text in literals(src, name)
             if text in (REFERENCE, NOISE_FLOOR) or re.search(r"(?<![\w.])'F16'", text)]
    assert found == [], ("ask engine.rungs.rung_spec(rung).is_reference / .is_floor, or "
                         "name REFERENCE / NOISE_FLOOR:\n" + "\n".join(found))


def test_the_parsed_rung_spec_says_reference_and_floor():
    from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE, parse_rung, rung_spec

    ref, floor = rung_spec(REFERENCE), rung_spec(NOISE_FLOOR)
    assert ref.is_reference and not ref.is_floor
    assert floor.is_floor and not floor.is_reference
    assert floor.weights == REFERENCE and floor.kv_cache is None  # loads the reference's file
    for rung in ("Q2_K", f"{REFERENCE}+kv_q8_0", "Q8_0+ffn_down=Q2_K", "Q2_K+imatrix_wiki"):
        spec = rung_spec(rung)
        assert not spec.is_reference and not spec.is_floor, rung
    assert rung_spec(f"{REFERENCE}+kv_f16").weights == REFERENCE
    with pytest.raises(ValueError, match="unknown rung"):  # a profile cannot list the floor
        parse_rung(NOISE_FLOOR)


def test_the_floor_runs_other_batch_shapes_and_the_reference_does_not():
    from gguf_fragility.engine.rungs import NOISE_FLOOR, REFERENCE
    from gguf_fragility.profile import EngineParams

    e = EngineParams(n_batch=512)
    assert e.settings(REFERENCE)["n_batch"] == 512 and e.settings(REFERENCE)["n_seq_max"] == 8
    assert e.settings(NOISE_FLOOR)["n_batch"] == 64 and e.settings(NOISE_FLOOR)["n_seq_max"] == 1
    assert e.settings()["n_batch"] == 512  # the default rung is the reference
