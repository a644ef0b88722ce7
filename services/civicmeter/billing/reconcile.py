"""Proof that the rollups agree with the raw rated events, per organisation, to the won.

For a period whose ends are Asia/Seoul month starts (so every rollup level covers it exactly),
the ledger (usage_events FINAL plus the re-rating deltas in cost_corrections) is summed per
organisation and compared with the sum of each rollup of the registry (core.store.rollups) over
the same period: cost, events and every quantity a rollup keeps. The views over the hour rollup
(Seoul days and months) are checked all the same, as readers see them. Any difference is a
finding; none means the period reconciles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client

from civicmeter.api.seoul import SEOUL
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.store.rollups import ROLLUPS


@dataclass(frozen=True)
class Totals:
    events: int
    cost: Decimal
    quantities: tuple[int, ...] | None  # None where the level does not keep quantities


@dataclass
class Reconciliation:
    start: datetime
    end: datetime
    ledger: dict[str, Totals] = field(default_factory=dict)  # organisation -> raw totals
    levels: dict[str, dict[str, Totals]] = field(default_factory=dict)  # table -> org -> totals

    def differences(self) -> list[str]:
        """One line per (level, organisation) whose totals differ from the ledger's."""
        found: list[str] = []
        for table, per_org in self.levels.items():
            for org in sorted(set(per_org) | set(self.ledger)):
                raw = self.ledger.get(org, _ZERO)
                rolled = per_org.get(org, _ZERO)
                for name, want, got in (
                    ("cost", raw.cost, rolled.cost),
                    ("events", raw.events, rolled.events),
                ):
                    if want != got:
                        found.append(f"{table} {org}: {name} {got} != ledger {want}")
                if rolled.quantities is not None and raw.quantities != rolled.quantities:
                    for unit, want_q, got_q in zip(
                        QUANTITIES, raw.quantities or (), rolled.quantities, strict=True
                    ):
                        if want_q != got_q:
                            found.append(f"{table} {org}: {unit} {got_q} != ledger {want_q}")
        return found


_ZERO = Totals(0, Decimal(0), tuple(0 for _ in QUANTITIES))


def require_month_bounds(start: datetime, end: datetime) -> None:
    """Raise ValueError unless [start, end) runs from one Asia/Seoul month start to another."""
    for name, t in (("start", start), ("end", end)):
        local = t.astimezone(SEOUL)
        if (local.day, local.hour, local.minute, local.second, local.microsecond) != (
            1,
            0,
            0,
            0,
            0,
        ):
            raise ValueError(f"{name}: {t.isoformat()} is not the start of a month in Asia/Seoul")
    if end <= start:
        raise ValueError("end: must be after start")


def reconcile(
    client: Client, start: datetime, end: datetime, organization_id: str | None = None
) -> Reconciliation:
    require_month_bounds(start, end)
    result = Reconciliation(start, end)
    params: dict[str, object] = {
        "start_ms": round(start.timestamp() * 1000),
        "end_ms": round(end.timestamp() * 1000),
    }
    org_filter = ""
    if organization_id is not None:
        org_filter = " AND organization_id = %(org)s"
        params["org"] = organization_id
    sums = ", ".join(f"sum({q})" for q in QUANTITIES)
    in_period = (
        "event_time >= fromUnixTimestamp64Milli(%(start_ms)s, 'UTC') "
        "AND event_time < fromUnixTimestamp64Milli(%(end_ms)s, 'UTC')"
    )
    events = client.query(
        f"SELECT organization_id, count(), sum(toDecimal128(cost_krw, 6)), {sums} "
        f"FROM usage_events FINAL WHERE {in_period}{org_filter} GROUP BY organization_id",
        parameters=params,
    ).result_rows
    deltas: dict[str, Decimal] = {
        str(org): Decimal(delta)
        for org, delta in client.query(
            "SELECT organization_id, sum(cost_delta_krw) FROM cost_corrections "
            f"WHERE {in_period}{org_filter} GROUP BY organization_id",
            parameters=params,
        ).result_rows
    }
    for org, count, cost, *quantities in events:
        delta = deltas.pop(org, Decimal(0))
        result.ledger[org] = Totals(int(count), Decimal(cost) + delta, _ints(quantities))
    for org, delta in deltas.items():  # corrections of events outside usage_events: a finding
        result.ledger[org] = Totals(0, delta, _ZERO.quantities)
    for rollup in ROLLUPS:
        if rollup.dated:
            calendar = ZoneInfo(rollup.calendar)
            params["start_day"] = start.astimezone(calendar).date()
            params["end_day"] = end.astimezone(calendar).date()
            where = "window_start >= %(start_day)s AND window_start < %(end_day)s"
        else:
            where = (
                "window_start >= fromUnixTimestamp64Milli(%(start_ms)s, 'UTC') "
                "AND window_start < fromUnixTimestamp64Milli(%(end_ms)s, 'UTC')"
            )
        columns = "" if rollup.cost_only else f", {sums}"
        rows = client.query(
            f"SELECT organization_id, sum(events), sum(cost_krw){columns} FROM {rollup.table} "
            f"WHERE {where}{org_filter} GROUP BY organization_id",
            parameters=params,
        ).result_rows
        result.levels[rollup.table] = {
            org: Totals(int(count), Decimal(cost), None if rollup.cost_only else _ints(rest))
            for org, count, cost, *rest in rows
        }
    return result


def _ints(values: list[object]) -> tuple[int, ...]:
    return tuple(int(str(v)) for v in values)
