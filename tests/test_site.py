"""The report website: staged, rendered offline, claim-checked, and opened in Chromium."""

import functools
import html
import http.server
import re
import shutil
import struct
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
from synthetic_run import SITE_RUNGS, synthetic_profile

from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.report import browser, claims, site
from gguf_fragility.stats import lenses, relevance, results, transfer
from gguf_fragility.testing import write_synthetic


def _tables(name):
    """Synthetic sweep + notebook 05 and 06 tables for profile ``name``, computed in-process."""
    profile = synthetic_profile(name)
    r = write_synthetic(profile.layout, n_models=2, n_families=5, n_items=40, rungs=SITE_RUNGS)
    results.analyse(profile, r)
    transfer.analyse(profile, r)
    return profile


def internal_link_problems(root: Path) -> list[str]:
    """Relative href/src targets of every page that do not exist in the site folder."""
    bad = []
    for page in root.rglob("*.html"):
        refs = site.page_refs(page)
        for u in refs.links + refs.loads:
            parts = urlsplit(u)
            if parts.scheme or u.startswith(("//", "#", "mailto:", "data:")) or not parts.path:
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                bad.append(f"{page.relative_to(root)} -> {u}")
    return bad


def test_render_offline_from_tables(capsys):
    run = _tables("site-fast").layout
    r = site.render(run, renderer="smalldocs")
    out = capsys.readouterr().out
    assert "with smalldocs" in out and str(r.index) in out
    assert r.index.exists() and r.external == [] and r.claims_ok, out
    html = r.index.read_text()
    assert "<table" in html and "<svg" in html
    assert "Kendall" in html and 'class="gf-recommend"' in html and "GiB" in html
    assert "Planned minimum detectable effects" in html and "undecided" in html
    assert "safe" not in re.sub(r"<[^>]+>", "", html).lower().replace("unsafe", "")
    methods = (r.site_dir / "methods.html").read_text()
    assert "The family of tests of this run" in methods and "Tarone K" in methods
    assert internal_link_problems(r.site_dir) == []
    assert run.table(Table.SETTINGS).is_file() and run.table(Table.SITE_HEADLINE).is_file()
    repro = re.sub(r"<[^>]+>", "", (r.site_dir / "reproducibility.html").read_text())
    assert "make autopsy PROFILE=site-fast" in repro and "system information" in repro


def test_claim_check_fails_when_a_page_gains_a_number():
    run = _tables("site-tamper").layout
    r = site.render(run, renderer="smalldocs", check_claims=False)
    page = r.site_dir / "methods.html"
    page.write_text(page.read_text().replace("</main>", "<p>It loses 61.37 pp.</p></main>"))
    res = claims.check(run)
    assert not res.ok
    assert res.claims.loc[~res.claims["traced"], "number"].tolist() == ["61.37"]


def test_unknown_renderer_is_rejected():
    with pytest.raises(ValueError, match="renderer must be"):
        site.render(RunLayout.of("site-fast"), renderer="pandoc")


def test_external_loads_are_found(tmp_path):
    (tmp_path / "a.html").write_text('<link rel="stylesheet" href="https://cdn.x/y.css">'
                                     '<script src="site_libs/ok.js"></script><a href="https://z">z</a>')
    (tmp_path / "b.css").write_text("@import url(https://fonts.googleapis.com/css2);")
    assert site.external_loads(tmp_path) == ["a.html: https://cdn.x/y.css",
                                             "b.css: https://fonts.googleapis.com/css2"]


# ----------------------------------------------------------------- end to end, in a browser


@pytest.fixture(scope="module")
def executed_site(synthetic_chapters):
    """The shared synthetic run, chapters 5-8 executed by papermill, rendered."""
    return site.render(synthetic_chapters.profile.layout)


