"""Alert severities: the names policies and people use, and their civicmeter.alert.v1 values."""

from __future__ import annotations

from typing import Literal

from civicmeter.api.alert.v1 import alert_pb2

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")

SEVERITY_VALUES: dict[Severity, alert_pb2.Severity.ValueType] = {
    "low": alert_pb2.SEVERITY_LOW,
    "medium": alert_pb2.SEVERITY_MEDIUM,
    "high": alert_pb2.SEVERITY_HIGH,
    "critical": alert_pb2.SEVERITY_CRITICAL,
}
SEVERITY_NAMES: dict[int, Severity] = {value: name for name, value in SEVERITY_VALUES.items()}
