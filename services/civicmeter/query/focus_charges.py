"""The charges of a FOCUS export, read from the ledger (usage_events and cost_corrections).

Unlike the rollups, the ledger keeps the price version that rated each event, which a FOCUS
line needs to name its SKU price and unit price. Two kinds of charges:

- usage: events grouped by day (in the export's time zone), Seoul date (the FX date), the
  export's dimensions and price version. An event re-rated while its billing month was still
  open counts at its new cost and version: the month had not been invoiced.
- corrections: re-rating deltas made after the event's billing month closed, grouped by the
  event's day, the month the delta was made in, the dimensions and the version re-rated to.
  The export's range selects them by when they were made: a month's export carries the
  corrections invoiced in it.

Both are read a page at a time after the previous page's last key, in one stable order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.store.connection import deadline_settings
from civicmeter.query.usage import DIMENSIONS, UsageQuery

# The end of the event's billing month (a month in the export's time zone) as a DateTime.
_MONTH_END = "toDateTime(addMonths(toStartOfMonth(toDateTime({col}, %(tz)s)), 1), %(tz)s)"
_IN_RANGE = (
    "{col} >= fromUnixTimestamp64Milli(%(start_ms)s, 'UTC') "
    "AND {col} < fromUnixTimestamp64Milli(%(end_ms)s, 'UTC')"
)


@dataclass(frozen=True)
class UsageCharge:
    day: datetime  # start of the charge day, UTC
    seoul_date: date  # the date FX rates are taken on
    keys: tuple[str, ...]  # values of the export's dimensions, in their order
    price_version: str
    events: int
    quantities: dict[str, int]  # Usage field -> sum
    events_with: dict[str, int]  # Usage field -> events that carry it
    cost: Decimal

    def sort_key(self) -> tuple[object, ...]:
        return (int(self.day.timestamp()), self.seoul_date, *self.keys, self.price_version)


@dataclass(frozen=True)
class CorrectionCharge:
    day: datetime  # start of the corrected events' charge day, UTC
    billed_month: datetime  # start of the month the correction was made in, UTC
    keys: tuple[str, ...]
    price_version: str  # the version the events were re-rated to
    events: int
    cost: Decimal  # the sum of the deltas

    def sort_key(self) -> tuple[object, ...]:
        return (int(self.day.timestamp()), int(self.billed_month.timestamp()), *self.keys,
                self.price_version)  # fmt: skip


def usage_charges(
    query: UsageQuery, client: Client, max_seconds: float | None = None
) -> tuple[list[UsageCharge], bool]:
    """One page of usage charges of [query.start, query.end), and whether more follow."""
    params = _params(query)
    where = " AND ".join([*_tenant(query, params), _IN_RANGE.format(col="event_time")])
    keys = [f"e.{DIMENSIONS[name]} AS k{i}" for i, name in enumerate(query.group_by)]
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
    rows = _page(client, grouped, order, query, params, max_seconds)
    charges = []
    n = len(keys)
    for row in rows:
        day, seoul_date, *rest = row
        values = rest[n + 2 :]
        sums_of = dict(zip(QUANTITIES, values[: len(QUANTITIES)], strict=True))
        counts_of = dict(
            zip(QUANTITIES, values[len(QUANTITIES) : 2 * len(QUANTITIES)], strict=True)
        )
        assert isinstance(seoul_date, date)
        charges.append(
            UsageCharge(
                day=_utc(day),
                seoul_date=seoul_date,
                keys=tuple(str(v) for v in rest[:n]),
                price_version=str(rest[n]),
                events=int(str(rest[n + 1])),
                quantities={q: int(str(v)) for q, v in sums_of.items() if int(str(v))},
                events_with={q: int(str(v)) for q, v in counts_of.items() if int(str(v))},
                cost=Decimal(str(values[-1])),
            )
        )
    return charges[: query.limit], len(charges) > query.limit


def correction_charges(
    query: UsageQuery, client: Client, max_seconds: float | None = None
) -> tuple[list[CorrectionCharge], bool]:
    """One page of the corrections made in [query.start, query.end) to closed billing months."""
    params = _params(query)
    where = " AND ".join(
        [
            *_tenant(query, params),
            _IN_RANGE.format(col="corrected_time"),
            f"corrected_time >= {_MONTH_END.format(col='event_time')}",
        ]
    )
    keys = [f"{DIMENSIONS[name]} AS k{i}" for i, name in enumerate(query.group_by)]
    order = ["day", "billed_month", *(f"k{i}" for i in range(len(keys))), "version"]
    grouped = (
        "SELECT toUnixTimestamp(toStartOfDay(event_time, %(tz)s)) AS day, "
        "toUnixTimestamp(toDateTime(toStartOfMonth(toDateTime(corrected_time, %(tz)s)), %(tz)s))"
        f" AS billed_month, {''.join(k + ', ' for k in keys)}"
        "toString(to_price_version) AS version, uniqExact(event_id) AS events, "
        "sum(cost_delta_krw) AS cost "
        f"FROM cost_corrections WHERE {where} GROUP BY {', '.join(order)}"
    )
    rows = _page(client, grouped, order, query, params, max_seconds)
    n = len(keys)
    charges = [
        CorrectionCharge(
            day=_utc(day),
            billed_month=_utc(billed_month),
            keys=tuple(str(v) for v in rest[:n]),
            price_version=str(rest[n]),
            events=int(str(rest[n + 1])),
            cost=Decimal(str(rest[n + 2])),
        )
        for day, billed_month, *rest in rows
    ]
    return charges[: query.limit], len(charges) > query.limit


def _page(
    client: Client,
    grouped: str,
    order: list[str],
    query: UsageQuery,
    params: dict[str, object],
    max_seconds: float | None,
) -> list[tuple[object, ...]]:
    after = ""
    if query.after is not None:
        names = []
        for i, value in enumerate(query.after):
            params[f"after{i}"] = value
            names.append(f"%(after{i})s")
        after = f"WHERE ({', '.join(order)}) > ({', '.join(names)})"
    params["limit"] = query.limit + 1
    result = client.query(
        f"SELECT * FROM ({grouped}) {after} ORDER BY {', '.join(order)} LIMIT %(limit)s",
        parameters=params,
        settings=deadline_settings(max_seconds),
    )
    return [tuple(row) for row in result.result_rows]


def _params(query: UsageQuery) -> dict[str, object]:
    return {
        "tz": query.time_zone,
        "start_ms": round(query.start.timestamp() * 1000),
        "end_ms": round(query.end.timestamp() * 1000),
    }


def _tenant(query: UsageQuery, params: dict[str, object]) -> list[str]:
    if query.organization_id is None:
        return []
    params["org"] = query.organization_id
    return ["organization_id = %(org)s"]


def _utc(epoch_seconds: object) -> datetime:
    return datetime.fromtimestamp(int(str(epoch_seconds)), UTC)
