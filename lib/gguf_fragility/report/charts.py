"""Altair charts that render offline: inline SVG in notebooks and the site, SVG files on disk.

Altair's default HTML renderer loads vega from a CDN, which a published offline page
cannot do; vl-convert turns the spec into SVG locally.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt

from gguf_fragility.layout import RunLayout

# vl-convert sizes a chart with the widths of its text in this font, and a browser draws it
# in the same one (Debian's fonts-dejavu-core, installed with chromium): with the generic
# "sans-serif" the browser's wider face ran legends past the chart's right edge.
FONT = "DejaVu Sans"


@alt.theme.register("gguf_fragility", enable=False)
def _theme() -> alt.theme.ThemeConfig:
    """The charts' font (:data:`FONT`) and room between legend entries."""
    return {"config": {"font": FONT, "legend": {"columnPadding": 16}}}


def use_svg() -> None:
    """Render charts as inline SVG (no JavaScript, no network) in the site's font."""
    alt.renderers.enable("svg")
    alt.data_transformers.disable_max_rows()
    alt.theme.enable("gguf_fragility")


def save(chart: alt.TopLevelMixin, name: str, run: RunLayout) -> Path:
    """Write ``chart`` as ``outputs/<profile>/figures/<name>.svg`` and return the path."""
    out = run.figures_dir / f"{name}.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    chart.save(out)
    return out


WIDTH, ROW_HEIGHT = 330, 44  # px of the effects chart's plot, per family row


def effects_chart(df, *, margin_pp: float, verdicts) -> alt.FacetChart:
    """
    One model's change per family (rows) and rung (placed by real bits per weight).

    Parameters
    ----------
    df : pandas.DataFrame
        ``family, rung, bpw, change, low, high`` (points) and ``verdict`` (a label of
        ``verdicts``).
    margin_pp : float
        Equivalence margin, drawn as a band around zero.
    verdicts : sequence of (label, colour, shape)
        The legend, in order (:data:`gguf_fragility.report.landing.VERDICTS`).

    Returns
    -------
    altair.FacetChart
        Its legend below the plot, so that it never runs past a narrow column.
    """
    use_svg()
    rungs = df.drop_duplicates("rung").sort_values("bpw")
    names = " : ".join(f"datum.value == {b!r} ? ['{r}', '{b:.2f}']"
                       for r, b in zip(rungs["rung"], rungs["bpw"], strict=True))
    lo, hi = float(rungs["bpw"].min()), float(rungs["bpw"].max())
    pad = max(0.4, 0.08 * (hi - lo))
    x = alt.X("bpw:Q", title="rung and real bits per weight",
              scale=alt.Scale(domain=[lo - pad, hi + pad], nice=False, zero=False),
              axis=alt.Axis(values=rungs["bpw"].tolist(), labelExpr=f"{names} : ''",
                            grid=False, labelFontSize=11))
    labels = [v[0] for v in verdicts]
    colour = alt.Color("verdict:N", title=None, scale=alt.Scale(
        domain=labels, range=[v[1] for v in verdicts]),
        legend=alt.Legend(orient="bottom", direction="horizontal", columns=2, labelLimit=0,
                          labelFontSize=11))  # two columns: as wide as the plot, not wider
    shape = alt.Shape("verdict:N", title=None, scale=alt.Scale(
        domain=labels, range=[v[2] for v in verdicts]))
    y = alt.Y("change:Q", title=None, axis=alt.Axis(tickCount=3, grid=False, labelFontSize=10))
    base = alt.Chart(df)
    band = base.transform_aggregate(n="count()", groupby=["family"]).mark_rect(
        color="#2e7d32", opacity=0.1).encode(y=alt.datum(-margin_pp), y2=alt.datum(margin_pp))
    zero = base.transform_aggregate(n="count()", groupby=["family"]).mark_rule(
        color="#555", strokeWidth=0.7).encode(y=alt.datum(0))
    bars = base.mark_rule(strokeWidth=2).encode(x=x, y=alt.Y("low:Q", title=None), y2="high:Q",
                                                color=colour)
    dots = base.mark_point(filled=True, size=55, opacity=1).encode(
        x=x, y=y, color=colour, shape=shape,
        tooltip=["family", "rung", alt.Tooltip("change:Q", format=".1f"), "verdict"])
    name = base.transform_aggregate(n="count()", groupby=["family"]).mark_text(
        align="right", baseline="bottom", fontSize=11, fontWeight="bold", color="#333").encode(
        text="family:N", x=alt.value(WIDTH - 3), y=alt.value(ROW_HEIGHT - 2))
    return (alt.layer(band, zero, bars, dots, name).properties(width=WIDTH, height=ROW_HEIGHT)
            .facet(row=alt.Row("family:N", title=None, header=alt.Header(labels=False)),
                   spacing=4)
            .properties(title=alt.Title("accuracy change against the reference (points)",
                                        fontSize=12, fontWeight="normal", anchor="start"))
            .configure_view(stroke="#ddd"))
