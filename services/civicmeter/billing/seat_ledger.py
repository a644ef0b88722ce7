"""The seat ledger: the seat file's seats in ClickHouse, and a charge per seat and month.

Each round the job rereads the seat file and the price catalog (with its FX table) if they
changed (a bad version is logged with its file, line and reason, and the last good one stays in
force), makes
seat_assignments match the seat file, and charges every seat for every Asia/Seoul calendar
month it is held in, up to the current month, that it has not been charged for yet.

A charge is a usage event like any other, so it lands in the rollups and its department pays:
event_id `seat:{seat_id}:{YYYY-MM}`, the seat's organisation, department, user, provider and
service, the plan as request_model, operation "subscription", one seat_months, at 00:00
Asia/Seoul on the first day of the month or the seat's start, whichever is later. The fee is a
whole month whatever day the seat starts or ends (no proration), rated by the catalog in force
at that moment. Charges are produced to usage.rated as rated events (billing/publisher.py) and,
once Kafka has acknowledged them, recorded in seat_charges; the sink stores them in
usage_events as it stores any rated event, once per event id. So a round may repeat, or die
half-way, without charging anything twice.

A charge, once written, stands: shortening or removing a seat stops further charges but does
not take back months already charged. A seat the catalog cannot price is not charged (never at
0): it is logged with the reason and counted, and charged by the first round whose catalog
prices it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from civicmeter.api.seoul import SEOUL, next_month
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.billing.publisher import Publisher
from civicmeter.billing.seat_file import SeatFileError, load_seats
from civicmeter.core.config import BillingSettings
from civicmeter.core.pricing import PriceCatalog, UnpricedError
from civicmeter.core.pricing.catalog_source import CatalogSource
from civicmeter.core.reloading import ReloadingFile
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.seats import (
    SUBSCRIPTION,
    Seat,
    SeatCharge,
    charge_event_id,
    charged_months,
    record_charges,
    sync_seats,
)
from civicmeter.core.telemetry.setup import Telemetry

log = logging.getLogger("civicmeter.billing.seats")
GATEWAY_ID = "civicmeter-seat-ledger"
WRITE_CHUNK = 5_000  # charges per produce and record: progress is kept as a round goes


def seoul_date(t: datetime) -> date:
    return t.astimezone(SEOUL).date()


def months_charged(seat: Seat, today: date) -> Iterator[date]:
    """First days of the Asia/Seoul months the seat is held in, up to today's month."""
    last = today if seat.end is None else min(seat.end, today)
    month = seat.start.replace(day=1)
    while month <= last:
        yield month
        month = next_month(month)


def charge_event(seat: Seat, month: date) -> pb.UsageEvent:
    """The unrated charge event of `seat` for the month starting on `month`."""
    event = pb.UsageEvent(
        event_id=charge_event_id(seat.seat_id, month),
        gateway_id=GATEWAY_ID,
        organization_id=seat.organization_id,
        department_id=seat.department_id,
        user_id=seat.user_id,
        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL,
        provider_name=seat.provider_name,
        service_id=seat.service_id,
        request_model=seat.plan,
        operation_name=SUBSCRIPTION,
        usage=pb.Usage(seat_months=1),
    )
    starts = max(month, seat.start)
    event.event_time.FromDatetime(datetime(starts.year, starts.month, starts.day, tzinfo=SEOUL))
    return event


@dataclass
class RoundResult:
    seats_written: int = 0
    seats_removed: int = 0
    charged: int = 0
    charged_krw: Decimal = Decimal(0)
    unpriced: list[tuple[Seat, date, str]] = field(default_factory=list)


