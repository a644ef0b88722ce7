"""Crash-safe inserts into usage_events: a write-ahead journal and deduplication tokens.

The rollups are fed by materialized views on usage_events, and ClickHouse commits the base
table's part and each view's part separately. A writer killed between those commits would leave
the events stored and the rollups short; on a retry the events are found stored and skipped,
so the rollups would stay short for good. So every block of new events is:

1. journaled whole, pending, in one atomic insert (usage_write_journal);
2. inserted into usage_events with a deduplication token, with
   `deduplicate_blocks_in_dependent_materialized_views`, so every table it reaches (the ledger
   and each rollup) records the token with the part it commits;
3. marked done in the journal.

A block still pending (the writer died, or the insert failed) is inserted again from the journal
with the same token: ClickHouse drops it from every table that already committed it and inserts
it where it is missing. `replay_pending` does that, and the writers call it before writing
anything new (at start and after a failed write), so the ledger and every rollup agree to the
won whatever was killed when.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from civicmeter.core.wire import length_delimited, tag
from civicmeter.usage.v1 import usage_event_pb2 as pb

log = logging.getLogger("civicmeter.write_journal")
JOURNAL_TABLE = "usage_write_journal"
_PENDING, _DONE = 0, 1
_EVENTS = tag(pb.RatedUsageEventBatch.EVENTS_FIELD_NUMBER)
# Tokens of the blocks this process started and has not seen finished.
_unfinished: set[str] = set()
# Finished journal partitions (15 minutes each) are dropped once this old.
RETENTION = timedelta(minutes=30)

InsertBlock = Callable[[Client, Sequence[pb.RatedUsageEvent], dict[str, object]], None]


@dataclass(frozen=True)
class Replayed:
    blocks: int
    events: int


def dedup_settings(token: str) -> dict[str, object]:
    """Insert settings that make a block idempotent in usage_events and every rollup view."""
    return {
        "insert_deduplicate": 1,
        "insert_deduplication_token": token,
        "deduplicate_blocks_in_dependent_materialized_views": 1,
    }


def journaled_insert(
    client: Client, events: Sequence[pb.RatedUsageEvent], insert_block: InsertBlock
) -> None:
    """Journal `events`, insert them with a fresh token, then mark the block done."""
    token = uuid.uuid4().hex
    payload = b"".join(length_delimited(_EVENTS, e.SerializeToString()) for e in events)
    client.insert(
        JOURNAL_TABLE,
        [[token, _PENDING, len(events), payload]],
        column_names=("token", "state", "events", "payload"),
    )
    _unfinished.add(token)
    insert_block(client, events, dedup_settings(token))
    _mark_done(client, token, len(events))
    _unfinished.discard(token)


def replay_pending(
    client: Client, insert_block: InsertBlock, settle: timedelta = timedelta(0)
) -> Replayed:
    """Insert pending blocks again, each with its own token; return what was replayed.

    Blocks this process failed to finish are replayed at once; another writer's only once
    pending for `settle` (a live writer finishes its block well within it; replaying it
    meanwhile would be harmless, as the token makes it a no-op, but wasted work).
    """
    tokens = _pending_tokens(client, datetime.now(UTC) - settle) + sorted(_unfinished)
    if not tokens:
        return Replayed(0, 0)
    rows = client.query(
        f"SELECT token, payload FROM {JOURNAL_TABLE} "
        f"WHERE state = {_PENDING} AND token IN %(tokens)s ORDER BY written_time",
        parameters={"tokens": tokens},
        query_formats={"String": "bytes"},
    ).result_rows
    events = 0
    for raw_token, payload in rows:
        token = raw_token.decode() if isinstance(raw_token, bytes) else raw_token
        block = pb.RatedUsageEventBatch.FromString(payload).events
        log.warning("replaying a pending block of %d events (token %s)", len(block), token)
        insert_block(client, block, dedup_settings(token))
        _mark_done(client, token, len(block))
        _unfinished.discard(token)
        events += len(block)
    return Replayed(len(rows), events)


def prune(client: Client, now: datetime | None = None) -> int:
    """Drop journal partitions older than RETENTION that hold no pending block."""
    cutoff = (now or datetime.now(UTC)) - RETENTION
    if _pending_tokens(client):
        return 0  # a block awaits its replay: keep every done mark it may be paired with
    finished = client.query(
        f"SELECT _partition_id FROM {JOURNAL_TABLE} GROUP BY _partition_id "
        "HAVING max(written_time) < %(cutoff)s "
        f"AND countIf(state = {_PENDING} AND token NOT IN "
        f"(SELECT token FROM {JOURNAL_TABLE} WHERE state = {_DONE})) = 0",
        parameters={"cutoff": cutoff},
    ).result_rows
    for (partition_id,) in finished:
        client.command(f"ALTER TABLE {JOURNAL_TABLE} DROP PARTITION ID '{partition_id}'")
    return len(finished)


def _mark_done(client: Client, token: str, events: int) -> None:
    client.insert(
        JOURNAL_TABLE,
        [[token, _DONE, events, b""]],
        column_names=("token", "state", "events", "payload"),
    )


def _pending_tokens(client: Client, before: datetime | None = None) -> list[str]:
    """Tokens journaled (before `before`) and never marked done; reads no payload."""
    rows = client.query(
        f"SELECT token FROM {JOURNAL_TABLE} GROUP BY token "
        f"HAVING max(state) = {_PENDING} AND min(written_time) < %(before)s",
        parameters={"before": before or datetime.now(UTC) + timedelta(days=1)},
    ).result_rows
    return [token for (token,) in rows]
