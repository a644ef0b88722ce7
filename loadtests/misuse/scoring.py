"""Alerts against the scenario's labels, per detector.

An alert is a true positive when a label has its alert type and dedup key and the event that
raised it is one of the label's events (for a stateful detector, an event of the anomalous
day or month; so an alert raised too early, on normal use, does not count). Every other alert
is a false positive; every label no alert matched is a false negative. `exact` counts the
true positives raised by the label's first event. Labels the scenario marks as not scored
(ambiguous cases) count neither way, and nor do the alerts with their keys.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from civicmeter.policy.detectors import DETECTOR_NAMES
from civicmeter.processor.detection import Alert
from loadtests.misuse.scenario import Label


@dataclass
class Score:
    labels: int = 0
    alerts: int = 0
    tp: int = 0
    exact: int = 0
    ambiguous: int = 0  # labels not scored

    @property
    def fp(self) -> int:
        return self.alerts - self.tp

    @property
    def fn(self) -> int:
        return self.labels - self.tp

    @property
    def precision(self) -> float:
        return self.tp / self.alerts if self.alerts else 1.0

    @property
    def recall(self) -> float:
        return self.tp / self.labels if self.labels else 1.0


@dataclass(frozen=True)
class Mismatch:
    kind: str  # "false positive" | "false negative"
    alert_type: str
    dedup_key: str
    detail: str


def score(
    alerts: Iterable[Alert], labels: Sequence[Label], *, by_key_only: Collection[str] = ()
) -> tuple[dict[str, Score], list[Mismatch]]:
    """Per-detector scores. Detectors in `by_key_only` match on the dedup key alone, not on
    the triggering event: across partitions, which event tips an organisation's spend over a
    threshold depends on the order the partitions are read in, not on the detector."""
    scores = {name: Score() for name in DETECTOR_NAMES}
    by_key = {(label.alert_type, label.dedup_key): label for label in labels}
    matched: set[tuple[str, str]] = set()
    mismatches: list[Mismatch] = []
    for each in labels:
        if each.scored:
            scores[each.alert_type].labels += 1
        else:
            scores[each.alert_type].ambiguous += 1
    for alert in alerts:
        s = scores[alert.alert_type]
        key = (alert.alert_type, alert.dedup_key)
        label = by_key.get(key)
        if label is not None and not label.scored:
            continue
        s.alerts += 1
        triggered = alert.event_id in label.event_ids if label is not None else False
        if (
            label is not None
            and key not in matched
            and (triggered or alert.alert_type in by_key_only)
        ):
            matched.add(key)
            s.tp += 1
            s.exact += alert.event_id == label.first_event_id
        else:
            why = "no such label" if label is None else "raised by an event outside the case"
            mismatches.append(
                Mismatch(
                    "false positive",
                    alert.alert_type,
                    alert.dedup_key,
                    f"{why}: {alert.explanation}",
                )
            )
    for each in labels:
        if each.scored and (each.alert_type, each.dedup_key) not in matched:
            mismatches.append(
                Mismatch("false negative", each.alert_type, each.dedup_key, each.note)
            )
    return scores, mismatches
