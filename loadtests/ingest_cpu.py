"""CPU per event of ingest's hot path in process: the request bodies the load generator sends
(1,000 events of the 17 governments' mix per PublishEventsRequest) through decoding, the
gateway check, validation, partition keys and the usage.raw batch records, then the producer's
record batches (uncompressed and with each codec); with --kafka, Publisher.publish to a real
broker; with --http, the whole ingest process taking the requests over HTTP from a client
process.
Timed with process time (other work on a shared machine does not count), best of repeats.

    python -m loadtests.ingest_cpu [--events 100000] [--repeat 5] [--fresh-usage]
        [--kafka [--codecs none,lz4]] [--http]

Prints CPU µs per event for each stage and the whole, and the bytes per event on the wire.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from opentelemetry import metrics, trace

from civicmeter.core.access.auth import GATEWAY_ROLE, Principal
from civicmeter.core.config import IngestSettings, KafkaSettings, TopicSettings
from civicmeter.core.events.encodings import EncodedEvents
from civicmeter.core.events.wire import length_delimited, tag
from civicmeter.core.kafka import KeyCache, encoded_event_records, ensure_topics
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.ingest.auth import GatewayAccess
from civicmeter.ingest.batch_validation import identity_key
from civicmeter.ingest.decoding import parse_publish_request
from civicmeter.ingest.http_api import build_http_app
from civicmeter.ingest.publisher import Publisher, check_batch
from loadtests.loadgen import (
    FACTS,
    stamp,
    templates,
    with_fresh_usage,
    working_hours_offset_ns,
)
from loadtests.scenario import governments_of, load_facts

REQUEST_EVENTS = 1_000  # the load generator's batch
PARTITIONS = list(range(6))  # usage.raw's partitions in the benchmark
BATCH_BYTES = 1_048_576  # the producer's max_batch_size (core/kafka.py)
_EVENTS = tag(1)  # PublishEventsRequest.events
Record = tuple[int, bytes | None, bytes]  # partition, key, value
# The producer's compression settings and their codes in a record batch.
CODECS = {
    "none": 0,
    "lz4": DefaultRecordBatch.CODEC_LZ4,
    "zstd": DefaultRecordBatch.CODEC_ZSTD,
    "snappy": DefaultRecordBatch.CODEC_SNAPPY,
}


def request_bodies(
    count: int, seed: int = 7, fresh_usage: bool = False
) -> tuple[list[bytes], list[str]]:
    """`count` events as the load generator's request bodies (unique ids, times now), and the
    organisations they belong to. The load generator draws from 4,096 templates, so every
    usage recurs; `fresh_usage` gives each API call (token counts) its own, as real calls do."""
    governments = governments_of(load_facts(FACTS))
    pool = templates(governments, 4_096, seed=seed)
    now = time.time_ns() - working_hours_offset_ns()
    run = uuid.uuid4().hex[:12]
    rng = random.Random(seed)

    def template(i: int) -> bytes:
        encoded = pool[i % len(pool)]
        return with_fresh_usage(encoded, rng) if fresh_usage else encoded

    bodies = [
        b"".join(
            length_delimited(_EVENTS, stamp(template(i), f"{run}-{i}", now))
            for i in range(start, min(start + REQUEST_EVENTS, count))
        )
        for start in range(0, count, REQUEST_EVENTS)
    ]
    return bodies, [g.id for g in governments]


def timed(work: Callable[[], object], events: int, repeat: int) -> float:
    """Best process time (µs) per event of `work` over `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        work()
        best = min(best, (time.process_time() - started) / events * 1e6)
    return best


def hot_path_stages(
    bodies: Sequence[bytes], organisations: Sequence[str], repeat: int
) -> dict[str, float]:
    """µs/event of each stage of ingest's work on a request, without Kafka."""
    settings = IngestSettings(kafka=KafkaSettings())
    logging.getLogger("civicmeter.ingest.auth").setLevel(logging.ERROR)  # keyless: it warns
    access = GatewayAccess(None, metrics.get_meter("ingest_cpu"))
    gateway = Principal("gov-gateways", ",".join(organisations), GATEWAY_ROLE)
    now = datetime.now(UTC)
    decoded = [parse_publish_request(b) for b in bodies]
    events_total = sum(len(d.events) for d in decoded)
    parsed = [(list(d.events), d.encoded) for d in decoded]
    columns = [check_batch(events, settings, now, encoded.batch) for events, encoded in parsed]
    key_cache = KeyCache(identity_key)

    def records_of(encoded: EncodedEvents, identities: list[bytes]) -> list[Record]:
        """What Publisher._send hands the producer."""
        return encoded_event_records(encoded.events, key_cache.keys(identities), PARTITIONS)

    records = [
        records_of(encoded, batch) for (_, encoded), batch in zip(parsed, columns, strict=True)
    ]

    def decode() -> None:
        for body in bodies:
            list(parse_publish_request(body).events)

    def authorise() -> None:
        for events, _ in parsed:
            assert access.check_events(gateway, events, "", "http") is None

    def validate() -> None:
        for events, encoded in parsed:
            check_batch(events, settings, now, encoded.batch)

    def frame() -> None:
        for (_, encoded), batch in zip(parsed, columns, strict=True):
            records_of(encoded, batch)

    def producer_batches(compression: int) -> Callable[[], None]:
        def build() -> None:
            for request in records:
                for _, key, value in request:
                    batch = BatchBuilder(BATCH_BYTES, compression)
                    batch.append(key=key, value=value, timestamp=None, headers=[])
                    batch._build()

        return build

    stages = {
        "decode (parse, sizes, unknown fields)": timed(decode, events_total, repeat),
        "gateway check (a key of 17 organisations)": timed(authorise, events_total, repeat),
        "validate": timed(validate, events_total, repeat),
        "keys, partitions, batch records": timed(frame, events_total, repeat),
    }
    for name, codec in CODECS.items():
        stages[f"producer batches, {name}"] = timed(producer_batches(codec), events_total, repeat)
        built = [_built(value, key, codec) for request in records for _, key, value in request]
        if codec:
            stages[f"a reader's decompression, {name}"] = timed(
                functools.partial(_decompress_all, built), events_total, repeat
            )
        print(f"bytes per event on usage.raw, {name}: {sum(map(len, built)) / events_total:.1f}")
    return stages


def _built(value: bytes, key: bytes | None, compression: int) -> bytes:
    batch = BatchBuilder(BATCH_BYTES, compression)
    batch.append(key=key, value=value, timestamp=None, headers=[])
    return bytes(batch._build())


def _decompress_all(batches: Sequence[bytes]) -> int:
    """Decompress record batches (as a reader does) and count their records."""
    return sum(len(list(DefaultRecordBatch(batch))) for batch in batches)


def process_seconds(pid: int) -> float:
    """CPU time (user and system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def publish_all(
    bootstrap: str, broker_pid: int, bodies: Sequence[bytes], compression: str, repeat: int
) -> tuple[float, float]:
    """µs/event of the whole process (event loop and producer included) publishing every
    request to a real broker, four requests in flight as from the load generator's workers;
    and the broker's CPU µs/event over the same time (best of repeats each)."""
    topics = TopicSettings(raw=f"cpu-raw-{uuid.uuid4().hex[:8]}", partitions=len(PARTITIONS))
    settings = IngestSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topics=topics), compression=compression
    )
    await ensure_topics(settings.kafka)
    publisher = Publisher(settings, Telemetry(trace.get_tracer("cpu"), metrics.get_meter("cpu")))
    await publisher.start()
    events_total = sum(len(parse_publish_request(b).events) for b in bodies)
    best = broker_best = float("inf")
    try:
        for _ in range(repeat):
            pending = list(bodies)
            started, broker_started = time.process_time(), process_seconds(broker_pid)

            async def worker(pending: list[bytes] = pending) -> None:
                while pending:
                    decoded = parse_publish_request(pending.pop())
                    await publisher.publish(list(decoded.events), decoded.encoded)

            await asyncio.gather(*(worker() for _ in range(4)))
            best = min(best, (time.process_time() - started) / events_total * 1e6)
            broker_used = process_seconds(broker_pid) - broker_started
            broker_best = min(broker_best, broker_used / events_total * 1e6)
    finally:
        await publisher.stop()
    return best, broker_best


async def serve_http(bootstrap: str, events: int, fresh_usage: bool) -> float:
    """µs/event of an ingest process (the HTTP front, the publisher, the event loop) taking
    `events` from a client in another process (`--post`), four requests in flight."""
    topics = TopicSettings(raw=f"cpu-http-{uuid.uuid4().hex[:8]}", partitions=len(PARTITIONS))
    settings = IngestSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap, topics=topics))
    await ensure_topics(settings.kafka)
    publisher = Publisher(settings, Telemetry(trace.get_tracer("cpu"), metrics.get_meter("cpu")))
    await publisher.start()
    runner = web.AppRunner(build_http_app(publisher), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        started = time.process_time()  # the client's set-up leaves this process idle
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtests.ingest_cpu", "--post", f"http://127.0.0.1:{port}",
            "--events", str(events), *(["--fresh-usage"] if fresh_usage else []),
        )  # fmt: skip
        if await client.wait():
            raise RuntimeError(f"the client failed (exit status {client.returncode})")
        return (time.process_time() - started) / events * 1e6
    finally:
        await runner.cleanup()
        await publisher.stop()


async def post_all(url: str, bodies: Sequence[bytes]) -> None:
    """Post every body to ingest's /v1/events, four at a time; each must be accepted."""
    pending = list(bodies)
    headers = {"Content-Type": "application/x-protobuf"}
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while pending:
                async with session.post(
                    f"{url}/v1/events", data=pending.pop(), headers=headers
                ) as r:
                    if r.status != 202:
                        raise RuntimeError(f"ingest answered {r.status}: {await r.text()}")

        await asyncio.gather(*(worker() for _ in range(4)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kafka", action="store_true", help="also publish to a real broker")
    parser.add_argument(
        "--fresh-usage", action="store_true", help="each API call's usage its own (not recurring)"
    )
    parser.add_argument(
        "--codecs", default=",".join(CODECS), help="the producer compressions to publish with"
    )
    parser.add_argument("--http", action="store_true", help="also time ingest over HTTP")
    parser.add_argument("--post", metavar="URL", help=argparse.SUPPRESS)  # --http's client
    args = parser.parse_args(argv)
    bodies, organisations = request_bodies(args.events, fresh_usage=args.fresh_usage)
    if args.post:
        asyncio.run(post_all(args.post, bodies))
        return 0
    stages = hot_path_stages(bodies, organisations, args.repeat)
    width = max(map(len, stages))
    for name, micros in stages.items():
        print(f"  {name:<{width}}  {micros:6.2f} µs/event")
    core = sum(v for k, v in stages.items() if not k.startswith(("producer", "a reader")))
    print(f"hot path before the producer: {core:.2f} µs CPU/event = {1e6 / core:,.0f} events/s")
    if args.kafka or args.http:
        from tools.localkafka import LocalKafka

        with LocalKafka() as broker:
            assert broker.pid is not None
            if args.http:
                for _ in range(args.repeat):
                    micros = asyncio.run(
                        serve_http(broker.bootstrap_servers, args.events, args.fresh_usage)
                    )
                    print(
                        f"ingest over HTTP (aiohttp, the publisher, a real broker): "
                        f"{micros:.2f} µs CPU/event = {1e6 / micros:,.0f} events/s"
                    )
            for compression in args.codecs.split(",") if args.kafka else ():
                micros, broker_micros = asyncio.run(
                    publish_all(
                        broker.bootstrap_servers, broker.pid, bodies, compression, args.repeat
                    )
                )
                print(
                    f"Publisher.publish to a real broker, compression {compression}: "
                    f"{micros:.2f} µs CPU/event = {1e6 / micros:,.0f} events/s; "
                    f"the broker {broker_micros:.2f} µs CPU/event"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
