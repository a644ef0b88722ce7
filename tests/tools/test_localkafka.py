"""tools/localkafka: readiness and topic creation through aiokafka, and the broker lifecycle.

Topic tests run against the session's real broker (``kafka_bootstrap``); the lifecycle tests
start brokers of their own, because starting one is what they check.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tools.localkafka import LocalKafka
from tools.localkafka.admin import broker_count, create_topics

pytestmark = [pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count()


def _topic() -> str:
    return f"localkafka-{os.getpid()}-{next(_names)}-{uuid.uuid4().hex[:6]}"


async def _describe(bootstrap: str, topic: str) -> tuple[list[int], dict[str, str]]:
    """(leader per partition, topic config) as the broker reports them to a fresh client."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    assert described["error_code"] == 0, described
    partitions = sorted(described["partitions"], key=lambda p: p["partition"])
    [resource] = responses[0].to_object()["resources"]
    configs = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    return [p["leader"] for p in partitions], configs


def _describe_sync(bootstrap: str, topic: str) -> tuple[list[int], dict[str, str]]:
    return asyncio.run(_describe(bootstrap, topic))


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: not a Kafka broker."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_broker_count_reads_the_cluster_metadata(kafka_bootstrap: str) -> None:
    assert broker_count(kafka_bootstrap, 5.0) >= 1


def test_broker_count_refuses_a_closed_port(closed_port: int) -> None:
    with pytest.raises(ConnectionError):
        broker_count(f"127.0.0.1:{closed_port}", 2.0)


def test_broker_count_refuses_a_listener_that_does_not_speak_kafka(
    silent_listener: int,
) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        broker_count(f"127.0.0.1:{silent_listener}", 1.0)
    assert time.monotonic() - started < 10


def test_created_topics_have_their_partitions_config_and_leaders(kafka_bootstrap: str) -> None:
    first, second = _topic(), _topic()
    create_topics(kafka_bootstrap, [first, second, first], 3, config={"retention.ms": "3600000"})
    for topic in (first, second):
        leaders, configs = _describe_sync(kafka_bootstrap, topic)
        assert len(leaders) == 3
        assert all(leader >= 0 for leader in leaders)
        assert configs["retention.ms"] == "3600000"


def test_an_existing_topic_is_kept_when_exist_ok(kafka_bootstrap: str) -> None:
    topic = _topic()
    create_topics(kafka_bootstrap, [topic], 2)
    create_topics(kafka_bootstrap, [topic], 5)
    leaders, _ = _describe_sync(kafka_bootstrap, topic)
    assert len(leaders) == 2


def test_an_existing_topic_is_refused_without_exist_ok(kafka_bootstrap: str) -> None:
    topic = _topic()
    create_topics(kafka_bootstrap, [topic], 1)
    with pytest.raises(RuntimeError, match=rf"{topic}: TOPIC_ALREADY_EXISTS \(36\)"):
        create_topics(kafka_bootstrap, [topic], 1, exist_ok=False)


def test_only_the_refused_topic_is_named(kafka_bootstrap: str) -> None:
    good, bad = _topic(), "not a valid topic name!"
    with pytest.raises(RuntimeError) as refused:
        create_topics(kafka_bootstrap, [good, bad], 1)
    message = str(refused.value)
    assert f"{bad}: INVALID_TOPIC (17)" in message
    assert good not in message
    # The valid topic of the same request was created.
    with pytest.raises(RuntimeError, match="TOPIC_ALREADY_EXISTS"):
        create_topics(kafka_bootstrap, [good], 1, exist_ok=False)


def test_a_replication_factor_above_the_broker_count_is_refused(kafka_bootstrap: str) -> None:
    topic = _topic()
    with pytest.raises(RuntimeError, match=rf"{topic}: INVALID_REPLICATION_FACTOR \(38\)"):
        create_topics(kafka_bootstrap, [topic], 1, replication_factor=3)


def test_no_topic_names_is_a_no_op(closed_port: int) -> None:
    # Nothing to create: the (absent) broker is not even asked.
    create_topics(f"127.0.0.1:{closed_port}", [], 1)


async def test_topics_can_be_created_from_a_running_event_loop(kafka_bootstrap: str) -> None:
    topic = _topic()
    create_topics(kafka_bootstrap, [topic], 2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"first", partition=1)
    finally:
        await producer.stop()
    assert sent.partition == 1
    leaders, _ = await _describe(kafka_bootstrap, topic)
    assert len(leaders) == 2


def test_local_kafka_creates_topics_with_its_partition_count(kafka_bootstrap: str) -> None:
    host, _, port = kafka_bootstrap.rpartition(":")
    assert host == "127.0.0.1", "LocalKafka only serves loopback"
    broker = LocalKafka(port=int(port), num_partitions=3)
    topic = _topic()
    broker.create_topics([topic])
    leaders, _ = _describe_sync(kafka_bootstrap, topic)
    assert len(leaders) == 3


async def _round_trip(bootstrap: str, topic: str, value: bytes | None) -> list[bytes]:
    """Produce ``value`` (if given), then read the topic from the start."""
    if value is not None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    return [record.value for records in batches.values() for record in records]


async def test_a_broker_started_in_a_running_loop_serves_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    data = tmp_path / "kafka"
    broker = LocalKafka(data, num_partitions=1, heap_max="384m").start()
    try:
        assert broker_count(broker.bootstrap_servers, 5.0) == 1
        broker.create_topics(["kept"])
        assert await _round_trip(broker.bootstrap_servers, "kept", b"before restart") == [
            b"before restart"
        ]
    finally:
        broker.stop()
    assert data.is_dir(), "a given data dir is kept"
    with pytest.raises(ConnectionError):
        broker_count(broker.bootstrap_servers, 2.0)

    again = LocalKafka(data, num_partitions=1, heap_max="384m").start()
    try:
        assert await _round_trip(again.bootstrap_servers, "kept", None) == [b"before restart"]
    finally:
        again.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.localkafka", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_start_returns_a_ready_broker_and_stop_ends_it(tmp_path: Path) -> None:
    state = tmp_path / "cli"
    started = _cli("start", "--dir", str(state))
    try:
        assert started.returncode == 0, started.stderr
        bootstrap = (state / "bootstrap").read_text().strip()
        assert started.stdout.strip() == bootstrap
        assert broker_count(bootstrap, 5.0) == 1
        pid = int((state / "pid").read_text())
        again = _cli("start", "--dir", str(state))
        assert again.returncode == 0, again.stderr
        assert f"already running (pid {pid})" in again.stdout
    finally:
        stopped = _cli("stop", "--dir", str(state))
    assert stopped.returncode == 0, stopped.stderr
    assert not (state / "pid").exists()
    assert not _running(pid)


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