@pytest.fixture(scope="module")
def served(executed_site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(executed_site.site_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


# Chromium's own background services (sign-in, component and extension updates) that the
# switches below do not all silence; they are the browser's traffic, not the page's.
BROWSER_SERVICES = {"accounts.google.com", "clients2.google.com", "update.googleapis.com",
                    "clients2.googleusercontent.com", "optimizationguide-pa.googleapis.com",
                    "content-autofill.googleapis.com", "edgedl.me.gvt1.com"}


@pytest.mark.slow
def test_site_in_headless_chromium(executed_site, served, tmp_path):
    assert executed_site.claims_ok and executed_site.external == []
    assert internal_link_problems(executed_site.site_dir) == []
    chapters = {p.name for p in (executed_site.site_dir / "chapters").glob("*.html")}
    assert {"05_stats.html", "06_transfer.html"} <= chapters
    netlog = tmp_path / "net.json"
    try:
        dom = browser.run_chromium(f"{served}/index.html", f"--log-net-log={netlog}",
                                   "--virtual-time-budget=5000", "--dump-dom")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'class="gf-recommend"' in html and re.search(r"<table\b", html), "no recommendation"
    assert "Planned minimum detectable effects" in html
    assert re.search(r"<svg\b", html), "no chart"
    hosts = {urlsplit(u).hostname for u in re.findall(r'"url":"([a-z]+://[^"]+)"',
                                                      netlog.read_text(errors="replace"))}
    assert hosts - BROWSER_SERVICES <= {"127.0.0.1", "localhost"}, f"requests left localhost: {hosts}"
    loads = [u for u in re.findall(r'(?:src|href)="([^"]+)"', html)
             if not u.startswith(("#", "data:", "mailto:"))]
    assert [u for u in loads if urlsplit(u).hostname not in (None, "127.0.0.1")] == [], loads
    for nb in ("05_stats", "06_transfer"):  # the executed chapters read as a report
        m = browser.layout(executed_site.site_dir / "chapters" / f"{nb}.html")
        assert m["code"] > 0 and m["code_visible"] == 0, (nb, m["code"], m["code_visible"])
        for c in m["charts"]:
            assert all(_inside(t["box"], c["box"]) for t in c["text"]), (nb, c["box"])


# ----------------------------------------------------------------- the first screen

GIB = 2**30


def _hand_decision():
    """Two models' decision rows (the columns ``decision.recommend`` reads) and the
    correctness comparisons behind model m's Q4_K_M, with a known best rung per budget."""
    rows = [("m", "F16", True, 16.0, 3.0, "reference", np.nan),
            ("m", "Q8_0", False, 8.5, 1.6, relevance.EQUIVALENT, -0.02),
            ("m", "Q4_K_M", False, 4.9, 0.9, relevance.UNDECIDED, -0.16),
            ("m", "Q2_K", False, 3.0, 0.6, relevance.BEYOND, -0.40),
            ("n", "F16", True, 16.0, 1.5, "reference", np.nan),
            ("n", "Q4_K_M", False, 4.9, 0.7, relevance.UNDECIDED, -0.20)]
    dm = pd.DataFrame(rows, columns=["model", "rung", "is_reference", "bpw", "memory_gib",
                                     "quality", "worst_sim_low"])
    dm["memory_bytes"] = (dm.pop("memory_gib") * GIB).astype(np.int64)
    dm = dm.assign(memory_source="llama.cpp", worst_family="", worst_min_diff=np.nan,
                   file_size_bytes=dm["memory_bytes"] // 2, prompt_tps=100.0, gen_tps=10.0)
    # m's Q4_K_M: f may lose, g is tight (0 of 400 died), h shows a loss; fidelity is ignored
    cmp = pd.DataFrame({"model": "m", "lens": "correctness", "rung": "Q4_K_M", "bpw": 4.9,
                        "measurable": True, "family": ["f", "g", "h"],
                        "deaths": [6, 0, 12], "resurrections": [0, 0, 0], "n": [100, 400, 100],
                        "decision": [relevance.UNDECIDED, relevance.UNDECIDED, relevance.BEYOND]})
    cmp["effect"] = -cmp["deaths"] / cmp["n"]
    fid = cmp.iloc[:1].assign(lens="fidelity", family="z", deaths=90, decision=relevance.BEYOND)
    n_rows = pd.DataFrame({"model": "n", "lens": "correctness", "rung": "Q4_K_M", "bpw": 4.9,
                           "measurable": True, "family": ["f"], "deaths": [20],
                           "resurrections": [0], "n": [100], "decision": [relevance.UNDECIDED],
                           "effect": [-0.2]})
    return dm, pd.concat([cmp, fid, n_rows], ignore_index=True)


def test_recommendation_per_budget_by_hand():
    from gguf_fragility.report import landing

    dm, cmp = _hand_decision()
    adv = landing.advice(dm, cmp, budgets_gib=(0.5, 1, 2, 4), alpha=0.05, margin=0.05)
    pick = adv.picks.set_index(["model", "budget_gib"])["rung"].fillna("")
    assert pick["m"].to_dict() == {0.5: "", 1: "Q4_K_M", 2: "Q8_0", 4: "Q8_0"}
    assert pick["n"].to_dict() == {0.5: "", 1: "Q4_K_M", 2: "F16", 4: "F16"}
    # what m's Q4_K_M may cost at 1 GiB: h (a loss shown) and f, each by its interval's worst
    # bound at the Bonferroni level over m's 3 families; g is inside the ±5-point margin
    cost = adv.costs[(adv.costs["model"] == "m") & (adv.costs["budget_gib"] == 1)]
    assert cost["family"].tolist() == ["h", "f"]
    low = lenses.paired_diff_ci(np.array([12, 6]), np.array([0, 0]), np.array([100, 100]),
                                alpha=0.05 / 3).low
    assert np.allclose(cost["worst_pp"], -100 * low)
    assert (cost["worst_pp"] > [12, 6]).all()  # an interval's worst bound exceeds the estimate
    text = landing.advice_sentences(adv, margin=0.05)
    m = " ".join(text["m"])
    assert "Q4_K_M" in m and f"h up to {-100 * low[0]:.1f} points" in m
    assert f"f up to {-100 * low[1]:.1f} points" in m and " g " not in m
    assert re.search(r"2 or 4 GiB[^.]*Q8_0", m) and "nothing fits" in m
    assert re.search(r"2 or 4 GiB[^.]*reference[^.]*F16", " ".join(text["n"]))
    assert len(text["m"]) == 3  # one sentence per distinct answer: 0.5, 1, 2 or 4 GiB


def _tiny_chapter(run: RunLayout) -> None:
    """An executed notebook with a parameters cell, a code cell and its output."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny chapter\n\nSome prose."),
                nbformat.v4.new_code_cell("profile = 'x'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("#| label: sums\nprint(sum(range(4)))", outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text="six\n")])]
    run.executed_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, run.executed_dir / "01_tiny.ipynb")


@pytest.fixture(scope="module")
def landing_site():
    """A synthetic run's tables and one executed chapter, rendered offline."""
    run = _tables("site-first").layout
    _tiny_chapter(run)
    return site.render(run, renderer="smalldocs")


def _inside(box, outer, tol=1.0):
    return (box["l"] >= outer["l"] - tol and box["t"] >= outer["t"] - tol
            and box["r"] <= outer["r"] + tol and box["b"] <= outer["b"] + tol)


def test_first_screen_shows_chart_recommendation_and_whole_legends(landing_site, tmp_path):
    assert landing_site.claims_ok
    try:
        m = browser.layout(landing_site.index)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    width, height = browser.FIRST_SCREEN
    assert m["width"] == width  # boxes are from the page's top: the first screen is t < height
    chart, rec = m["chart"], m["recommendation"]
    assert chart is not None and chart["b"] - chart["t"] > 150, "no chart on the first screen"
    assert chart["t"] >= 0 and chart["b"] <= height, f"chart not within the first screen: {chart}"
    assert rec is not None and rec["b"] <= height, f"recommendation below the first screen: {rec}"
    legends = 0
    for c in m["charts"]:
        legends += sum(t["kind"] == "legend" for t in c["text"])
        out = [t for t in c["text"] if not _inside(t["box"], c["box"])]
        assert not out, f"chart text outside its SVG's visible box {c['box']}: {out[:3]}"
    assert legends > 0
    shot = browser.screenshot(landing_site.index, tmp_path / "landing.png")
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (width, height)
    shutil.copy(shot, Path("/tmp/gguf-fragility-first-screen.png"))  # for a human to look at


def test_chapters_show_no_code_input(landing_site):
    page = landing_site.site_dir / "chapters" / "01_tiny.html"
    text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
    assert "sum(range(4))" in text and "six" in text  # folded, not dropped; output shown
    try:
        m = browser.layout(page)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert m["code"] >= 2 and m["code_visible"] == 0, m


def test_landing_counts_are_not_sentences_about_zeros(landing_site):
    text = claims.prose(landing_site.index.read_text())
    zeros = re.findall(r"[^.]*(?<![\d.,])0 (?:of|were|with|cells|families|also)\b[^.]*"
                       r"|[^.]*\bof 0\b[^.]*", text)
    assert zeros == [], zeros
    order = [text.find(h) for h in ("Counts", "Planned minimum detectable effects",
                                    "The family of tests", "Does the death order transfer")]
    assert -1 not in order and order == sorted(order), order


def test_screenshot_refuses_an_unrendered_site(capsys, monkeypatch):
    assert browser.main(["never-rendered"]) == 1
    err = capsys.readouterr().err
    assert "does not exist; render the site first" in err and "report.site never-rendered" in err
    monkeypatch.setenv("PATH", "/nonexistent")
    run = RunLayout.of("no-chromium")
    run.site_dir.mkdir(parents=True)
    (run.site_dir / "index.html").write_text("<html><body>x</body></html>")
    assert browser.main(["no-chromium"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("browser: chromium is not installed: run scripts/ensure_chromium.sh")
