"""What a report shows, gathered from the query API through the client: each chart's figures
(exact Decimal KRW or counts per category and series) and the headline figures."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from civicmeter.client._client import CivicmeterClient
from civicmeter.client._seats import SeatSummary
from civicmeter.client._usage import UsageReport

Unit = Literal["krw", "count"]
ChartKind = Literal["columns", "bars"]  # stacked columns over months; stacked bars per key


@dataclass(frozen=True)
class Chart:
    id: str  # the figures table's data-chart
    title: str
    kind: ChartKind
    unit: Unit
    categories: tuple[str, ...]  # months (YYYY-MM) for columns, keys for bars
    series: dict[str, tuple[Decimal, ...]]  # name -> a value per category
    note: str = ""
    summable: bool = True  # whether a series' total means anything (a sum of ratios does not)

    def total(self, name: str) -> Decimal:
        return sum(self.series[name], Decimal(0))


@dataclass(frozen=True)
class Headline:
    id: str  # the figure's data-figure
    label: str
    unit: Unit
    value: Decimal | None  # None: nothing to divide by


@dataclass(frozen=True)
class Report:
    title: str
    organization_id: str  # "" for every organisation the caller sees
    months: tuple[str, ...]
    time_zone: str
    headlines: tuple[Headline, ...]
    charts: tuple[Chart, ...]


def months_between(first: date, last: date) -> list[date]:
    """The first days of the months from `first`'s to `last`'s, both included."""
    months, current = [], first.replace(day=1)
    while current <= last:
        months.append(current)
        current = next_month(current)
    return months


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


async def gather(
    api: CivicmeterClient,
    first: date,
    last: date,
    *,
    organization_id: str = "",
    time_zone: str = "Asia/Seoul",
    names: Mapping[str, str] | None = None,
) -> Report:
    """The report of the months `first` to `last` (both included, in the time zone) of one
    organisation, or of every organisation the caller sees when organization_id is ""."""
    tz = ZoneInfo(time_zone)
    months = months_between(first, last)
    labels = tuple(f"{m:%Y-%m}" for m in months)
    start = datetime(months[0].year, months[0].month, 1, tzinfo=tz)
    after = next_month(months[-1])
    end = datetime(after.year, after.month, 1, tzinfo=tz)
    by_org, by_service = [
        await api.usage(start, end, group_by=[dimension], granularity="month",
                        time_zone=time_zone, organization_id=organization_id)
        for dimension in ("organization", "service")
    ]  # fmt: skip
    # Requests the gateway guard refused: metered (at no cost) with the decision "deny".
    blocked = await api.usage(start, end, group_by=["organization"], granularity="month",
                              filters={"decision": ["deny"]}, time_zone=time_zone,
                              organization_id=organization_id)  # fmt: skip
    organizations = sorted({line.group["organization"] for line in by_org.lines})
    seats = await api.seat_summary(months[-1], "service", organization_id=organization_id)
    per_org: dict[str, SeatSummary] = {}
    if len(organizations) > 1:
        for org in organizations:
            per_org[org] = await api.seat_summary(months[-1], "service", organization_id=org)
    alerts: Counter[tuple[str, str]] = Counter()
    # ListAlerts has no time range: every alert is read, those first seen in a month counted.
    async for alert in api.alerts(organization_id=organization_id, page_size=1000):
        month = alert.first_seen_time.ToDatetime(tzinfo=tz).strftime("%Y-%m")
        if month in labels:
            alerts[alert.alert_type, month] += 1

    shown = dict(names or {})
    seat_month = labels[-1]
    charts = [
        _monthly("spend-by-organization", "Monthly spend per government", by_org,
                 "organization", labels, tz, shown),
        _monthly("spend-by-service", "Monthly spend per service", by_service, "service",
                 labels, tz, {}),
        _seats_chart(seats, seat_month),
        _per_active_user(seats, per_org, seat_month, shown),
        _alerts_chart(alerts, labels),
        _monthly("blocked-requests", "Blocked requests per month", blocked, "organization",
                 labels, tz, shown, unit="count"),
    ]  # fmt: skip
    total = seats.total
    headlines = (
        Headline("spend", "Spend", "krw", by_org.total_krw),
        Headline("events", "Metered events", "count", Decimal(by_org.event_count)),
        Headline("services", "Services used", "count",
                 Decimal(len({line.group["service"] for line in by_service.lines}))),
        Headline("seats", f"Seats in {seat_month}", "count", Decimal(total.seats)),
        Headline("idle-seats", f"Idle seats in {seat_month}", "count", Decimal(total.idle_seats)),
        Headline("active-users", f"Active users in {seat_month}", "count",
                 Decimal(total.active_users)),
        Headline("cost-per-active-user", f"Cost per active user in {seat_month}", "krw",
                 total.cost_per_active_user_krw),
        Headline("alerts", "Alerts raised", "count", Decimal(sum(alerts.values()))),
        Headline("blocked", "Requests blocked", "count", Decimal(blocked.event_count)),
    )  # fmt: skip
    scope = shown.get(organization_id, organization_id) or "All governments"
    period = labels[0] if len(labels) == 1 else f"{labels[0]} to {labels[-1]}"
    return Report(
        f"civicmeter report: {scope}, {period}",
        organization_id,
        labels,
        time_zone,
        headlines,
        tuple(charts),
    )


def _monthly(
    chart_id: str,
    title: str,
    report: UsageReport,
    dimension: str,
    labels: Sequence[str],
    tz: ZoneInfo,
    names: Mapping[str, str],
    unit: Unit = "krw",
) -> Chart:
    """Cost (or events) per month stacked by the dimension's values, largest series first."""
    cells: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for line in report.lines:
        assert line.bucket_start is not None  # asked with a granularity
        month = line.bucket_start.astimezone(tz).strftime("%Y-%m")
        key = names.get(line.group[dimension], line.group[dimension])
        value = line.cost_krw if unit == "krw" else Decimal(line.event_count)
        cells[key][month] = cells[key].get(month, Decimal(0)) + value
    order = sorted(cells, key=lambda k: (-sum(cells[k].values(), Decimal(0)), k))
    series = {k: tuple(cells[k].get(m, Decimal(0)) for m in labels) for k in order}
    return Chart(chart_id, title, "columns", unit, tuple(labels), series)


