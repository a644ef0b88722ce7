"""The report as one self-contained HTML page: inline SVG charts, inline CSS, no script and
nothing fetched. Next to each chart its figures are printed in a table a reader (or a test)
can read: each cell's data-value holds the exact figure, its text the formatted one."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from html import escape

from civicmeter.client.report import svg
from civicmeter.client.report.figures import Chart, Headline, Report, Unit

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1100px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 32px; }
.headlines { display: flex; flex-wrap: wrap; gap: 12px; padding: 0; }
.headlines div { border: 1px solid #ccc; border-radius: 6px; padding: 8px 14px; }
.headlines dt { font-size: 12px; color: #555; } .headlines dd { margin: 0; font-size: 18px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; margin: 4px 0; }
.legend i { display: inline-block; width: 11px; height: 11px; margin-right: 4px; }
.scroll { overflow-x: auto; }
table.figures { border-collapse: collapse; font-size: 12px; margin-top: 8px; }
table.figures th, table.figures td { border: 1px solid #ddd; padding: 2px 6px; }
table.figures td { text-align: right; white-space: nowrap; }
.note { font-size: 12px; color: #555; }
"""


def krw(value: Decimal) -> str:
    """Won as people read them: ₩1,234,567 (rounded half up to the won)."""
    won = value.quantize(Decimal(1), rounding=ROUND_HALF_UP) + 0  # + 0: no "-0"
    return f"-₩{-won:,}" if won < 0 else f"₩{won:,}"


def short_krw(value: Decimal) -> str:
    """An axis label: ₩12.5M, ₩800K, ₩950."""
    for size, suffix in ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(1000), "K")):
        if abs(value) >= size:
            return f"₩{float(value / size):,.4g}{suffix}"
    return krw(value)


def figure(value: Decimal | None, unit: Unit) -> str:
    if value is None:
        return "-"
    return krw(value) if unit == "krw" else f"{value:,}"


def render(report: Report) -> str:
    """The whole page."""
    body = [f"<h1>{escape(report.title)}</h1>", _headlines(report.headlines)]
    body += [_section(chart) for chart in report.charts]
    body.append(
        f'<p class="note">Months in {escape(report.time_zone)}; money in KRW, exact figures '
        "in each cell's data-value. From the civicmeter query API.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(report.title)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def _headlines(headlines: tuple[Headline, ...]) -> str:
    items = "".join(
        f'<div><dt>{escape(h.label)}</dt><dd data-figure="{h.id}" '
        f'data-value="{"" if h.value is None else h.value}">{figure(h.value, h.unit)}</dd></div>'
        for h in headlines
    )
    return f'<dl class="headlines">{items}</dl>'


def _section(chart: Chart) -> str:
    short = short_krw if chart.unit == "krw" else (lambda v: f"{float(v):,.6g}")
    legend = ""
    if len(chart.series) > 1:
        legend = '<div class="legend">' + "".join(
            f'<span><i style="background:{svg.colour(n)}"></i>{escape(name)}</span>'
            for n, name in enumerate(chart.series)
        ) + "</div>"  # fmt: skip
    note = f'<p class="note">{escape(chart.note)}</p>' if chart.note else ""
    return (
        f'<section id="{chart.id}"><h2>{escape(chart.title)}</h2>{note}'
        f"{svg.draw(chart, short)}{legend}{_table(chart)}</section>"
    )


def _table(chart: Chart) -> str:
    if not chart.categories or not chart.series:
        return ""
    head = "".join(f"<th>{escape(c)}</th>" for c in chart.categories)
    rows = []
    for name, values in chart.series.items():
        cells = "".join(
            f'<td data-category="{escape(c)}" data-value="{v}">{figure(v, chart.unit)}</td>'
            for c, v in zip(chart.categories, values, strict=True)
        )
        if chart.summable:
            total = chart.total(name)
            cells += (
                f'<td data-category="total" data-value="{total}">{figure(total, chart.unit)}</td>'
            )
        rows.append(f'<tr data-series="{escape(name)}"><th>{escape(name)}</th>{cells}</tr>')
    if chart.summable:
        head += "<th>total</th>"
    return (
        f'<div class="scroll"><table class="figures" data-chart="{chart.id}">'
        f"<tr><th></th>{head}</tr>{''.join(rows)}</table></div>"
    )
