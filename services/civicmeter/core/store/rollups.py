"""The rollups: every pre-aggregated table of the ledger, described once.

Each rollup sums the ledger (usage_events and the re-rating deltas in cost_corrections) by a time
window and a set of dimensions. The migrations create them from these entries, the query planner
picks the coarsest that answers a question exactly, reconciliation proves each equals the
ledger, and budgets and seat reports read them by name from here; a test checks every entry
against the engine's own columns (tests/core/test_rollups.py).

Readers always sum() and GROUP BY what they read: SummingMergeTree holds several rows per key
until its background merges run, and the views relabel rows without grouping them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from civicmeter.core.events.quantities import QUANTITIES

Grain = Literal["minute", "hour", "day", "month"]
GRAINS: tuple[Grain, ...] = ("minute", "hour", "day", "month")  # finest first
UTC = "UTC"
SEOUL = "Asia/Seoul"

# The ledger's dimension columns, in the order rollups list them; all but users are
# low-cardinality strings.
DIMENSION_TYPES: dict[str, str] = {
    "organization_id": "LowCardinality(String)",
    "department_id": "LowCardinality(String)",
    "user_id": "String",
    "service_id": "LowCardinality(String)",
    "provider_name": "LowCardinality(String)",
    "request_model": "LowCardinality(String)",
    "operation_name": "LowCardinality(String)",
    "purpose": "LowCardinality(String)",
}
EVERY_DIMENSION = tuple(DIMENSION_TYPES)
COST_DIMENSIONS = ("organization_id", "department_id", "user_id", "service_id")
COST_MEASURES = ("events", "cost_krw")
MEASURES = ("events", *QUANTITIES, "cost_krw", "late_events", "late_cost_krw")
_MONEY = "Decimal(38, 6)"


@dataclass(frozen=True)
class Rollup:
    table: str
    grain: Grain
    calendar: str  # UTC, or the time zone whose days and months the windows are
    dimensions: tuple[str, ...]  # organization_id first; the sort key is it, the window, the rest
    cost_only: bool  # events and cost only; otherwise every quantity and the late figures too
    # A view relabelling the hour rollup's rows with their day or month (no table of its own).
    over_hours: bool = False

    @property
    def measures(self) -> tuple[str, ...]:
        return COST_MEASURES if self.cost_only else MEASURES

    @property
    def dated(self) -> bool:
        """Whether window_start is a Date in the calendar (else a UTC DateTime)."""
        return self.calendar != UTC

    def columns(self) -> tuple[tuple[str, str], ...]:
        """(name, ClickHouse type) of every column, in order."""
        window = ("window_start", "Date" if self.dated else "DateTime('UTC')")
        dimensions = tuple((name, DIMENSION_TYPES[name]) for name in self.dimensions)
        measures = tuple(
            (name, _MONEY if name.endswith("_krw") else "UInt64") for name in self.measures
        )
        return (window, *dimensions, *measures)

    def window(self, column: str) -> str:
        """The expression of the window that the DateTime `column` falls in."""
        if not self.dated:
            unit = {"minute": "Minute", "hour": "Hour", "day": "Day"}[self.grain]
            return f"toStartOf{unit}({column})"
        day = f"toDate({column}, '{self.calendar}')"
        return day if self.grain == "day" else f"toStartOfMonth({day})"

    def splits(self, dimensions: Iterable[str]) -> bool:
        """Whether the rollup keeps every one of the ledger `dimensions`."""
        return set(dimensions) <= set(self.dimensions)


USAGE_COST_1M = Rollup("usage_cost_1m", "minute", UTC, COST_DIMENSIONS, cost_only=True)
USAGE_ROLLUP_1H = Rollup("usage_rollup_1h", "hour", UTC, EVERY_DIMENSION, cost_only=False)
USAGE_ROLLUP_1D = Rollup(
    "usage_rollup_1d", "day", SEOUL, EVERY_DIMENSION, cost_only=False, over_hours=True
)
USAGE_ROLLUP_1MO = Rollup(
    "usage_rollup_1mo", "month", SEOUL, EVERY_DIMENSION, cost_only=False, over_hours=True
)
USAGE_ROLLUP_1MO_DEPARTMENTS = Rollup(
    "usage_rollup_1mo_departments",
    "month",
    SEOUL,
    tuple(name for name in EVERY_DIMENSION if name != "user_id"),
    cost_only=False,
)
# Every rollup the schema has, finest first.
ROLLUPS = (
    USAGE_COST_1M,
    USAGE_ROLLUP_1H,
    USAGE_ROLLUP_1D,
    USAGE_ROLLUP_1MO,
    USAGE_ROLLUP_1MO_DEPARTMENTS,
)
