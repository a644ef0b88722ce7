"""Detection of risky and non-work AI use, per the organisation's policy (civicmeter.policy).

    engine = DetectionEngine(load_policies("config/policies.yaml"))
    for alert in engine.process([(event, cost_krw), ...]):   # validated events, rated cost
        publish(alert)                                        # e.g. to usage.alerts

Detectors: banned_provider, unsanctioned_service, personal_account, pii_sent,
non_work_content, off_hours, automation_burst, volume_spike, peer_spike,
new_service_in_department (DETECTOR_NAMES). Pure and Kafka-free; state is bounded by
EngineLimits and evolves by event time, never the wall clock.

Spread over processors, one engine per process runs USER_DETECTORS over the events of its
partitions (`process(batch, sources)`, reporting users' day totals with take_activity) and
another runs ORGANIZATION_DETECTORS over those totals from every processor
(`apply_activity`); `take_state` and `restore` carry each user's and department's state
through a compacted topic (state.py), with the source position that keeps a replayed record
from counting twice. An event a gateway sent twice in two records is recognised by its id
only while the process that saw the first one runs: after a restart the per-user totals may
count it again (the stores and the alerts' dedup keys still count it once).

Budgets are watched by the billing service over the stored ledger, which sees the seat
charges and re-rating the stream does not.
"""

from civicmeter.policy.detectors import DETECTOR_NAMES
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.engine import DetectionEngine, EngineLimits

__all__ = [
    "DETECTOR_NAMES",
    "Alert",
    "DetectionEngine",
    "EngineLimits",
]
