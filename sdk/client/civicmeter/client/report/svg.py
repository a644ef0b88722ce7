"""Charts as inline SVG, drawn in Python: the page needs no script and no network to show them.

Stacked columns put a chart's categories (months) along the x axis; stacked bars give each
category (a service, a government) a row. Each shape carries a <title> with its figure, so a
pointer shows the exact value.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from html import escape

from civicmeter.client.report.figures import Chart

# Tableau 20: distinct enough for 17 governments side by side.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
WIDTH = 760
_LEFT, _RIGHT, _TOP = 70, 16, 12
_FONT = 'font-family="sans-serif" font-size="11"'


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def draw(chart: Chart, short: Callable[[Decimal], str]) -> str:
    """The chart as an <svg> element; `short` labels the value axis (e.g. ₩12M)."""
    if not chart.categories or not chart.series:
        return '<p class="empty">Nothing to show in this period.</p>'
    if chart.kind == "columns":
        return _columns(chart, short)
    return _bars(chart, short)


def _columns(chart: Chart, short: Callable[[Decimal], str]) -> str:
    plot_h = 240
    height = _TOP + plot_h + 28
    plot_w = WIDTH - _LEFT - _RIGHT
    top = _top(chart)
    slot = plot_w / len(chart.categories)
    bar = max(2.0, slot * 0.7)
    parts = _grid_y(top, plot_h, plot_w, short)
    for i, category in enumerate(chart.categories):
        x = _LEFT + i * slot + (slot - bar) / 2
        y = float(_TOP + plot_h)
        for n, (name, values) in enumerate(chart.series.items()):
            h = float(values[i] / top) * plot_h if top else 0.0
            if h <= 0:
                continue
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour(n)}"><title>{escape(name)} {escape(category)}: '
                f"{escape(short(values[i]))}</title></rect>"
            )
        parts.append(
            f'<text x="{_LEFT + i * slot + slot / 2:.1f}" y="{_TOP + plot_h + 16}" '
            f'text-anchor="middle" {_FONT}>{escape(_month_label(category, len(chart.categories)))}'
            "</text>"
        )
    return _svg(height, parts, chart)


def _bars(chart: Chart, short: Callable[[Decimal], str]) -> str:
    row = 22
    plot_h = row * len(chart.categories)
    height = _TOP + plot_h + 24
    left = 130
    plot_w = WIDTH - left - _RIGHT
    top = _top(chart)
    parts = []
    for tick in range(5):
        value = top * tick / 4
        x = left + plot_w * tick / 4
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{_TOP + plot_h}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{_TOP + plot_h + 14}" text-anchor="middle" {_FONT}>'
            f"{escape(short(value))}</text>"
        )
    for i, category in enumerate(chart.categories):
        y = _TOP + i * row + 3
        x = float(left)
        for n, (name, values) in enumerate(chart.series.items()):
            w = float(values[i] / top) * plot_w if top else 0.0
            if w <= 0:
                continue
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 6}" '
                f'fill="{colour(n)}"><title>{escape(category)} {escape(name)}: '
                f"{escape(short(values[i]))}</title></rect>"
            )
            x += w
        parts.append(
            f'<text x="{left - 6}" y="{y + row / 2 + 1:.1f}" text-anchor="end" {_FONT}>'
            f"{escape(category)}</text>"
        )
    return _svg(height, parts, chart)


def _svg(height: int, parts: list[str], chart: Chart) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(chart.title)}">'
        + "".join(parts)
        + "</svg>"
    )


def _grid_y(top: Decimal, plot_h: int, plot_w: int, short: Callable[[Decimal], str]) -> list[str]:
    lines = []
    for tick in range(5):
        y = _TOP + plot_h - plot_h * tick / 4
        lines.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>'
            f"{escape(short(top * tick / 4))}</text>"
        )
    return lines


def _top(chart: Chart) -> Decimal:
    """The value axis' top; counts get whole-number ticks (four steps)."""
    peak = max(_stack(chart, i) for i in range(len(chart.categories)))
    top = _nice(peak)
    if chart.unit == "count" and top % 4:
        top = Decimal(max(4, (int(peak) + 3) // 4 * 4))
    return top


def _stack(chart: Chart, index: int) -> Decimal:
    return sum((values[index] for values in chart.series.values()), Decimal(0))


def _nice(peak: Decimal) -> Decimal:
    """The axis top: the first of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten at or
    above the peak (each splits into four round ticks)."""
    if peak <= 0:
        return Decimal(1)
    power = Decimal(10) ** (len(str(int(peak))) - 1)
    for step in (1, Decimal("1.5"), 2, Decimal("2.5"), 3, 4, 5, 6, 8, 10):
        if peak <= power * step:
            return power * step
    return power * 10


def _month_label(month: str, count: int) -> str:
    """YYYY-MM, or MM alone when a year of months must fit under the columns."""
    return month if count <= 6 else month[2:]
