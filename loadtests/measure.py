"""Measurements the benchmark takes: process CPU and memory, consumer lag, Kafka's and
ClickHouse's own ceilings on this machine, and profiles of the services."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.store.connection import connect
from civicmeter.core.store.migrations import migrate
from civicmeter.sink.event_writer import COLUMNS
from tools.localkafka import perf_tool_cmd

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessSample:
    cpu_seconds: float
    rss_bytes: int


def sample_process(pid: int) -> ProcessSample:
    """CPU time (user + system) and resident memory of `pid` and its children threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return ProcessSample(cpu, rss)


def sample_all(pids: Mapping[str, int]) -> dict[str, ProcessSample]:
    samples = {}
    for name, pid in pids.items():
        try:
            samples[name] = sample_process(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return samples


def cpu_percent(
    before: Mapping[str, ProcessSample], after: Mapping[str, ProcessSample], seconds: float
) -> dict[str, float]:
    return {
        name: 100 * (after[name].cpu_seconds - before[name].cpu_seconds) / seconds
        for name in after
        if name in before
    }


async def consumer_lag(bootstrap: str, group: str, topic: str) -> int:
    """Messages of `topic` not yet committed by consumer group `group` (all, if it has none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        [described] = await admin.describe_topics([topic])
        tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        ends = await consumer.end_offsets(tps)
        try:
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        except GroupCoordinatorNotAvailableError:
            committed = {}  # the group has not formed yet
        done = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        return sum(ends[tp] - done.get(tp, 0) for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


def kafka_producer_ceiling(bootstrap: str, topic: str, records: int, size: int) -> float:
    """Records/s from Kafka's own kafka-producer-perf-test (acks=all, lz4) on this broker."""
    out = subprocess.run(
        perf_tool_cmd(
            "kafka-producer-perf-test",
            "--topic",
            topic,
            "--num-records",
            str(records),
            "--record-size",
            str(size),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={bootstrap}",
            "acks=all",
            "compression.type=lz4",
            "linger.ms=20",
            "batch.size=1048576",
        ),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    # "... 500000 records sent, 312500.0 records/sec (89.41 MB/sec), ..."
    match = re.findall(r"records sent, ([\d.]+) records/sec", out)
    if not match:
        raise RuntimeError(f"unexpected kafka-producer-perf-test output:\n{out[-800:]}")
    return float(match[-1])


def kafka_consumer_ceiling(bootstrap: str, topic: str, records: int) -> float:
    """Messages/s from Kafka's own kafka-consumer-perf-test on this broker."""
    out = subprocess.run(
        perf_tool_cmd(
            "kafka-consumer-perf-test",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--messages",
            str(records),
            "--timeout",
            "60000",
            "--group",
            f"perf-{time.time_ns()}",
        ),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    # CSV header then: start.time, end.time, data.consumed.in.MB, MB.sec,
    # data.consumed.in.nMsg, nMsg.sec, ...
    lines = [line for line in out.splitlines() if line and line[0].isdigit()]
    if not lines:
        raise RuntimeError(f"unexpected kafka-consumer-perf-test output:\n{out[-800:]}")
    return float(lines[-1].split(",")[5])


async def aiokafka_consume_rate(bootstrap: str, topic: str, records: int) -> float:
    """Records/s a plain aiokafka consumer (getmany, no decoding) reads from `topic`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    try:
        seen, started = 0, time.perf_counter()
        while seen < records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            if not batches and time.perf_counter() - started > 120:
                raise TimeoutError(f"read {seen} of {records} records")
            seen += sum(len(b) for b in batches.values())
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def clickhouse_insert_ceiling(path: Path, rows: int, batch: int = 50_000) -> float:
    """Rows/s inserted straight into usage_events (with its rollup views) by one client."""
    client = connect(ClickHouseSettings(path=str(path), database="ceiling"))
    migrate(client)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    template = {name: 0 for name in QUANTITIES} | {"input_tokens": 900, "output_tokens": 200}
    data = [
        [
            f"org{i % 17}",
            f"dept{i % 10}",
            f"user{i % 4000}",
            f"ceil-{i}",
            now_ms - i,
            "gw",
            "organizational",
            "openai",
            "openai-api",
            "gpt-4o",
            "chat",
            "work",
            *template.values(),
            {},
            "",
            Decimal("6.120000"),
            "v1",
            now_ms,
            0,
            "",
            [],
        ]
        for i in range(batch)
    ]
    started = time.perf_counter()
    for _ in range(rows // batch):
        # The same block each time: block deduplication must not drop the repeats.
        client.insert(
            "usage_events", data, column_names=COLUMNS, settings={"insert_deduplicate": 0}
        )
    return rows // batch * batch / (time.perf_counter() - started)


# py-spy comes with the project's Python packages: next to this interpreter, on PATH or not.
_PY_SPY = str(Path(sys.executable).with_name("py-spy"))


def profile(pid: int, seconds: int, out: Path) -> list[tuple[str, float]]:
    """Sample `pid` with py-spy; return the functions with the most own time (share)."""
    subprocess.run(
        [
            _PY_SPY,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--rate",
            "50",
        ],
        capture_output=True,
        timeout=seconds + 60,
        check=True,
    )
    own: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        own[re.sub(r" \(/.*?site-packages/", " (", leaf)] += int(count)
    total = sum(own.values()) or 1
    return [(frame, n / total) for frame, n in own.most_common(8)]


async def batch_loop_rate(bootstrap: str, topic: str, records: int, catalog_path: Path) -> float:
    """Events/s of the processor's own pipeline (decode, validate, price) driven by a
    plain aiokafka getmany loop that produces the results and commits, with no faust.

    A design alternative, measured for comparison with the faust worker: the work per event
    is the same, only the per-message stream machinery is gone.
    """
    from aiokafka import AIOKafkaProducer

    from civicmeter.core.kafka import send_event_batches
    from civicmeter.core.pricing import load_catalog
    from civicmeter.processor.pipeline import BatchProcessor, RawRecord

    processor = BatchProcessor(load_catalog(catalog_path), topic)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="batch-loop",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=32 << 20,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        enable_idempotence=True,
        compression_type="lz4",
        max_batch_size=1 << 20,
    )
    await consumer.start()
    await producer.start()
    try:
        seen, started = 0, time.perf_counter()
        while seen < records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            if not batches and time.perf_counter() - started > 300:
                raise TimeoutError(f"processed {seen} of {records} events")
            raw = [RawRecord(r.value, r.partition, r.offset) for b in batches.values() for r in b]
            result = processor.process(raw)
            futures = await send_event_batches(producer, "batch-loop.rated", result.rated)
            await asyncio.gather(*futures)
            await consumer.commit()
            seen += result.events
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def topic_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of each partition of `topic`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        [described] = await admin.describe_topics([topic])
        tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: int(offset) for tp, offset in ends.items()}
    finally:
        await consumer.stop()
        await admin.close()
