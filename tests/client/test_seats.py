"""The client's seat helpers against a real server: dates as `date`, money as Decimal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import yaml
from clickhouse_connect.driver.client import Client
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider

from civicmeter.api.seat.v1 import seat_service_pb2_grpc as seat_grpc
from civicmeter.billing.seat_ledger import SeatLedger
from civicmeter.client import CivicmeterClient, Seat, SeatSummaryLine
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

USER = "u_0123456789abcdef0123456789abcdef"
IDLE = "u_fedcba9876543210fedcba9876543210"
TODAY = date(2026, 11, 21)


@pytest.fixture
async def target(clickhouse: Client, kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[str]:
    seats = tmp_path / "seats.csv"
    seats.write_text(
        "seat_id,organization,department,user,provider,service,plan,start,end\n"
        + "".join(
            f"s-{n},seoul,welfare,{user},openai,chatgpt,team,2026-11-0{n},\n"
            for n, user in ((1, USER), (2, IDLE))
        )
        + f"s-3,seoul,welfare,u_{'3' * 32},openai,chatgpt,team,2026-12-01,2026-12-31\n",
        encoding="utf-8",
    )
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump(CATALOG_DOC), encoding="utf-8")
    storage = Storage(clickhouse)
    telemetry = Telemetry(trace.get_tracer("test"), MeterProvider().get_meter("test"))
    settings = BillingSettings(ClickHouseSettings(), prices_file=prices, seats_file=seats)
    async with delivered(kafka_bootstrap, storage) as delivery:  # charges go through the sink
        ledger = SeatLedger.from_settings(settings, storage, delivery.publisher, telemetry)
        await ledger.run_round(NOW)
        await delivery.drain()
    write_events(clickhouse, rated(event(user_id=USER, service_id="chatgpt", request_model="")))
    server = grpc.aio.server(interceptors=[AccessInterceptor(None, None)])
    seat_grpc.add_SeatServiceServicer_to_server(SeatService(storage, lambda: TODAY), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_seats_come_back_typed_page_after_page(target: str) -> None:
    async with CivicmeterClient(target) as api:
        seats = [seat async for seat in api.seats(page_size=1)]
        idle = [seat.seat_id async for seat in api.seats(only_idle=True)]
        december = [s.seat_id async for s in api.seats(as_of=NOW + timedelta(days=15))]
    assert seats == [
        Seat("seoul", "s-1", "welfare", USER, "openai", "chatgpt", "team", date(2026, 11, 1),
             None, Decimal(29000), "v2", TODAY, False),
        Seat("seoul", "s-2", "welfare", IDLE, "openai", "chatgpt", "team", date(2026, 11, 2),
             None, Decimal(29000), "v2", None, True),
    ]  # fmt: skip
    assert idle == ["s-2"]
    # December is not charged yet (the ledger ran in November): no fee, not a fee of 0.
    assert december == ["s-1", "s-2", "s-3"]
    async with CivicmeterClient(target) as api:
        later = [s async for s in api.seats(as_of=NOW + timedelta(days=15))]
    assert [s.monthly_fee_krw for s in later] == [None, None, None]
    assert later[2].end == date(2026, 12, 31)


async def test_a_seat_summary_with_cost_per_active_user(target: str) -> None:
    async with CivicmeterClient(target) as api:
        summary = await api.seat_summary(date(2026, 11, 5), "service", page_size=1)
    assert summary.lines == [
        SeatSummaryLine("chatgpt", 2, 1, 1, Decimal(58000), Decimal(0), 1, Decimal(58000))
    ]
    assert summary.total == SeatSummaryLine("", 2, 1, 1, Decimal(58000), Decimal(0), 1,
                                            Decimal(58000))  # fmt: skip
