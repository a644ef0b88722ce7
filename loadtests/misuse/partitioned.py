"""Detection as several processors run it, in this process and without Kafka: a model of the
processor's partitions, micro-batches, organisation-keyed activity updates, state records and
crashes, to check that the alerts do not depend on how many processors there are or on when
one of them dies.

Each usage.raw partition's events go to its owner's per-user engine in micro-batches of
records (one record: the events of a partition in one delivery batch). The users' day totals
go, keyed by organisation, to the owner of the organisation's activity partition, whose engine
runs the organisation-wide detectors. After each micro-batch its state records are written to
the partition's compacted store and then its offsets committed, as the processor does. A crash
loses the engines and everything after the last commit; the restarted member restores its
partitions' state and consumes again from the committed offsets.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from aiokafka.partitioner import murmur2

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.kafka import event_key
from civicmeter.policy.organization import PolicySet
from civicmeter.processor.detection import Alert, DetectionEngine
from civicmeter.processor.detection.day_activity import DayActivity
from civicmeter.processor.detection.engine import (
    ORGANIZATION_DETECTORS,
    USER_DETECTORS,
    SourceMark,
)
from civicmeter.processor.detection.state import parse

Delivery = tuple[pb.UsageEvent, Decimal]


def partition_of(key: bytes, partitions: int) -> int:
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class _Log:
    """One partition of a topic: its records and the committed offset of its consumer."""

    records: list[object] = field(default_factory=list)
    committed: int = 0


class Cluster:
    def __init__(self, policies: PolicySet, processors: int, partitions: int = 4) -> None:
        self.policies = policies
        self.processors = processors
        self.partitions = partitions
        self.raw = [_Log() for _ in range(partitions)]
        self.activity = [_Log() for _ in range(partitions)]
        # Compacted state topics: per partition, the latest value of each key.
        self.user_state: list[dict[bytes, bytes]] = [{} for _ in range(partitions)]
        self.org_state: list[dict[bytes, bytes]] = [{} for _ in range(partitions)]
        self.alerts: list[Alert] = []
        self.members = [self._member(n) for n in range(processors)]

    def _member(self, n: int) -> tuple[DetectionEngine, DetectionEngine]:
        """A fresh member: its engines, with the state of the partitions it owns restored."""
        user = DetectionEngine(
            self.policies, detectors=USER_DETECTORS, fold_repeats=False, activity_updates=True
        )
        org = DetectionEngine(self.policies, detectors=ORGANIZATION_DETECTORS, fold_repeats=False)
        for p in self._owned(n):
            for key, value in self.user_state[p].items():
                user.restore(parse(key, value))
            for key, value in self.org_state[p].items():
                org.restore(parse(key, value))
        return user, org

    def _owned(self, n: int) -> list[int]:
        return [p for p in range(self.partitions) if p % self.processors == n]

    def send(self, batch: Sequence[Delivery]) -> None:
        """One delivery batch to usage.raw: a record per partition it touches."""
        records: dict[int, list[Delivery]] = defaultdict(list)
        for delivery in batch:
            event = delivery[0]
            key = event_key(event.organization_id, event.user_id)
            records[partition_of(key, self.partitions)].append(delivery)
        for p, events in records.items():
            self.raw[p].records.append(events)

    def step(self, crash: tuple[int, str] | None = None) -> None:
        """Every member consumes what is new on its partitions (one micro-batch each), then
        what is new on its activity partitions. `crash`: (member, stage): that member dies
        after publishing its outputs, before writing its state ("outputs") or after writing it
        but before committing its offsets ("state"), and starts again."""
        for n in range(self.processors):
            self._rate(n, crash[1] if crash and crash[0] == n else None)
        for n in range(self.processors):
            self._organize(n, crash[1] if crash and crash[0] == n else None)
        if crash is not None:
            self.members[crash[0]] = self._member(crash[0])

    def _rate(self, n: int, crash: str | None) -> None:
        engine = self.members[n][0]
        batch: list[Delivery] = []
        sources: list[SourceMark] = []
        ends: dict[int, int] = {}
        for p in self._owned(n):
            log = self.raw[p]
            for offset in range(log.committed, len(log.records)):
                sources.append((len(batch), p, offset))
                batch.extend(log.records[offset])  # type: ignore[arg-type]
            ends[p] = len(log.records)
        self.alerts.extend(engine.process(batch, sources))
        for update in engine.take_activity():
            key = update.organization_id.encode()
            self.activity[partition_of(key, self.partitions)].records.append(update)
        if crash == "outputs":
            return
        for record in engine.take_state():
            assert record.partition is not None
            self.user_state[record.partition][record.key] = record.value
        if crash == "state":
            return
        for p, end in ends.items():
            self.raw[p].committed = end

    def _organize(self, n: int, crash: str | None) -> None:
        engine = self.members[n][1]
        for p in self._owned(n):
            log = self.activity[p]
            updates: list[DayActivity] = log.records[log.committed :]  # type: ignore[assignment]
            self.alerts.extend(engine.apply_activity(updates))
            if crash == "outputs":
                continue
            for record in engine.take_state():
                key = record.organization_id.encode()
                assert partition_of(key, self.partitions) == p
                self.org_state[p][record.key] = record.value
            if crash != "state":
                log.committed = len(log.records)


def run_partitioned(
    policies: PolicySet,
    deliveries: Sequence[Delivery],
    processors: int,
    *,
    batch: int = 500,
    crash_at: float | None = None,
    partitions: int = 4,
) -> list[Alert]:
    """The alerts of `processors` members over the deliveries; with `crash_at` (a fraction of
    the deliveries), member 0 dies there after publishing a micro-batch's outputs but before
    writing its state, and a few batches later after writing state but before committing."""
    cluster = Cluster(policies, processors, partitions)
    crashes: dict[int, tuple[int, str]] = {}
    if crash_at is not None:
        first = int(len(deliveries) * crash_at) // batch * batch
        crashes = {first: (0, "outputs"), first + 3 * batch: (0, "state")}
    for start in range(0, len(deliveries), batch):
        cluster.send(deliveries[start : start + batch])
        cluster.step(crashes.get(start))
    return cluster.alerts
