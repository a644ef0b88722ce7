"""The seat ledger on the real broker and the embedded ClickHouse: seats stored, one charge per
seat and Seoul month produced to usage.rated and stored by the sink, rounds that repeat without
charging twice, and files that are bad keeping the last good one."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from civicmeter.billing.seat_file import SeatFileError
from civicmeter.billing.seat_ledger import (
    RoundResult,
    SeatLedger,
    charge_event,
    months_charged,
    seoul_date,
)
from civicmeter.billing.service import jobs
from civicmeter.core.config import BillingSettings, ClickHouseSettings
from civicmeter.core.store.seats import Seat, live_seats, month_fees
from civicmeter.core.telemetry.setup import Telemetry
from tests.billing.delivery import Delivery

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

ALICE = "u_0123456789abcdef0123456789abcdef"
BOB = "u_fedcba9876543210fedcba9876543210"
HEADER = "seat_id,organization,department,user,provider,service,plan,start,end"
CATALOG = """\
currency: KRW
versions:
  - version: "2024-01"
    effective_from: "2024-01-01T00:00:00+09:00"
    prices:
      - {provider: openai, service: chatgpt, unit: seat_months, price: "29000"}
      - {provider: anthropic, service: claude, unit: seat_months, price: "29000"}
  - version: "2024-10"
    effective_from: "2024-10-01T00:00:00+09:00"
    based_on: "2024-01"
    prices:
      - {provider: openai, service: chatgpt, unit: seat_months, price: "31000"}
"""
# 2024-11-20 in Seoul.
NOW = datetime(2024, 11, 20, 3, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def seat(start: date, end: date | None = None, seat_id: str = "s-1") -> Seat:
    return Seat("seoul", seat_id, "welfare", ALICE, "openai", "chatgpt", "team", start, end)


def test_a_seat_is_charged_for_every_seoul_month_it_is_held_in_up_to_this_month() -> None:
    mid_month = seat(date(2024, 1, 15), date(2024, 3, 1))
    assert list(months_charged(mid_month, date(2024, 11, 20))) == [
        date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)]  # fmt: skip
    assert list(months_charged(mid_month, date(2024, 2, 29))) == [
        date(2024, 1, 1), date(2024, 2, 1)]  # fmt: skip
    open_ended = seat(date(2024, 11, 30))
    assert list(months_charged(open_ended, date(2025, 2, 1))) == [
        date(2024, 11, 1), date(2024, 12, 1), date(2025, 1, 1), date(2025, 2, 1)]  # fmt: skip
    assert list(months_charged(seat(date(2024, 12, 1)), date(2024, 11, 30))) == []
    # 15:30 UTC on 31 January is already 1 February in Seoul.
    assert seoul_date(datetime(2024, 1, 31, 15, 30, tzinfo=UTC)) == date(2024, 2, 1)
    assert seoul_date(datetime(2024, 1, 31, 14, 59, tzinfo=UTC)) == date(2024, 1, 31)


def test_a_charge_starts_at_the_later_of_the_month_and_the_seat_at_midnight_in_seoul() -> None:
    held = seat(date(2024, 1, 15), date(2024, 3, 1))
    first, second = charge_event(held, date(2024, 1, 1)), charge_event(held, date(2024, 2, 1))
    assert first.event_time.ToDatetime(UTC) == datetime(2024, 1, 14, 15, 0, tzinfo=UTC)
    assert second.event_time.ToDatetime(UTC) == datetime(2024, 1, 31, 15, 0, tzinfo=UTC)
    assert (first.event_id, second.event_id) == ("seat:s-1:2024-01", "seat:s-1:2024-02")
    assert (first.operation_name, first.request_model, first.usage.seat_months) == (
        "subscription", "team", 1)  # fmt: skip
    assert (first.organization_id, first.department_id, first.user_id) == (
        "seoul", "welfare", ALICE)  # fmt: skip


class Ledger:
    """A ledger over files in a temporary directory, with its charge counter readable."""

    def __init__(self, tmp_path: Path, delivery: Delivery, seats: list[str]) -> None:
        self.seats_file = tmp_path / "seats.csv"
        self.prices_file = tmp_path / "prices.yaml"
        self.write_seats(seats)
        self.prices_file.write_text(CATALOG, encoding="utf-8")
        self.reader = InMemoryMetricReader()
        meter = MeterProvider(metric_readers=[self.reader]).get_meter("test")
        settings = BillingSettings(
            clickhouse=ClickHouseSettings(), prices_file=self.prices_file,
            seats_file=self.seats_file, interval_seconds=0.05)  # fmt: skip
        telemetry = Telemetry(trace.get_tracer("test"), meter)
        self.job = SeatLedger.from_settings(
            settings, delivery.storage, delivery.publisher, telemetry
        )
        self.client = delivery.storage.client
        self.delivery = delivery

    async def round(self, now: datetime) -> RoundResult:
        """A round, then the sink's write of what it produced."""
        result = await self.job.run_round(now)
        await self.delivery.drain()
        return result

    def write_seats(self, rows: list[str]) -> None:
        self.seats_file.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
        # Edits within one clock tick must still count as changes.
        stamp = self.seats_file.stat().st_mtime_ns + 1_000_000_000 * getattr(self, "_edits", 0)
        self._edits = getattr(self, "_edits", 0) + 1
        os.utime(self.seats_file, ns=(stamp, stamp))

    def counted(self, outcome: str) -> int:
        data = self.reader.get_metrics_data()
        total = 0
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "civicmeter.billing.seat_charges":
                        for point in metric.data.data_points:
                            if (point.attributes or {}).get("outcome") == outcome:
                                total += int(getattr(point, "value", 0))
        return total

    def charges(self) -> list[tuple[str, str, datetime, Decimal, str]]:
        rows = self.client.query(
            "SELECT event_id, department_id, event_time, cost_krw, price_version "
            "FROM usage_events FINAL ORDER BY event_id"
        ).result_rows
        return [(r[0], r[1], r[2].replace(tzinfo=UTC), Decimal(r[3]), r[4]) for r in rows]

    def monthly(
        self, table: str = "usage_rollup_1mo_departments"
    ) -> dict[tuple[date, str], tuple[int, int, Decimal]]:
        rows = self.client.query(
            f"SELECT window_start, department_id, sum(events), sum(seat_months), sum(cost_krw) "
            f"FROM {table} GROUP BY window_start, department_id"
        ).result_rows
        return {(r[0], r[1]): (int(r[2]), int(r[3]), Decimal(r[4])) for r in rows}


