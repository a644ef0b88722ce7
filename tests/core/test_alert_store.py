from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.core.store.alerts import (
    AlertFilter,
    alerts_after,
    get_alert,
    list_alerts,
    record_state,
)
from civicmeter.sink.alert_writer import write_alerts

T0 = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)


def alert(
    key: str,
    trigger: str,
    minutes: int = 0,
    org: str = "seoul",
    severity: alert_pb2.Severity.ValueType = alert_pb2.SEVERITY_HIGH,
    alert_type: str = "banned_provider",
) -> alert_pb2.Alert:
    message = alert_pb2.Alert(
        dedup_key=key,
        alert_type=alert_type,
        severity=severity,
        organization_id=org,
        department_id="welfare",
        user_id="u_1",
        service_id="deepseek-chat",
        provider_name="deepseek",
        trigger_event_id=trigger,
        explanation="u_1 used DeepSeek, banned for all governments",
    )
    message.first_seen_time.FromDatetime(T0 + timedelta(minutes=minutes))
    message.last_seen_time.CopyFrom(message.first_seen_time)
    return message


def ms(minutes: int) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)


def test_repeats_fold_into_one_alert_with_a_count(clickhouse: Client) -> None:
    result = write_alerts(clickhouse, [alert("k1", "e1"), alert("k1", "e2", 5)], ms(10))
    assert (result.occurrences, result.opened) == (2, 1)
    # Redelivery of an occurrence and one more repeat later.
    again = write_alerts(clickhouse, [alert("k1", "e2", 5), alert("k1", "e3", 9)], ms(11))
    assert again.opened == 0
    [stored] = list_alerts(clickhouse, AlertFilter("seoul"), 0, 10, None)
    assert stored.alert.occurrence_count == 3
    assert stored.alert.first_seen_time.ToDatetime(UTC) == T0
    assert stored.alert.last_seen_time.ToDatetime(UTC) == T0 + timedelta(minutes=9)
    assert stored.alert.state == alert_pb2.ALERT_STATE_OPEN
    assert stored.alert.trigger_event_id == "e1"


def test_filters_pages_and_tenancy(clickhouse: Client) -> None:
    write_alerts(
        clickhouse,
        [
            alert("a", "e1"),
            alert("b", "e2", 1, severity=alert_pb2.SEVERITY_LOW, alert_type="off_hours"),
        ],
        ms(1),
    )
    write_alerts(clickhouse, [alert("c", "e3", 2), alert("z", "e4", org="busan")], ms(2))
    newest_first = [
        s.alert.dedup_key for s in list_alerts(clickhouse, AlertFilter("seoul"), 0, 10, None)
    ]
    assert newest_first == ["c", "b", "a"]
    page1 = list_alerts(clickhouse, AlertFilter("seoul"), 0, 2, None)
    page2 = list_alerts(
        clickhouse, AlertFilter("seoul"), 0, 2, (page1[-1].opened_ms, page1[-1].alert.dedup_key)
    )
    assert [s.alert.dedup_key for s in page1 + page2] == newest_first
    high = list_alerts(clickhouse, AlertFilter("seoul", alert_pb2.SEVERITY_HIGH), 0, 10, None)
    assert {s.alert.dedup_key for s in high} == {"a", "c"}
    typed = list_alerts(clickhouse, AlertFilter("seoul", 0, ("off_hours",)), 0, 10, None)
    assert [s.alert.dedup_key for s in typed] == ["b"]
    assert [
        s.alert.dedup_key for s in list_alerts(clickhouse, AlertFilter("busan"), 0, 10, None)
    ] == ["z"]


def test_acknowledge_then_resolve(clickhouse: Client) -> None:
    write_alerts(clickhouse, [alert("k", "e1"), alert("j", "e2")], ms(1))
    record_state(clickhouse, "seoul", "k", alert_pb2.ALERT_STATE_ACKNOWLEDGED, "auditor-1", ms(2))
    stored = get_alert(clickhouse, "seoul", "k")
    assert stored is not None
    assert stored.alert.state == alert_pb2.ALERT_STATE_ACKNOWLEDGED
    assert stored.alert.state_changed_by == "auditor-1"
    record_state(clickhouse, "seoul", "k", alert_pb2.ALERT_STATE_RESOLVED, "auditor-2", ms(3))
    open_now = list_alerts(clickhouse, AlertFilter("seoul"), alert_pb2.ALERT_STATE_OPEN, 10, None)
    resolved = list_alerts(
        clickhouse, AlertFilter("seoul"), alert_pb2.ALERT_STATE_RESOLVED, 10, None
    )
    assert [s.alert.dedup_key for s in open_now] == ["j"]
    assert [s.alert.state_changed_by for s in resolved] == ["auditor-2"]
    assert get_alert(clickhouse, "seoul", "missing") is None


def test_alerts_after_a_cursor_come_oldest_first_and_only_once(clickhouse: Client) -> None:
    write_alerts(clickhouse, [alert("a", "e1"), alert("b", "e2")], ms(1))
    first = alerts_after(clickhouse, AlertFilter(None), (0, ""), 10)
    assert [s.alert.dedup_key for s in first] == ["a", "b"]
    cursor = (first[-1].opened_ms, first[-1].alert.dedup_key)
    assert alerts_after(clickhouse, AlertFilter(None), cursor, 10) == []
    write_alerts(clickhouse, [alert("a", "e9", 3), alert("c", "e3", 3)], ms(5))
    assert [s.alert.dedup_key for s in alerts_after(clickhouse, AlertFilter(None), cursor, 10)] == [
        "c"
    ]
