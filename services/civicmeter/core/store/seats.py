"""Seats in ClickHouse: the seat assignments as last loaded, the monthly charges made, and
their holders' use as the rollups keep it.

A seat is one user's subscription of one AI service, from a start date to an optional end date
(both inclusive, calendar days in Asia/Seoul). The billing service's seat ledger writes both
tables (see migration 0008_seats.sql); the query service reads them. Readers of seat_assignments
always use FINAL and `deleted = 0`, so an edited seat reads as its last version and a removed
one not at all.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import date
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from civicmeter.core.store.rollups import (
    USAGE_ROLLUP_1D,
    USAGE_ROLLUP_1MO,
    USAGE_ROLLUP_1MO_DEPARTMENTS,
)


@dataclass(frozen=True)
class Seat:
    organization_id: str
    seat_id: str
    department_id: str
    user_id: str
    provider_name: str
    service_id: str
    plan: str
    start: date
    end: date | None  # None: open-ended

    @property
    def key(self) -> tuple[str, str]:
        return (self.organization_id, self.seat_id)

    def active_on(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)

    def overlaps(self, first: date, last: date) -> bool:
        """Whether the seat is held on any day of [first, last]."""
        return self.start <= last and (self.end is None or first <= self.end)


# The operation of seat subscription charges: what tells them from metered use.
SUBSCRIPTION = "subscription"


def charge_event_id(seat_id: str, month: date) -> str:
    """The event id of a seat's charge for a month: stable, so every round writes the same."""
    return f"seat:{seat_id}:{month:%Y-%m}"


@dataclass(frozen=True)
class SeatCharge:
    """One seat's charge for one Asia/Seoul month, as stored in usage_events."""

    seat: Seat
    month: date  # the first day of the month
    event_id: str
    event_time_ms: int
    cost_krw: Decimal
    price_version: str


_SEAT_COLUMNS = (
    "organization_id", "seat_id", "department_id", "user_id", "provider_name", "service_id",
    "plan", "start_date", "end_date",
)  # fmt: skip
_CHARGE_COLUMNS = (
    "organization_id", "seat_id", "month", "event_id", "event_time", "department_id", "user_id",
    "provider_name", "service_id", "plan", "cost_krw", "price_version", "charged_time",
)  # fmt: skip
assert len(_SEAT_COLUMNS) == len(fields(Seat))


def _seat_row(seat: Seat) -> list[object]:
    return [
        seat.organization_id, seat.seat_id, seat.department_id, seat.user_id,
        seat.provider_name, seat.service_id, seat.plan, seat.start, seat.end,
    ]  # fmt: skip


def live_seats(
    client: Client,
    organization_id: str | None = None,
    held_between: tuple[date, date] | None = None,
    settings: dict[str, object] | None = None,
) -> list[Seat]:
    """The seats the last loaded seat file lists, ordered by organisation and seat id: of one
    organisation or all, and only those held on some day of [first, last] if given."""
    where, params = ["deleted = 0"], dict[str, object]()
    if organization_id is not None:
        where.append("organization_id = %(org)s")
        params["org"] = organization_id
    if held_between is not None:
        where.append("start_date <= %(last)s AND (end_date IS NULL OR end_date >= %(first)s)")
        params["first"], params["last"] = held_between
    rows = client.query(
        f"SELECT {', '.join(_SEAT_COLUMNS)} FROM seat_assignments FINAL "
        f"WHERE {' AND '.join(where)} ORDER BY organization_id, seat_id",
        parameters=params,
        settings=settings,
    ).result_rows
    return [Seat(*row) for row in rows]


@dataclass(frozen=True)
class SyncResult:
    written: int  # new or changed seats
    removed: int


def sync_seats(client: Client, seats: Sequence[Seat], version_us: int | None = None) -> SyncResult:
    """Make seat_assignments list exactly `seats`: new versions of new or changed seats, and
    tombstones of the seats no longer listed. Seats already stored as they are stay untouched."""
    version = time.time_ns() // 1000 if version_us is None else version_us
    stored = {seat.key: seat for seat in live_seats(client)}
    wanted = {seat.key: seat for seat in seats}
    rows = [[*_seat_row(s), version, 0] for k, s in wanted.items() if stored.get(k) != s]
    removed = [[*_seat_row(s), version, 1] for k, s in stored.items() if k not in wanted]
    if rows or removed:
        client.insert(
            "seat_assignments",
            rows + removed,
            column_names=(*_SEAT_COLUMNS, "updated_time", "deleted"),
        )
    return SyncResult(len(rows), len(removed))


def charged_months(client: Client) -> set[tuple[str, str, date]]:
    """(organisation, seat, month) of every charge the ledger has made."""
    rows = client.query("SELECT organization_id, seat_id, month FROM seat_charges").result_rows
    return {(str(org), str(seat), month) for org, seat, month in rows}


def record_charges(client: Client, charges: Iterable[SeatCharge], now_ms: int) -> None:
    rows = [
        [
            c.seat.organization_id, c.seat.seat_id, c.month, c.event_id, c.event_time_ms,
            c.seat.department_id, c.seat.user_id, c.seat.provider_name, c.seat.service_id,
            c.seat.plan, c.cost_krw, c.price_version, now_ms,
        ]
        for c in charges
    ]  # fmt: skip
    if rows:
        client.insert("seat_charges", rows, column_names=_CHARGE_COLUMNS)


