"""The ledger as it is read: rated events (usage_events FINAL) and the re-rating deltas in
cost_corrections, which together give every event's cost now.

Here are the reads the query planner falls back to, the sums reconciliation compares with the
rollups, the charges of a FOCUS export, and re-rating's pages of events and record of
corrections. The sink alone writes rated
events (sink/); re-rating alone writes corrections, through `record_corrections`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client

from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.store.rollups import Rollup

CORRECTION_COLUMNS = (
    "organization_id", "department_id", "user_id", "event_id", "event_time", "service_id",
    "provider_name", "request_model", "operation_name", "purpose", "cost_delta_krw",
    "from_price_version", "to_price_version", "run_id", "corrected_time",
)  # fmt: skip
IN_RANGE = (
    "{col} >= fromUnixTimestamp64Milli(%(start_ms)s, 'UTC') "
    "AND {col} < fromUnixTimestamp64Milli(%(end_ms)s, 'UTC')"
)
_QUANTITY_SUMS = ", ".join(f"sum({q})" for q in QUANTITIES)


def as_rollup_rows(where: str, dimensions: Sequence[str]) -> str:
    """A subquery of the ledger's rows matching `where` (over event_time, the dimensions and
    organization_id), shaped like a rollup's: window_start is the event's time, each event one
    row and each re-rating delta another, which adds to cost only. Re-rating deltas carry no
    decision (denied events are never re-rated)."""
    dims = ", ".join(dimensions)
    zeros = ", ".join(f"toUInt64(0) AS {q}" for q in QUANTITIES)
    quantities = ", ".join(QUANTITIES)
    return (
        f"(SELECT event_time AS window_start, {dims}, toUInt64(1) AS events, {quantities}, "
        "toDecimal128(cost_krw, 6) AS cost_krw, toUInt64(late) AS late_events, "
        "if(late = 1, toDecimal128(cost_krw, 6), toDecimal128(0, 6)) AS late_cost_krw "
        f"FROM usage_events FINAL WHERE {where} "
        f"UNION ALL SELECT event_time AS window_start, {dims}, toUInt64(0) AS events, {zeros}, "
        "toDecimal128(cost_delta_krw, 6) AS cost_krw, toUInt64(0) AS late_events, "
        "toDecimal128(0, 6) AS late_cost_krw "
        f"FROM (SELECT *, '' AS decision FROM cost_corrections) WHERE {where})"
    )


# --- sums per organisation, for reconciliation ----------------------------------------------


def event_totals(
    client: Client, start: datetime, end: datetime, organization_id: str | None
) -> list[tuple[str, int, Decimal, tuple[int, ...]]]:
    """(organisation, events, rated cost, quantities) of the events of [start, end)."""
    params, org = _period(start, end, organization_id)
    rows = client.query(
        f"SELECT organization_id, count(), sum(toDecimal128(cost_krw, 6)), {_QUANTITY_SUMS} "
        f"FROM usage_events FINAL WHERE {IN_RANGE.format(col='event_time')}{org} "
        "GROUP BY organization_id",
        parameters=params,
    ).result_rows
    return [(str(o), int(n), Decimal(cost), _ints(rest)) for o, n, cost, *rest in rows]


def correction_totals(
    client: Client, start: datetime, end: datetime, organization_id: str | None
) -> dict[str, Decimal]:
    """Organisation -> the sum of the re-rating deltas of the events of [start, end)."""
    params, org = _period(start, end, organization_id)
    rows = client.query(
        "SELECT organization_id, sum(cost_delta_krw) FROM cost_corrections "
        f"WHERE {IN_RANGE.format(col='event_time')}{org} GROUP BY organization_id",
        parameters=params,
    ).result_rows
    return {str(o): Decimal(delta) for o, delta in rows}


def rollup_totals(
    client: Client, rollup: Rollup, start: datetime, end: datetime, organization_id: str | None
) -> list[tuple[str, int, Decimal, tuple[int, ...] | None]]:
    """(organisation, events, cost, quantities or None for a cost-only rollup) of the rollup's
    windows in [start, end), whose ends must be window starts of the rollup."""
    params, org = _period(start, end, organization_id)
    if rollup.dated:
        calendar = ZoneInfo(rollup.calendar)
        params["start_day"] = start.astimezone(calendar).date()
        params["end_day"] = end.astimezone(calendar).date()
        where = "window_start >= %(start_day)s AND window_start < %(end_day)s"
    else:
        where = IN_RANGE.format(col="window_start")
    columns = "" if rollup.cost_only else f", {_QUANTITY_SUMS}"
    rows = client.query(
        f"SELECT organization_id, sum(events), sum(cost_krw){columns} FROM {rollup.table} "
        f"WHERE {where}{org} GROUP BY organization_id",
        parameters=params,
    ).result_rows
    return [
        (str(o), int(n), Decimal(cost), None if rollup.cost_only else _ints(rest))
        for o, n, cost, *rest in rows
    ]


# --- FOCUS charges -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChargePage:
    """A page of the charges of [start, end) of the ledger, of one organisation or all, with
    the time zone its days and billing months are counted in, grouped by `columns` too."""

    start: datetime
    end: datetime
    time_zone: str
    organization_id: str | None
    columns: tuple[str, ...]  # dimension columns
    after: tuple[object, ...] | None  # the key of the previous page's last row
    limit: int


# The end of the event's billing month (a month in the page's time zone) as a DateTime.
_MONTH_END = "toDateTime(addMonths(toStartOfMonth(toDateTime({col}, %(tz)s)), 1), %(tz)s)"


def usage_charge_rows(
    client: Client, page: ChargePage, settings: dict[str, object] | None = None
) -> list[tuple[object, ...]]:
    """The page's rows of events grouped by (day in the page's zone, Asia/Seoul date, each of
    its columns, price version): (day as epoch seconds, Seoul date,
    *column values, price version, events, the sum of each quantity, the events carrying each
    quantity, cost). An event re-rated while its billing month was still open counts at its
    new cost and version: the month had not been invoiced."""
    params, tenant = _charge_params(page)
    where = f"{IN_RANGE.format(col='event_time')}{tenant}"
    keys = [f"e.{column} AS k{i}" for i, column in enumerate(page.columns)]
    sums = ", ".join(f"sum(e.{q}) AS {q}" for q in QUANTITIES)
    counts = ", ".join(f"countIf(e.{q} > 0) AS n_{q}" for q in QUANTITIES)
    order = ["day", "seoul_date", *(f"k{i}" for i in range(len(keys))), "version"]
    grouped = (
        "SELECT toUnixTimestamp(toStartOfDay(e.event_time, %(tz)s)) AS day, "
        "toDate(e.event_time, 'Asia/Seoul') AS seoul_date, "
        f"{''.join(k + ', ' for k in keys)}"
        "if(c.event_id = '', toString(e.price_version), c.version) AS version, "
        f"count() AS events, {sums}, {counts}, "
        "sum(toDecimal128(e.cost_krw, 6) + c.delta) AS cost "
        f"FROM (SELECT * FROM usage_events FINAL WHERE {where}) AS e "
        "LEFT JOIN (SELECT organization_id, event_id, sum(cost_delta_krw) AS delta, "
        "argMax(toString(to_price_version), corrected_time) AS version FROM cost_corrections "
        f"WHERE {where} AND corrected_time < {_MONTH_END.format(col='event_time')} "
        "GROUP BY organization_id, event_id) AS c "
        "ON e.organization_id = c.organization_id AND e.event_id = c.event_id "
        f"GROUP BY {', '.join(order)}"
    )
    return _page(client, grouped, order, params, page, settings)


def correction_charge_rows(
    client: Client, page: ChargePage, settings: dict[str, object] | None = None
) -> list[tuple[object, ...]]:
    """The page's rows of the re-rating deltas made in its range to closed billing months,
    grouped by (the event's day, the month the delta was made in, each of its columns, the
    version re-rated to): (day and month as epoch seconds, *column values, version, events,
    cost)."""
    params, tenant = _charge_params(page)
    where = (
        f"{IN_RANGE.format(col='corrected_time')}{tenant} "
        f"AND corrected_time >= {_MONTH_END.format(col='event_time')}"
    )
    keys = [f"{column} AS k{i}" for i, column in enumerate(page.columns)]
    order = ["day", "billed_month", *(f"k{i}" for i in range(len(keys))), "version"]
    grouped = (
        "SELECT toUnixTimestamp(toStartOfDay(event_time, %(tz)s)) AS day, "
        "toUnixTimestamp(toDateTime(toStartOfMonth(toDateTime(corrected_time, %(tz)s)), %(tz)s))"
        f" AS billed_month, {''.join(k + ', ' for k in keys)}"
        "toString(to_price_version) AS version, uniqExact(event_id) AS events, "
        "sum(cost_delta_krw) AS cost "
        f"FROM cost_corrections WHERE {where} GROUP BY {', '.join(order)}"
    )
    return _page(client, grouped, order, params, page, settings)


def _charge_params(page: ChargePage) -> tuple[dict[str, object], str]:
    params, tenant = _period(page.start, page.end, page.organization_id)
    params["tz"] = page.time_zone
    return params, tenant


def _page(
    client: Client,
    grouped: str,
    order: list[str],
    params: dict[str, object],
    page: ChargePage,
    settings: dict[str, object] | None,
) -> list[tuple[object, ...]]:
    keyset = ""
    if page.after is not None:
        names = []
        for i, value in enumerate(page.after):
            params[f"after{i}"] = value
            names.append(f"%(after{i})s")
        keyset = f"WHERE ({', '.join(order)}) > ({', '.join(names)})"
    params["limit"] = page.limit
    result = client.query(
        f"SELECT * FROM ({grouped}) {keyset} ORDER BY {', '.join(order)} LIMIT %(limit)s",
        parameters=params,
        settings=settings,
    )
    return [tuple(row) for row in result.result_rows]


# --- re-rating ---------------------------------------------------------------------------------


def events_to_rerate(
    client: Client,
    columns: Sequence[str],
    start: datetime,
    end: datetime,
    organization_id: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> list[dict[str, object]]:
    """`columns` of up to `limit` events of [start, end) in (organisation, event id) order,
    after the key `after`. Denied requests are left out: they never left, and cost 0 under any
    price."""
    params, org = _period(start, end, organization_id)
    params["limit"] = limit
    where = f"{IN_RANGE.format(col='event_time')} AND decision != 'deny'{org}"
    if after is not None:
        params["after_org"], params["after_id"] = after
        where += " AND (organization_id, event_id) > (%(after_org)s, %(after_id)s)"
    return list(
        client.query(
            f"SELECT {', '.join(columns)} FROM usage_events FINAL WHERE {where} "
            "ORDER BY organization_id, event_id LIMIT %(limit)s",
            parameters=params,
        ).named_results()
    )


def corrections_so_far(
    client: Client, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Decimal, str]]:
    """(organisation, event id) -> (sum of its deltas so far, its latest price version)."""
    rows = client.query(
        "SELECT organization_id, event_id, sum(cost_delta_krw), "
        "argMax(to_price_version, corrected_time) FROM cost_corrections "
        "WHERE organization_id IN %(orgs)s AND event_id IN %(ids)s "
        "GROUP BY organization_id, event_id",
        parameters={
            "orgs": sorted({org for org, _ in keys}),
            "ids": sorted({event_id for _, event_id in keys}),
        },
        settings={"max_query_size": 4 << 20},
    ).result_rows
    return {(str(o), str(e)): (Decimal(d), str(v)) for o, e, d, v in rows}


def record_corrections(client: Client, rows: list[list[object]], token: str) -> None:
    """Insert rows of CORRECTION_COLUMNS once: a retried insert with the same token lands once.

    Each insert needs a token of its own: the rollups' deduplication (which guards the
    ledger's blocks) must never take two of them for one."""
    client.insert(
        "cost_corrections",
        rows,
        column_names=CORRECTION_COLUMNS,
        settings={"insert_deduplication_token": token},
    )


def _period(
    start: datetime, end: datetime, organization_id: str | None
) -> tuple[dict[str, object], str]:
    params: dict[str, object] = {
        "start_ms": round(start.timestamp() * 1000),
        "end_ms": round(end.timestamp() * 1000),
    }
    if organization_id is None:
        return params, ""
    params["org"] = organization_id
    return params, " AND organization_id = %(org)s"


def _ints(values: Sequence[object]) -> tuple[int, ...]:
    return tuple(int(str(v)) for v in values)
