"""The detectors' settings: which the policy's `detectors` block turns on, how severe their
alerts are, and their thresholds.

    detectors:
      volume_spike: {warmup_days: 7, factor: 5, mad_multiplier: 6, min_requests: 20}
      pii_sent: {severity: medium, types: {kr_rrn: high, phone: medium, kr_brn: ignore}}
      budget_forecast: {severity: medium, min_overrun_percent: 5}

Each settings class is read field by field from its type hints; a numeric field's `metadata`
gives its bounds.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from civicmeter.api.severity import Severity
from civicmeter.policy.document import NAME, check_keys, integer, mapping, money, number, severity
from civicmeter.policy.yaml_source import At

DETECTOR_NAMES: tuple[str, ...] = (
    "banned_provider",
    "unsanctioned_service",
    "personal_account",
    "pii_sent",
    "off_hours",
    "volume_spike",
    "peer_spike",
    "automation_burst",
    "non_work_content",
    "new_service_in_department",
    "repeated_denials",
)
# Raised by the billing service from the stored ledger (seat charges and re-rating included),
# not by the stream's detectors; the `detectors` block turns them on and off all the same.
BUDGET_ALERT_TYPES: tuple[str, ...] = ("budget_threshold", "budget_forecast")


@dataclass(frozen=True)
class DetectorToggle:
    enabled: bool = True
    severity: Severity = "medium"


@dataclass(frozen=True)
class PiiSettings:
    enabled: bool = True
    severity: Severity = "medium"  # for finding types not listed in `types`
    types: Mapping[str, Severity | None] = field(
        default_factory=lambda: MappingProxyType(
            {
                "kr_rrn": "high",
                "kr_frn": "high",
                "kr_passport": "high",
                "kr_driver_license": "high",
                "bank_account": "high",
                "phone": "medium",
                "email": "medium",
                "kr_brn": None,  # business numbers are public; procurement work is full of them
            }
        )
    )

    def severity_of(self, kind: str) -> Severity | None:
        """The severity of a finding type, or None when the policy ignores it."""
        return self.types.get(kind, self.severity)


@dataclass(frozen=True)
class VolumeSpikeSettings:
    enabled: bool = True
    severity: Severity = "medium"
    warmup_days: int = field(default=7, metadata={"min": 1, "max": 365})
    history_days: int = field(default=28, metadata={"min": 1, "max": 365})
    factor: float = field(default=5.0, metadata={"min": 1.0})
    mad_multiplier: float = field(default=6.0, metadata={"min": 0.0})
    min_requests: int = field(default=20, metadata={"min": 1})
    min_cost_krw: Decimal = Decimal("10000")


@dataclass(frozen=True)
class PeerSpikeSettings:
    enabled: bool = True
    severity: Severity = "medium"
    min_peers: int = field(default=5, metadata={"min": 2})
    peer_warmup_days: int = field(default=3, metadata={"min": 1, "max": 365})
    factor: float = field(default=6.0, metadata={"min": 1.0})
    mad_multiplier: float = field(default=6.0, metadata={"min": 0.0})
    min_requests: int = field(default=50, metadata={"min": 1})


@dataclass(frozen=True)
class AutomationBurstSettings:
    enabled: bool = True
    severity: Severity = "medium"
    # More than `max_requests` requests within `window_seconds`...
    max_requests: int = field(default=12, metadata={"min": 2, "max": 10_000})
    window_seconds: int = field(default=60, metadata={"min": 1, "max": 86_400})
    # ... or `regular_intervals` consecutive gaps this alike (coefficient of variation), or as
    # many with the person's own requests in between when chance cannot explain them (see
    # processor/detection/detectors/automation_burst.py).
    regular_intervals: int = field(default=10, metadata={"min": 3, "max": 1_000})
    max_interval_cv: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    max_mean_interval_seconds: int = field(default=900, metadata={"min": 1})


@dataclass(frozen=True)
class NewServiceSettings:
    enabled: bool = True
    severity: Severity = "low"
    warmup_days: int = field(default=14, metadata={"min": 0, "max": 365})


@dataclass(frozen=True)
class RepeatedDenialsSettings:
    enabled: bool = True
    severity: Severity = "high"
    # At least `min_denials` of a user's requests denied by the gateway guard within
    # `window_seconds`: someone trying to get around the policy.
    min_denials: int = field(default=5, metadata={"min": 2, "max": 1_000})
    window_seconds: int = field(default=600, metadata={"min": 1, "max": 86_400})


@dataclass(frozen=True)
class BudgetThresholdSettings:
    enabled: bool = True  # severities are the thresholds' own (budgets.thresholds)


@dataclass(frozen=True)
class BudgetForecastSettings:
    enabled: bool = True
    severity: Severity = "medium"
    # Raised when the projected overrun is at least this share of the budget: a forecast a few
    # percent over is within the run-rate's own noise, and the 100% threshold follows anyway.
    min_overrun_percent: int = field(default=5, metadata={"min": 0, "max": 1000})


@dataclass(frozen=True)
class Detectors:
    banned_provider: DetectorToggle = DetectorToggle(severity="critical")
    unsanctioned_service: DetectorToggle = DetectorToggle(severity="high")
    personal_account: DetectorToggle = DetectorToggle(severity="medium")
    pii_sent: PiiSettings = PiiSettings()
    off_hours: DetectorToggle = DetectorToggle(severity="low")
    volume_spike: VolumeSpikeSettings = VolumeSpikeSettings()
    peer_spike: PeerSpikeSettings = PeerSpikeSettings()
    automation_burst: AutomationBurstSettings = AutomationBurstSettings()
    non_work_content: DetectorToggle = DetectorToggle(severity="medium")
    new_service_in_department: NewServiceSettings = NewServiceSettings()
    repeated_denials: RepeatedDenialsSettings = RepeatedDenialsSettings()
    budget_threshold: BudgetThresholdSettings = BudgetThresholdSettings()
    budget_forecast: BudgetForecastSettings = BudgetForecastSettings()


def parse_detectors(at: At, raw: Any) -> Detectors:
    block = mapping(at, raw)
    check_keys(at, block, (*DETECTOR_NAMES, *BUDGET_ALERT_TYPES))
    base = Detectors()
    changes: dict[str, Any] = {}
    for name in (*DETECTOR_NAMES, *BUDGET_ALERT_TYPES):
        if name in block:
            changes[name] = _parse_settings(at.key(block, name), getattr(base, name), block[name])
    detectors = replace(base, **changes)
    if not detectors.banned_provider.enabled:
        at.key(block, "banned_provider").key(block["banned_provider"], "enabled").fail(
            "banned providers are always detected (DeepSeek is banned for every government)"
        )
    return detectors


_SettingsT = typing.TypeVar("_SettingsT")


def _parse_settings(at: At, base: _SettingsT, raw: Any) -> _SettingsT:
    """A detector's settings: `base` with the values the block gives, each checked by type."""
    block = mapping(at, raw)
    spec = {f.name: f for f in fields(base)}  # type: ignore[arg-type]
    check_keys(at, block, spec)
    hints = typing.get_type_hints(type(base))
    changes: dict[str, Any] = {}
    for key, value in block.items():
        value_at = at.key(block, key)
        hint = hints[key]
        bounds = spec[key].metadata
        if key == "types":
            changes[key] = _pii_types(value_at, value)
        elif hint is bool:
            if not isinstance(value, bool):
                value_at.fail("must be true or false")
            changes[key] = value
        elif hint is int:
            changes[key] = integer(value_at, value, bounds.get("min", 0), bounds.get("max", 10**9))
        elif hint is float:
            changes[key] = number(value_at, value, bounds.get("min", 0.0), bounds.get("max", 1e9))
        elif hint is Decimal:
            changes[key] = money(value_at, value)
        else:  # the severity
            changes[key] = severity(value_at, value)
    return replace(base, **changes)  # type: ignore[type-var]


def _pii_types(at: At, raw: Any) -> Mapping[str, Severity | None]:
    block = mapping(at, raw)
    merged: dict[str, Severity | None] = dict(PiiSettings().types)
    for kind, value in block.items():
        if not isinstance(kind, str) or not NAME.fullmatch(kind):
            at.on_line_of(block, kind).fail(f"{kind!r} is not a finding type (e.g. kr_rrn)")
        merged[kind] = None if value == "ignore" else severity(at.key(block, kind), value, "ignore")
    return MappingProxyType(merged)
