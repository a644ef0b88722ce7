"""Idempotent, crash-safe writes of rated events to ClickHouse.

Before a batch is inserted, the event ids it carries are looked up (on the primary key:
organisation, day, event id) and those already stored are dropped, as are repeats within the
batch. One consumer owns a partition and a user's events share one, so a redelivered batch
finds its events stored and inserts nothing: the rollups, fed by materialized views on the
insert, never count an event twice. The new events go in through the write journal
(core/write_journal.py), so a block cut off between the ledger's and the rollups' commits is
completed by `replay_pending`, never lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from datetime import date, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client
from google.protobuf.timestamp_pb2 import Timestamp

from civicmeter.core.quantities import QUANTITIES
from civicmeter.core.write_journal import Replayed, journaled_insert
from civicmeter.core.write_journal import replay_pending as replay_journal
from civicmeter.usage.v1 import usage_event_pb2 as pb

_ACCOUNT_KINDS = {
    pb.ACCOUNT_KIND_ORGANIZATIONAL: "organizational",
    pb.ACCOUNT_KIND_PERSONAL: "personal",
}
COLUMNS = (
    "organization_id",
    "department_id",
    "user_id",
    "event_id",
    "event_time",
    "gateway_id",
    "account_kind",
    "provider_name",
    "service_id",
    "request_model",
    "operation_name",
    "purpose",
    *QUANTITIES,
    "pii_findings",
    "content_category",
    "cost_krw",
    "price_version",
    "rated_time",
    "late",
)
_EPOCH_DAY = date(1970, 1, 1)
# Event ids are at most 128 characters (validation), so a chunk's query stays under 1 MiB.
LOOKUP_CHUNK = 5_000
MAX_QUERY_BYTES = 1 << 20
# How long another writer's block may stay pending before a writer completes it for it.
SETTLE = timedelta(seconds=60)


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int


def epoch_millis(ts: Timestamp) -> int:
    """Epoch milliseconds: what a DateTime64(3) column takes without building datetimes."""
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def _columns(events: Sequence[pb.RatedUsageEvent]) -> list[list[Any]]:
    """The block as columns, in COLUMNS order (a column-oriented insert: no row objects)."""
    evs = [r.event for r in events]
    usages = [e.usage for e in evs]
    kinds = _ACCOUNT_KINDS
    return [
        [e.organization_id for e in evs],
        [e.department_id for e in evs],
        [e.user_id for e in evs],
        [e.event_id for e in evs],
        [epoch_millis(e.event_time) for e in evs],
        [e.gateway_id for e in evs],
        [kinds.get(e.account_kind, "unspecified") for e in evs],
        [e.provider_name for e in evs],
        [e.service_id for e in evs],
        [e.request_model for e in evs],
        [e.operation_name for e in evs],
        [e.purpose for e in evs],
        *([getattr(u, name) for u in usages] for name in QUANTITIES),
        [dict(e.risk.pii_findings) for e in evs],
        [e.risk.content_category for e in evs],
        [Decimal(r.cost_krw) for r in events],
        [r.price_version for r in events],
        [epoch_millis(r.rated_time) for r in events],
        [int(r.late) for r in events],
    ]


def stored_ids(client: Client, batch: Sequence[pb.RatedUsageEvent]) -> set[tuple[str, str]]:
    """(organisation, event id) pairs of the batch already in usage_events.

    Looked up in chunks, so that no query outgrows ClickHouse's max_query_size however large
    the batch (and however long its ids).
    """
    found: set[tuple[str, str]] = set()
    for start in range(0, len(batch), LOOKUP_CHUNK):
        chunk = batch[start : start + LOOKUP_CHUNK]
        orgs = sorted({r.event.organization_id for r in chunk})
        days = sorted(
            {
                _EPOCH_DAY + timedelta(days=d)
                for d in {r.event.event_time.seconds // 86_400 for r in chunk}
            }
        )
        ids = sorted({r.event.event_id for r in chunk})
        rows = client.query(
            "SELECT organization_id, event_id FROM usage_events "
            "WHERE organization_id IN %(orgs)s AND toDate(event_time) IN %(days)s "
            "AND event_id IN %(ids)s",
            parameters={"orgs": orgs, "days": days, "ids": ids},
            settings={"max_query_size": MAX_QUERY_BYTES},
        ).result_rows
        found.update((org, event_id) for org, event_id in rows)
    return found


def write_events(client: Client, batch: Sequence[pb.RatedUsageEvent]) -> WriteResult:
    """Insert the events of `batch` not stored before; return what was inserted."""
    if not batch:
        return WriteResult(0, 0)
    # A block an earlier attempt (or a killed process) left pending is completed first, so the
    # lookup below never skips events whose rollups are still missing.
    replay_pending(client, SETTLE)
    seen = stored_ids(client, batch)
    fresh: list[pb.RatedUsageEvent] = []
    for rated in batch:
        key = (rated.event.organization_id, rated.event.event_id)
        if key in seen:
            continue
        seen.add(key)
        fresh.append(rated)
    if fresh:
        journaled_insert(client, fresh, insert_block)
    return WriteResult(len(fresh), len(batch) - len(fresh))


def insert_block(
    client: Client, events: Sequence[pb.RatedUsageEvent], settings: dict[str, object]
) -> None:
    """Insert `events` into usage_events as one block (the journal's unit of replay)."""
    client.insert(
        "usage_events",
        _columns(events),
        column_names=COLUMNS,
        column_oriented=True,
        settings=settings,
    )


def replay_pending(client: Client, settle: timedelta = timedelta(0)) -> Replayed:
    """Complete the journaled blocks a killed or failed writer left behind (another live
    writer's only once pending for `settle`)."""
    return replay_journal(client, insert_block, settle)