def row(seat_id: str, user: str, start: str, end: str = "", department: str = "welfare",
        service: str = "openai,chatgpt") -> str:  # fmt: skip
    return f"{seat_id},seoul,{department},{user},{service},team,{start},{end}"


async def test_a_round_charges_each_seat_month_once_and_the_rollups_count_it_once(
    tmp_path: Path, clickhouse: Client, delivery: Delivery
) -> None:
    ledger = Ledger(tmp_path, delivery, [
        row("s-1", ALICE, "2024-08-20", "2024-10-05"),
        row("s-2", BOB, "2024-10-31", department="safety"),
    ])  # fmt: skip
    first = await ledger.round(NOW)
    assert (first.seats_written, first.charged, first.charged_krw) == (2, 5, Decimal(151000))
    charge_ids = ["seat:s-1:2024-08", "seat:s-1:2024-09", "seat:s-1:2024-10", "seat:s-2:2024-10",
                  "seat:s-2:2024-11"]  # fmt: skip
    assert sorted(delivery.event_ids) == charge_ids  # through usage.rated, as rated events
    seoul_midnight = datetime(2024, 8, 19, 15, tzinfo=UTC)
    assert ledger.charges() == [
        ("seat:s-1:2024-08", "welfare", seoul_midnight, Decimal(29000), "2024-01"),
        ("seat:s-1:2024-09", "welfare", datetime(2024, 8, 31, 15, tzinfo=UTC), Decimal(29000),
         "2024-01"),
        ("seat:s-1:2024-10", "welfare", datetime(2024, 9, 30, 15, tzinfo=UTC), Decimal(31000),
         "2024-10"),
        ("seat:s-2:2024-10", "safety", datetime(2024, 10, 30, 15, tzinfo=UTC), Decimal(31000),
         "2024-10"),
        ("seat:s-2:2024-11", "safety", datetime(2024, 10, 31, 15, tzinfo=UTC), Decimal(31000),
         "2024-10"),
    ]  # fmt: skip
    expected = {
        (date(2024, 8, 1), "welfare"): (1, 1, Decimal(29000)),
        (date(2024, 9, 1), "welfare"): (1, 1, Decimal(29000)),
        (date(2024, 10, 1), "welfare"): (1, 1, Decimal(31000)),
        (date(2024, 10, 1), "safety"): (1, 1, Decimal(31000)),
        (date(2024, 11, 1), "safety"): (1, 1, Decimal(31000)),
    }
    assert ledger.monthly() == expected
    assert ledger.monthly("usage_rollup_1mo") == expected

    again = await ledger.round(NOW)
    assert (again.seats_written, again.charged) == (0, 0)
    # Even with the ledger's own record lost (a crash before it was written), a repeated
    # round stores nothing twice: the writer finds the charges stored.
    clickhouse.command("TRUNCATE TABLE seat_charges")
    rewritten = await ledger.round(NOW)
    assert rewritten.charged == 5
    assert sorted(delivery.event_ids) == sorted(charge_ids * 2)  # produced again, stored once
    assert ledger.monthly() == expected
    assert len(ledger.charges()) == 5
    assert ledger.counted("charged") == 10

    december = await ledger.round(datetime(2024, 12, 1, 0, 0, tzinfo=UTC))
    assert december.charged == 1
    assert ledger.monthly()[(date(2024, 12, 1), "safety")] == (1, 1, Decimal(31000))
    fees = month_fees(clickhouse, date(2024, 10, 1), "seoul")
    assert fees == {("seoul", "s-1"): (Decimal(31000), "2024-10"),
                    ("seoul", "s-2"): (Decimal(31000), "2024-10")}  # fmt: skip


