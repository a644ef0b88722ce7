"""Idempotent, crash-safe writes of rated events to ClickHouse, at the engine's speed.

A block of rated events goes to ClickHouse as the bytes Kafka carried (RatedUsageEventBatch
records): ClickHouse parses the protobuf itself (`FORMAT ProtobufList`, with the schema written
from the generated descriptors), so no Python row or column is built per event. The block is
checked by ClickHouse as it parses it (the values the ledger's columns cannot hold, and text
that is not UTF-8, fail the insert; sink/rated_check.py then names the records at fault), staged
whole, then copied into usage_events leaving out the events stored before (on the
primary key: organisation, day, event id) and repeats within the block: a redelivered block
stores nothing, and the rollups, fed by materialized views on the copy, never count an event
twice. sink/write_journal.py makes the copy idempotent, so a block cut off between the
ledger's and the rollups' commits is completed, never lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from google.protobuf.timestamp_pb2 import Timestamp

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.events.wire import varint
from civicmeter.core.store.connection import insert_from_protobuf
from civicmeter.sink import write_journal
from civicmeter.sink.rated_check import EPOCH_SECONDS, refusals
from civicmeter.sink.write_journal import Replayed

COLUMNS = write_journal.EVENT_COLUMNS

# The record's fields as ClickHouse reads them (nested fields joined by "_"), and how each
# becomes a column of usage_events, in COLUMNS order.
_STRUCTURE = ", ".join(
    [
        *(f"event_{name} String" for name in (
            "organization_id", "department_id", "user_id", "event_id", "gateway_id",
            "provider_name", "service_id", "request_model", "operation_name", "purpose")),
        "event_event_time_seconds Int64", "event_event_time_nanos Int32",
        "event_account_kind Int32",
        *(f"event_usage_{name} Int64" for name in QUANTITIES),
        "event_risk_pii_findings Map(String, UInt32)", "event_risk_content_category String",
        "cost_krw String", "price_version String",
        "rated_time_seconds Int64", "rated_time_nanos Int32", "late UInt8",
        "event_decision Int32", "event_decision_rule_ids Array(String)",
    ]
)  # fmt: skip
# A record the Python check (sink/rated_check.py) would refuse fails the staging insert: the
# same conditions, on the columns, vectorised by the engine; and text that is not UTF-8, which a
# protobuf parser in Python refuses as it reads.
_TEXT = (
    "organization_id", "department_id", "user_id", "event_id", "gateway_id", "provider_name",
    "service_id", "request_model", "operation_name", "purpose", "risk_content_category",
)  # fmt: skip
_STORABLE = " AND ".join(
    [
        "event_event_id != ''", "event_organization_id != ''", "price_version != ''",
        "match(cost_krw, '^[0-9]{1,12}(\\\\.[0-9]{1,6})?$')",
        f"event_event_time_seconds >= {EPOCH_SECONDS[0]:d}",
        f"event_event_time_seconds < {EPOCH_SECONDS[1]:d}",
        *(f"isValidUTF8(event_{name})" for name in _TEXT),
        "isValidUTF8(price_version)",
        "arrayAll(key -> isValidUTF8(key), mapKeys(event_risk_pii_findings))",
        "arrayAll(rule -> isValidUTF8(rule), event_decision_rule_ids)",
    ]
)  # fmt: skip
_CHECK = f"throwIf(NOT ({_STORABLE}), 'a rated event the ledger cannot hold') = 0"
_MILLIS = "fromUnixTimestamp64Milli({0}_seconds * 1000 + intDiv({0}_nanos, 1000000), 'UTC')"
_SELECT = ", ".join(
    [
        "event_organization_id", "event_department_id", "event_user_id", "event_event_id",
        _MILLIS.format("event_event_time"), "event_gateway_id",
        "transform(event_account_kind, [1, 2], ['organizational', 'personal'], 'unspecified')",
        "event_provider_name", "event_service_id", "event_request_model",
        "event_operation_name", "event_purpose",
        *(f"toUInt64(event_usage_{name})" for name in QUANTITIES),
        "event_risk_pii_findings", "event_risk_content_category",
        "toDecimal64(cost_krw, 6)", "price_version", _MILLIS.format("rated_time"), "late",
        "transform(event_decision, [1, 2, 3, 4], "
        "['allow', 'allow_with_warning', 'redact', 'deny'], '')", "event_decision_rule_ids",
    ]
)  # fmt: skip


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int
    # Records not written, by their index in the block: why ClickHouse cannot store them.
    refused: dict[int, str] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return self.inserted + self.duplicates


def epoch_millis(ts: Timestamp) -> int:
    """Epoch milliseconds: what a DateTime64(3) column takes without building datetimes."""
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def write_rated_records(client: Client, records: Sequence[bytes]) -> WriteResult:
    """Store the events of `records` (RatedUsageEventBatch encodings) not stored before; return
    what was stored, and the records refused (undecodable, or holding a value the ledger cannot
    hold: none of their events is stored)."""
    if not records:
        return WriteResult(0, 0)
    if write_journal.has_unfinished():
        write_journal.replay_pending(client)  # an earlier write of this process was cut off
    try:
        token = stage(client, records)
    except DatabaseError:
        refused = refusals(records)
        if not refused:
            raise  # the engine's trouble, not the records': the caller retries
        # A refused insert stages nothing (one block, one atomic insert); the journal completes
        # whatever it may have staged all the same (has_unfinished).
        kept = [record for index, record in enumerate(records) if index not in refused]
        written = write_rated_records(client, kept) if kept else WriteResult(0, 0)
        return WriteResult(written.inserted, written.duplicates, refused)
    staged, stored = write_journal.copy_block(client, token)
    return WriteResult(stored, staged - stored)


def stage(client: Client, records: Sequence[bytes]) -> int:
    """Stage the records' events whole under a new write token; return the token. The insert
    fails whole if an event holds a value the ledger cannot hold."""
    token = write_journal.begin_block()
    insert_from_protobuf(
        client,
        f"{write_journal.STAGED_TABLE} (write_token, {', '.join(COLUMNS)})",
        f"{token:d}, {_SELECT}",
        _STRUCTURE,
        pb.RatedUsageEvent.DESCRIPTOR,
        _envelope(records),
        where=_CHECK,
    )
    return token


def _envelope(records: Sequence[bytes]) -> bytes:
    """One ProtobufList envelope holding every event of the records: concatenated batch
    messages are one batch message (their repeated fields concatenate), prefixed by its length
    as the format requires."""
    body = b"".join(records)
    return varint(len(body)) + body


def write_events(client: Client, batch: Sequence[pb.RatedUsageEvent]) -> WriteResult:
    """Insert the events of `batch` not stored before; return what was inserted."""
    return write_rated_records(client, [encode_event_batch(batch)]) if batch else WriteResult(0, 0)


def replay_pending(client: Client) -> Replayed:
    """Complete the blocks a killed or failed writer left pending."""
    return write_journal.replay_pending(client)
