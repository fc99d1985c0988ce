"""Altair charts that render offline: inline SVG in notebooks and the site, SVG files on disk.

Altair's default HTML renderer loads vega from a CDN, which a published offline page
cannot do; vl-convert turns the spec into SVG locally.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt

from gguf_fragility.layout import RunLayout


def use_svg() -> None:
    """Render charts as inline SVG (no JavaScript, no network)."""
    alt.renderers.enable("svg")
    alt.data_transformers.disable_max_rows()


def save(chart: alt.TopLevelMixin, name: str, run: RunLayout) -> Path:
    """Write ``chart`` as ``outputs/<profile>/figures/<name>.svg`` and return the path."""
    out = run.figures_dir / f"{name}.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    chart.save(out)
    return out
