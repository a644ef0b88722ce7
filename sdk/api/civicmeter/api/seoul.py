"""Asia/Seoul, the time zone of the billing calendar: its days, months and fiscal years."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

SEOUL = ZoneInfo("Asia/Seoul")


def next_month(first: date) -> date:
    """The first day of the month after the one `first` opens."""
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)
