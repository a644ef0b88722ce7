"""Seat reports: which seats are held, what they cost, and whether their holders use them.

Seats come from seat_assignments, each seat's monthly fee from seat_charges (what the ledger
charged, as the catalog rated it), and use from the rollups: a seat's holder uses it on an
Asia/Seoul day with any event of the seat's service other than the "subscription" charges
(Seoul days). Month figures (seat and usage cost, active users) come from the monthly rollups,
never from raw events. Every read goes through core.store.seats.

A seat is idle on a day when its holder has not used its service on any of the `idle_days`
days up to and including that day.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from civicmeter.api.money import quantize_cost
from civicmeter.api.seoul import next_month
from civicmeter.core.store.connection import deadline_settings
from civicmeter.core.store.seats import (
    Seat,
    UseKey,
    active_users,
    last_use_days,
    live_seats,
    month_costs,
    month_fees,
    use_days,
    use_key,
)

DEFAULT_IDLE_DAYS = 30
MAX_IDLE_DAYS = 366
DIMENSIONS = {"service": "service_id", "department": "department_id"}


def month_start(day: date) -> date:
    return day.replace(day=1)


def month_end(first: date) -> date:
    return next_month(first) - timedelta(days=1)


# --- seats held on a day ---------------------------------------------------------------------


@dataclass(frozen=True)
class SeatListQuery:
    organization_id: str | None
    as_of: date  # an Asia/Seoul day
    idle_days: int
    only_idle: bool
    after: tuple[str, str] | None  # (organisation, seat id) of the last seat of the previous page
    limit: int


@dataclass(frozen=True)
class SeatStatus:
    seat: Seat
    monthly_fee: Decimal | None  # None: the month is not charged
    price_version: str
    last_used: date | None
    idle: bool


@dataclass(frozen=True)
class SeatPage:
    seats: list[SeatStatus]
    has_more: bool


def list_seats(client: Client, query: SeatListQuery, max_seconds: float | None = None) -> SeatPage:
    settings = deadline_settings(max_seconds)
    held = live_seats(client, query.organization_id, (query.as_of, query.as_of), settings)
    if query.after is not None:
        after = query.after
        held = [seat for seat in held if seat.key > after]
    if not query.only_idle:
        held = held[: query.limit + 1]  # only this page's seats need their use looked up
    last_used = last_use(client, query.organization_id, held, query.as_of, settings)
    fees = month_fees(client, month_start(query.as_of), query.organization_id, settings)
    threshold = query.as_of - timedelta(days=query.idle_days)
    statuses: list[SeatStatus] = []
    for seat in held:
        used = last_used.get(use_key(seat))
        idle = used is None or used <= threshold
        if query.only_idle and not idle:
            continue
        fee, version = fees.get(seat.key, (None, ""))
        statuses.append(SeatStatus(seat, fee, version, used, idle))
        if len(statuses) > query.limit:
            break
    return SeatPage(statuses[: query.limit], len(statuses) > query.limit)


def last_use(
    client: Client,
    organization_id: str | None,
    seats: Sequence[Seat],
    day: date,
    settings: dict[str, object] | None = None,
) -> dict[UseKey, date]:
    """The last day up to `day` on which each seat's holder used the seat's service."""
    if not seats:
        return {}
    wanted = {use_key(seat) for seat in seats}
    last = last_use_days(client, organization_id, day, settings)
    return {key: used for key, used in last.items() if key in wanted}


# --- one month per service or department -----------------------------------------------------


@dataclass
class SummaryLine:
    key: str
    seats: int = 0
    active_seats: int = 0
    seat_cost: Decimal = Decimal(0)
    usage_cost: Decimal = Decimal(0)
    active_users: int = 0

    @property
    def idle_seats(self) -> int:
        return self.seats - self.active_seats

    @property
    def cost_per_active_user(self) -> Decimal | None:
        if not self.active_users:
            return None
        return quantize_cost((self.seat_cost + self.usage_cost) / self.active_users)


@dataclass
class SeatSummary:
    lines: list[SummaryLine] = field(default_factory=list)  # ordered by key
    total: SummaryLine = field(default_factory=lambda: SummaryLine(""))


def seat_summary(
    client: Client,
    organization_id: str | None,
    month: date,
    dimension: str,
    idle_days: int,
    today: date,
    max_seconds: float | None = None,
) -> SeatSummary:
    """Seats, their use and cost in the Asia/Seoul month starting on `month`, per `dimension`
    ("service" or "department"). A seat is judged idle or active on the month's last day, the
    seat's last day or today, whichever is earliest."""
    settings = deadline_settings(max_seconds)
    column = DIMENSIONS[dimension]
    first, last = month, month_end(month)
    lines: dict[str, SummaryLine] = {}

    def line(key: str) -> SummaryLine:
        return lines.setdefault(key, SummaryLine(key))

    seats = live_seats(client, organization_id, (first, last), settings)
    days = use_days(client, organization_id, first - timedelta(days=idle_days), last, settings)
    summary = SeatSummary()
    for seat in seats:
        judged = min(last, today, seat.end or last)
        in_use = used_within(days.get(use_key(seat), []), judged, idle_days)
        for target in (line(getattr(seat, column)), summary.total):
            target.seats += 1
            target.active_seats += in_use
    for key, (seat_cost, usage_cost) in month_costs(
        client, organization_id, first, column, settings
    ).items():
        for target in (line(key), summary.total):
            target.seat_cost += seat_cost
            target.usage_cost += usage_cost
    users, everyone = active_users(client, organization_id, first, column, settings)
    for key, count in users.items():
        line(key).active_users = count
    summary.total.active_users = everyone
    summary.lines = [lines[key] for key in sorted(lines)]
    return summary


def used_within(days: Sequence[date], day: date, idle_days: int) -> bool:
    """Whether any of the sorted `days` falls in the `idle_days` days ending with `day`."""
    index = bisect.bisect_right(days, day)
    return index > 0 and days[index - 1] > day - timedelta(days=idle_days)
