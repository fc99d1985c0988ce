"""The rendered site in headless Chromium: a screenshot of the first screen, and its layout.

    .venv/bin/python -m gguf_fragility.report.browser default   # writes outputs/default/landing.png

:func:`screenshot` photographs a page at the size of a first screen (:data:`FIRST_SCREEN`,
1,400 × 1,000 CSS px); :func:`layout` opens a page at that size and returns where the
landing page's chart and recommendation lie and whether every chart's legend and axis text
lies inside its SVG's visible box (the site's browser test reads it). Both use Debian's
``chromium`` (``scripts/ensure_chromium.sh``); nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gguf_fragility.layout import RunLayout

FIRST_SCREEN = (1400, 1000)  # CSS px: a laptop's browser window
SWITCHES = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--no-pings",
            "--disable-domain-reliability", "--disable-client-side-phishing-detection",
            "--hide-scrollbars", "--force-device-scale-factor=1")

# Measures the page once it has loaded and appends the result as JSON in <pre id="gf-probe">.
# A box is {l, t, r, b} in CSS px from the top left of the page (unscrolled, so the first
# screen is t < 1000); an element's visible box is its box cut by every ancestor that clips
# its overflow.
PROBE = """<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect();
                     return {l: r.left, t: r.top, r: r.right, b: r.bottom}; };
  const cut = (a, c) => ({l: Math.max(a.l, c.l), t: Math.max(a.t, c.t),
                          r: Math.min(a.r, c.r), b: Math.min(a.b, c.b)});
  const visible = e => { let v = box(e);
    for (let a = e.parentElement; a; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (s.overflowX !== "visible" || s.overflowY !== "visible") v = cut(v, box(a)); }
    return v; };
  const shown = e => e.checkVisibility({visibilityProperty: true});  // closed <details> hide
  const first = sel => { const e = document.querySelector(sel);
                         return e && shown(e) ? box(e) : null; };
  const kinds = {legend: ".role-legend-label text, .role-legend-symbol path, .role-legend-title text",
                 axis: ".role-axis-title text, .role-axis-label text", title: ".role-title text"};
  const charts = [...document.querySelectorAll("main svg")].filter(s => !s.parentElement.closest("svg"))
    .map(s => ({box: visible(s), text: Object.entries(kinds).flatMap(([kind, sel]) =>
      [...s.querySelectorAll(sel)].map(t => ({kind, text: t.textContent, box: box(t)})))}));
  const code = [...document.querySelectorAll("main .cell-code, main pre.sourceCode")];
  const out = {width: window.innerWidth, height: window.innerHeight,
               chart: first(".gf-chart svg"), recommendation: first(".gf-recommend li"),
               charts, code: code.length, code_visible: code.filter(shown).length};
  const pre = document.createElement("pre"); pre.id = "gf-probe";
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    """Path of the Chromium executable.

    Raises
    ------
    FileNotFoundError
        When neither ``chromium`` nor ``chromium-browser`` is on PATH.
    """
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise FileNotFoundError("chromium is not installed: run scripts/ensure_chromium.sh "
                                "(Debian's chromium package)")
    return exe


def run_chromium(url: str, *args: str, size: tuple[int, int] = FIRST_SCREEN,
                 timeout: float = 120) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url`` with the switches above, a fresh profile and a window of
    ``size`` CSS px; ``args`` are extra switches (``--dump-dom``, ``--screenshot=...``)."""
    with tempfile.TemporaryDirectory(prefix="gf-chromium-") as home:
        cmd = [chromium(), *SWITCHES, f"--user-data-dir={home}",
               f"--window-size={size[0]},{size[1]}", *args, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def screenshot(page: Path, out: Path, size: tuple[int, int] = FIRST_SCREEN) -> Path:
    """Write a PNG of the first ``size`` CSS px of ``page`` (an HTML file) to ``out``.

    Raises
    ------
    RuntimeError
        When Chromium fails or writes no image.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    r = run_chromium(Path(page).resolve().as_uri(), f"--screenshot={out}", size=size)
    if r.returncode != 0 or not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot of {page}: {r.stderr[-500:]}")
    return out


def layout(page: Path, size: tuple[int, int] = FIRST_SCREEN) -> dict:
    """
    Open ``page`` in Chromium at ``size`` and measure it.

    Returns
    -------
    dict
        ``width, height`` (the viewport: with ``--dump-dom`` Chromium keeps some of the
        window's height for itself, which moves nothing on the page), ``chart`` (box of the
        page's first ``.gf-chart`` SVG, or None), ``recommendation`` (box of the landing
        page's first recommendation, or None), ``charts``
        (per top-level SVG in ``<main>``: its visible ``box`` and, as ``text``, the ``kind``
        ("legend", "axis" or "title"), ``text`` and ``box`` of every legend entry and title,
        axis label and title), ``code`` and ``code_visible`` (code
        cells on the page, and how many of them are shown rather than folded away).

    Notes
    -----
    The page is copied beside itself with a measuring script added (so its stylesheets and
    links resolve the same way) and the copy is removed afterwards.
    """
    page = Path(page)
    probe = page.with_name(f".gf-probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>", 1))
    try:
        r = run_chromium(probe.resolve().as_uri(), "--virtual-time-budget=5000", "--dump-dom",
                         size=size)
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r'<pre id="gf-probe">(.*?)</pre>', r.stdout, re.S)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"chromium did not measure {page}: {r.stderr[-500:]}")
    return json.loads(html.unescape(m.group(1)))


def main(argv: list[str] | None = None) -> int:
    """``python -m gguf_fragility.report.browser <profile> [--out PNG]``: the landing screenshot."""
    ap = argparse.ArgumentParser(prog="python -m gguf_fragility.report.browser",
                                 description="Screenshot the first screen of a rendered site.")
    ap.add_argument("profile")
    ap.add_argument("--out", type=Path, help="PNG to write (default outputs/<profile>/landing.png)")
    args = ap.parse_args(argv)
    run = RunLayout.of(args.profile)
    index = run.site_dir / "index.html"
    if not index.exists():
        print(f"browser: {index} does not exist; render the site first: "
              f"python -m gguf_fragility.report.site {args.profile}", file=sys.stderr)
        return 1
    try:
        out = screenshot(index, args.out or run.root / "landing.png")
    except (FileNotFoundError, RuntimeError) as e:
        print(f"browser: {e}", file=sys.stderr)
        return 1
    print(f"browser: wrote {out} ({FIRST_SCREEN[0]} × {FIRST_SCREEN[1]} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
