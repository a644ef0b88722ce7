from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.billing.reconcile import reconcile
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.core.store.rollups import ROLLUPS
from civicmeter.processor.pipeline import BatchProcessor, RawRecord
from civicmeter.sink.event_writer import write_events, write_rated_records
from tests.factories import NOW, catalog, event, seoul_months_around


def rated(*events: pb.UsageEvent) -> list[pb.RatedUsageEvent]:
    result = BatchProcessor(catalog(), "usage.raw").process(
        [RawRecord(encode_event_batch([e]), 0, i) for i, e in enumerate(events)], NOW
    )
    return [pb.RatedUsageEvent.FromString(v) for _, v in result.rated]


def totals(client: Client) -> tuple[int, Decimal, int, Decimal]:
    raw = client.query("SELECT count(), sum(cost_krw) FROM usage_events FINAL").result_rows[0]
    rollup = client.query("SELECT sum(events), sum(cost_krw) FROM usage_rollup_1h").result_rows[0]
    return int(raw[0]), Decimal(raw[1]), int(rollup[0]), Decimal(rollup[1])


def test_events_and_rollups_are_written(clickhouse: Client) -> None:
    batch = rated(event(), event(usage=pb.Usage(input_tokens=10)))
    result = write_events(clickhouse, batch)
    assert (result.inserted, result.duplicates) == (2, 0)
    assert totals(clickhouse) == (2, Decimal("6.356"), 2, Decimal("6.356"))


def test_a_redelivered_batch_changes_no_sum(clickhouse: Client) -> None:
    batch = rated(event(), event(), event())
    write_events(clickhouse, batch)
    before = totals(clickhouse)
    again = write_events(clickhouse, batch[1:] + rated(event()))
    assert (again.inserted, again.duplicates) == (1, 2)
    assert totals(clickhouse)[0] == before[0] + 1
    assert totals(clickhouse)[2] == before[2] + 1


def test_duplicates_within_a_batch_are_counted_once(clickhouse: Client) -> None:
    [one] = rated(event())
    result = write_events(clickhouse, [one, one, one])
    assert (result.inserted, result.duplicates) == (1, 2)
    assert totals(clickhouse)[2] == 1


def test_the_same_event_id_in_two_organisations_is_two_events(clickhouse: Client) -> None:
    write_events(
        clickhouse, rated(event(event_id="same"), event(event_id="same", organization_id="busan"))
    )
    assert totals(clickhouse)[0] == 2


_ROLLUPS = tuple(rollup.table for rollup in ROLLUPS)
_VIEWS = {rollup.table for rollup in ROLLUPS if rollup.over_hours}  # nothing to truncate
# Costs with six decimal places, where binary floating point drifts (0.1 + 0.2 != 0.3).
_COSTS = st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    costs=st.lists(_COSTS, min_size=1, max_size=8),
    data=st.data(),
    cut=st.integers(1, 6),
)
def test_any_order_duplication_or_batching_gives_the_same_sums_at_every_level(
    clickhouse: Client, costs: list[Decimal], data: st.DataObject, cut: int
) -> None:
    for table in ("usage_events", *_ROLLUPS):
        if table not in _VIEWS:
            clickhouse.command(f"TRUNCATE TABLE {table}")
    events = [
        pb.RatedUsageEvent(
            event=event(
                event_id=f"p-{i}",
                organization_id=("seoul", "busan")[i % 2],
                department_id=("welfare", "culture", "transport")[i % 3],
                usage=pb.Usage(input_tokens=100 * (i + 1)),
                # Across Seoul day and month boundaries: 0 to 40 days back.
                event_time=NOW - timedelta(hours=121 * i),
            ),
            cost_krw=str(cost),
            price_version="v1",
        )
        for i, cost in enumerate(costs)
    ]
    order = data.draw(st.permutations(range(len(events))))
    repeats = data.draw(st.lists(st.sampled_from(range(len(events))), max_size=6))
    stream = [events[i] for i in order] + [events[i] for i in repeats]
    for start in range(0, len(stream), cut):
        write_events(clickhouse, stream[start : start + cut])
    expected: dict[str, Decimal] = {}
    for e in events:
        org = e.event.organization_id
        expected[org] = expected.get(org, Decimal(0)) + Decimal(e.cost_krw)
    # Every rollup level (minute, hour, Seoul day, Seoul month, month by department) equals
    # the ledger, which equals the exact Decimal sum of the distinct events.
    check = reconcile(clickhouse, *seoul_months_around(NOW))
    assert check.differences() == []
    assert set(check.levels) == set(_ROLLUPS)
    assert {org: t.cost for org, t in check.ledger.items()} == expected
    assert {org: t.events for org, t in check.ledger.items()} == {
        org: sum(e.event.organization_id == org for e in events) for org in expected
    }
    assert all(
        isinstance(t.cost, Decimal) for level in check.levels.values() for t in level.values()
    )