async def test_edited_and_removed_seats_are_stored_as_the_file_now_says(
    tmp_path: Path, clickhouse: Client, delivery: Delivery
) -> None:
    ledger = Ledger(tmp_path, delivery, [row("s-1", ALICE, "2024-11-01"),
                                           row("s-2", BOB, "2024-11-01")])  # fmt: skip
    await ledger.round(NOW)
    ledger.write_seats([row("s-1", ALICE, "2024-11-01", department="safety")])
    result = await ledger.round(NOW)
    assert (result.seats_written, result.seats_removed, result.charged) == (1, 1, 0)
    assert [(s.seat_id, s.department_id) for s in live_seats(clickhouse)] == [("s-1", "safety")]
    # A charge once made stands; the removed seat is charged no further month.
    december = await ledger.round(datetime(2024, 12, 5, tzinfo=UTC))
    assert december.charged == 1
    assert [c[0] for c in ledger.charges()] == ["seat:s-1:2024-11", "seat:s-1:2024-12",
                                                "seat:s-2:2024-11"]  # fmt: skip
    assert ledger.charges()[1][1] == "safety"


async def test_a_bad_seat_file_is_logged_and_the_last_good_seats_stay_in_force(
    tmp_path: Path, clickhouse: Client, delivery: Delivery, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(tmp_path, delivery, [row("s-1", ALICE, "2024-11-01")])
    await ledger.round(NOW)
    ledger.write_seats([row("s-1", ALICE, "2024-11-01"), row("s-2", BOB, "2024-13-01")])
    with caplog.at_level(logging.ERROR, logger="civicmeter.billing"):
        result = await ledger.round(datetime(2024, 12, 2, tzinfo=UTC))
    assert result.charged == 1  # s-1's December, from the last good file
    assert f"{ledger.seats_file}:3: start: '2024-13-01' is not a date" in caplog.text
    assert [s.seat_id for s in live_seats(clickhouse)] == ["s-1"]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="civicmeter.billing"):
        await ledger.round(datetime(2024, 12, 2, tzinfo=UTC))
    assert caplog.text == ""  # said once, not every round
    ledger.write_seats([row("s-1", ALICE, "2024-11-01"), row("s-2", BOB, "2024-12-01")])
    fixed = await ledger.round(datetime(2024, 12, 2, tzinfo=UTC))
    assert (fixed.seats_written, fixed.charged) == (1, 1)
    assert [s.seat_id for s in live_seats(clickhouse)] == ["s-1", "s-2"]


