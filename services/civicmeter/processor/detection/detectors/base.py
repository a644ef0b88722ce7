"""The shape every detector has."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.context import EventContext

NO_ALERTS: tuple[Alert, ...] = ()


class Detector(Protocol):
    name: str

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        """Alerts this event raises (the engine folds repeats of a dedup key)."""
        ...
