"""Idempotent writes of alerts to ClickHouse.

Every occurrence lands in alert_occurrences (one row per dedup key and triggering event, so a
redelivered occurrence folds away). An alert whose dedup key is not yet in alerts_opened is
opened there: that row is what ListAlerts pages through and WatchAlerts streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.core.store.alerts import opened_keys
from civicmeter.sink.event_writer import epoch_millis

_COMMON = (
    "organization_id", "dedup_key", "trigger_event_id", "alert_type", "severity",
    "department_id", "user_id", "service_id", "provider_name", "event_time", "explanation",
    "attributes",
)  # fmt: skip


@dataclass(frozen=True)
class AlertWriteResult:
    occurrences: int
    opened: int


def _row(alert: alert_pb2.Alert) -> list[object]:
    return [
        alert.organization_id, alert.dedup_key, alert.trigger_event_id, alert.alert_type,
        int(alert.severity), alert.department_id, alert.user_id, alert.service_id,
        alert.provider_name, epoch_millis(alert.first_seen_time), alert.explanation,
        dict(alert.attributes),
    ]  # fmt: skip


def write_alerts(
    client: Client, alerts: Sequence[alert_pb2.Alert], now_ms: int
) -> AlertWriteResult:
    """Store the occurrences and open the alerts seen for the first time."""
    if not alerts:
        return AlertWriteResult(0, 0)
    seen = opened_keys(client, alerts)
    opened: list[list[object]] = []
    for alert in sorted(alerts, key=lambda a: (a.first_seen_time.seconds, a.first_seen_time.nanos)):
        key = (alert.organization_id, alert.dedup_key)
        if key not in seen:
            seen.add(key)
            opened.append([*_row(alert), now_ms])
    if opened:
        client.insert("alerts_opened", opened, column_names=(*_COMMON, "opened_time"))
    client.insert("alert_occurrences", [_row(a) for a in alerts], column_names=_COMMON)
    return AlertWriteResult(len(alerts), len(opened))
