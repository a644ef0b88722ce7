"""Detector state written once per interval, coalesced per key: each key once per flush with
its latest value, the day totals first, and the records acknowledged only after the state that
counts them."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from civicmeter.policy.organization import PolicySet, parse_policies
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.detection.day_activity import DayActivity
from civicmeter.processor.detection.engine import USER_DETECTORS
from civicmeter.processor.detection.state import USER, StateRecord
from civicmeter.processor.state_flush import StateFlush
from tests.processor.test_durable_detection import POLICY, day_of


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Agent:
    """An engine, its flush and what the flush did, in order."""

    def __init__(self, interval: float = 5.0, **options: Any) -> None:
        policies: PolicySet = parse_policies(POLICY, "test.yaml")
        self.engine = DetectionEngine(
            policies, detectors=USER_DETECTORS, fold_repeats=False, activity_updates=True
        )
        self.clock = Clock()
        self.log: list[tuple[str, Any]] = []
        self.written: list[list[StateRecord]] = []
        self.published: list[list[DayActivity]] = []
        self.flush = StateFlush(
            self.write,
            self.ack,
            interval=interval,
            publish=self.publish,
            publish_interval=1.0,
            pending_keys=lambda: self.engine.pending_state,
            clock=self.clock,
            **options,
        )

    async def write(self) -> None:
        records = self.engine.take_state()
        self.written.append(records)
        self.log.append(("state", len(records)))

    async def publish(self) -> None:
        updates = self.engine.take_activity()
        self.published.append(updates)
        self.log.append(("activity", len(updates)))

    async def ack(self, record: Any) -> None:
        self.log.append(("ack", record))

    async def batch(self, offset: int, users: list[str], day: int, count: int = 5) -> None:
        """One micro-batch of one usage.raw record (partition 0) at `offset`."""
        async with self.flush.lock:
            for user in users:
                self.engine.process(day_of(user, day, count), [(0, 0, offset)])
            await self.flush.processed([f"record-{offset}"])


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_key_changed_by_many_batches_is_written_once_with_its_last_value() -> None:
    async def scenario() -> Agent:
        agent = Agent(interval=5.0)
        for offset in range(4):  # u1 in every batch, u2 in the first only
            await agent.batch(offset, ["u1", "u2"] if offset == 0 else ["u1"], day=offset)
            agent.clock.now += 1.0
        assert agent.written == []  # the oldest batch has waited 4 s of 5
        agent.clock.now += 1.0
        await agent.batch(4, ["u1"], day=4)  # 5 s after the first: due
        return agent

    agent = run(scenario())
    (records,) = agent.written
    users = {r.id: r for r in records if r.kind == USER}
    assert sorted(users) == ["u1", "u2"]  # once each, though u1 was in five batches
    assert users["u1"].values["position"] == (0, 4)
    assert users["u2"].values["position"] == (0, 0)
    # The last value: the state of an engine that saw the five batches and wrote once.
    reference = Agent().engine
    reference.process(day_of("u1", 0, 5) + day_of("u2", 0, 5), [(0, 0, 0)])
    for offset in range(1, 5):
        reference.process(day_of("u1", offset, 5), [(0, 0, offset)])
    expected = {r.id: r.value for r in reference.take_state()}
    assert {user: r.value for user, r in users.items()} == expected
    assert agent.engine.pending_state == 0
    assert agent.flush.flushes == 1 and agent.flush.pending == 0


def test_records_are_acknowledged_only_after_the_state_counting_them() -> None:
    async def scenario() -> Agent:
        agent = Agent(interval=5.0)
        for offset in range(3):
            await agent.batch(offset, ["u1"], day=offset)
        assert [kind for kind, _ in agent.log] == []  # nothing written, nothing acknowledged
        agent.clock.now += 5.0
        async with agent.flush.lock:
            await agent.flush.flush_if_due()
        return agent

    agent = run(scenario())
    kinds = [kind for kind, _ in agent.log]
    assert kinds == ["activity", "state", "ack", "ack", "ack"]
    assert [record for kind, record in agent.log if kind == "ack"] == [
        "record-0",
        "record-1",
        "record-2",
    ]


def test_day_totals_go_out_each_second_and_state_at_the_interval() -> None:
    async def scenario() -> Agent:
        agent = Agent(interval=5.0)
        for offset in range(3):  # one day of requests each
            await agent.batch(offset, ["u1"], day=offset)
            agent.clock.now += 1.0
        async with agent.flush.lock:  # as the timer does when no batch comes
            await agent.flush.flush_if_due()
        return agent

    agent = run(scenario())
    # The first batch's totals wait a second and go out with the second's; the third's wait a
    # second too, for the next batch or the timer.
    assert [kind for kind, _ in agent.log] == ["activity", "activity"]
    days = [[date.fromordinal(u.day).day for u in updates] for updates in agent.published]
    assert days == [[9, 10], [11]]
    assert [u.source_offset for updates in agent.published for u in updates] == [1, 1, 2]
    assert agent.written == [] and agent.flush.pending == 3


def test_too_many_pending_records_or_keys_write_at_once() -> None:
    async def by_records() -> Agent:
        agent = Agent(interval=60.0, max_records=3)
        for offset in range(3):
            await agent.batch(offset, ["u1"], day=0)
        return agent

    async def by_keys() -> Agent:
        agent = Agent(interval=60.0, max_keys=3)
        await agent.batch(0, ["u1", "u2"], day=0)
        assert agent.written == []
        await agent.batch(1, ["u3"], day=0)
        return agent

    assert [len(r) for r in run(by_records()).written] == [1]
    assert [len(r) for r in run(by_keys()).written] == [3]


def test_a_rebalance_and_a_stop_write_what_is_pending() -> None:
    async def rebalance() -> Agent:
        agent = Agent(interval=60.0)
        await agent.batch(0, ["u1"], day=0)
        rebalancing = asyncio.Event()
        ticker = asyncio.create_task(agent.flush.run(rebalancing.is_set))
        await asyncio.sleep(0.3)
        assert agent.written == []  # not due, no rebalance
        rebalancing.set()
        await asyncio.sleep(0.3)
        async with agent.flush.lock:
            ticker.cancel()
        return agent

    agent = run(rebalance())
    assert [len(r) for r in agent.written] == [1]
    assert [record for kind, record in agent.log if kind == "ack"] == ["record-0"]

    async def stop() -> Agent:
        agent = Agent(interval=60.0)
        await agent.batch(0, ["u1", "u2"], day=0)
        async with agent.flush.lock:  # as the agent does when it stops
            await agent.flush.flush()
        return agent

    agent = run(stop())
    assert sorted(r.id for r in agent.written[0]) == ["u1", "u2"]
    assert agent.flush.pending == 0
