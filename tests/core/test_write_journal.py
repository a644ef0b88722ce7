"""A block cut off anywhere between the journal, the ledger and the rollups is completed once.

The cut is made with the real engine: a rollup's materialized view is detached while the block
is inserted (so the ledger and the other rollups commit it and that rollup does not, as when
the process is killed between their commits), and the writer dies before marking it done.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.billing.reconcile import reconcile
from civicmeter.core import write_journal
from civicmeter.core.event_writer import insert_block, replay_pending, write_events
from civicmeter.usage.v1 import usage_event_pb2 as pb
from tests.core.test_event_writer import rated
from tests.factories import NOW, event, seoul_months_around

ROLLUPS = ("usage_cost_1m", "usage_rollup_1h", "usage_rollup_1d", "usage_rollup_1mo",
           "usage_rollup_1mo_departments")  # fmt: skip


class WriterKilledError(Exception):
    """The writer process dying at this point."""


def counts(client: Client) -> dict[str, tuple[int, Decimal]]:
    ledger = client.query("SELECT count(), sum(cost_krw) FROM usage_events FINAL").result_rows[0]
    out = {"usage_events": (int(ledger[0]), Decimal(ledger[1]))}
    for table in ROLLUPS:
        events, cost = client.query(f"SELECT sum(events), sum(cost_krw) FROM {table}").result_rows[
            0
        ]
        out[table] = (int(events), Decimal(cost))
    return out


def die_after_insert(
    client: Client, events: Sequence[pb.RatedUsageEvent], settings: dict[str, object]
) -> None:
    insert_block(client, events, settings)
    raise WriterKilledError


def die_before_insert(
    client: Client, events: Sequence[pb.RatedUsageEvent], settings: dict[str, object]
) -> None:
    raise WriterKilledError


def journal_rows(client: Client) -> int:
    return int(client.query("SELECT count() FROM usage_write_journal").result_rows[0][0])


def batch(n: int) -> list[pb.RatedUsageEvent]:
    return rated(*(event(usage=pb.Usage(input_tokens=100 + i)) for i in range(n)))


@pytest.mark.clickhouse
@pytest.mark.parametrize("missing_view", ["usage_rollup_1d_mv", "usage_cost_1m_mv"])
def test_a_rollup_cut_off_from_its_block_is_completed_once(
    clickhouse: Client, missing_view: str
) -> None:
    write_events(clickhouse, batch(3))
    block = batch(5)
    clickhouse.command(f"DETACH TABLE {missing_view}")
    with pytest.raises(WriterKilledError):
        write_journal.journaled_insert(clickhouse, block, die_after_insert)
    clickhouse.command(f"ATTACH TABLE {missing_view}")
    short = counts(clickhouse)
    assert short["usage_events"][0] == 8
    assert short[missing_view.removesuffix("_mv")][0] == 3  # the cut the journal must repair

    replayed = replay_pending(clickhouse)

    assert (replayed.blocks, replayed.events) == (1, 5)
    after = counts(clickhouse)
    assert set(after.values()) == {after["usage_events"]}, after
    assert after["usage_events"][0] == 8
    assert replay_pending(clickhouse).blocks == 0
    # A redelivery of the same events after the repair changes nothing anywhere.
    assert write_events(clickhouse, block).inserted == 0
    assert counts(clickhouse) == after


@pytest.mark.clickhouse
def test_a_block_killed_after_every_commit_is_not_counted_twice(clickhouse: Client) -> None:
    block = batch(4)
    with pytest.raises(WriterKilledError):
        write_journal.journaled_insert(clickhouse, block, die_after_insert)
    complete = counts(clickhouse)
    assert complete["usage_events"][0] == 4

    assert replay_pending(clickhouse).events == 4

    assert counts(clickhouse) == complete


@pytest.mark.clickhouse
def test_a_block_killed_before_the_ledger_is_written_by_the_replay(clickhouse: Client) -> None:
    block = batch(4)
    with pytest.raises(WriterKilledError):
        write_journal.journaled_insert(clickhouse, block, die_before_insert)
    assert counts(clickhouse)["usage_events"][0] == 0

    assert replay_pending(clickhouse).events == 4

    after = counts(clickhouse)
    assert set(after.values()) == {after["usage_events"]}
    assert after["usage_events"][0] == 4
    start, end = seoul_months_around(NOW)
    assert reconcile(clickhouse, start, end).differences() == []


@pytest.mark.clickhouse
def test_the_next_write_completes_a_failed_block_before_looking_up_ids(clickhouse: Client) -> None:
    block = batch(2)
    clickhouse.command("DETACH TABLE usage_rollup_1h_mv")
    with pytest.raises(WriterKilledError):
        write_journal.journaled_insert(clickhouse, block, die_after_insert)
    clickhouse.command("ATTACH TABLE usage_rollup_1h_mv")

    # The retry of the same batch finds the events stored, and the rollup is still whole.
    assert write_events(clickhouse, block).inserted == 0
    after = counts(clickhouse)
    assert set(after.values()) == {after["usage_events"]}


@pytest.mark.clickhouse
def test_finished_journal_partitions_are_pruned_and_pending_ones_kept(clickhouse: Client) -> None:
    write_events(clickhouse, batch(2))
    assert journal_rows(clickhouse) == 2
    later = datetime.now(UTC) + write_journal.RETENTION + timedelta(minutes=16)
    with pytest.raises(WriterKilledError):
        write_journal.journaled_insert(clickhouse, batch(1), die_before_insert)
    assert write_journal.prune(clickhouse, later) == 0  # a block awaits its replay

    replay_pending(clickhouse)
    assert write_journal.prune(clickhouse, later) >= 1
    assert journal_rows(clickhouse) == 0