async def test_a_seat_the_catalog_cannot_price_is_counted_not_charged_until_it_can(
    tmp_path: Path, clickhouse: Client, delivery: Delivery, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(tmp_path, delivery, [row("g-1", ALICE, "2024-11-01", service="gamma,gamma"),
                                           row("s-1", BOB, "2024-11-01")])  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="civicmeter.billing"):
        result = await ledger.round(NOW)
        await ledger.round(NOW)
    assert result.charged == 1
    assert [(s.seat_id, m) for s, m, _ in result.unpriced] == [("g-1", date(2024, 11, 1))]
    assert "seat g-1 of seoul not charged for 2024-11" in caplog.text
    assert "gamma/gamma" in caplog.text
    assert ledger.counted("unpriced") == 1
    assert [c[0] for c in ledger.charges()] == ["seat:s-1:2024-11"]
    # A bad catalog is logged and the last good one stays in force.
    ledger.prices_file.write_text("currency: KRW\nversions: []\n", encoding="utf-8")
    os.utime(ledger.prices_file, ns=(1, 1))
    with caplog.at_level(logging.ERROR):
        still = await ledger.round(NOW)
    assert len(still.unpriced) == 1
    assert "price catalog change rejected" in caplog.text
    assert str(ledger.prices_file) in caplog.text
    ledger.prices_file.write_text(
        CATALOG + '      - {provider: gamma, service: gamma, unit: seat_months, price: "14000"}\n',
        encoding="utf-8",
    )
    priced = await ledger.round(NOW)
    assert (priced.charged, priced.charged_krw, priced.unpriced) == (1, Decimal(14000), [])


async def test_the_billing_service_runs_the_ledger_only_with_a_seat_file(
    tmp_path: Path, delivery: Delivery
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(CATALOG, encoding="utf-8")
    telemetry = Telemetry(trace.get_tracer("test"), MeterProvider().get_meter("test"))
    storage, publisher = delivery.storage, delivery.publisher
    settings = BillingSettings(clickhouse=ClickHouseSettings(), prices_file=prices)
    found = jobs(settings, storage, publisher, telemetry)
    assert not any(isinstance(job, SeatLedger) for job in found)
    seats = tmp_path / "seats.csv"
    seats.write_text(HEADER + "\n" + row("s-1", ALICE, "2024-11-01") + "\n", encoding="utf-8")
    with_seats = BillingSettings(clickhouse=ClickHouseSettings(), prices_file=prices,
                                 seats_file=seats)  # fmt: skip
    found = jobs(with_seats, storage, publisher, telemetry)
    assert any(isinstance(job, SeatLedger) for job in found)
    seats.write_text(HEADER + "\n" + row("s-1", "kim@seoul.go.kr", "2024-11-01") + "\n")
    with pytest.raises(SeatFileError, match=r"seats.csv:2: user: must be pseudonymised"):
        jobs(with_seats, storage, publisher, telemetry)


def test_a_bad_seat_file_at_start_up_stops_the_billing_service_with_exit_status_2(
    tmp_path: Path,
) -> None:
    seats = tmp_path / "seats.csv"
    seats.write_text(HEADER + "\n" + row("s-1", ALICE, "2024-11-01", "2024-10-31") + "\n")
    env = {**os.environ, "CIVICMETER_SEATS_FILE": str(seats),
           "CIVICMETER_PRICES_FILE": str(REPO / "config" / "prices.yaml"),
           "CLICKHOUSE_PATH": str(tmp_path / "chdb"), "OTEL_SDK_DISABLED": "true"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "civicmeter", "billing"],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert (
        f"civicmeter: configuration error: {seats}:2: end: 2024-10-31 is before the start "
        "2024-11-01"
    ) in done.stderr
