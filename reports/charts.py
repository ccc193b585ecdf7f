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


@dataclass(frozen=True)
class Line:
    """One series of a line chart: points ``(x, value, low, high)`` and an optional reference value (dashed)."""

    label: str
    points: Sequence[tuple[float, float, float, float]]
    reference: float | None = None


def line_chart(title: str, x_label: str, lines: Sequence[Line], unit: str = "%") -> Markup:
    """Lines with their 95% bands (shaded), a dot per point with its value, dashed reference lines, and a legend."""
    plot_height, left, bottom_gap = 180, 60, 40
    width = left + PLOT_WIDTH + 150
    height = plot_height + bottom_gap + 8
    xs = [p[0] for line in lines for p in line.points] or [0.0]
    ys = [v for line in lines for p in line.points for v in p[1:] if not math.isnan(v)]
    ys += [line.reference for line in lines if line.reference is not None and not math.isnan(line.reference)]
    y_low, y_high = min([0.0, *ys]), max([1.0, *ys])
    x_low, x_high = min(xs), max(xs)
    x_span, y_span = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0
    px = lambda x: left + (x - x_low) / x_span * PLOT_WIDTH
    py = lambda y: 8 + (y_high - y) / y_span * plot_height
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             f"<title>{escape(title)}</title>"]
    for tick in (0, 0.5, 1.0):
        value = y_low + tick * y_span
        parts.append(f'<text class="axis" x="{left - 6}" y="{py(value) + 4:.1f}" text-anchor="end">{_fmt(value)}{unit}</text>')
        parts.append(f'<line class="grid" x1="{left}" x2="{left + PLOT_WIDTH}" y1="{py(value):.1f}" y2="{py(value):.1f}"/>')
    for i, line in enumerate(lines):
        css = f"s{i % 8}"
        pts = sorted(line.points)
        if len(pts) > 1:
            band = [(px(x), py(hi)) for x, _, _, hi in pts] + [(px(x), py(lo)) for x, _, lo, _ in reversed(pts)]
            parts.append(f'<polygon class="{css} band" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in band)}"/>')
            parts.append(f'<polyline class="{css} curve" fill="none" points="{" ".join(f"{px(x):.1f},{py(v):.1f}" for x, v, _, _ in pts)}"/>')
        for x, v, lo, hi in pts:
            parts.append(f'<circle class="{css} dot" cx="{px(x):.1f}" cy="{py(v):.1f}" r="3"><title>{escape(line.label)} · '
                         f"{escape(x_label)} {x:g}: {_fmt(v)}{unit} [{_fmt(lo)}, {_fmt(hi)}]</title></circle>")
        if line.reference is not None and not math.isnan(line.reference):
            y = py(line.reference)
            parts.append(f'<line class="{css} reference" x1="{left}" x2="{left + PLOT_WIDTH}" y1="{y:.1f}" y2="{y:.1f}">'
                         f"<title>{escape(line.label)} on the fresh model: {_fmt(line.reference)}{unit}</title></line>")
        legend_y = 14 + i * 16
        parts.append(f'<rect class="{css}" x="{left + PLOT_WIDTH + 12}" y="{legend_y - 9}" width="10" height="10"/>'
                     f'<text class="axis" x="{left + PLOT_WIDTH + 26}" y="{legend_y}">{escape(line.label)}</text>')
    axis_y = 8 + plot_height
    parts.append(f'<line class="axis-line" x1="{left}" x2="{left + PLOT_WIDTH}" y1="{axis_y}" y2="{axis_y}"/>')
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        value = x_low + tick * x_span
        parts.append(f'<text class="axis" x="{px(value):.0f}" y="{axis_y + 14}" text-anchor="middle">{value:.0f}</text>')
    parts.append(f'<text class="axis" x="{left + PLOT_WIDTH / 2}" y="{axis_y + 30}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
