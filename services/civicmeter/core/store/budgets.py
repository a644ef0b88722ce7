"""Budget spend as the rollups hold it: what core.budgets computes statuses and forecasts from.

Spend as of a moment counts every event up to the end of the moment's hour, read at the
coarsest level that covers each part exactly: the whole months before the moment's month
(Seoul months without users), the whole days of the month before its day (Seoul days), and the
moment's day hour by hour (UTC hours). Seat charges are told apart from metered use by row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from civicmeter.api.seoul import SEOUL
from civicmeter.core.budgets import ORGANIZATION, Ledger, Spend, seoul_midnight
from civicmeter.core.store.connection import deadline_settings
from civicmeter.core.store.rollups import (
    USAGE_ROLLUP_1D,
    USAGE_ROLLUP_1H,
    USAGE_ROLLUP_1MO_DEPARTMENTS,
    Rollup,
)

# A rollup row is a seat charge when it counts seat-months or belongs to a subscription
# (re-rating deltas of a seat charge carry its operation, not its seat-months).
_SEAT = "operation_name = 'subscription' OR seat_months > 0"


def load_ledger(
    client: Client,
    as_of: datetime,
    organization_id: str | None = None,
    lookback_days: int = 7,
    max_seconds: float | None = None,
) -> Ledger:
    """The spend around `as_of` that budget statuses need: the months since the start of the
    previous year, the days of this month and of the run-rate's window, and as_of's day by the
    hour. `max_seconds` bounds each ClickHouse query (a caller's remaining deadline)."""
    through = _hour_ceiling(as_of)
    local = as_of.astimezone(SEOUL)
    day = local.date()
    month_start = day.replace(day=1)
    days_from = min(month_start, (day - timedelta(days=lookback_days)).replace(day=1))
    params: dict[str, object] = {
        "months_from": date(day.year - 1, 1, 1),
        "month": month_start,
        "days_from": days_from,
        "day": day,
        "day_start_ms": _millis(seoul_midnight(day)),
        "through_ms": _millis(through),
    }
    where_org = ""
    if organization_id is not None:
        where_org = " AND organization_id = %(org)s"
        params["org"] = organization_id
    settings = deadline_settings(max_seconds)
    sums = f"sum(cost_krw), sumIf(cost_krw, {_SEAT})"

    def rows(rollup: Rollup, where: str, by_window: bool) -> list[Sequence[object]]:
        window = ", window_start" if by_window else ""
        return list(
            client.query(
                f"SELECT organization_id, department_id{window}, {sums} FROM {rollup.table} "
                f"WHERE {where}{where_org} GROUP BY organization_id, department_id{window}",
                parameters=params,
                settings=settings,
            ).result_rows
        )

    months = _by_scope(
        rows(
            USAGE_ROLLUP_1MO_DEPARTMENTS,
            "window_start >= %(months_from)s AND window_start < %(month)s",
            by_window=True,
        )
    )
    days = _by_scope(
        rows(
            USAGE_ROLLUP_1D,
            "window_start >= %(days_from)s AND window_start < %(day)s",
            by_window=True,
        )
    )
    today = _by_scope(
        rows(
            USAGE_ROLLUP_1H,
            "window_start >= fromUnixTimestamp64Milli(%(day_start_ms)s, 'UTC') "
            "AND window_start < fromUnixTimestamp64Milli(%(through_ms)s, 'UTC')",
            by_window=False,
        )
    )
    return Ledger(
        as_of=as_of,
        through=through,
        month_start=month_start,
        day=day,
        days_from=days_from,
        months=months,
        days=days,
        today={(org, dept): spend for (org, dept, *_), spend in today.items()},
    )


def _by_scope(rows: list[Sequence[object]]) -> dict[tuple[str, str, date], Spend]:
    """Rows of (organisation, department, [window,] total, seats), each kept under its
    department and added up under ORGANIZATION."""
    found: dict[tuple[str, str, date], Spend] = defaultdict(Spend)
    for row in rows:
        org, department, *window, total, seats = row
        spend = Spend(Decimal(str(total)), Decimal(str(seats)))
        when = window[0] if window else date.min
        assert isinstance(when, date)
        for scope in (str(department), ORGANIZATION):
            found[(str(org), scope, when)] += spend
    return dict(found)


def _hour_ceiling(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    floor = utc.replace(minute=0, second=0, microsecond=0)
    return floor if floor == utc else floor + timedelta(hours=1)


def _millis(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)
