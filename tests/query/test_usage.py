"""The usage query against an independent computation over the same events, on real ClickHouse:
every plan (month, day, hour rollups and the ledger) must give the same exact answer."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.store.rollups import ROLLUPS
from civicmeter.query.usage import (
    DIMENSIONS,
    GRANULARITIES,
    UsageQuery,
    UsageQueryError,
    check,
    plan,
    usage,
)
from civicmeter.sink.event_writer import write_events
from tests.factories import event

SEOUL = ZoneInfo("Asia/Seoul")
START = datetime(2026, 8, 1, tzinfo=SEOUL)  # three Seoul months of events
END = datetime(2026, 11, 1, tzinfo=SEOUL)
FIELDS = {
    "organization": "organization_id",
    "department": "department_id",
    "user": "user_id",
    "service": "service_id",
    "provider": "provider_name",
    "model": "request_model",
    "operation": "operation_name",
    "purpose": "purpose",
}


def _events() -> list[pb.RatedUsageEvent]:
    rng = random.Random(11)
    span = int((END - START).total_seconds())
    out = []
    for i in range(240):
        provider, service, model = rng.choice(
            [("openai", "chatgpt", ""), ("openai", "openai-api", "gpt-4o"),
             ("anthropic", "claude-api", "claude-3-5-sonnet")]
        )  # fmt: skip
        e = event(
            event_id=f"u-{i}",
            organization_id=rng.choice(["seoul", "busan"]),
            department_id=rng.choice(["welfare", "transport", "culture"]),
            user_id=f"u_{rng.randrange(6):02d}",
            provider_name=provider,
            service_id=service,
            request_model=model,
            operation_name=rng.choice(["chat", "image"]),
            purpose=rng.choice(["drafting", "translation", ""]),
            # Boundaries matter: some events sit within minutes of a Seoul midnight.
            event_time=START + timedelta(seconds=rng.randrange(span))
            if i % 4
            else START + timedelta(days=rng.randrange(91), seconds=rng.choice([-61, 0, 59])),
            usage=pb.Usage(input_tokens=rng.randrange(1, 900), requests=1),
        )
        cost = Decimal(rng.randrange(1, 10**7)) / 10**4
        out.append(
            pb.RatedUsageEvent(event=e, cost_krw=str(cost), price_version="v1", late=i % 7 == 0)
        )
    return [r for r in out if START <= r.event.event_time.ToDatetime(UTC) < END]


EVENTS = _events()


@pytest.fixture(scope="module")
def stored(chdb_path: object) -> Client:  # one database for the module: the data never changes
    import os

    from civicmeter.core.config import ClickHouseSettings
    from civicmeter.core.store.connection import connect
    from civicmeter.core.store.migrations import migrate

    client = connect(ClickHouseSettings(path=str(chdb_path), database=f"usage_{os.getpid()}"))
    migrate(client)
    client.command("TRUNCATE TABLE usage_events")
    write_events(client, EVENTS)
    # A re-rating delta for some events: every answer includes it.
    rows = [
        [r.event.organization_id, r.event.department_id, r.event.user_id, r.event.event_id,
         r.event.event_time.ToMilliseconds(), r.event.service_id, r.event.provider_name,
         r.event.request_model, r.event.operation_name, r.event.purpose, Decimal("1.5"),
         "v1", "v2", "run-1", r.event.event_time.ToMilliseconds()]
        for r in EVENTS[::5]
    ]  # fmt: skip
    client.insert(
        "cost_corrections",
        rows,
        column_names=[
            "organization_id", "department_id", "user_id", "event_id", "event_time",
            "service_id", "provider_name", "request_model", "operation_name", "purpose",
            "cost_delta_krw", "from_price_version", "to_price_version", "run_id",
            "corrected_time",
        ],
    )  # fmt: skip
    return client


def expected(q: UsageQuery) -> dict[tuple[object, ...], tuple[int, Decimal, int]]:
    """(bucket epoch, *keys) -> (events, cost, late events), computed in Python."""
    tz = ZoneInfo(q.time_zone)
    corrected = {r.event.event_id for r in EVENTS[::5]}
    out: dict[tuple[object, ...], list[object]] = defaultdict(lambda: [0, Decimal(0), 0])
    for r in EVENTS:
        e = r.event
        t = e.event_time.ToDatetime(UTC)
        if not q.start <= t < q.end:
            continue
        if q.organization_id and e.organization_id != q.organization_id:
            continue
        if any(getattr(e, FIELDS[name]) not in values for name, values in q.filters):
            continue
        local = t.astimezone(tz)
        bucket = {
            None: 0,
            "hour": int(t.replace(minute=0, second=0, microsecond=0).timestamp()),
            "day": int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()),
            "month": int(
                local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
            ),
        }[q.granularity]
        key = (bucket, *(getattr(e, FIELDS[name]) for name in q.group_by))
        slot = out[key]
        slot[0] += 1  # type: ignore[operator]
        cost = Decimal(r.cost_krw) + (Decimal("1.5") if e.event_id in corrected else 0)
        slot[1] += cost  # type: ignore[operator]
        slot[2] += int(r.late)  # type: ignore[operator]
    return {k: (int(v[0]), Decimal(v[1]), int(v[2])) for k, v in out.items()}  # type: ignore[call-overload,arg-type]


def answered(client: Client, q: UsageQuery) -> dict[tuple[object, ...], tuple[int, Decimal, int]]:
    page = usage(client, q)
    assert not page.has_more
    return {row.sort_key(): (row.events, row.cost, row.late_events) for row in page.rows}


CASES = [
    # (query, the table that must answer it)
    (UsageQuery(START, END, ("department",), limit=1000), "usage_rollup_1mo_departments"),
    (UsageQuery(START, END, ("user", "service"), granularity="month", limit=1000),
     "usage_rollup_1mo"),
    (UsageQuery(START, END, ("model",), granularity="day", limit=1000), "usage_rollup_1d"),
    (UsageQuery(START + timedelta(hours=5), END, ("purpose", "operation"), granularity="day",
                limit=1000), "usage_rollup_1h"),
    (UsageQuery(START, END, ("provider",), granularity="month", time_zone="America/New_York",
                limit=1000), "usage_rollup_1h"),
    (UsageQuery(START, END, ("department",), granularity="hour", limit=5000), "usage_rollup_1h"),
    (UsageQuery(START, END, ("organization",), granularity="day", time_zone="Asia/Kolkata",
                limit=1000), "ledger"),
    (UsageQuery(START + timedelta(seconds=30), END - timedelta(minutes=1), ("service",),
                limit=1000), "ledger"),
    (UsageQuery(START, END, ("organization",), granularity="month", time_zone="Asia/Tokyo",
                limit=1000), "usage_rollup_1mo_departments"),
    (UsageQuery(START, END, ("user",), filters=(("service", ("chatgpt",)),
                ("department", ("welfare", "culture"))), organization_id="busan", limit=1000),
     "usage_rollup_1mo"),
]  # fmt: skip


@pytest.mark.parametrize(("query", "table"), CASES)
def test_every_plan_gives_the_independent_answer(
    stored: Client, query: UsageQuery, table: str
) -> None:
    assert plan(query).table == table
    want = expected(query)
    assert want, "the case must select some events"
    assert answered(stored, query) == want


def test_totals_and_late_corrections_cover_all_pages(stored: Client) -> None:
    query = UsageQuery(START, END, ("user",), organization_id="seoul", limit=2)
    page = usage(stored, query)
    want = expected(UsageQuery(START, END, organization_id="seoul"))[(0,)]
    assert (page.totals.events, page.totals.cost, page.totals.late_events) == want
    assert page.totals.late_cost == sum(
        Decimal(r.cost_krw) for r in EVENTS if r.late and r.event.organization_id == "seoul"
    )
    assert page.has_more and len(page.rows) == 2


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=st.sampled_from(CASES),
    page_size=st.integers(1, 40),
)
def test_paging_in_pages_of_any_size_returns_the_unpaged_result(
    stored: Client, case: tuple[UsageQuery, str], page_size: int
) -> None:
    whole = usage(stored, case[0])
    rows = []
    after = None
    for _ in range(1000):
        page = usage(stored, _with(case[0], after=after, limit=page_size))
        rows += page.rows
        assert page.totals == whole.totals
        if not page.has_more:
            break
        after = page.rows[-1].sort_key()
    assert rows == whole.rows


def _with(q: UsageQuery, **changes: object) -> UsageQuery:
    from dataclasses import replace

    return replace(q, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"group_by": ("colour",)}, "group_by"),
        ({"group_by": ("user", "user")}, "group_by"),
        ({"filters": (("colour", ("x",)),)}, "filters"),
        ({"filters": (("user", ()),)}, "filters"),
        ({"granularity": "week"}, "granularity"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"end": START}, "end_time"),
    ],
)
def test_a_malformed_question_names_its_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(UsageQueryError, match=f"^{field}:"):
        check(_with(UsageQuery(START, END), **changes))


def test_every_dimension_is_a_stored_column() -> None:
    # decision is the ledger's only (tests/query/test_usage_decisions.py)
    assert DIMENSIONS == {**FIELDS, "decision": "decision"}


def test_a_page_past_the_last_still_carries_the_totals(stored: Client) -> None:
    query = UsageQuery(START, END, ("user",), organization_id="seoul")
    whole = usage(stored, query)
    beyond = usage(stored, _with(query, after=(0, "zzzz")))
    assert beyond.rows == [] and not beyond.has_more
    assert beyond.totals == whole.totals and whole.totals.events > 0


def test_every_rollup_of_the_registry_answers_the_questions_that_fit_it() -> None:
    """The planner knows the rollups from the registry alone: each answers a question split by
    its dimensions over a range of its windows (the month starts move to a window inside)."""
    names = {column: name for name, column in DIMENSIONS.items()}
    inside = {"minute": timedelta(minutes=7), "hour": timedelta(hours=5),
              "day": timedelta(days=3), "month": timedelta(0)}  # fmt: skip
    for rollup in ROLLUPS:
        query = UsageQuery(
            START + inside[rollup.grain],
            END,
            tuple(names[column] for column in rollup.dimensions),
            granularity=rollup.grain if rollup.grain in GRANULARITIES else None,
            time_zone=rollup.calendar if rollup.dated else "Asia/Seoul",
        )
        assert plan(query, quantities=not rollup.cost_only).table == rollup.table


def test_a_cost_only_answer_has_the_same_costs_without_quantities(stored: Client) -> None:
    query = UsageQuery(START, END, ("department",), limit=1000)
    full, lean = usage(stored, query), usage(stored, query, quantities=False)
    assert [(r.keys, r.cost, r.events) for r in lean.rows] == [
        (r.keys, r.cost, r.events) for r in full.rows
    ]
    assert all(set(r.quantities.values()) == {0} for r in lean.rows)
    assert any(r.quantities["input_tokens"] for r in full.rows)


def test_a_minute_aligned_cost_question_reads_the_minute_rollup_exactly(stored: Client) -> None:
    query = UsageQuery(START + timedelta(minutes=7), END - timedelta(minutes=3),
                       ("department", "user"), granularity="day", limit=5000)  # fmt: skip
    assert plan(query).table == "ledger"  # quantities need the ledger
    assert plan(query, quantities=False).table == "usage_cost_1m"
    page = usage(stored, query, quantities=False)
    want = expected(query)
    assert {r.sort_key(): (r.events, r.cost) for r in page.rows} == {
        key: (events, cost) for key, (events, cost, _late) in want.items()
    }
    assert (page.totals.events, page.totals.cost) == (
        sum(v[0] for v in want.values()),
        sum(v[1] for v in want.values()),
    )
    assert plan(_with(query, group_by=("model",)), quantities=False).table == "ledger"
