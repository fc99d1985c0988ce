"""Assemble and render the report website of one run run, offline.

    .venv/bin/python -m gguf_fragility.report.site default            # quarto if on PATH, else smalldocs
    .venv/bin/python -m gguf_fragility.report.site smoke --renderer smalldocs

:func:`stage` copies ``_quarto.yml``, ``report/*`` (filling their generated sections from
the CSVs), the executed notebooks (``chapters/``) and the figures into
``outputs/<profile>/site_src/``; :func:`render` renders that folder into
``outputs/<profile>/site/`` with Quarto when it is installed and with smalldocs (the same
``_quarto.yml``, pure Python, no network) otherwise, then checks that no page loads
anything from outside the site and runs the claim check (:mod:`gguf_fragility.report.claims`).
The generated prose comes from :mod:`gguf_fragility.report.pages` and :mod:`~gguf_fragility.report.landing`.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

import yaml

from gguf_fragility import paths, store
from gguf_fragility.layout import RunLayout, Table
from gguf_fragility.report import claims
from gguf_fragility.report.landing import GENERATED
from gguf_fragility.report.pages import headline_table, settings_table

REPORT = paths.REPO / "report"
CONFIG = paths.REPO / "_quarto.yml"
MARKER = re.compile(r"<!--\s*generated:\s*([\w-]+)\s*-->")


class Rendered(NamedTuple):
    """Result of :func:`render`."""

    renderer: str  # "quarto" or "smalldocs"
    site_dir: Path  # outputs/<profile>/site
    index: Path  # its index.html
    n_pages: int
    external: list[str]  # resources loaded from outside the site ("page: url"); empty = offline
    claims_ok: bool | None  # None when the claim check was not run
    n_untraced: int

    def problems(self) -> list[str]:
        """One line per check of the site that failed (empty when all passed): what a
        caller turns into a failing exit code."""
        out = [f"the site loads {len(self.external)} resource(s) from outside it, e.g. "
               f"{self.external[0]}"] if self.external else []
        if self.claims_ok is False:
            table = RunLayout(self.site_dir.parent).claim_check
            out.append(f"the site's claim check failed: {self.n_untraced} number(s) in its prose "
                       f"are in no generated table (listed above; all numbers in {table})"
                       if self.n_untraced else "the site's claim check failed: no rendered page")
        return out


# ----------------------------------------------------------------- staging and rendering


def _fold_options() -> str:
    """``#|`` lines asking for ``_quarto.yml``'s ``code-fold`` and ``code-summary`` (html)."""
    html = (yaml.safe_load(CONFIG.read_text()).get("format") or {}).get("html") or {}
    keys = [k for k in ("code-fold", "code-summary") if k in html]
    return "".join(f"#| {k}: {json.dumps(html[k])}\n" for k in keys)


def _chapter(src: Path, dst: Path) -> None:
    """Copy an executed notebook, turning its first ``# heading`` into a title with its variant
    and giving every code cell ``_quarto.yml``'s code folding as its own ``#|`` options (the
    smalldocs fallback folds a notebook's cell only when the cell asks; Quarto reads both)."""
    nb = json.loads(src.read_text())
    fold = _fold_options()
    for cell in nb.get("cells", []) if fold else ():
        if cell.get("cell_type") == "code":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = fold + text
    variant = src.stem.split("__", 1)[1].replace("__", " · ") if "__" in src.stem else ""
    title = src.stem
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            m = re.match(r"\s*#\s+(.+)\n?", text)
            if m:
                title = m.group(1).strip()
                cell["source"] = text[m.end():]
            break
    title = f"{title}: {variant}" if variant else title
    front = {"cell_type": "raw", "metadata": {}, "source": "---\n" + yaml.safe_dump(
        {"title": title}, allow_unicode=True) + "---\n"}
    nb["cells"] = [front, *nb.get("cells", [])]
    dst.write_text(json.dumps(nb))


