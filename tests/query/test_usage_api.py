"""QueryUsage, GetCostSummary and ExportUsage over a real gRPC channel on real ClickHouse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import grpc
import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.store.connection import Storage
from civicmeter.query.access import AccessInterceptor
from civicmeter.query.usage_api import QueryService
from civicmeter.sink.event_writer import write_events
from tests.factories import event

SEOUL = ZoneInfo("Asia/Seoul")
UNKNOWN_DIMENSION = query_pb.Dimension.ValueType(99)
OCT = datetime(2026, 10, 1, tzinfo=SEOUL)
NOV = datetime(2026, 11, 1, tzinfo=SEOUL)
DEC = datetime(2026, 12, 1, tzinfo=SEOUL)


def charge(i: int, when: datetime, *, late: bool = False, seat: bool = False) -> pb.RatedUsageEvent:
    e = event(
        event_id=f"a-{i}",
        department_id=["welfare", "transport"][i % 2],
        event_time=when,
        service_id="chatgpt" if seat else "openai-api",
        request_model="business" if seat else "gpt-4o",
        operation_name="subscription" if seat else "chat",
        usage=pb.Usage(seat_months=1) if seat else pb.Usage(input_tokens=100 + i, requests=1),
    )
    cost = "29000" if seat else f"{i}.25"
    return pb.RatedUsageEvent(event=e, cost_krw=cost, price_version="v1", late=late)


EVENTS = [
    *(charge(i, OCT + timedelta(days=i, hours=3)) for i in range(1, 21)),
    charge(21, OCT + timedelta(days=2), seat=True),
    charge(22, NOV + timedelta(days=1), seat=True),
    charge(23, NOV + timedelta(days=3), late=True),
    charge(24, NOV - timedelta(minutes=1), late=True),  # the last minute of October in Seoul
]


@pytest.fixture
async def stub(clickhouse: Client) -> AsyncIterator[query_grpc.QueryServiceStub]:
    write_events(clickhouse, EVENTS)
    server = grpc.aio.server(interceptors=[AccessInterceptor(None, None)])  # open access
    query_grpc.add_QueryServiceServicer_to_server(QueryService(Storage(clickhouse)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield query_grpc.QueryServiceStub(channel)
    await server.stop(None)


def ranged(message: object, start: datetime, end: datetime) -> object:
    message.start_time.FromDatetime(start)  # type: ignore[attr-defined]
    message.end_time.FromDatetime(end)  # type: ignore[attr-defined]
    return message


def cost_of(events: list[pb.RatedUsageEvent]) -> Decimal:
    return sum((Decimal(e.cost_krw) for e in events), Decimal(0))


def in_range(start: datetime, end: datetime) -> list[pb.RatedUsageEvent]:
    return [e for e in EVENTS if start <= e.event.event_time.ToDatetime(UTC) < end]


async def test_pages_of_any_size_follow_tokens_to_the_unpaged_result(
    stub: query_grpc.QueryServiceStub,
) -> None:
    def request(page_size: int) -> query_pb.QueryUsageRequest:
        r = query_pb.QueryUsageRequest(
            group_by=[query_pb.DIMENSION_DEPARTMENT],
            granularity=query_pb.GRANULARITY_DAY,
            page_size=page_size,
        )
        ranged(r, OCT, DEC)
        return r

    whole = await stub.QueryUsage(request(1000))
    assert not whole.next_page_token
    assert from_money(whole.totals.cost) == cost_of(EVENTS)
    assert sum(line.event_count for line in whole.lines) == len(EVENTS)
    for size in (1, 3, 7):
        lines = []
        r = request(size)
        while True:
            page = await stub.QueryUsage(r)
            assert len(page.lines) <= size
            lines += list(page.lines)
            if not page.next_page_token:
                break
            r.page_token = page.next_page_token
        assert lines == list(whole.lines)


async def test_quantities_buckets_and_late_events_per_line(
    stub: query_grpc.QueryServiceStub,
) -> None:
    r = query_pb.QueryUsageRequest(
        group_by=[query_pb.DIMENSION_SERVICE],
        granularity=query_pb.GRANULARITY_MONTH,
        filters=[query_pb.DimensionFilter(dimension=query_pb.DIMENSION_SERVICE,
                                          values=["openai-api"])],
    )  # fmt: skip
    answer = await stub.QueryUsage(ranged(r, OCT, DEC))
    months = {line.bucket_start_time.ToDatetime(UTC): line for line in answer.lines}
    assert set(months) == {OCT.astimezone(UTC),
                           NOV.astimezone(UTC)}  # fmt: skip
    october = months[OCT.astimezone(UTC)]
    metered_october = [e for e in in_range(OCT, NOV) if e.event.service_id == "openai-api"]
    assert october.event_count == len(metered_october)
    assert october.quantities.input_tokens == sum(
        e.event.usage.input_tokens for e in metered_october
    )
    assert october.late_event_count == 1  # the event in October's last minute
    assert from_money(october.late_cost) == Decimal("24.25")


async def test_the_cost_summary_splits_subscriptions_usage_and_late_corrections(
    stub: query_grpc.QueryServiceStub,
) -> None:
    answer = await stub.GetCostSummary(ranged(query_pb.GetCostSummaryRequest(), OCT, DEC))
    assert [p.start_time.ToDatetime(UTC) for p in answer.periods] == [
        OCT.astimezone(UTC),
        NOV.astimezone(UTC),
    ]
    october, november = answer.periods
    assert from_money(october.subscription_cost) == Decimal(29000)
    assert from_money(october.usage_cost) == cost_of(
        [e for e in in_range(OCT, NOV) if e.event.operation_name != "subscription"]
    )
    assert from_money(october.late_correction_cost) == Decimal("24.25")
    assert from_money(november.total_cost) == Decimal("29023.25")
    assert from_money(answer.total.total_cost) == cost_of(EVENTS)
    assert answer.total.event_count == len(EVENTS)


async def test_the_focus_export_covers_every_won_once(stub: query_grpc.QueryServiceStub) -> None:
    lines = []
    async for chunk in stub.ExportUsage(ranged(query_pb.ExportUsageRequest(), OCT, DEC)):
        lines += list(chunk.lines)
    assert sum((from_money(line.billed_cost) for line in lines), Decimal(0)) == cost_of(EVENTS)
    assert sum(line.x_event_count for line in lines) == len(EVENTS)
    seats = [line for line in lines if line.charge_category == "Purchase"]
    assert len(seats) == 2
    assert {
        (s.charge_frequency, s.pricing_unit, s.pricing_quantity, s.consumed_quantity) for s in seats
    } == {("Recurring", "Seat-Months", "1", "")}
    # Late events are ordinary usage of their day: nothing was re-rated, so nothing corrects.
    assert [line for line in lines if line.charge_class] == []
    for line in lines:
        assert line.billing_currency == "KRW"
        assert line.service_category == "AI and Machine Learning"
        start = line.charge_period_start.ToDatetime(UTC).astimezone(SEOUL)
        end = line.charge_period_end.ToDatetime(UTC).astimezone(SEOUL)
        assert (start.hour, end - start) == (0, timedelta(days=1))
        assert line.billing_period_start.ToDatetime(UTC) <= line.charge_period_start.ToDatetime(UTC)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (query_pb.QueryUsageRequest(), "start_time"),
        (ranged(query_pb.QueryUsageRequest(), NOV, OCT), "end_time"),
        (ranged(query_pb.QueryUsageRequest(group_by=[UNKNOWN_DIMENSION]), OCT, NOV), "group_by[0]"),
        (ranged(query_pb.QueryUsageRequest(time_zone="Mars/Base"), OCT, NOV), "time_zone"),
        (ranged(query_pb.QueryUsageRequest(page_token="junk"), OCT, NOV), "page_token"),
        (ranged(query_pb.QueryUsageRequest(page_size=5000), OCT, NOV), "page_size"),
        (ranged(query_pb.QueryUsageRequest(
            filters=[query_pb.DimensionFilter(dimension=query_pb.DIMENSION_USER)]), OCT, NOV),
         "filters"),
    ],
)  # fmt: skip
async def test_a_bad_request_is_refused_naming_the_field(
    stub: query_grpc.QueryServiceStub, request_: query_pb.QueryUsageRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.QueryUsage(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(f"{field}:")


async def test_a_summary_of_too_many_periods_is_refused(stub: query_grpc.QueryServiceStub) -> None:
    r = ranged(query_pb.GetCostSummaryRequest(granularity=query_pb.GRANULARITY_HOUR), OCT,
               OCT + timedelta(days=60))  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetCostSummary(r)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
