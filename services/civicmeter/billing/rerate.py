"""Re-rating: recompute stored events' costs with the catalog in force now, and record the
differences as corrections.

When a price changes retroactively (a corrected contract, a late FX rate), every stored event
of the period is rated again from its stored quantities. Where the new cost differs from the
event's current cost (its rated cost plus earlier corrections), one row goes to cost_corrections
with the delta and the new price version; materialized views carry the delta into every rollup.
Running it again finds nothing left to change, so it is idempotent; an interrupted run is
completed by running it again. Runs must not overlap: each reads the corrections written so far.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.pricing import PriceCatalog, UnpricedError
from civicmeter.core.store.ledger import corrections_so_far, events_to_rerate, record_corrections

BATCH = 20_000
_DIMENSIONS = ("department_id", "user_id", "service_id", "provider_name", "request_model",
               "operation_name", "purpose")  # fmt: skip


@dataclass
class OrganizationRerate:
    events: int = 0  # events of the period looked at
    changed: int = 0  # events whose cost changed
    unpriced: int = 0  # events the catalog cannot price any more: left as they were
    before: Decimal = Decimal(0)
    after: Decimal = Decimal(0)

    @property
    def difference(self) -> Decimal:
        return self.after - self.before


@dataclass
class RerateReport:
    run_id: str
    dry_run: bool
    organizations: dict[str, OrganizationRerate] = field(default_factory=dict)
    unpriced_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(o.changed for o in self.organizations.values())


def rerate(
    client: Client,
    catalog: PriceCatalog,
    start: datetime,
    end: datetime,
    organization_id: str | None = None,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
) -> RerateReport:
    """Re-rate the events of [start, end) (optionally of one organisation)."""
    if end <= start:
        raise ValueError("end: must be after start")
    report = RerateReport(run_id=f"rerate-{uuid.uuid4().hex[:12]}", dry_run=dry_run)
    columns = ["organization_id", "event_id", "event_time", *_DIMENSIONS, *QUANTITIES,
               "cost_krw", "price_version"]  # fmt: skip
    after: tuple[str, str] | None = None
    pages = 0
    while True:
        page = events_to_rerate(client, columns, start, end, organization_id, after, batch)
        if not page:
            return report
        corrections = _rerate_page(client, catalog, page, report)
        if corrections and not dry_run:
            pages += 1  # a token of its own per page: a retried page lands once
            record_corrections(client, corrections, token=f"{report.run_id}-{pages}")
        last = page[-1]
        after = (str(last["organization_id"]), str(last["event_id"]))


def _rerate_page(
    client: Client,
    catalog: PriceCatalog,
    page: Sequence[dict[str, object]],
    report: RerateReport,
) -> list[list[object]]:
    current = corrections_so_far(
        client, [(str(r["organization_id"]), str(r["event_id"])) for r in page]
    )
    now_ms = round(datetime.now(UTC).timestamp() * 1000)
    out: list[list[object]] = []
    for row in page:
        org, event_id = str(row["organization_id"]), str(row["event_id"])
        delta, version = current.get((org, event_id), (Decimal(0), str(row["price_version"])))
        cost = Decimal(str(row["cost_krw"])) + delta
        totals = report.organizations.setdefault(org, OrganizationRerate())
        totals.events += 1
        totals.before += cost
        event_time = row["event_time"]
        assert isinstance(event_time, datetime)
        if event_time.tzinfo is None:  # clickhouse-connect may hand back naive UTC
            event_time = event_time.replace(tzinfo=UTC)
        event = pb.UsageEvent(
            organization_id=org,
            department_id=str(row["department_id"]),
            provider_name=str(row["provider_name"]),
            service_id=str(row["service_id"]),
            request_model=str(row["request_model"]),
            operation_name=str(row["operation_name"]),
            usage=pb.Usage(**{q: int(str(row[q])) for q in QUANTITIES}),
        )
        event.event_time.FromDatetime(event_time.astimezone(UTC))
        try:
            rating = catalog.rate(event)
        except UnpricedError as exc:
            totals.unpriced += 1
            totals.after += cost
            reason = str(exc)
            report.unpriced_reasons[reason] = report.unpriced_reasons.get(reason, 0) + 1
            continue
        totals.after += rating.cost_krw
        if rating.cost_krw == cost and rating.price_version == version:
            continue
        totals.changed += 1
        out.append([
            org, *(row[d] for d in ("department_id", "user_id")), event_id,
            round(event_time.timestamp() * 1000),
            *(row[d] for d in ("service_id", "provider_name", "request_model",
                               "operation_name", "purpose")),
            rating.cost_krw - cost, version, rating.price_version, report.run_id, now_ms,
        ])  # fmt: skip
    return out