def month_fees(
    client: Client,
    month: date,
    organization_id: str | None = None,
    settings: dict[str, object] | None = None,
) -> dict[tuple[str, str], tuple[Decimal, str]]:
    """(organisation, seat) -> (fee, price version) of the seats charged for `month`."""
    where, params = "month = %(month)s", dict[str, object](month=month)
    if organization_id is not None:
        where += " AND organization_id = %(org)s"
        params["org"] = organization_id
    rows = client.query(
        "SELECT organization_id, seat_id, argMax(cost_krw, charged_time), "
        f"argMax(price_version, charged_time) FROM seat_charges WHERE {where} "
        "GROUP BY organization_id, seat_id",
        parameters=params,
        settings=settings,
    ).result_rows
    return {(str(o), str(s)): (Decimal(cost), str(version)) for o, s, cost, version in rows}


# --- seat use, from the rollups ---------------------------------------------------------------

UseKey = tuple[str, str, str, str]  # (organisation, user, provider, service)


def use_key(seat: Seat) -> UseKey:
    """Whose use of what counts as using the seat."""
    return (seat.organization_id, seat.user_id, seat.provider_name, seat.service_id)


def last_use_days(
    client: Client,
    organization_id: str | None,
    day: date,
    settings: dict[str, object] | None = None,
) -> dict[UseKey, date]:
    """The last Asia/Seoul day up to `day` on which each user used each service: any event
    other than a subscription charge."""
    params: dict[str, object] = {"day": day, "operation": SUBSCRIPTION}
    org = _org_filter(organization_id, params)
    rows = client.query(
        "SELECT organization_id, user_id, provider_name, service_id, max(window_start) "
        f"FROM {USAGE_ROLLUP_1D.table} WHERE window_start <= %(day)s "
        f"AND operation_name != %(operation)s{org} "
        "GROUP BY organization_id, user_id, provider_name, service_id",
        parameters=params,
        settings=settings,
    ).result_rows
    return {(str(o), str(user), str(provider), str(service)): last
            for o, user, provider, service, last in rows}  # fmt: skip


def use_days(
    client: Client,
    organization_id: str | None,
    first: date,
    last: date,
    settings: dict[str, object] | None = None,
) -> dict[UseKey, list[date]]:
    """The days of [first, last] on which each user used each service, in order."""
    params: dict[str, object] = {"first": first, "last": last, "operation": SUBSCRIPTION}
    org = _org_filter(organization_id, params)
    rows = client.query(
        "SELECT DISTINCT organization_id, user_id, provider_name, service_id, window_start "
        f"FROM {USAGE_ROLLUP_1D.table} "
        "WHERE window_start >= %(first)s AND window_start <= %(last)s "
        f"AND operation_name != %(operation)s{org}",
        parameters=params,
        settings=settings,
    ).result_rows
    found: defaultdict[UseKey, list[date]] = defaultdict(list)
    for o, user, provider, service, day in rows:
        found[(str(o), str(user), str(provider), str(service))].append(day)
    for days in found.values():
        days.sort()
    return found


def month_costs(
    client: Client,
    organization_id: str | None,
    month: date,
    column: str,
    settings: dict[str, object] | None = None,
) -> dict[str, tuple[Decimal, Decimal]]:
    """Value of `column` (a dimension of the monthly rollups) -> (seat charges, other use) in
    the Asia/Seoul month starting on `month`."""
    params: dict[str, object] = {"month": month, "operation": SUBSCRIPTION}
    org = _org_filter(organization_id, params)
    rows = client.query(
        f"SELECT {column}, sumIf(cost_krw, operation_name = %(operation)s), "
        "sumIf(cost_krw, operation_name != %(operation)s) "
        f"FROM {USAGE_ROLLUP_1MO_DEPARTMENTS.table} "
        f"WHERE window_start = %(month)s{org} GROUP BY {column}",
        parameters=params,
        settings=settings,
    ).result_rows
    return {str(key): (Decimal(seats), Decimal(use)) for key, seats, use in rows}


def active_users(
    client: Client,
    organization_id: str | None,
    month: date,
    column: str,
    settings: dict[str, object] | None = None,
) -> tuple[dict[str, int], int]:
    """The users who used any service in the Asia/Seoul month starting on `month` (other than
    by being charged a seat): per value of `column`, and over all values, each user once."""
    params: dict[str, object] = {"month": month, "operation": SUBSCRIPTION}
    org = _org_filter(organization_id, params)
    used = (
        f"FROM {USAGE_ROLLUP_1MO.table} WHERE window_start = %(month)s "
        f"AND operation_name != %(operation)s{org}"
    )
    per_key = client.query(
        f"SELECT {column}, uniqExact(organization_id, user_id) {used} GROUP BY {column}",
        parameters=params,
        settings=settings,
    ).result_rows
    everyone = client.query(
        f"SELECT uniqExact(organization_id, user_id) {used}", parameters=params, settings=settings
    ).result_rows
    return {str(key): int(n) for key, n in per_key}, int(everyone[0][0]) if everyone else 0


def _org_filter(organization_id: str | None, params: dict[str, object]) -> str:
    if organization_id is None:
        return ""
    params["org"] = organization_id
    return " AND organization_id = %(org)s"