def test_a_batch_far_larger_than_one_query_is_looked_up_and_written(clickhouse: Client) -> None:
    # 12,000 ids of 100 characters: one lookup query for all of them would exceed
    # ClickHouse's default max_query_size (256 KiB).
    batch = rated(*[event(event_id=f"{i:0100d}") for i in range(12_000)])
    assert write_events(clickhouse, batch).inserted == 12_000
    again = write_events(clickhouse, batch)
    assert (again.inserted, again.duplicates) == (0, 12_000)


def test_a_block_of_several_records_stores_every_event_once(clickhouse: Client) -> None:
    batch = rated(*(event(usage=pb.Usage(input_tokens=10 + i)) for i in range(7)))
    records = [
        encode_event_batch(batch[:3]),
        encode_event_batch(batch[3:5]),
        encode_event_batch(batch[5:]),
    ]
    result = write_rated_records(clickhouse, records)
    assert (result.inserted, result.duplicates) == (7, 0)
    # The same records again, with one new event in a record of its own: only it is stored.
    fresh = rated(event())
    again = write_rated_records(clickhouse, [*records, encode_event_batch(fresh)])
    assert (again.inserted, again.duplicates) == (1, 7)
    assert totals(clickhouse)[0] == totals(clickhouse)[2] == 8


def test_seoul_days_and_months_split_at_seoul_midnight_with_the_rerating_deltas(
    clickhouse: Client,
) -> None:
    # The last millisecond of 31 October in Seoul, and the first of 1 November (15:00 UTC).
    before, after = (
        datetime(2026, 10, 31, 14, 59, 59, 999000, UTC),
        datetime(2026, 10, 31, 15, tzinfo=UTC),
    )
    batch = [
        pb.RatedUsageEvent(
            event=event(event_id=name, event_time=when, usage=pb.Usage(input_tokens=tokens)),
            cost_krw=cost,
            price_version="v1",
        )
        for name, when, tokens, cost in (
            ("last", before, 7, "1.000001"), ("first", after, 11, "2.000002"),
        )
    ]  # fmt: skip
    write_events(clickhouse, batch)
    clickhouse.insert(
        "cost_corrections",
        [["seoul", "digital-policy", batch[1].event.user_id, "first", after, "openai-api",
          "openai", "gpt-4o", "chat", "", Decimal("0.5"), "v1", "v2", "run-1", after]],
        column_names=["organization_id", "department_id", "user_id", "event_id", "event_time",
                      "service_id", "provider_name", "request_model", "operation_name",
                      "purpose", "cost_delta_krw", "from_price_version", "to_price_version",
                      "run_id", "corrected_time"],
    )  # fmt: skip
    for table, first_day, second_day in (
        ("usage_rollup_1d", date(2026, 10, 31), date(2026, 11, 1)),
        ("usage_rollup_1mo", date(2026, 10, 1), date(2026, 11, 1)),
    ):
        rows = clickhouse.query(
            f"SELECT window_start, sum(events), sum(input_tokens), sum(cost_krw) FROM {table} "
            "GROUP BY window_start ORDER BY window_start"
        ).result_rows
        assert rows == [
            (first_day, 1, 7, Decimal("1.000001")),
            (second_day, 1, 11, Decimal("2.500002")),
        ], table
