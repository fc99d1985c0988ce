"""The claim check: numbers in prose must be values of the run's CSVs."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gguf_fragility.layout import RunLayout, Table, outputs_root
from gguf_fragility.report import claims


@pytest.mark.parametrize("text, expected", [
    ("Q2_K is 5.14 bpw", ["5.14"]),                      # quant names are not numbers
    ("SmolLM2-135M and Qwen2.5 and sha256", []),          # names glued to letters
    ("loses -3.2 pp, gains \u22121.5 pp", ["-3.2", "\u22121.5"]),
    ("1,117,320,768 bytes", ["1,117,320,768"]),
    ("in 16 of 18 cases (88.9%).", ["16", "18", "88.9"]),
    ("version 3.11.2 and 2×2", ["2", "2"]),               # dotted versions are names
    ("synth-0 vs synth-1", []),                           # hyphenated ids are names
    ("interval 0.14 to 0.87;", ["0.14", "0.87"]),
])
def test_numbers_extraction(text, expected):
    assert [c.number for c in claims.numbers(text)] == expected


def test_chapter_cross_references_are_not_claims():
    page = ("<main><p>Notebook 06 asks it; chapters 5-8 and chapter 3 read 0.42 of "
            "12 notebooks.</p></main>")
    assert [c.number for c in claims.numbers(claims.prose(page))] == ["0.42", "12"]


def test_prose_skips_code_tables_svg_and_chrome():
    page = """<html><body><nav>Chapter 77</nav><main class="content">
    <p>Rho is 0.42 <code>n=991</code></p><pre>printed 123.456</pre>
    <table><tr><td>6543.21</td></tr></table><svg><text>88.88</text></svg>
    <div class="cell-output cell-output-stdout"><p>5555</p></div>
    <ul><li>item 7<li>item 8</ul><div><table><tr><td>1</td></tr></table>
    <p>120 rows × 14 columns</p></div><p>3 rows of 9</p></main><footer>2026</footer></body></html>"""
    assert [c.number for c in claims.numbers(claims.prose(page))] == ["0.42", "7", "8", "3", "9"]


def test_traced_tolerance_and_percent():
    values = np.unique(np.r_[[0.888888, -0.0321, 16.0], [88.8888, -3.21, 1600.0],
                             [0.888888, 0.0321, 16.0], [88.8888, 3.21, 1600.0]])
    cs = claims.numbers("88.9% and 0.89 and -3.2 and 3.21 and 16 and 0.8 and 88.80")
    assert traced_list(cs, values) == [True, True, True, True, True, False, False]


def traced_list(cs, values):
    return claims.traced(cs, values).tolist()


def _site(profile, body):
    """A one-page 'rendered site' and one CSV for ``profile``."""
    run = RunLayout.of(profile)
    t = run.tables_dir
    t.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"model": ["m"], "diff": [-0.0512], "bpw": [5.139419]}).to_csv(
        run.table(Table.COMPARISONS), index=False)
    site = run.site_dir
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text(f"<html><main><p>{body}</p></main></html>")


def test_check_passes_on_good_page():
    _site("claims-good", "Q2_K is really 5.14 bits per weight and loses 5.1 pp.")
    res = claims.check(RunLayout.of("claims-good"))
    assert res.ok and res.claims["traced"].all() and len(res.claims) == 2


def test_check_fails_on_untraceable_number():
    _site("claims-bad", "Q2_K is really 5.14 bits per weight and loses 7.3 pp.")
    res = claims.check(RunLayout.of("claims-bad"))
    assert not res.ok
    assert res.claims.loc[~res.claims["traced"], "number"].tolist() == ["7.3"]
    assert res.report.exists()


def test_cli_exit_codes():
    env_out = str(outputs_root())
    run = lambda p: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "gguf_fragility.report.claims", p], capture_output=True, text=True,
        env={"GGUF_FRAGILITY_OUTPUTS": env_out, "PATH": "/usr/bin:/bin"})
    _site("claims-cli-good", "5.14 bpw")
    _site("claims-cli-bad", "4.75 bpw")
    good, bad = run("claims-cli-good"), run("claims-cli-bad")
    assert good.returncode == 0, good.stdout + good.stderr
    assert bad.returncode == 1 and "UNTRACEABLE index.html: 4.75" in bad.stdout
    assert run("claims-cli-missing").returncode == 1
