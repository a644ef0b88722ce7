"""Crash-safe, idempotent copies of staged blocks into usage_events.

The rollups are fed by materialized views on usage_events, and ClickHouse commits the base
table's part and each view's part separately. A writer killed between those commits would leave
the events stored and the rollups short; on a retry the events would be found stored and
skipped, so the rollups would stay short for good. So a block of rated events is:

1. staged whole in usage_staged under a fresh 64-bit write token (one atomic insert), then
   journaled as staged;
2. copied into usage_events with the token as the insert's deduplication token, and
   `deduplicate_blocks_in_dependent_materialized_views`, so every table the copy reaches (the
   ledger and each rollup) records the token with the part it commits. The copy leaves out the
   events stored before by *other* blocks (the idempotency on event_id) and repeats within the
   block, so a block copied again is the same block;
3. journaled as done.

A block journaled as staged and never done (the writer died, or the copy failed) is copied again
with the same token: ClickHouse drops it from every table that already committed it and inserts
it where it is missing. A block staged but never journaled was never copied: its events are
still uncommitted in Kafka and come again. `replay_pending` completes the blocks left pending;
writers call it at start, when they take over partitions, and after a failed write.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from civicmeter.core.quantities import QUANTITIES

log = logging.getLogger("civicmeter.write_journal")
STAGED_TABLE = "usage_staged"
JOURNAL_TABLE = "usage_write_journal"
_STAGED, _DONE = 0, 1
# Finished staging and journal partitions (15 minutes each) are dropped once this old.
RETENTION = timedelta(minutes=30)
# The columns a block carries from staging into usage_events.
EVENT_COLUMNS = (
    "organization_id", "department_id", "user_id", "event_id", "event_time", "gateway_id",
    "account_kind", "provider_name", "service_id", "request_model", "operation_name", "purpose",
    *QUANTITIES, "pii_findings", "content_category", "cost_krw", "price_version", "rated_time",
    "late", "decision", "decision_rule_ids",
)  # fmt: skip
_KEY = "(organization_id, toDate(event_time), event_id)"  # usage_events' primary key
# Tokens of blocks this process staged and has not seen copied.
_unfinished: set[int] = set()


@dataclass(frozen=True)
class Replayed:
    blocks: int
    events: int


def new_token() -> int:
    return secrets.randbits(63) | 1  # never 0: the token of rows written before journaling


def dedup_settings(token: int) -> dict[str, object]:
    """Insert settings that make a copy idempotent in usage_events and every rollup view."""
    return {
        "insert_deduplicate": 1,
        "insert_deduplication_token": f"usage-{token:016x}",
        "deduplicate_blocks_in_dependent_materialized_views": 1,
    }


def journal_staged(client: Client, token: int, events: int) -> None:
    """Record that the block `token` is staged whole (after its staging insert returned)."""
    _unfinished.add(token)
    _journal(client, token, _STAGED, events)


def copy_block(client: Client, token: int) -> int:
    """Copy the staged block into usage_events (idempotently), journal it done, and return how
    many of its events it stored."""
    columns = ", ".join(EVENT_COLUMNS)
    client.command(
        f"INSERT INTO usage_events ({columns}, write_token) "
        f"SELECT {columns}, write_token FROM {STAGED_TABLE} "
        f"WHERE write_token = {token:d} AND {_KEY} NOT IN ("
        f"  SELECT {_KEY} FROM usage_events WHERE write_token != {token:d} AND {_KEY} IN "
        f"  (SELECT {_KEY} FROM {STAGED_TABLE} WHERE write_token = {token:d})) "
        "ORDER BY organization_id, event_id, rated_time "
        "LIMIT 1 BY organization_id, event_id",
        settings=dedup_settings(token),
    )
    stored = client.query(
        f"SELECT count() FROM usage_events WHERE write_token = {token:d} AND {_KEY} IN "
        f"(SELECT {_KEY} FROM {STAGED_TABLE} WHERE write_token = {token:d})"
    ).result_rows[0][0]
    _journal(client, token, _DONE, int(stored))
    _unfinished.discard(token)
    return int(stored)


def replay_pending(client: Client) -> Replayed:
    """Copy again every block journaled as staged and never done; return what was replayed."""
    rows = client.query(
        f"SELECT write_token, max(events) FROM {JOURNAL_TABLE} GROUP BY write_token "
        f"HAVING max(state) = {_STAGED} ORDER BY min(written_time)"
    ).result_rows
    events = 0
    for token, staged in rows:
        log.warning("completing a block of %d events left pending (token %016x)", staged, token)
        copy_block(client, int(token))
        events += int(staged)
    _unfinished.clear()
    return Replayed(len(rows), events)


def has_unfinished() -> bool:
    """Whether a block this process staged has not been copied (its write failed)."""
    return bool(_unfinished)


def prune(client: Client, now: datetime | None = None) -> int:
    """Drop staging and journal partitions older than RETENTION, unless a block is pending."""
    if client.query(
        f"SELECT count() FROM (SELECT write_token FROM {JOURNAL_TABLE} GROUP BY write_token "
        f"HAVING max(state) = {_STAGED})"
    ).result_rows[0][0]:
        return 0  # a block awaits its copy: keep everything it may need
    cutoff = (now or datetime.now(UTC)) - RETENTION
    dropped = 0
    for table, column in ((STAGED_TABLE, "staged_time"), (JOURNAL_TABLE, "written_time")):
        old = client.query(
            f"SELECT _partition_id FROM {table} GROUP BY _partition_id "
            f"HAVING max({column}) < %(cutoff)s",
            parameters={"cutoff": cutoff},
        ).result_rows
        for (partition_id,) in old:
            client.command(f"ALTER TABLE {table} DROP PARTITION ID '{partition_id}'")
        dropped += len(old)
    return dropped


def _journal(client: Client, token: int, state: int, events: int) -> None:
    client.insert(
        JOURNAL_TABLE,
        [[token, state, events]],
        column_names=("write_token", "state", "events"),
    )
