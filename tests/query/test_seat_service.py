"""SeatService over a real gRPC channel with API keys, on seats, charges and usage stored in the
embedded ClickHouse by the seat ledger (its charges through Kafka and the sink) and the event
writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import yaml
from clickhouse_connect.driver.client import Client
from google.type import date_pb2
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider

from civicmeter.api.money import from_money
from civicmeter.api.seat.v1 import seat_service_pb2 as seat_pb
from civicmeter.api.seat.v1 import seat_service_pb2_grpc as seat_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.billing.seat_ledger import SeatLedger
from civicmeter.core.access.auth import hash_token, parse_api_keys
from civicmeter.core.config import BillingSettings, ClickHouseSettings
from civicmeter.core.store.connection import Storage
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.query.access import AccessInterceptor
from civicmeter.query.seat_service import SeatService
from civicmeter.sink.event_writer import write_events
from tests.billing.delivery import delivered
from tests.factories import CATALOG_DOC, NOW, event
from tests.sink.test_event_writer import rated

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

ALICE = "u_a11ce000000000000000000000000000"
BOB = "u_b0b00000000000000000000000000000"
CAROL = "u_ca401000000000000000000000000000"
DAVE = "u_da7e0000000000000000000000000000"
FRANK = "u_f4a4c000000000000000000000000000"
SEATS = f"""\
seat_id,organization,department,user,provider,service,plan,start,end
s-1,seoul,welfare,{ALICE},openai,chatgpt,team,2026-10-01,
s-2,seoul,safety,{BOB},openai,chatgpt,team,2026-11-10,
s-3,seoul,welfare,{CAROL},openai,chatgpt,team,2026-01-01,2026-11-15
b-1,busan,welfare,{ALICE},openai,chatgpt,team,2026-11-01,
"""
TODAY = date(2026, 11, 21)  # NOW in Seoul
SERVICE = seat_pb.SEAT_DIMENSION_SERVICE
KEYS = {"seoul": "cmk_seat_seoul", "busan": "cmk_seat_busan", "*": "cmk_seat_all",
        "security": "cmk_seat_security"}  # fmt: skip


def at(day: str, hour: int = 3) -> datetime:
    """A moment on a Seoul day (03:00 UTC is noon in Seoul)."""
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


@pytest.fixture
async def stub(
    clickhouse: Client, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[seat_grpc.SeatServiceStub]:
    (tmp_path / "seats.csv").write_text(SEATS, encoding="utf-8")
    (tmp_path / "prices.yaml").write_text(yaml.safe_dump(CATALOG_DOC), encoding="utf-8")
    storage = Storage(clickhouse)
    settings = BillingSettings(ClickHouseSettings(), prices_file=tmp_path / "prices.yaml",
                               seats_file=tmp_path / "seats.csv")  # fmt: skip
    telemetry = Telemetry(trace.get_tracer("test"), MeterProvider().get_meter("test"))
    async with delivered(kafka_bootstrap, storage) as delivery:  # charges go through the sink
        ledger = SeatLedger.from_settings(settings, storage, delivery.publisher, telemetry)
        await ledger.run_round(NOW)
        await delivery.drain()
    chat = {"service_id": "chatgpt", "request_model": ""}
    write_events(clickhouse, rated(
        event(user_id=ALICE, department_id="welfare", event_time=at("2026-11-20"), **chat),
        event(user_id=ALICE, department_id="welfare", event_time=at("2026-11-20")),
        event(user_id=CAROL, department_id="welfare", event_time=at("2026-10-01"), **chat),
        event(user_id=DAVE, event_time=at("2026-11-02")),
        event(user_id=FRANK, event_time=at("2026-11-03"),
              usage=pb.Usage(input_tokens=1000, output_tokens=201)),
        # 00:30 on 21 November in Seoul: the busan holder's use falls on the 21st.
        event(user_id=ALICE, organization_id="busan", event_time=at("2026-11-20", 15) .replace(
            minute=30), **chat),
    ))  # fmt: skip
    keys = parse_api_keys({"keys": [
        {"id": "seoul", "organization_id": "seoul", "role": "finance-reader",
         "sha256": hash_token(KEYS["seoul"])},
        {"id": "busan", "organization_id": "busan", "role": "auditor",
         "sha256": hash_token(KEYS["busan"])},
        {"id": "all", "organization_id": "*", "role": "admin", "sha256": hash_token(KEYS["*"])},
        {"id": "sec", "organization_id": "seoul", "role": "security",
         "sha256": hash_token(KEYS["security"])},
    ]})  # fmt: skip
    server = grpc.aio.server(interceptors=[AccessInterceptor(keys, None)])
    seat_grpc.add_SeatServiceServicer_to_server(SeatService(storage, lambda: TODAY), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield seat_grpc.SeatServiceStub(channel)
    await server.stop(None)


def key(name: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {KEYS[name]}"),)


def listing(as_of: datetime | None = None, **fields: object) -> seat_pb.ListSeatsRequest:
    request = seat_pb.ListSeatsRequest(**fields)  # type: ignore[arg-type]
    if as_of is not None:
        request.as_of_time.FromDatetime(as_of)
    return request


def day(value: date_pb2.Date) -> date | None:
    return date(value.year, value.month, value.day) if value.year else None


def seen(response: seat_pb.ListSeatsResponse) -> list[tuple[str, str, bool, date | None]]:
    return [(s.organization_id, s.seat_id, s.idle, day(s.last_used_date)) for s in response.seats]


async def test_seats_held_on_a_day_with_their_fee_last_use_and_idleness(
    stub: seat_grpc.SeatServiceStub,
) -> None:
    response = await stub.ListSeats(listing(), metadata=key("seoul"))  # today: 21 November
    assert seen(response) == [("seoul", "s-1", False, date(2026, 11, 20)),
                              ("seoul", "s-2", True, None)]  # fmt: skip
    first = response.seats[0]
    assert (first.department_id, first.user_id, first.service_id, first.plan) == (
        "welfare", ALICE, "chatgpt", "team")  # fmt: skip
    assert from_money(first.monthly_fee) == Decimal(29000)
    assert first.monthly_fee.currency_code == "KRW"
    assert first.price_version == "v2"
    assert day(first.start_date) == date(2026, 10, 1) and not first.HasField("end_date")
    # The ended seat was held on the 14th; its holder last used it on 1 October.
    earlier = await stub.ListSeats(listing(at("2026-11-14")), metadata=key("seoul"))
    assert seen(earlier) == [("seoul", "s-1", True, None),
                             ("seoul", "s-2", True, None),
                             ("seoul", "s-3", True, date(2026, 10, 1))]  # fmt: skip
    assert day(earlier.seats[2].end_date) == date(2026, 11, 15)
    only_idle = await stub.ListSeats(listing(only_idle=True), metadata=key("seoul"))
    assert [s.seat_id for s in only_idle.seats] == ["s-2"]


async def test_idle_is_no_use_in_the_last_idle_days_days_up_to_and_including_the_day(
    stub: seat_grpc.SeatServiceStub,
) -> None:
    one = await stub.ListSeats(listing(idle_days=1), metadata=key("seoul"))
    two = await stub.ListSeats(listing(idle_days=2), metadata=key("seoul"))
    assert [s.idle for s in one.seats] == [True, True]  # used on the 20th, not the 21st
    assert [s.idle for s in two.seats] == [False, True]
    # Seoul days: use at 00:30 on the 21st in Seoul (15:30 UTC on the 20th) is the 21st's.
    busan = await stub.ListSeats(listing(idle_days=1), metadata=key("busan"))
    assert seen(busan) == [("busan", "b-1", False, date(2026, 11, 21))]


async def test_pages_of_seats_add_up_to_the_unpaged_list(stub: seat_grpc.SeatServiceStub) -> None:
    for fields in ({}, {"only_idle": True}):
        whole = await stub.ListSeats(listing(at("2026-11-14"), **fields), metadata=key("*"))
        request = listing(at("2026-11-14"), page_size=1, **fields)
        paged: list[seat_pb.Seat] = []
        while True:
            page = await stub.ListSeats(request, metadata=key("*"))
            assert len(page.seats) <= 1
            paged += page.seats
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        assert paged == list(whole.seats) and len(paged) >= 3
        assert not whole.next_page_token
    assert {s.organization_id for s in whole.seats} == {"seoul", "busan"}


def summary_request(
    group_by: seat_pb.SeatDimension.ValueType, **fields: object
) -> seat_pb.GetSeatSummaryRequest:
    return seat_pb.GetSeatSummaryRequest(
        month=date_pb2.Date(year=2026, month=11), group_by=group_by,
        **fields)  # type: ignore[arg-type]  # fmt: skip


Line = tuple[str, int, int, int, Decimal, Decimal, int, Decimal | None]


def lines(response: seat_pb.GetSeatSummaryResponse) -> list[Line]:
    def one(line: seat_pb.SeatSummaryLine) -> Line:
        per_user = (from_money(line.cost_per_active_user)
                    if line.HasField("cost_per_active_user") else None)  # fmt: skip
        return (line.key, line.seats, line.active_seats, line.idle_seats,
                from_money(line.seat_cost), from_money(line.usage_cost), line.active_users,
                per_user)  # fmt: skip

    return [one(line) for line in [*response.lines, response.total]]


async def test_a_month_per_service_and_per_department_to_the_fraction_of_a_won(
    stub: seat_grpc.SeatServiceStub,
) -> None:
    # November: three chatgpt seats charged 29,000 each; gpt-4o calls of 6.32 (ALICE, DAVE)
    # and 6.3336 (FRANK: one more output token's 0.0136).
    by_service = await stub.GetSeatSummary(
        summary_request(seat_pb.SEAT_DIMENSION_SERVICE), metadata=key("seoul"))  # fmt: skip
    assert lines(by_service) == [
        ("chatgpt", 3, 1, 2, Decimal(87000), Decimal(0), 1, Decimal(87000)),
        ("openai-api", 0, 0, 0, Decimal(0), Decimal("18.9736"), 3, Decimal("6.324533")),
        ("", 3, 1, 2, Decimal(87000), Decimal("18.9736"), 3, Decimal("29006.324533")),
    ]
    by_department = await stub.GetSeatSummary(
        summary_request(seat_pb.SEAT_DIMENSION_DEPARTMENT), metadata=key("seoul"))  # fmt: skip
    assert lines(by_department) == [
        ("digital-policy", 0, 0, 0, Decimal(0), Decimal("12.6536"), 2, Decimal("6.3268")),
        ("safety", 1, 0, 1, Decimal(29000), Decimal(0), 0, None),
        ("welfare", 2, 1, 1, Decimal(58000), Decimal("6.32"), 1, Decimal("58006.32")),
        ("", 3, 1, 2, Decimal(87000), Decimal("18.9736"), 3, Decimal("29006.324533")),
    ]
    paged: list[seat_pb.SeatSummaryLine] = []
    request = summary_request(seat_pb.SEAT_DIMENSION_DEPARTMENT, page_size=2)
    while True:
        page = await stub.GetSeatSummary(request, metadata=key("seoul"))
        assert page.total == by_department.total
        paged += page.lines
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert paged == list(by_department.lines)


async def test_a_past_month_judges_its_seats_on_its_last_day(
    stub: seat_grpc.SeatServiceStub,
) -> None:
    request = summary_request(seat_pb.SEAT_DIMENSION_SERVICE)
    request.month.month = 10
    # s-1 and s-3 were held in October; CAROL used hers on 1 October, 30 days before the 31st:
    # idle with 30 idle days, active with 31. ALICE did not use hers in October.
    october = await stub.GetSeatSummary(request, metadata=key("seoul"))
    assert lines(october)[0] == ("chatgpt", 2, 0, 2, Decimal(58000), Decimal(0), 1,
                                 Decimal(58000))  # fmt: skip
    request.idle_days = 31
    longer = await stub.GetSeatSummary(request, metadata=key("seoul"))
    assert lines(longer)[0][1:4] == (2, 1, 1)


async def test_tenants_roles_and_bad_arguments(stub: seat_grpc.SeatServiceStub) -> None:
    denied, invalid = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT
    seoul, busan = key("seoul"), key("busan")
    summary = stub.GetSeatSummary
    no_month = seat_pb.GetSeatSummaryRequest(group_by=SERVICE)
    bad_month = seat_pb.GetSeatSummaryRequest(
        group_by=SERVICE, month=date_pb2.Date(year=2026, month=13)
    )
    calls = [
        (stub.ListSeats(listing(organization_id="busan"), metadata=seoul), denied, "organization"),
        (summary(summary_request(SERVICE, organization_id="seoul"), metadata=busan), denied,
         "organization_id"),
        (stub.ListSeats(listing(), metadata=key("security")), denied, "role 'security'"),
        (stub.ListSeats(listing(page_size=1001), metadata=seoul), invalid, "page_size"),
        (stub.ListSeats(listing(idle_days=-1), metadata=seoul), invalid, "idle_days"),
        (stub.ListSeats(listing(page_token="nonsense"), metadata=seoul), invalid, "page_token"),
        (summary(summary_request(seat_pb.SEAT_DIMENSION_UNSPECIFIED), metadata=seoul), invalid,
         "group_by"),
        (summary(no_month, metadata=seoul), invalid, "month"),
        (summary(bad_month, metadata=seoul), invalid, "month"),
    ]  # fmt: skip
    for call, code, field in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert (info.value.code(), field in (info.value.details() or "")) == (code, True)
    # A token of one request does not page another.
    first = await stub.ListSeats(listing(page_size=1), metadata=key("seoul"))
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        again = listing(page_size=1, only_idle=True, page_token=first.next_page_token)
        await stub.ListSeats(again, metadata=key("seoul"))
    assert foreign.value.code() == invalid
    mine = await stub.ListSeats(listing(), metadata=key("busan"))
    assert {s.organization_id for s in mine.seats} == {"busan"}
