"""Re-rating on real ClickHouse: a retroactive price change is applied once, reported per
organisation, carried into every rollup, and a second run changes nothing."""

from __future__ import annotations

import copy
from datetime import timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.billing.reconcile import reconcile
from civicmeter.billing.rerate import rerate
from civicmeter.core.pricing import parse_catalog
from civicmeter.query.usage import UsageQuery, usage
from civicmeter.sink.event_writer import write_events
from tests.factories import CATALOG_DOC, NOW, catalog, event, seoul_months_around
from tests.sink.test_event_writer import rated

START, END = seoul_months_around(NOW)


def corrected_catalog() -> object:
    """v2's gpt-4o input price corrected from 0.0036 to 0.0040 KRW per token, retroactively."""
    doc = copy.deepcopy(CATALOG_DOC)
    doc["versions"][1]["version"] = "v2.1"
    doc["versions"][1]["prices"][0]["price"] = "0.0040"
    return parse_catalog(doc, "corrected")


def store(client: Client) -> list[pb.RatedUsageEvent]:
    events = [
        event(organization_id=org, usage=pb.Usage(input_tokens=1000 * (i + 1), output_tokens=10),
              event_time=NOW - timedelta(days=i))
        for i, org in enumerate(["seoul", "seoul", "busan", "busan", "busan"])
    ] + [  # a seat fee: its price did not change
        event(organization_id="busan", service_id="chatgpt", request_model="",
              usage=pb.Usage(seat_months=1))
    ]  # fmt: skip
    batch = rated(*events)
    write_events(client, batch)
    return batch


def test_a_retroactive_change_is_applied_once_and_reported_per_organisation(
    clickhouse: Client,
) -> None:
    batch = store(clickhouse)
    new = corrected_catalog()
    # Independently: each gpt-4o event rated in v2 (on or after 1 November Seoul) gains
    # 0.0004 KRW per input token; events before stay in v1.
    expected: dict[str, Decimal] = {}
    for r in batch:
        e = r.event
        if e.service_id == "openai-api" and r.price_version == "v2":
            expected[e.organization_id] = expected.get(e.organization_id, Decimal(0)) + (
                Decimal("0.0004") * e.usage.input_tokens
            )
    assert expected, "the data must include events priced by the corrected version"

    report = rerate(clickhouse, new, START, END)  # type: ignore[arg-type]
    assert {org: o.difference for org, o in report.organizations.items() if o.difference} == (
        expected
    )
    assert report.organizations["busan"].events == 4
    stored_before = sum(Decimal(r.cost_krw) for r in batch)
    assert sum(o.before for o in report.organizations.values()) == stored_before

    # Every rollup level carries the deltas and still equals the ledger.
    check = reconcile(clickhouse, START, END)
    assert check.differences() == []
    assert sum(t.cost for t in check.ledger.values()) == stored_before + sum(expected.values())
    answer = usage(clickhouse, UsageQuery(START, END, ("organization",)))
    assert {r.keys[0]: r.cost for r in answer.rows} == {
        org: sum(Decimal(r.cost_krw) for r in batch if r.event.organization_id == org)
        + expected.get(org, Decimal(0))
        for org in ("seoul", "busan")
    }
    versions = clickhouse.query(
        "SELECT DISTINCT argMax(to_price_version, corrected_time) FROM cost_corrections "
        "GROUP BY event_id"
    ).result_rows
    assert versions == [("v2.1",)]

    again = rerate(clickhouse, new, START, END)  # type: ignore[arg-type]
    assert again.changed == 0
    assert all(o.difference == 0 for o in again.organizations.values())
    assert reconcile(clickhouse, START, END).differences() == []


def test_a_dry_run_reports_without_writing(clickhouse: Client) -> None:
    store(clickhouse)
    report = rerate(clickhouse, corrected_catalog(), START, END, dry_run=True)  # type: ignore[arg-type]
    assert report.changed > 0
    assert clickhouse.query("SELECT count() FROM cost_corrections").result_rows[0][0] == 0


def test_one_organisation_and_the_unpriced_are_reported(clickhouse: Client) -> None:
    store(clickhouse)
    doc = copy.deepcopy(CATALOG_DOC)
    doc["versions"][0]["prices"] = [p for p in doc["versions"][0]["prices"]
                                    if p["service"] != "chatgpt"]  # fmt: skip
    report = rerate(clickhouse, parse_catalog(doc, "no seats"), START, END, "busan")
    assert set(report.organizations) == {"busan"}
    assert report.organizations["busan"].unpriced == 1  # the seat: kept, not zeroed
    assert any("chatgpt" in reason for reason in report.unpriced_reasons)
    assert report.organizations["busan"].difference == 0


def test_the_same_catalog_changes_nothing(clickhouse: Client) -> None:
    store(clickhouse)
    assert rerate(clickhouse, catalog(), START, END).changed == 0