class SeatLedger:
    def __init__(
        self,
        seats: ReloadingFile[list[Seat]],
        catalog: CatalogSource,
        storage: Storage,
        publisher: Publisher,
        telemetry: Telemetry,
        interval_seconds: float,
    ) -> None:
        self._seats = seats
        self._catalog = catalog
        self._storage = storage
        self._publisher = publisher
        self._interval = interval_seconds
        self._synced_generation = 0
        self._reported: set[tuple[str, str, date, str]] = set()  # unpriced, said once a catalog
        self._charges = telemetry.meter.create_counter(
            "civicmeter.billing.seat_charges",
            unit="{charge}",
            description="Monthly seat charges: written, or not priced by the catalog",
        )

    @classmethod
    def from_settings(
        cls,
        settings: BillingSettings,
        storage: Storage,
        publisher: Publisher,
        telemetry: Telemetry,
    ) -> SeatLedger:
        """Load the seat file and the catalog; either being bad raises (the service exits)."""
        assert settings.seats_file is not None
        seats = ReloadingFile(settings.seats_file, load_seats, (SeatFileError,), "seat file", log)
        catalog = CatalogSource(settings.prices_file)
        return cls(seats, catalog, storage, publisher, telemetry, settings.interval_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                result = await self.run_round()
            except Exception:  # a failed round is retried by the next one; the service lives on
                log.exception("seat ledger round failed; retrying in %.0f s", self._interval)
            else:
                if result.charged or result.seats_written or result.seats_removed:
                    log.info(
                        "seat ledger: %d seat(s) written, %d removed, %d charge(s) of %s KRW",
                        result.seats_written,
                        result.seats_removed,
                        result.charged,
                        result.charged_krw,
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)

    async def run_round(self, now: datetime | None = None) -> RoundResult:
        now = now or datetime.now(UTC)
        seats, catalog = await asyncio.to_thread(self._reread)
        result = RoundResult()
        generation = self._seats.generation
        if generation != self._synced_generation:
            synced = await self._storage.run(lambda c: sync_seats(c, seats))
            self._synced_generation = generation
            result.seats_written, result.seats_removed = synced.written, synced.removed
        charged = await self._storage.run(charged_months)
        rated, charges = self._rate(seats, charged, catalog, now, result)
        for start in range(0, len(rated), WRITE_CHUNK):
            batch = rated[start : start + WRITE_CHUNK]
            done = charges[start : start + WRITE_CHUNK]
            await self._publisher.charges(batch)  # acknowledged by Kafka before it is recorded
            await self._storage.run(
                functools.partial(record_charges, charges=done, now_ms=int(now.timestamp() * 1000))
            )
            result.charged += len(done)
            result.charged_krw += sum((c.cost_krw for c in done), Decimal(0))
            self._charges.add(len(done), {"outcome": "charged"})
        return result

    def _reread(self) -> tuple[list[Seat], PriceCatalog]:
        """The seats and the catalog in force, reread if their files changed."""
        if self._catalog.refresh():
            self._reported.clear()  # a new catalog: say again what it cannot price
        return self._seats.current(), self._catalog.catalog

    def _rate(
        self,
        seats: Sequence[Seat],
        charged: set[tuple[str, str, date]],
        catalog: PriceCatalog,
        now: datetime,
        result: RoundResult,
    ) -> tuple[list[pb.RatedUsageEvent], list[SeatCharge]]:
        today = seoul_date(now)
        rated: list[pb.RatedUsageEvent] = []
        charges: list[SeatCharge] = []
        for seat in seats:
            for month in months_charged(seat, today):
                if (seat.organization_id, seat.seat_id, month) in charged:
                    continue
                event = charge_event(seat, month)
                try:
                    rating = catalog.rate(event)
                except UnpricedError as exc:
                    self._unpriced(seat, month, str(exc), result)
                    continue
                message = pb.RatedUsageEvent(
                    event=event, cost_krw=str(rating.cost_krw), price_version=rating.price_version
                )
                message.rated_time.FromDatetime(now)
                rated.append(message)
                charges.append(
                    SeatCharge(
                        seat=seat,
                        month=month,
                        event_id=event.event_id,
                        event_time_ms=event.event_time.seconds * 1000,
                        cost_krw=rating.cost_krw,
                        price_version=rating.price_version,
                    )
                )
        return rated, charges

    def _unpriced(self, seat: Seat, month: date, reason: str, result: RoundResult) -> None:
        result.unpriced.append((seat, month, reason))
        key = (seat.organization_id, seat.seat_id, month, reason)
        if key in self._reported:
            return  # said once per catalog version, not every round
        self._reported.add(key)
        self._charges.add(1, {"outcome": "unpriced"})
        log.error(
            "seat %s of %s not charged for %s: %s",
            seat.seat_id,
            seat.organization_id,
            f"{month:%Y-%m}",
            reason,
        )
