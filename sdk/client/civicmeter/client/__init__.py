"""The Python client finance and audit integrators use for the civicmeter query API.

    async with CivicmeterClient("civicmeter-query:50052", token=API_TOKEN, tls=True) as api:
        breakdown = await api.cost_breakdown(start, end, group_by="department")
        for line in breakdown.lines:
            print(line.key, line.cost_krw, line.event_count)      # Decimal KRW
        async for alert in api.alerts(state="open"):
            ...
        for budget in await api.budget_statuses(period="month"):    # Decimal KRW
            print(budget.department_id or "(organisation)", budget.spent_krw, budget.forecast)
        async for seat in api.seats(only_idle=True):                # paid seats nobody uses
            print(seat.seat_id, seat.user_id, seat.last_used, seat.monthly_fee_krw)
        report = await api.usage(start, end, group_by=["department", "model"], granularity="month")
        writer = csv.DictWriter(out, fieldnames=FOCUS_COLUMNS)
        async for row in api.export_usage(start, end):             # FOCUS 1.2 columns
            writer.writerow(row)

Pages are followed for you; money comes back as Decimal; errors are grpc.aio.AioRpcError
with the server's status code and a message naming the field.
"""

from civicmeter.client._budgets import BudgetForecast, BudgetStatus, BudgetThreshold
from civicmeter.client._client import CivicmeterClient, CostBreakdown, CostLine
from civicmeter.client._seats import Seat, SeatSummary, SeatSummaryLine
from civicmeter.client._usage import (
    FOCUS_COLUMNS,
    CostPeriod,
    CostSummary,
    UsageLine,
    UsageReport,
    focus_row,
)

__all__ = [
    "FOCUS_COLUMNS",
    "BudgetForecast",
    "BudgetStatus",
    "BudgetThreshold",
    "CivicmeterClient",
    "CostBreakdown",
    "CostLine",
    "CostPeriod",
    "CostSummary",
    "Seat",
    "SeatSummary",
    "SeatSummaryLine",
    "UsageLine",
    "UsageReport",
    "focus_row",
]
