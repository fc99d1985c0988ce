"""The report website: staged, rendered offline, claim-checked, and opened in Chromium."""

import contextlib
import functools
import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from gguf_fragility import paths
from gguf_fragility.layout import RunLayout, outputs_root
from gguf_fragility.profile import Profile, load_profile
from gguf_fragility.report import claims, site
from gguf_fragility.stats import results, transfer
from gguf_fragility.testing import write_synthetic, write_synthetic_registry

RUNGS = ("F16", "Q8_0", "Q4_K_M", "Q2_K")


@contextlib.contextmanager
def synthetic_registry():
    """``GGUF_FRAGILITY_REGISTRY`` names the synthetic models while the block runs (kernels too)."""
    reg = write_synthetic_registry(outputs_root() / "profiles")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GGUF_FRAGILITY_REGISTRY", str(reg))
        yield


def synthetic_profile(name: str) -> Profile:
    """A profile over the synthetic models, written as ``<name>.yaml`` beside the outputs."""
    path = outputs_root() / "profiles" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"models:\n  synth-0: {{rungs: {list(RUNGS)}}}\n"
                    f"  synth-1: {{rungs: {list(RUNGS)}}}\nn_boot: 200\n")
    with synthetic_registry():
        return load_profile(path)


def _tables(name):
    """Synthetic sweep + notebook 05 and 06 tables for profile ``name``, computed in-process."""
    profile = synthetic_profile(name)
    r = write_synthetic(profile.layout, n_models=2, n_families=5, n_items=40, rungs=RUNGS)
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
    assert "Kendall" in html and "lowest rung shown equivalent" in html.lower()
    assert "What died where" in html and "undecided" in html
    assert "safe" not in re.sub(r"<[^>]+>", "", html).lower().replace("unsafe", "")
    methods = (r.site_dir / "methods.html").read_text()
    assert "The family of tests of this run" in methods and "Tarone K" in methods
    assert internal_link_problems(r.site_dir) == []
    assert {"settings.csv", "site_headline.csv"} <= {
        p.name for p in run.tables_dir.iterdir()}
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


def _papermill(nb, profile):
    out = profile.layout.executed_dir / f"{nb}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    import papermill as pm

    pm.execute_notebook(str(paths.NOTEBOOKS / f"{nb}.ipynb"), str(out), kernel_name="python3",
                        parameters={"profile": str(outputs_root() / "profiles" /
                                                    f"{profile.name}.yaml")},
                        progress_bar=False,
                        cwd=str(paths.NOTEBOOKS))


@pytest.fixture(scope="module")
def executed_site():
    """Notebooks 05 and 06 executed by papermill on a synthetic sweep, then rendered."""
    profile = synthetic_profile("site-e2e")
    write_synthetic(profile.layout, n_models=2, n_families=5, n_items=40, rungs=RUNGS)
    with synthetic_registry():  # the kernels load the profile too
        _papermill("05_stats", profile)
        _papermill("06_transfer", profile)
    return site.render(profile.layout)


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


def _chromium(tmp_path, *args):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed: run scripts/ensure_chromium.sh")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-default-apps", "--disable-extensions", "--no-pings",
           "--disable-domain-reliability", "--disable-client-side-phishing-detection",
           f"--user-data-dir={tmp_path / 'profile'}",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_site_in_headless_chromium(executed_site, served, tmp_path):
    assert executed_site.claims_ok and executed_site.external == []
    assert internal_link_problems(executed_site.site_dir) == []
    chapters = {p.name for p in (executed_site.site_dir / "chapters").glob("*.html")}
    assert {"05_stats.html", "06_transfer.html"} <= chapters
    netlog = tmp_path / "net.json"
    dom = _chromium(tmp_path, f"--log-net-log={netlog}", "--virtual-time-budget=5000",
                    "--dump-dom", f"{served}/index.html")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "Headline" in html and re.search(r"<table\b", html), "no headline table"
    assert "What died where" in html
    assert re.search(r"<svg\b", html), "no chart"
    hosts = {urlsplit(u).hostname for u in re.findall(r'"url":"([a-z]+://[^"]+)"',
                                                      netlog.read_text(errors="replace"))}
    assert hosts - BROWSER_SERVICES <= {"127.0.0.1", "localhost"}, f"requests left localhost: {hosts}"
    loads = [u for u in re.findall(r'(?:src|href)="([^"]+)"', html)
             if not u.startswith(("#", "data:", "mailto:"))]
    assert [u for u in loads if urlsplit(u).hostname not in (None, "127.0.0.1")] == [], loads
    shot = executed_site.site_dir.parent / "landing.png"
    png = _chromium(tmp_path, "--window-size=1280,1800", "--hide-scrollbars",
                    f"--screenshot={shot}", f"{served}/index.html")
    assert png.returncode == 0 and shot.stat().st_size > 10_000, png.stderr[-2000:]
    shutil.copy(shot, Path("/tmp/gguf-fragility-landing.png"))  # for a human to look at
