"""A block cut off anywhere between staging, the ledger and the rollups is completed once.

The cuts are made with the real engine: a rollup's materialized view is detached while a block
is copied (so the ledger and the other rollups commit it and that rollup does not, as when the
process is killed between their commits), and the writer "dies" before writing the copy's done
mark (the marks it holds are forgotten, as a killed process forgets them), or before copying at
all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.billing.reconcile import reconcile
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.core.store.rollups import ROLLUPS as REGISTERED_ROLLUPS
from civicmeter.sink import write_journal
from civicmeter.sink.event_writer import replay_pending, stage, write_events
from tests.factories import NOW, event, seoul_months_around
from tests.sink.test_event_writer import rated

ROLLUPS = tuple(rollup.table for rollup in REGISTERED_ROLLUPS)


def counts(client: Client) -> dict[str, tuple[int, Decimal]]:
    ledger = client.query("SELECT count(), sum(cost_krw) FROM usage_events FINAL").result_rows[0]
    out = {"usage_events": (int(ledger[0]), Decimal(ledger[1]))}
    for table in ROLLUPS:
        events, cost = client.query(f"SELECT sum(events), sum(cost_krw) FROM {table}").result_rows[
            0
        ]
        out[table] = (int(events), Decimal(cost))
    return out


def killed(client: Client) -> None:
    """The writer dies: what it held in memory (the done marks not yet written, the blocks it
    staged) is lost; only the database remains."""
    write_journal._copied.clear()
    write_journal._unfinished.clear()


def killed_after_copy(client: Client, block: list[pb.RatedUsageEvent]) -> None:
    """The block copied, and the writer dead before writing its done mark."""
    write_journal.flush_done(client)
    write_events(client, block)
    killed(client)


def killed_before_copy(client: Client, block: list[pb.RatedUsageEvent]) -> None:
    """The block staged, and the writer dead before copying it."""
    write_journal.flush_done(client)
    stage(client, [encode_event_batch(block)])
    killed(client)


def journal_rows(client: Client) -> int:
    """Rows of the journal."""
    return int(client.query("SELECT count() FROM usage_write_journal").result_rows[0][0])


def batch(n: int) -> list[pb.RatedUsageEvent]:
    return rated(*(event(usage=pb.Usage(input_tokens=100 + i)) for i in range(n)))


@pytest.mark.clickhouse
@pytest.mark.parametrize("missing_view", ["usage_rollup_1mo_departments_mv", "usage_cost_1m_mv"])
def test_a_rollup_cut_off_from_its_block_is_completed_once(
    clickhouse: Client, missing_view: str
) -> None:
    write_events(clickhouse, batch(3))
    block = batch(5)
    clickhouse.command(f"DETACH TABLE {missing_view}")
    killed_after_copy(clickhouse, block)
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
    killed_after_copy(clickhouse, block)
    complete = counts(clickhouse)
    assert complete["usage_events"][0] == 4

    assert replay_pending(clickhouse).events == 4

    assert counts(clickhouse) == complete


@pytest.mark.clickhouse
def test_a_block_killed_before_the_ledger_is_written_by_the_replay(clickhouse: Client) -> None:
    block = batch(4)
    killed_before_copy(clickhouse, block)
    assert counts(clickhouse)["usage_events"][0] == 0

    assert replay_pending(clickhouse).events == 4

    after = counts(clickhouse)
    assert set(after.values()) == {after["usage_events"]}
    assert after["usage_events"][0] == 4
    start, end = seoul_months_around(NOW)
    assert reconcile(clickhouse, start, end).differences() == []


@pytest.mark.clickhouse
def test_a_write_after_a_failed_one_completes_it_first(clickhouse: Client) -> None:
    block = batch(2)
    clickhouse.command("DETACH TABLE usage_rollup_1h_mv")
    stage(clickhouse, [encode_event_batch(block)])  # and the copy raised
    clickhouse.command("ATTACH TABLE usage_rollup_1h_mv")
    assert write_journal.has_unfinished()

    # The retry of the same batch completes the cut-off block, then finds the events stored.
    assert write_events(clickhouse, block).inserted == 0
    after = counts(clickhouse)
    assert set(after.values()) == {after["usage_events"]}
    assert after["usage_events"][0] == 2
    assert not write_journal.has_unfinished()


@pytest.mark.clickhouse
def test_events_stored_by_an_earlier_block_are_left_out_of_a_replayed_one(
    clickhouse: Client,
) -> None:
    first = batch(3)
    write_events(clickhouse, first)
    # A redelivery of two of them with one new event, cut off before its copy.
    again = first[:2] + batch(1)
    killed_before_copy(clickhouse, again)
    assert replay_pending(clickhouse).blocks == 1
    after = counts(clickhouse)
    assert set(after.values()) == {after["usage_events"]}
    assert after["usage_events"][0] == 4


@pytest.mark.clickhouse
def test_finished_staging_partitions_are_pruned_and_pending_ones_kept(clickhouse: Client) -> None:
    write_events(clickhouse, batch(2))
    assert journal_rows(clickhouse) == 0  # the done mark waits for the next flush
    assert write_journal.flush_done(clickhouse) == 1
    assert journal_rows(clickhouse) == 1
    later = datetime.now(UTC) + write_journal.RETENTION + timedelta(minutes=16)
    killed_before_copy(clickhouse, batch(1))
    assert write_journal.prune(clickhouse, later) == 0  # a block awaits its copy

    replay_pending(clickhouse)
    assert write_journal.prune(clickhouse, later) >= 2
    assert journal_rows(clickhouse) == 0
    assert clickhouse.query("SELECT count() FROM usage_staged").result_rows[0][0] == 0
