"""A user's requests and spend on their current local day, with their earlier active days:
the state the activity tracker (activity.py) keeps and every event's context (context.py)
carries to the detectors."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from civicmeter.processor.detection.robust import Limit, median

ZERO = Decimal(0)
DayTotals = tuple[int, int, Decimal]  # (local day ordinal, requests, cost KRW)


@dataclass(slots=True)
class UserActivity:
    department: str
    day: int  # the user's current local day
    count: int = 0
    cost: Decimal = ZERO
    history: deque[DayTotals] = field(default_factory=deque)  # earlier active days, oldest first
    count_limit: Limit[float] | None = None  # today's, from the history; None while warming up
    cost_limit: Limit[Decimal] | None = None
    volume_alerted_day: int = 0  # the last day a volume spike was raised (folds the rest)
    peer_alerted_month: int = 0

    def completed_counts(self, today: int) -> list[int]:
        """Requests per active day before `today`."""
        counts = [count for _, count, _ in self.history]
        if self.day < today and self.count:
            counts.append(self.count)
        return counts

    def typical_count(self, today: int, warmup_days: int) -> float | None:
        """The median of the completed active days, once there are `warmup_days` of them."""
        counts = self.completed_counts(today)
        if len(counts) < warmup_days:
            return None
        return median([float(c) for c in counts])
