"""Usage and cost over a time range, grouped, filtered and bucketed, read from the rollups.

The planner picks, from the rollup registry (core.store.rollups), the coarsest rollup that
answers the question exactly, and of two at one grain the one with fewer dimensions:

- usage_rollup_1mo_departments / usage_rollup_1mo: Asia/Seoul months (the first without users);
- usage_rollup_1d: Asia/Seoul days (it and usage_rollup_1mo are views summing the hours);
- usage_rollup_1h: UTC hours, exact in any time zone whose offset is a whole number of hours;
- usage_cost_1m: UTC minutes, for events and cost only;
- otherwise the ledger itself (usage_events FINAL plus the re-rating deltas in cost_corrections),
  so a range that no rollup covers exactly is still answered exactly, never approximately.

A rollup answers when it keeps every dimension asked for, its windows are no coarser than the
buckets asked for, and the range's ends are window starts: a rollup of a calendar's days or
months serves a zone only while the zone keeps the calendar's offset over the whole range (so
Asia/Tokyo's ranges read the Seoul tables), and one of UTC minutes or hours only while the
zone's offset is whole minutes or hours. Rows come in a stable order (time bucket, then the
group-by values), and pages continue after the last row's key, so paging returns exactly the
unpaged result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clickhouse_connect.driver.client import Client

from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.store.connection import deadline_settings
from civicmeter.core.store.ledger import IN_RANGE, as_rollup_rows
from civicmeter.core.store.rollups import COST_MEASURES, GRAINS, MEASURES, ROLLUPS, Grain, Rollup
from civicmeter.query.arguments import ArgumentError, echo

DIMENSIONS: dict[str, str] = {
    "organization": "organization_id",
    "department": "department_id",
    "user": "user_id",
    "service": "service_id",
    "provider": "provider_name",
    "model": "request_model",
    "operation": "operation_name",
    "purpose": "purpose",
    "decision": "decision",  # the gateway guard's: allow, allow_with_warning, redact, deny
}
GRANULARITIES: tuple[Grain, ...] = ("hour", "day", "month")
_TOTALS = ("events", "cost_krw", "late_events", "late_cost_krw")
# The planner's order: the coarsest rollup first, and at one grain the smallest.
_PREFERRED = sorted(ROLLUPS, key=lambda r: (-GRAINS.index(r.grain), len(r.dimensions)))
_UTC_WINDOW_SECONDS = {"minute": 60, "hour": 3600, "day": 86_400}


class UsageQueryError(ArgumentError):
    """The question cannot be asked; the message names the field."""


@dataclass(frozen=True)
class UsageQuery:
    start: datetime
    end: datetime
    group_by: tuple[str, ...] = ()  # keys of DIMENSIONS
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (dimension, allowed values)
    granularity: str | None = None  # None (the whole range) or one of GRANULARITIES
    time_zone: str = "Asia/Seoul"
    organization_id: str | None = None  # the tenant predicate; None only for every-org keys
    after: tuple[object, ...] | None = None  # the key of the previous page's last row
    limit: int = 100


@dataclass(frozen=True)
class UsageRow:
    bucket_start: datetime | None  # None without a granularity
    keys: tuple[str, ...]  # values of the group-by dimensions, in their order
    events: int
    quantities: dict[str, int]
    cost: Decimal
    late_events: int
    late_cost: Decimal

    def sort_key(self) -> tuple[object, ...]:
        bucket = int(self.bucket_start.timestamp()) if self.bucket_start else 0
        return (bucket, *self.keys)


@dataclass(frozen=True)
class UsageTotals:
    events: int
    cost: Decimal
    late_events: int
    late_cost: Decimal


@dataclass(frozen=True)
class UsagePage:
    rows: list[UsageRow]
    totals: UsageTotals
    has_more: bool
    source: str  # the table that answered, for operators and tests


@dataclass(frozen=True)
class _Source:
    table: str
    rollup: Rollup | None  # None: the ledger


_LEDGER = _Source("ledger", None)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        raise UsageQueryError("time_zone", f"{echo(name)} is not an IANA time zone") from None


def check(query: UsageQuery) -> None:
    """Raise UsageQueryError naming the field for anything malformed."""
    if query.end <= query.start:
        raise UsageQueryError("end_time", "must be after start_time")
    zone(query.time_zone)
    seen: set[str] = set()
    for name in query.group_by:
        if name not in DIMENSIONS:
            raise UsageQueryError("group_by", f"{name!r} is not a dimension")
        if name in seen:
            raise UsageQueryError("group_by", f"{name!r} appears twice")
        seen.add(name)
    for name, values in query.filters:
        if name not in DIMENSIONS:
            raise UsageQueryError("filters", f"{name!r} is not a dimension")
        if not values:
            raise UsageQueryError("filters", f"{name} needs at least one value")
    if query.granularity is not None and query.granularity not in GRANULARITIES:
        raise UsageQueryError("granularity", f"{query.granularity!r} is not one of {GRANULARITIES}")


def plan(query: UsageQuery, quantities: bool = True) -> _Source:
    """The coarsest table that answers `query` exactly (cost and events only: `quantities`
    false lets a minute-aligned range read the minute rollup rather than the ledger)."""
    tz = zone(query.time_zone)
    needed = {DIMENSIONS[name] for name in (*query.group_by, *(n for n, _ in query.filters))}
    offsets = _offsets(tz, query.start, query.end)
    for rollup in _PREFERRED:
        if (
            rollup.splits(needed)
            and not (quantities and rollup.cost_only)
            and (query.granularity is None or _no_finer(rollup.grain, query.granularity))
            and _windows_align(rollup, query, tz, offsets)
        ):
            return _Source(rollup.table, rollup)
    return _LEDGER


def _no_finer(grain: Grain, granularity: str) -> bool:
    return GRAINS.index(grain) <= GRAINS.index(granularity)


def _windows_align(rollup: Rollup, query: UsageQuery, tz: ZoneInfo, offsets: list[int]) -> bool:
    """Whether the range's ends are starts of the rollup's windows, and every bucket in the
    query's zone a whole number of them."""
    if rollup.dated:
        calendar = ZoneInfo(rollup.calendar)
        if offsets != _offsets(calendar, query.start, query.end):
            return False
        starts = _month_start if rollup.grain == "month" else _day_start
        return starts(query.start, tz) and starts(query.end, tz)
    seconds = _UTC_WINDOW_SECONDS[rollup.grain]
    return all(offset % seconds == 0 for offset in offsets) and all(
        t.timestamp() % seconds == 0 for t in (query.start, query.end)
    )


