"""Inline SVG charts: no network, no JavaScript library, readable in print and dark mode.

Colours come from CSS classes (``s0`` .. ``s7``, defined in the page's style
for light and dark schemes) and text uses ``currentColor``, so the page's
colour scheme applies. Every label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

LABEL_WIDTH, PLOT_WIDTH, VALUE_WIDTH = 190, 420, 60
BAR_HEIGHT, GROUP_GAP = 12, 10


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | None]  # one per category, in %; None when absent


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def _finish(parts: list[str], axis_y: float, low: float, span: float, unit: str) -> Markup:
    """The x axis (five ticks from ``low`` to ``low + span``) and the closing tag."""
    parts.append(f'<line class="axis-line" x1="{LABEL_WIDTH}" x2="{LABEL_WIDTH + PLOT_WIDTH}" y1="{axis_y}" y2="{axis_y}"/>')
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = LABEL_WIDTH + tick * PLOT_WIDTH
        label = _fmt(low + tick * span).removesuffix(".0")
        parts.append(f'<text class="axis" x="{x:.0f}" y="{axis_y + 14}" text-anchor="middle">{label}{unit}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(title: str, categories: Sequence[str], series: Sequence[Series], unit: str = "%", limit: float = 100.0) -> Markup:
    """Horizontal grouped bars: one group per category, one bar per series (scale 0..limit)."""
    present = lambda v: v is not None and not math.isnan(v)
    rows = [(c, [(i, s) for i, s in enumerate(series) if present(s.values[c])]) for c in range(len(categories))]
    rows = [(c, bars) for c, bars in rows if bars]  # a bar per series that has a value; empty categories left out
    height = sum(len(bars) * BAR_HEIGHT + GROUP_GAP for _, bars in rows) + 28
    width = LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             f"<title>{escape(title)}</title>"]
    y = 4
    for c, bars in rows:
        category = categories[c]
        group_height = len(bars) * BAR_HEIGHT
        parts.append(f'<text class="axis" x="{LABEL_WIDTH - 8}" y="{y + group_height / 2 + 4}" text-anchor="end">{escape(category)}</text>')
        for slot, (i, s) in enumerate(bars):
            value = float(s.values[c])
            bar_y = y + slot * BAR_HEIGHT
            length = max(0.0, min(value, limit)) / limit * PLOT_WIDTH
            parts.append(f'<rect class="s{i % 8}" x="{LABEL_WIDTH}" y="{bar_y + 1}" width="{length:.1f}" height="{BAR_HEIGHT - 2}">'
                         f"<title>{escape(s.label)} · {escape(category)}: {_fmt(value)}{unit}</title></rect>")
            parts.append(f'<text class="value" x="{LABEL_WIDTH + length + 4:.1f}" y="{bar_y + BAR_HEIGHT - 2}">{_fmt(value)}</text>')
        y += group_height + GROUP_GAP
    return _finish(parts, y + 2, 0.0, limit, unit)


def strip_plot(title: str, rows: Sequence[tuple[str, Sequence[float], int]], low: float, high: float, unit: str = "") -> Markup:
    """One band per row ``(label, values, series index)``: a dot per case (spread vertically by a fixed
    pattern) in the series' colour, and the median as a bar."""
    band = 26
    height = len(rows) * band + 28
    width = LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH
    span = (high - low) or 1.0
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             f"<title>{escape(title)}</title>"]
    for r, (label, values, series) in enumerate(rows):
        top = 4 + r * band
        parts.append(f'<text class="axis" x="{LABEL_WIDTH - 8}" y="{top + band / 2 + 4}" text-anchor="end">{escape(label)}</text>')
        clean = sorted(v for v in values if v is not None and not math.isnan(v))
        for i, v in enumerate(clean):
            x = LABEL_WIDTH + (min(max(v, low), high) - low) / span * PLOT_WIDTH
            jitter = ((i * 7919) % 11) / 10 * (band - 10) + 5
            parts.append(f'<circle class="s{series % 8} dot" cx="{x:.1f}" cy="{top + jitter:.1f}" r="2.5"><title>{_fmt(v)}{unit}</title></circle>')
        if clean:
            median = clean[len(clean) // 2] if len(clean) % 2 else (clean[len(clean) // 2 - 1] + clean[len(clean) // 2]) / 2
            x = LABEL_WIDTH + (min(max(median, low), high) - low) / span * PLOT_WIDTH
            parts.append(f'<line class="median" x1="{x:.1f}" x2="{x:.1f}" y1="{top + 1}" y2="{top + band - 3}"/>')
            parts.append(f'<text class="value" x="{LABEL_WIDTH + PLOT_WIDTH + 6}" y="{top + band / 2 + 4}">med {_fmt(median)}</text>')
    return _finish(parts, 4 + len(rows) * band + 2, low, span, unit)
