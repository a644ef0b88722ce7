"""Detection of risky and non-work AI use, per the organisation's policy (core.policy).

    engine = DetectionEngine(load_policies("config/policies.yaml"))
    for alert in engine.process([(event, cost_krw), ...]):   # validated events, rated cost
        publish(alert)                                        # e.g. to usage.alerts

Detectors: banned_provider, unsanctioned_service, personal_account, pii_sent,
non_work_content, off_hours, automation_burst, volume_spike, peer_spike,
new_service_in_department (DETECTOR_NAMES). Pure and Kafka-free; state is bounded by
EngineLimits and evolves by event time, never the wall clock. Budgets are watched by the
billing service over the stored ledger, which sees the seat charges and re-rating the stream
does not.
"""

from civicmeter.core.policy import DETECTOR_NAMES
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.engine import DetectionEngine, EngineLimits

__all__ = [
    "DETECTOR_NAMES",
    "Alert",
    "DetectionEngine",
    "EngineLimits",
]