def usage(
    client: Client,
    query: UsageQuery,
    max_seconds: float | None = None,
    *,
    quantities: bool = True,
) -> UsagePage:
    """One page of the answer, with the totals over all pages, in one ClickHouse query.

    `max_seconds` (the caller's remaining deadline) bounds the query in ClickHouse, so a query
    the client gave up on does not run on. Without `quantities`, rows and totals carry cost
    and event counts only (quantities and late figures read 0): a cost breakdown sums two
    columns instead of sixteen, and a minute-aligned one reads the minute rollup.
    """
    check(query)
    source = plan(query, quantities)
    settings = deadline_settings(max_seconds)
    params: dict[str, object] = {"tz": query.time_zone}
    table, where = _from_where(source, query, params)
    bucket = _bucket(source, query.granularity)
    keys = [f"{DIMENSIONS[name]} AS k{i}" for i, name in enumerate(query.group_by)]
    key_names = [f"k{i}" for i in range(len(query.group_by))]
    measures = MEASURES if quantities else COST_MEASURES
    sums = ", ".join(f"sum({m}) AS {m}" for m in measures)
    # Totals over every group, before the page's keyset condition and limit: window sums over
    # the grouped rows, so one query answers both.
    total_measures = _TOTALS if quantities else COST_MEASURES
    totals = ", ".join(f"sum({m}) OVER () AS total_{m}" for m in total_measures)
    order = ["bucket", *key_names]
    after = ""
    if query.after is not None:
        if len(query.after) != len(order):
            raise UsageQueryError("page_token", "does not match this query")
        after = f"WHERE ({', '.join(order)}) > ({', '.join(_placeholders(query.after, params))})"
    params["limit"] = query.limit + 1
    grouped = (
        f"SELECT {bucket} AS bucket{''.join(', ' + k for k in keys)}, {sums}, {totals} "
        f"FROM {table} WHERE {where} GROUP BY {', '.join(order)}"
    )
    rows = client.query(
        f"SELECT * FROM ({grouped}) {after} ORDER BY {', '.join(order)} LIMIT %(limit)s",
        parameters=params,
        settings=settings,
    ).result_rows
    if rows:
        total_values = list(rows[0][-len(total_measures) :])
    else:  # past the last page, or nothing at all: the totals still answer
        total_values = list(
            client.query(
                f"SELECT {', '.join(f'sum({m})' for m in total_measures)} "
                f"FROM {table} WHERE {where}",
                parameters=params,
                settings=settings,
            ).result_rows[0]
        )
    page = [
        _row(row[: -len(total_measures)], measures, len(key_names), query.granularity is not None)
        for row in rows
    ]
    events, cost, late_events, late_cost = total_values + [0] * (4 - len(total_values))
    page_totals = UsageTotals(
        int(events or 0), Decimal(cost or 0), int(late_events or 0), Decimal(late_cost or 0)
    )
    return UsagePage(page[: query.limit], page_totals, len(page) > query.limit, source.table)


