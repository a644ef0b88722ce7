"""Cost breakdowns (GetCostBreakdown): the usage query grouped by one dimension, without time
buckets or quantities, so it reads the same rollups and is exact for any range."""

from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.query.usage import UsagePage, UsageQuery, usage
from civicmeter.sink.event_writer import write_events
from tests.factories import NOW, event
from tests.sink.test_event_writer import rated

HOUR = NOW.replace(minute=0, second=0) - timedelta(hours=3)
SEOUL_DAY = datetime.combine(
    HOUR.astimezone(ZoneInfo("Asia/Seoul")).date(), time(), ZoneInfo("Asia/Seoul")
)


@pytest.fixture
def stored(clickhouse: Client) -> Client:
    events = [
        event(
            organization_id="seoul",
            department_id="welfare",
            event_time=HOUR + timedelta(minutes=10, seconds=30),
        ),
        event(
            organization_id="seoul",
            department_id="transport",
            event_time=HOUR + timedelta(minutes=70),
        ),
        event(
            organization_id="busan",
            department_id="welfare",
            event_time=HOUR + timedelta(minutes=10, seconds=45),
        ),
    ]
    write_events(clickhouse, rated(*events))
    return clickhouse


def query(
    start: datetime,
    end: datetime,
    dimension: str = "organization",
    org: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> UsageQuery:
    position = None if after is None else (0, after)
    return UsageQuery(start, end, (dimension,), organization_id=org, after=position, limit=limit)


def cost_breakdown(client: Client, query: UsageQuery) -> UsagePage:
    """As GetCostBreakdown reads it."""
    return usage(client, query, quantities=False)


def test_breakdown_by_organisation(stored: Client) -> None:
    page = cost_breakdown(stored, query(HOUR, HOUR + timedelta(hours=3)))
    assert [(r.keys[0], r.cost, r.events) for r in page.rows] == [
        ("busan", Decimal("6.32"), 1),
        ("seoul", Decimal("12.64"), 2),
    ]
    assert page.totals.cost == Decimal("18.96")
    assert not page.has_more


@pytest.mark.parametrize(
    ("start", "end", "events"),
    [
        (SEOUL_DAY, SEOUL_DAY + timedelta(days=1), 3),  # Seoul day rollup
        (HOUR, HOUR + timedelta(hours=1), 2),  # hourly rollup
        (HOUR + timedelta(minutes=10), HOUR + timedelta(minutes=11), 2),  # ledger
        (HOUR + timedelta(minutes=10, seconds=40), HOUR + timedelta(minutes=11), 1),  # ledger
    ],
)
def test_every_source_gives_the_exact_answer(
    stored: Client, start: datetime, end: datetime, events: int
) -> None:
    page = cost_breakdown(stored, query(start, end))
    assert sum(r.events for r in page.rows) == events
    assert page.totals.cost == Decimal("6.32") * events


def test_an_organisation_filter_and_department_grouping(stored: Client) -> None:
    page = cost_breakdown(stored, query(HOUR, HOUR + timedelta(hours=3), "department", "seoul"))
    assert [r.keys[0] for r in page.rows] == ["transport", "welfare"]
    assert page.totals.cost == Decimal("12.64")


def test_keyset_pages_cover_the_result_once(stored: Client) -> None:
    first = cost_breakdown(stored, query(HOUR, HOUR + timedelta(hours=3), limit=1))
    assert [r.keys[0] for r in first.rows] == ["busan"] and first.has_more
    second = cost_breakdown(stored, query(HOUR, HOUR + timedelta(hours=3), after="busan", limit=1))
    assert [r.keys[0] for r in second.rows] == ["seoul"] and not second.has_more
    assert second.totals.cost == first.totals.cost


def test_times_are_utc_whatever_the_caller_zone(stored: Client) -> None:
    seoul = HOUR.astimezone(timezone(timedelta(hours=9)))
    assert cost_breakdown(stored, query(seoul, seoul + timedelta(hours=3))).totals.cost == Decimal(
        "18.96"
    )
