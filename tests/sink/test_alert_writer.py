"""Alert writes (sink/alert_writer.py) on the real engine: an alert is opened by its earliest
occurrence whatever order a block brings them in, once per organisation and dedup key, and
every occurrence is kept with what the detector said."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from civicmeter.sink.alert_writer import AlertWriteResult, write_alerts
from tests.core.test_alert_store import alert, ms


def opened(client: Client) -> list[tuple[str, str, str, int, int]]:
    rows = client.query(
        "SELECT organization_id, dedup_key, trigger_event_id, toUnixTimestamp64Milli(event_time),"
        " toUnixTimestamp64Milli(opened_time) FROM alerts_opened ORDER BY organization_id"
    ).result_rows
    return [(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]


def test_the_earliest_occurrence_opens_the_alert_whatever_the_order(clickhouse: Client) -> None:
    block = [alert("k", "e9", 9), alert("k", "e2", 2), alert("k", "e5", 5)]
    assert write_alerts(clickhouse, block, ms(20)) == AlertWriteResult(3, 1)
    assert opened(clickhouse) == [("seoul", "k", "e2", ms(2), ms(20))]
    # A later block's earlier occurrence adds to the count but does not reopen the alert.
    assert write_alerts(clickhouse, [alert("k", "e1", 1)], ms(30)) == AlertWriteResult(1, 0)
    assert opened(clickhouse) == [("seoul", "k", "e2", ms(2), ms(20))]
    occurrences = clickhouse.query(
        "SELECT trigger_event_id FROM alert_occurrences FINAL ORDER BY event_time"
    ).result_rows
    assert [r[0] for r in occurrences] == ["e1", "e2", "e5", "e9"]


def test_one_dedup_key_in_two_organisations_is_two_alerts(clickhouse: Client) -> None:
    block = [alert("k", "e1", org="seoul"), alert("k", "e2", 1, org="busan")]
    assert write_alerts(clickhouse, block, ms(5)) == AlertWriteResult(2, 2)
    assert [(org, key, trigger) for org, key, trigger, _, _ in opened(clickhouse)] == [
        ("busan", "k", "e2"),
        ("seoul", "k", "e1"),
    ]


def test_what_the_detector_said_is_stored_with_the_occurrence(clickhouse: Client) -> None:
    sent = alert("k", "e1")
    sent.attributes["explanation_ko"] = "금지된 서비스"
    sent.attributes["policy_version"] = "2026-11"
    write_alerts(clickhouse, [sent], ms(1))
    [row] = clickhouse.query(
        "SELECT alert_type, severity, explanation, attributes FROM alert_occurrences"
    ).result_rows
    assert row[:3] == (sent.alert_type, int(sent.severity), sent.explanation)
    assert row[3] == {"explanation_ko": "금지된 서비스", "policy_version": "2026-11"}


def test_an_empty_block_writes_nothing(clickhouse: Client) -> None:
    assert write_alerts(clickhouse, [], ms(1)) == AlertWriteResult(0, 0)
    assert clickhouse.query("SELECT count() FROM alert_occurrences").result_rows[0][0] == 0
