"""Alerts from the detectors, as the civicmeter.alert.v1.Alert records usage.alerts carries."""

from __future__ import annotations

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.severity import SEVERITY_VALUES
from civicmeter.processor.detection.alert import Alert


def to_record(alert: Alert) -> alert_pb2.Alert:
    """One occurrence: the sink folds occurrences that share a dedup key into one alert."""
    record = alert_pb2.Alert(
        dedup_key=alert.dedup_key,
        alert_type=alert.alert_type,
        severity=SEVERITY_VALUES[alert.severity],
        state=alert_pb2.ALERT_STATE_OPEN,
        organization_id=alert.organization_id,
        department_id=alert.department_id,
        user_id=alert.user_id,
        service_id=alert.service_id,
        provider_name=alert.provider_name,
        trigger_event_id=alert.event_id,
        occurrence_count=1,
        explanation=alert.explanation,
        attributes=alert.attributes,
    )
    record.first_seen_time.FromDatetime(alert.event_time)
    record.last_seen_time.CopyFrom(record.first_seen_time)
    return record
