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

from clickhouse_connect.driver.client import Client

from civicmeter.api.seoul import SEOUL
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.store.ledger import correction_totals, event_totals, rollup_totals
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
    deltas = correction_totals(client, start, end, organization_id)
    for org, count, cost, quantities in event_totals(client, start, end, organization_id):
        delta = deltas.pop(org, Decimal(0))
        result.ledger[org] = Totals(count, cost + delta, quantities)
    for org, delta in deltas.items():  # corrections of events outside usage_events: a finding
        result.ledger[org] = Totals(0, delta, _ZERO.quantities)
    for rollup in ROLLUPS:
        result.levels[rollup.table] = {
            org: Totals(count, cost, quantities)
            for org, count, cost, quantities in rollup_totals(
                client, rollup, start, end, organization_id
            )
        }
    return result
