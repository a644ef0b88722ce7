"""The real processor on the real broker: a usage.raw offset is committed only once the
detector state counting its record is in the state topic, and a rebalance or a stop writes
the state still pending (then commits), however long the state interval."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from civicmeter.core.config import KafkaSettings, TopicSettings
from civicmeter.core.kafka import ensure_topics
from civicmeter.processor.detection.state import USER, parse
from civicmeter.processor.detector_state import DetectionTopics
from loadtests.bench import preload
from loadtests.measure import topic_ends

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 2


class Stack:
    """Topics and a consumer group of one test's own, and the processors it starts."""

    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        run = uuid.uuid4().hex[:8]
        self.group = f"state-commit-{run}"
        self.raw = f"{run}.raw"
        self.topics = {
            "CIVICMETER_TOPIC_RAW": self.raw,
            "CIVICMETER_TOPIC_RATED": f"{run}.rated",
            "CIVICMETER_TOPIC_DLQ": f"{run}.dlq",
            "CIVICMETER_TOPIC_ALERTS": f"{run}.alerts",
            "CIVICMETER_TOPIC_PARTITIONS": str(PARTITIONS),
        }
        self.state_topic = DetectionTopics.of(self.group, self.raw).user_state
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[BinaryIO] = []
        settings = KafkaSettings(bootstrap, topics=TopicSettings.from_env(self.topics))
        asyncio.run(ensure_topics(settings))

    def start(self, state_interval: float) -> subprocess.Popen[bytes]:
        n = len(self.processes)
        env = {
            **os.environ,
            **self.topics,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "CIVICMETER_PROCESSOR_GROUP_ID": self.group,
            "CIVICMETER_PROCESSOR_DATA_DIR": str(self.workdir / f"processor-{n}"),
            "CIVICMETER_PROCESSOR_STATE_INTERVAL_SECONDS": str(state_interval),
            "CIVICMETER_LOG_LEVEL": "WARNING",
            "OTEL_SDK_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
        log = (self.workdir / f"processor-{n}.log").open("wb")
        self.logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "civicmeter", "processor"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()

    def send(self, count: int) -> None:
        asyncio.run(preload(self.bootstrap, self.raw, count))

    def ends(self) -> dict[int, int]:
        return asyncio.run(topic_ends(self.bootstrap, self.raw))

    def committed(self) -> dict[int, int]:
        return asyncio.run(_committed(self.bootstrap, self.group, self.raw))

    def covered(self) -> dict[int, int]:
        """Per usage.raw partition, the latest offset the state topic says is counted."""
        return asyncio.run(_covered(self.bootstrap, self.state_topic))

    def rated(self) -> int:
        rated = self.topics["CIVICMETER_TOPIC_RATED"]
        return sum(asyncio.run(topic_ends(self.bootstrap, rated)).values())

    def wait_processed(self, before: int, timeout: float = 90) -> int:
        """Wait until the processors' output grew past `before` and stopped growing."""
        deadline = time.monotonic() + timeout
        last, since = before, time.monotonic()
        while time.monotonic() < deadline:
            self.check_alive()
            now = self.rated()
            if now != last:
                last, since = now, time.monotonic()
            elif now > before and time.monotonic() - since > 3:
                return now
            time.sleep(0.2)
        raise TimeoutError("the processor did not rate the events")

    def wait_committed(self, ends: dict[int, int], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.committed() != ends:
            self.check_alive()
            assert time.monotonic() < deadline, (self.committed(), ends)
            time.sleep(0.5)

    def check_alive(self) -> None:
        for process in self.processes:
            assert process.poll() is None, (self.workdir / "processor-0.log").read_text()[-3000:]


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        except GroupCoordinatorNotAvailableError:
            return {}  # the group has not formed yet
        return {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0
        }
    finally:
        await admin.close()


async def _covered(bootstrap: str, topic: str) -> dict[int, int]:
    ends = await topic_ends(bootstrap, topic)
    wanted = {p: end for p, end in ends.items() if end > 0}
    covered: dict[int, int] = {}
    if not wanted:
        return covered
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in wanted]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = set(tps)
        while pending:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    assert message.key is not None and message.value is not None
                    record = parse(message.key, message.value)
                    if record.kind == USER and "position" in record.values:
                        partition, offset = record.values["position"]
                        assert partition == message.partition  # beside its usage.raw partition
                        covered[partition] = max(covered.get(partition, -1), offset)
            for tp in list(pending):
                if await consumer.position(tp) >= wanted[tp.partition]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return covered


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(kafka_bootstrap, tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


def test_no_offset_is_committed_before_the_state_that_counts_it(stack: Stack) -> None:
    stack.start(state_interval=1.5)
    checks = 0
    for _ in range(3):  # three waves, a few state writes apart
        stack.send(10_000)
        for _ in range(8):
            # Committed offsets first, then the state: what was committed by then must be in it.
            committed = stack.committed()
            covered = stack.covered()
            for partition, offset in committed.items():
                if offset > 0:
                    assert covered.get(partition, -1) >= offset - 1, (partition, offset, covered)
                    checks += 1
            time.sleep(0.25)
    ends = stack.ends()
    stack.wait_committed(ends)
    assert checks > 0, "no commit was seen while the events were processed"
    assert stack.covered() == {p: end - 1 for p, end in ends.items() if end > 0}


def test_a_rebalance_and_a_stop_write_the_pending_state_then_commit(stack: Stack) -> None:
    # An interval longer than the test: state is written only by the rebalance and the stop.
    first = stack.start(state_interval=600)
    stack.send(6_000)
    out = stack.wait_processed(0)
    assert stack.committed() == {}  # processed, but its state is not written yet
    assert stack.covered() == {}

    stack.start(state_interval=600)  # joins the group: the partitions are revoked
    ends = stack.ends()
    stack.wait_committed(ends)
    assert stack.covered() == {p: end - 1 for p, end in ends.items() if end > 0}

    stack.send(6_000)
    stack.wait_processed(out)
    stack.stop()
    assert first.returncode is not None
    ends = stack.ends()
    assert stack.covered() == {p: end - 1 for p, end in ends.items() if end > 0}
    # faust's stop waited for the records to be acknowledged, after their state, and
    # committed them.
    assert stack.committed() == ends