def _seats_chart(seats: SeatSummary, month: str) -> Chart:
    lines = [line for line in seats.lines if line.seats]  # metered services hold no seats
    keys = tuple(line.key for line in lines)
    return Chart(
        "seats-by-service",
        f"Seats and idle seats per service, {month}",
        "bars",
        "count",
        keys,
        {
            "in use": tuple(Decimal(line.seats - line.idle_seats) for line in lines),
            "idle": tuple(Decimal(line.idle_seats) for line in lines),
        },
        "idle: no use of the service in the last 30 days",
    )


def _per_active_user(
    seats: SeatSummary, per_org: Mapping[str, SeatSummary], month: str, names: Mapping[str, str]
) -> Chart:
    """Seat fees and metered use per active user: per government when there are several,
    per service otherwise; a key without an active user is left out."""
    if per_org:
        pairs = [(names.get(org, org), s.total.cost_per_active_user_krw)
                 for org, s in per_org.items()]  # fmt: skip
        what = "government"
    else:
        pairs = [(line.key, line.cost_per_active_user_krw) for line in seats.lines]
        what = "service"
    shown = sorted(((k, v) for k, v in pairs if v is not None), key=lambda kv: (-kv[1], kv[0]))
    return Chart(
        f"cost-per-active-user-by-{what}",
        f"Cost per active user per {what}, {month}",
        "bars",
        "krw",
        tuple(k for k, _ in shown),
        {"KRW per active user": tuple(v for _, v in shown)},
        "seat fees and metered use of the month over the users who used a service",
        summable=False,
    )


def _alerts_chart(alerts: Counter[tuple[str, str]], labels: Sequence[str]) -> Chart:
    types = sorted({t for t, _ in alerts}, key=lambda t: (-sum(
        n for (k, _), n in alerts.items() if k == t), t))  # fmt: skip
    return Chart(
        "alerts-by-type",
        "Alerts by type and month",
        "columns",
        "count",
        tuple(labels),
        {t: tuple(Decimal(alerts[t, m]) for m in labels) for t in types},
        "by the month an alert was first seen",
    )
