"""The console's charts as SVG drawn on the server by pygal: no script reaches the browser
(pygal's tooltip script, which it would load from the web, is switched off)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

import pygal
from pygal.style import Style

from cds_hooks.console.rates import Rate

_STYLE = Style(
    background="white",
    plot_background="white",
    font_family="DejaVu Sans, Arial, sans-serif",
    colors=("#1f6feb", "#d1242f", "#bf8700", "#1a7f37", "#8250df", "#57606a", "#0a7ea4"),
)
_COMMON = {
    "js": [],
    "style": _STYLE,
    "width": 900,
    "height": 380,
    "explicit_size": True,  # width and height on the <svg>: the <img> keeps its proportions
    "no_data_text": "No feedback for these filters",
    "legend_at_bottom": True,
    "truncate_legend": 40,
}


def override_rate_chart(weekly: Mapping[str, Mapping[date, Rate]]) -> bytes:
    """Override rate (percent) per week, one line per topic or rule; a week with no
    answered card is a gap, not zero."""
    weeks = sorted({week for series in weekly.values() for week in series})
    chart = pygal.Line(
        title="Override rate per week (%)",
        x_title="week starting (UTC)",
        range=(0, 100),
        x_label_rotation=30,
        show_minor_x_labels=len(weeks) <= 16,
        x_labels_major_count=16,
        allow_interruptions=True,
        **_COMMON,
    )
    chart.x_labels = [week.isoformat() for week in weeks]
    for name, series in weekly.items():
        values = []
        for week in weeks:
            rate = series.get(week)
            share = rate.override_rate if rate is not None else None
            values.append(None if share is None else round(100 * share, 1))
        chart.add(name, values)
    rendered: bytes = chart.render()
    return rendered


def reasons_chart(reasons: Sequence[tuple[str, int]]) -> bytes:
    """How often each override reason was given, most given first."""
    chart = pygal.HorizontalBar(title="Override reasons given", show_legend=False, **_COMMON)
    chart.x_labels = [label for label, _ in reversed(reasons)]
    chart.add("overrides", [count for _, count in reversed(reasons)])
    rendered: bytes = chart.render()
    return rendered
