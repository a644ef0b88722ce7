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

Both are read a page at a time after the previous page's last key, in one stable order, by
core.store.ledger; here they become charges.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.store.connection import deadline_settings
from civicmeter.core.store.ledger import ChargePage, correction_charge_rows, usage_charge_rows
from civicmeter.query.usage import DIMENSIONS, UsageQuery


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
    rows = usage_charge_rows(client, _page(query), deadline_settings(max_seconds))
    charges = []
    n = len(query.group_by)
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
    rows = correction_charge_rows(client, _page(query), deadline_settings(max_seconds))
    n = len(query.group_by)
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


def _page(query: UsageQuery) -> ChargePage:
    """The query's page, with one row more than it asks for: whether more follow."""
    columns = tuple(DIMENSIONS[name] for name in query.group_by)
    return ChargePage(query.start, query.end, query.time_zone, query.organization_id, columns,
                      query.after, query.limit + 1)  # fmt: skip


def _utc(epoch_seconds: object) -> datetime:
    return datetime.fromtimestamp(int(str(epoch_seconds)), UTC)
