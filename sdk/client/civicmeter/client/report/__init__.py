"""A report people would rather look at than read: one self-contained HTML page of charts
(monthly spend per government and per service, seats and idle seats, cost per active user,
alerts by type and month, requests the gateway guard blocked) with their figures, built from
the query API through the client.

    async with CivicmeterClient(target, token) as api:
        report = await gather(api, date(2025, 1, 1), date(2025, 1, 1), organization_id="seoul")
    Path("report.html").write_text(render(report), encoding="utf-8")
"""

from civicmeter.client.report.figures import Chart, Headline, Report, gather
from civicmeter.client.report.page import krw, render

__all__ = ["Chart", "Headline", "Report", "gather", "krw", "render"]