def rerating_adjustments(
    client: Client, query: UsageQuery, max_seconds: float | None = None
) -> dict[int, Decimal]:
    """The re-rating deltas of the range by bucket (epoch seconds; 0 without a granularity)."""
    check(query)
    settings = deadline_settings(max_seconds)
    params: dict[str, object] = {"tz": query.time_zone}
    conditions = _conditions(query, params)
    conditions.append(IN_RANGE.format(col="event_time"))
    bucket = _bucket(_LEDGER, query.granularity)
    rows = client.query(
        f"SELECT {bucket} AS bucket, sum(cost_delta_krw) FROM "
        f"(SELECT *, event_time AS window_start FROM cost_corrections "
        f"WHERE {' AND '.join(conditions)}) GROUP BY bucket",
        parameters=params,
        settings=settings,
    ).result_rows
    return {int(bucket): Decimal(delta) for bucket, delta in rows}


def _row(row: Sequence[object], measures: Sequence[str], n_keys: int, bucketed: bool) -> UsageRow:
    bucket, *rest = row
    keys = tuple(str(v) for v in rest[:n_keys])
    values = dict(zip(measures, rest[n_keys:], strict=True))
    return UsageRow(
        bucket_start=datetime.fromtimestamp(int(str(bucket)), UTC) if bucketed else None,
        keys=keys,
        events=int(str(values["events"])),
        quantities={q: int(str(values.get(q, 0))) for q in QUANTITIES},
        cost=Decimal(str(values["cost_krw"])),
        late_events=int(str(values.get("late_events", 0))),
        late_cost=Decimal(str(values.get("late_cost_krw", 0))),
    )


def _placeholders(values: tuple[object, ...], params: dict[str, object]) -> list[str]:
    names = []
    for i, value in enumerate(values):
        params[f"after{i}"] = value
        names.append(f"%(after{i})s")
    return names


def _conditions(query: UsageQuery, params: dict[str, object]) -> list[str]:
    """The tenant predicate and the filters; sets the range's bounds in `params`."""
    conditions: list[str] = []
    if query.organization_id is not None:
        conditions.append("organization_id = %(org)s")
        params["org"] = query.organization_id
    for i, (name, values) in enumerate(query.filters):
        conditions.append(f"{DIMENSIONS[name]} IN %(f{i})s")
        params[f"f{i}"] = list(values)
    params["start_ms"] = round(query.start.timestamp() * 1000)
    params["end_ms"] = round(query.end.timestamp() * 1000)
    return conditions


def _from_where(source: _Source, query: UsageQuery, params: dict[str, object]) -> tuple[str, str]:
    conditions = _conditions(query, params)
    rollup = source.rollup
    if rollup is not None and rollup.dated:
        calendar = ZoneInfo(rollup.calendar)
        params["start_day"] = query.start.astimezone(calendar).date()
        params["end_day"] = query.end.astimezone(calendar).date()
        conditions.append("window_start >= %(start_day)s AND window_start < %(end_day)s")
        return source.table, " AND ".join(conditions)
    if rollup is not None:
        conditions.append(IN_RANGE.format(col="window_start"))
        return source.table, " AND ".join(conditions)
    # The ledger: stored events and the re-rating deltas, as rows shaped like a rollup's.
    where = " AND ".join([*conditions, IN_RANGE.format(col="event_time")])
    return as_rollup_rows(where, list(DIMENSIONS.values())), "1"


def _bucket(source: _Source, granularity: str | None) -> str:
    """The bucket's start as epoch seconds (0 when the range is one bucket)."""
    if granularity is None:
        return "toUInt32(0)"
    rollup = source.rollup
    if rollup is not None and rollup.dated:  # a Date in the calendar; only day and month here
        day = "window_start" if granularity == "day" else "toStartOfMonth(window_start)"
        return f"toUnixTimestamp(toDateTime({day}, '{rollup.calendar}'))"
    time = "toDateTime(window_start, 'UTC')"
    if granularity == "hour":
        return f"toUnixTimestamp(toStartOfHour({time}))"
    if granularity == "day":
        return f"toUnixTimestamp(toStartOfDay({time}, %(tz)s))"
    return f"toUnixTimestamp(toDateTime(toStartOfMonth({time}, %(tz)s), %(tz)s))"


def _offsets(tz: ZoneInfo, start: datetime, end: datetime) -> list[int]:
    """The zone's UTC offsets (seconds) over [start, end], sampled at both ends and every
    15 days between: time zones change offset at most a few times a year."""
    found: list[int] = []
    t = start
    while True:
        offset = t.astimezone(tz).utcoffset()
        found.append(int(offset.total_seconds()) if offset is not None else 0)
        if t >= end:
            return found
        t = min(t + timedelta(days=15), end)


def _month_start(t: datetime, tz: ZoneInfo) -> bool:
    local = t.astimezone(tz)
    return local.day == 1 and _day_start(t, tz)


def _day_start(t: datetime, tz: ZoneInfo) -> bool:
    local = t.astimezone(tz)
    return (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)