def stage(run: RunLayout) -> Path:
    """
    Assemble the site's sources for ``profile`` in ``outputs/<profile>/site_src/``.

    Returns
    -------
    pathlib.Path
        The staging folder: ``_quarto.yml`` (output-dir ``../site``), ``index.qmd``,
        ``methods.qmd``, ``limitations.qmd``, ``reproducibility.qmd``, ``styles.css``,
        ``chapters/*.ipynb`` (executed copies) and ``figures/*.svg``.
    """
    run.tables_dir.mkdir(parents=True, exist_ok=True)
    store.write_table_atomic(settings_table(run), run.table(Table.SETTINGS))
    head = headline_table(run)
    if not head.empty:
        store.write_table_atomic(head, run.table(Table.SITE_HEADLINE))
    out = run.site_src
    if out.exists():
        shutil.rmtree(out)
    (out / "chapters").mkdir(parents=True)
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["project"]["output-dir"] = "../site"
    (out / "_quarto.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for f in sorted(REPORT.iterdir()):
        if f.suffix == ".qmd":
            text = MARKER.sub(lambda m: GENERATED[m.group(1)](run), f.read_text())
            (out / f.name).write_text(text)
        elif f.is_file():
            shutil.copy2(f, out / f.name)
    for nb in sorted(run.executed_dir.glob("*.ipynb")):
        # rung names carry '+' and '=' (Q2_K+imatrix_wiki, Q8_0+ffn_down=Q2_K): keep URLs plain
        _chapter(nb, out / "chapters" / re.sub(r"[^A-Za-z0-9_.-]", "-", nb.name))
    if run.figures_dir.exists():
        shutil.copytree(run.figures_dir, out / "figures")
    return out


class _Refs(HTMLParser):
    """Collect the URLs a page loads (not the links it offers)."""

    LOADS = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src",
             "audio": "src", "embed": "src", "object": "data", "image": "href", "use": "href"}

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "link" and a.get("href"):
            self.loads.append(a["href"])
        elif tag in self.LOADS and a.get(self.LOADS[tag]):
            self.loads.append(a[self.LOADS[tag]])
        elif tag == "image" and a.get("xlink:href"):
            self.loads.append(a["xlink:href"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


def page_refs(page: Path) -> _Refs:
    """The loaded resources and the link targets of one HTML page."""
    p = _Refs()
    p.feed(page.read_text(errors="replace"))
    return p


def external_loads(site: Path) -> list[str]:
    """Every resource a page or stylesheet would fetch from outside the site (``file: url``)."""
    ext = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)
    bad = []
    for f in sorted(site.rglob("*.html")):
        bad += [f"{f.relative_to(site)}: {u}" for u in page_refs(f).loads if ext.match(u)]
    for f in sorted(site.rglob("*.css")):
        for u in re.findall(r"(?:url\(\s*['\"]?|@import\s+['\"])([^'\")\s]+)", f.read_text(errors="replace")):
            if ext.match(u):
                bad.append(f"{f.relative_to(site)}: {u}")
    return bad


def _render_quarto(src: Path) -> None:
    """``quarto render`` on the staged folder."""
    subprocess.run(["quarto", "render", str(src)], check=True)


def _render_smalldocs(src: Path) -> int:
    """smalldocs on the staged folder; returns the number of pages."""
    from smalldocs.site import build

    site = build(src, quiet=True)
    for w in site.warnings:
        print(f"site: smalldocs warning: {w}", file=sys.stderr)
    return len(site.pages)


def render(run: RunLayout, renderer: str | None = None, *, check_claims: bool = True) -> Rendered:
    """
    Stage and render the report website of ``profile``; print the renderer and the path.

    Parameters
    ----------
    profile : str
        Run profile whose outputs (``outputs/<profile>/``) the site presents.
    renderer : {"quarto", "smalldocs"}, optional
        Default: ``quarto`` when it is on PATH, else ``smalldocs``.
    check_claims : bool, default True
        Run :func:`gguf_fragility.report.claims.check` on the rendered pages and print its
        verdict and each untraceable number (it does not raise: :meth:`Rendered.problems`
        says what failed, and the command line exits 1 on it).

    Returns
    -------
    Rendered

    Raises
    ------
    ValueError
        On an unknown renderer, or ``quarto`` asked for but not installed.
    """
    if renderer is None:
        renderer = "quarto" if shutil.which("quarto") else "smalldocs"
    if renderer not in ("quarto", "smalldocs"):
        raise ValueError(f"renderer must be 'quarto' or 'smalldocs'; got {renderer!r}")
    if renderer == "quarto" and not shutil.which("quarto"):
        raise ValueError("quarto is not on PATH; install Quarto or use renderer='smalldocs'")
    src = stage(run)
    out = run.site_dir
    if out.exists() and not (out / "site_libs").is_dir():
        shutil.rmtree(out)  # a half-written folder; both renderers refuse a foreign non-empty one
    if renderer == "quarto":
        _render_quarto(src)
    else:
        _render_smalldocs(src)
    pages = sorted(out.rglob("*.html"))
    ext = external_loads(out)
    why = "" if renderer == "quarto" or shutil.which("quarto") else " (quarto is not on PATH)"
    version = md.version("smalldocs") if renderer == "smalldocs" else "quarto"
    print(f"site: rendered {len(pages)} pages with {renderer} {version}{why}")
    print(f"site: open {out / 'index.html'}")
    for e in ext:
        print(f"site: WARNING external resource {e}", file=sys.stderr)
    ok, n_bad = None, 0
    if check_claims:
        res = claims.check(run)
        ok, n_bad = res.ok, int((~res.claims["traced"]).sum()) if len(res.claims) else 0
        for line in claims.untraceable(res):
            print(f"site: {line}", file=sys.stderr)
        print(f"site: claim check {'passed' if ok else 'FAILED'}: {len(res.claims)} numbers in "
              f"prose, {n_bad} untraceable (details: {res.report})")
    return Rendered(renderer, out, out / "index.html", len(pages), ext, ok, n_bad)


def main(argv: list[str] | None = None) -> int:
    """``python -m gguf_fragility.report.site <profile> [--renderer R]``."""
    p = argparse.ArgumentParser(prog="python -m gguf_fragility.report.site",
                                description=__doc__.split("\n")[0])
    p.add_argument("profile")
    p.add_argument("--renderer", choices=["quarto", "smalldocs"])
    args = p.parse_args(argv)
    problems = render(RunLayout.of(args.profile), args.renderer).problems()
    for line in problems:
        print(f"site: error: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
