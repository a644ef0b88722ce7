"""Every decision is metered: events carrying the guard's decision are rated (denied at cost
0, DeepSeek included), stored with their rule ids, and QueryUsage filters and groups by them."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.processor.pipeline import BatchProcessor, RawRecord
from civicmeter.query.usage import UsageQuery, usage
from civicmeter.sink.event_writer import write_events
from tests.factories import NOW, catalog, event


def decided(decision: pb.Decision.ValueType, *rules: str, **changes: object) -> pb.UsageEvent:
    message = event(**changes)
    message.decision = decision
    message.decision_rule_ids.extend(rules)
    return message


def rate(events: list[pb.UsageEvent]) -> tuple[list[pb.RatedUsageEvent], int]:
    records = [RawRecord(encode_event_batch([e]), 0, i) for i, e in enumerate(events)]
    result = BatchProcessor(catalog(), "usage.raw").process(records, NOW)
    return [pb.RatedUsageEvent.FromString(v) for _, v in result.rated], len(result.dead)


def test_denied_requests_are_stored_at_cost_0_and_queried_by_decision(clickhouse: Client) -> None:
    events = [
        decided(pb.DECISION_ALLOW),
        decided(pb.DECISION_REDACT, "pii.kr_rrn"),
        decided(pb.DECISION_DENY, "document.confidential"),
        decided(pb.DECISION_DENY, "banned_provider", provider_name="deepseek",
                service_id="deepseek-chat", request_model="deepseek-chat"),
        event(),  # a gateway without a guard
    ]  # fmt: skip
    rated, dead = rate(events)
    assert dead == 0  # DeepSeek is unpriced, but a denied request needs no price
    costs = {r.event.event_id: Decimal(r.cost_krw) for r in rated}
    assert costs[events[2].event_id] == costs[events[3].event_id] == 0
    assert costs[events[0].event_id] > 0
    versions = {r.event.event_id: r.price_version for r in rated}
    assert versions[events[3].event_id] == "denied"  # the sink needs a version; no price rated it
    write_events(clickhouse, rated)
    rows = clickhouse.query(
        "SELECT event_id, decision, decision_rule_ids FROM usage_events FINAL"
    ).result_rows
    stored = {row[0]: (row[1], row[2]) for row in rows}
    assert stored[events[3].event_id] == ("deny", ["banned_provider"])
    assert stored[events[1].event_id] == ("redact", ["pii.kr_rrn"])
    assert stored[events[4].event_id] == ("", [])
    query = UsageQuery(
        start=NOW - timedelta(days=1), end=NOW, group_by=("decision", "service"),
        organization_id="seoul",
    )  # fmt: skip
    page = usage(clickhouse, query)
    lines = {row.keys: (row.events, row.cost) for row in page.rows}
    assert lines[("deny", "deepseek-chat")] == (1, Decimal(0))
    assert lines[("deny", "openai-api")] == (1, Decimal(0))
    assert lines[("redact", "openai-api")][0] == 1
    assert page.source == "ledger"
    denied = usage(
        clickhouse,
        UsageQuery(start=query.start, end=query.end, group_by=("department",),
                   filters=(("decision", ("deny",)),), organization_id="seoul"),
    )  # fmt: skip
    assert [(row.keys, row.events, row.cost) for row in denied.rows] == [
        (("digital-policy",), 2, Decimal(0))
    ]


def test_rule_ids_are_checked_like_every_other_name() -> None:
    bad = decided(pb.DECISION_DENY, "Free text that could be a prompt")
    too_many = decided(pb.DECISION_DENY, *(f"rule.{n}" for n in range(40)))
    unknown = decided(pb.DECISION_DENY)
    unknown.decision = 9  # type: ignore[assignment]
    rated, dead = rate([bad, too_many, unknown])
    assert (rated, dead) == ([], 3)
