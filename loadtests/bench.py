"""End-to-end benchmark: ingest → Kafka → processor → sink → ClickHouse → query, co-located.

Measures, in one run on this machine: the ceilings of the parts (Kafka's own producer and
consumer perf tools on the same broker, a plain aiokafka consumer, raw inserts into the same
ClickHouse engine); the processor alone against a preloaded topic; then the whole pipeline at
increasing rates until it saturates: sustained events/s, p50/p99 freshness (event time to
queryable over gRPC), CPU and memory per service, consumer lag, and a profile of each
service at the highest rate. Writes loadtests/RESULTS.md.

    python -m loadtests.bench [--rates 2000,5000,10000] [--step-seconds 30] [--soak-seconds 0]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from aiokafka import AIOKafkaProducer

from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.config import KafkaSettings, TopicSettings
from civicmeter.core.kafka import ensure_topics, send_event_batches
from loadtests import measure
from loadtests.loadgen import FACTS, run_load, stamp, templates, working_hours_offset_ns
from loadtests.scenario import governments_of, load_facts
from loadtests.soak import WARM_UP, WINDOW_SECONDS, growth
from loadtests.stack import DEFAULT_PRICES, REPO, LocalStack
from tools.localkafka import KAFKA_VERSION, LocalKafka

RESULTS = REPO / "loadtests" / "RESULTS.md"
PROBE_ORG = "bench-probe"
PROBES_PER_SECOND = 5
PRELOAD_BATCH = 1_000  # events per request batch, as a gateway sends them
SOAK_INTERVAL = 5.0  # seconds between the soak's memory samples


@dataclass
class Step:
    target: float
    sent: int = 0
    stored: int = 0
    seconds: float = 0.0
    freshness: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    lag_raw: int = 0
    lag_rated: int = 0

    @property
    def stored_rate(self) -> float:
        return self.stored / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float | None:
        if len(self.freshness) < 2:
            return None
        return statistics.quantiles(self.freshness, n=100, method="inclusive")[int(q) - 1]


def say(message: str) -> None:
    print(message, flush=True)


async def stored_events(stack: LocalStack, start: datetime, end: datetime) -> int:
    request = query_pb.GetCostBreakdownRequest(
        group_by=query_pb.COST_DIMENSION_ORGANIZATION, page_size=1000
    )
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    async with grpc.aio.insecure_channel(stack.query_target) as channel:
        response = await query_grpc.QueryServiceStub(channel).GetCostBreakdown(request, timeout=30)
    return sum(line.event_count for line in response.lines if line.key != PROBE_ORG)


class FreshnessProbe:
    """Sends a few tagged events a second through ingest and times when each is queryable."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.window_start = datetime.now(UTC).replace(second=0, microsecond=0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(30)
        return {k: self.seen[k] - self.sent[k] for k in self.seen}

    def take(self) -> list[float]:
        """Freshness of the probes seen since the last call."""
        done = [k for k in self.seen if k in self.sent]
        values = [self.seen[k] - self.sent.pop(k) for k in done]
        for k in done:
            del self.seen[k]
        return values

    async def _run(self) -> None:
        from civicmeter.gateway.emitter import UsageEmitter

        sequence = 0
        async with (
            UsageEmitter(self.stack.ingest_url, token=self.stack.gateway_token) as emitter,
            grpc.aio.insecure_channel(self.stack.query_target) as channel,
        ):
            stub = query_grpc.QueryServiceStub(channel)
            next_probe = time.monotonic()
            while not self._stop.is_set():
                if time.monotonic() >= next_probe:
                    name = f"p{sequence}"
                    sequence += 1
                    event = pb.UsageEvent(
                        event_id=f"{PROBE_ORG}-{name}-{time.time_ns()}",
                        gateway_id="bench",
                        organization_id=PROBE_ORG,
                        department_id=name,
                        user_id="u_" + "0" * 32,  # a pseudonymous id of the form
                        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL,
                        provider_name="openai",
                        service_id="chatgpt",
                        operation_name="chat",
                        usage=pb.Usage(input_tokens=1),
                    )
                    sent_at = time.time()
                    event.event_time.FromNanoseconds(time.time_ns())
                    await emitter.send([event])
                    self.sent[name] = sent_at
                    next_probe += 1 / PROBES_PER_SECOND
                await self._poll(stub)
                await asyncio.sleep(0.1)

    async def _poll(self, stub: query_grpc.QueryServiceStub) -> None:
        request = query_pb.GetCostBreakdownRequest(
            group_by=query_pb.COST_DIMENSION_DEPARTMENT, organization_id=PROBE_ORG, page_size=1000
        )
        request.start_time.FromDatetime(self.window_start)
        request.end_time.FromDatetime(
            datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=2)
        )
        token = ""
        now = time.time()
        while True:
            request.page_token = token
            response = await stub.GetCostBreakdown(request, timeout=10)
            for line in response.lines:
                if line.key in self.sent and line.key not in self.seen:
                    self.seen[line.key] = now
            token = response.next_page_token
            if not token:
                return


def run_step(
    stack: LocalStack,
    kafka: LocalKafka,
    probe: FreshnessProbe,
    rate: float,
    seconds: float,
    pids: dict[str, int],
) -> Step:
    step = Step(rate)
    # The load's events fall in Seoul working hours, maybe days back (working_hours_offset_ns).
    shift = timedelta(microseconds=working_hours_offset_ns() / 1000)
    horizon = (datetime.now(UTC) - shift - timedelta(days=1), datetime.now(UTC) + timedelta(days=1))
    before_stored = asyncio.run(stored_events(stack, *horizon))
    before = measure.sample_all(pids)
    started = time.monotonic()
    step.sent = run_load(
        stack.ingest_url, rate, seconds, workers=2, progress=False, token=stack.gateway_token
    )
    # Let the pipeline drain what was sent, for at most a step's length.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stored = asyncio.run(stored_events(stack, *horizon)) - before_stored
        if stored >= step.sent:
            break
        time.sleep(0.5)
    step.seconds = time.monotonic() - started
    step.stored = asyncio.run(stored_events(stack, *horizon)) - before_stored
    after = measure.sample_all(pids)
    step.cpu = _by_service(measure.cpu_percent(before, after, step.seconds))
    step.rss = _by_service({name: sample.rss_bytes for name, sample in after.items()})
    step.lag_raw = asyncio.run(
        measure.consumer_lag(kafka.bootstrap_servers, "civicmeter-processor", "usage.raw")
    )
    step.lag_rated = asyncio.run(
        measure.consumer_lag(kafka.bootstrap_servers, "civicmeter-sink", "usage.rated")
    )
    step.freshness = probe.take()
    return step


def _by_service(values: dict[str, float] | dict[str, int]) -> dict[str, float]:
    """Figures of processor-2, processor-3, ... added to the processor's."""
    out: dict[str, float] = {}
    for name, value in values.items():
        service = "processor" if name.startswith("processor") else name
        out[service] = out.get(service, 0) + value
    return out


async def preload(bootstrap: str, topic: str, count: int) -> None:
    """Write `count` valid events straight to `topic`, as ingest would: batch records of the
    events of each partition, from request batches of PRELOAD_BATCH events."""
    pool = templates(governments_of(load_facts(FACTS)), 4096, seed=99)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        max_batch_size=1 << 20,
    )
    await producer.start()
    try:
        now = time.time_ns() - working_hours_offset_ns()
        futures = []
        for start in range(0, count, PRELOAD_BATCH):
            futures += await send_event_batches(
                producer,
                topic,
                (
                    (str(i % 4000).encode(), stamp(pool[i % len(pool)], f"pre-{i}", now))
                    for i in range(start, min(start + PRELOAD_BATCH, count))
                ),
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# The processor-alone run uses topics and a group of its own, so the pipeline run never sees
# its events.
def alone_topics(name: str) -> dict[str, str]:
    return {
        "CIVICMETER_TOPIC_RAW": f"{name}.raw",
        "CIVICMETER_TOPIC_RATED": f"{name}.rated",
        "CIVICMETER_TOPIC_DLQ": f"{name}.dlq",
        "CIVICMETER_TOPIC_ALERTS": f"{name}.alerts",
    }


ALONE_GROUP = "civicmeter-processor-alone"
ALONE_TOPICS = alone_topics("alone")


def processor_alone(
    kafka: LocalKafka, workdir: Path, count: int, processors: int = 1, name: str = "alone"
) -> float:
    """Events/s of the processor (`processors` processes sharing the partitions) alone
    draining a preloaded topic: its rated output, from the first rated record out to the last
    (start-up and group join are not counted). Not its commits: offsets are committed once
    the detector state counting them is written, every few seconds (processor/state_flush.py),
    so they move in steps longer than a drain of a few hundred thousand events. It runs until
    every offset is committed. `name`: the run's topics and group, its own."""
    own_topics = alone_topics(name)
    group = ALONE_GROUP if name == "alone" else f"civicmeter-processor-{name}"
    raw = own_topics["CIVICMETER_TOPIC_RAW"]
    rated = own_topics["CIVICMETER_TOPIC_RATED"]
    topics = TopicSettings.from_env(own_topics)
    asyncio.run(
        ensure_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, topics=topics))
    )
    asyncio.run(preload(kafka.bootstrap_servers, raw, count))
    env = {**own_topics, "CIVICMETER_PROCESSOR_GROUP_ID": group}
    initial = sum(asyncio.run(measure.topic_ends(kafka.bootstrap_servers, rated)).values())
    outputs: list[tuple[float, int]] = [(time.monotonic(), initial)]  # (when, rated records out)
    done = threading.Event()

    def watch_output() -> None:  # from before the processor starts, so none is missed
        while not done.is_set():
            out = sum(asyncio.run(measure.topic_ends(kafka.bootstrap_servers, rated)).values())
            outputs.append((time.monotonic(), out))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_output, daemon=True)
    watcher.start()
    try:
        with LocalStack(
            kafka.bootstrap_servers,
            workdir / f"processor-{name}-{processors}",
            extra_env=env,
            services=("processor",),
            processors=processors,
        ) as stack:
            deadline = time.monotonic() + 600
            while asyncio.run(measure.consumer_lag(kafka.bootstrap_servers, group, raw)):
                stack.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError("the processor did not drain the preloaded topic")
                time.sleep(0.1)
    finally:
        done.set()
        watcher.join(30)
    final = outputs[-1][1]
    if final <= initial:
        raise RuntimeError("the processor rated nothing")
    # From the last look with nothing out yet to the first with everything out: every event
    # was rated in between (an underestimate by up to one look's interval, about 0.1 s).
    started = max(t for t, out in outputs if out == initial)
    ended = min(t for t, out in outputs if out == final)
    return count / (ended - started)


SINK_ALONE_GROUP = "civicmeter-sink-alone"
SINK_ALONE_TOPICS = {
    "CIVICMETER_TOPIC_RATED": "sink-alone.rated",
    "CIVICMETER_TOPIC_ALERTS": "sink-alone.alerts",
    "CIVICMETER_TOPIC_DLQ": "sink-alone.dlq",
}


async def preload_rated(bootstrap: str, topic: str, count: int) -> None:
    """Write `count` rated events to `topic` as the processor would: the events of the
    realistic load rated by the processor's own pipeline, as RatedUsageEventBatch records."""
    from civicmeter.core.events.event_batch import encode_event_batch
    from civicmeter.core.pricing.catalog_source import CatalogSource
    from civicmeter.processor.pipeline import BatchProcessor, RawRecord

    pool = templates(governments_of(load_facts(FACTS)), 4096, seed=98)
    processor = BatchProcessor(CatalogSource(DEFAULT_PRICES).catalog, "usage.raw")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        max_batch_size=1 << 20,
    )
    await producer.start()
    try:
        now = time.time_ns() - working_hours_offset_ns()
        futures = []
        for start in range(0, count, PRELOAD_BATCH):
            events = [
                stamp(pool[i % len(pool)], f"sink-{i}", now)
                for i in range(start, min(start + PRELOAD_BATCH, count))
            ]
            rated = processor.process([RawRecord(encode_event_batch(events), 0, start)])
            futures += await send_event_batches(producer, topic, rated.rated)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def sink_alone(kafka: LocalKafka, workdir: Path, count: int) -> float:
    """Rows/s the storage process writes into ClickHouse (ledger and every rollup) draining a
    preloaded usage.rated, from its first commit on (the sink commits after every write)."""
    rated_topic = SINK_ALONE_TOPICS["CIVICMETER_TOPIC_RATED"]
    topics = TopicSettings.from_env(SINK_ALONE_TOPICS)
    asyncio.run(
        ensure_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, topics=topics))
    )
    asyncio.run(preload_rated(kafka.bootstrap_servers, rated_topic, count))
    records = asyncio.run(
        measure.consumer_lag(kafka.bootstrap_servers, SINK_ALONE_GROUP, rated_topic)
    )
    rows_per_record = count / max(records, 1)
    env = {**SINK_ALONE_TOPICS, "CIVICMETER_SINK_GROUP_ID": SINK_ALONE_GROUP}
    first: tuple[float, int] | None = None
    with LocalStack(
        kafka.bootstrap_servers, workdir / "sink-alone", extra_env=env, services=("storage",)
    ) as stack:
        deadline = time.monotonic() + 600
        while True:
            lag = asyncio.run(
                measure.consumer_lag(kafka.bootstrap_servers, SINK_ALONE_GROUP, rated_topic)
            )
            now = time.monotonic()
            if first is None and lag < records:
                first = (now, lag)
            if lag == 0:
                break
            stack.check_alive()
            if now > deadline:
                raise TimeoutError("the sink did not drain the preloaded topic")
            time.sleep(0.1)
    assert first is not None
    started, remaining = first
    return remaining * rows_per_record / max(now - started, 1e-9)


@dataclass(frozen=True)
class Parts:
    """What the parts do alone on this machine, in the same run (events or records per s)."""

    kafka_producer: float
    kafka_consumer: float
    aiokafka_consumer: float
    clickhouse_insert: float
    processor_alone: float
    batch_loop: float
    sink_alone: float
    # The processor alone in more processes sharing usage.raw's partitions: {processes: rate}.
    processor_scaled: dict[int, float] = field(default_factory=dict)


def measure_parts(kafka: LocalKafka, args: argparse.Namespace) -> Parts:
    bootstrap = kafka.bootstrap_servers
    say("ceilings of the parts on this machine")
    producer = measure.kafka_producer_ceiling(bootstrap, "perf", 1_000_000, 250)
    consumer = measure.kafka_consumer_ceiling(bootstrap, "perf", 1_000_000)
    aiokafka = asyncio.run(measure.aiokafka_consume_rate(bootstrap, "perf", 1_000_000))
    insert = measure.clickhouse_insert_ceiling(args.workdir / "ceiling", 500_000)
    say(
        f"  kafka-producer-perf-test {producer:,.0f}/s, kafka-consumer-perf-test "
        f"{consumer:,.0f}/s, aiokafka getmany {aiokafka:,.0f}/s, ClickHouse insert "
        f"{insert:,.0f} rows/s"
    )
    say(f"processor alone on {args.preload:,} preloaded events")
    alone = processor_alone(kafka, args.workdir, args.preload, args.processors)
    say(f"  {alone:,.0f} events/s ({alone / aiokafka:.0%} of the raw aiokafka consume rate)")
    loop = asyncio.run(
        measure.batch_loop_rate(
            bootstrap, ALONE_TOPICS["CIVICMETER_TOPIC_RAW"], args.preload, DEFAULT_PRICES
        )
    )
    say(
        f"  the same pipeline on a plain aiokafka batch loop: {loop:,.0f} events/s "
        f"({loop / aiokafka:.0%})"
    )
    scaled: dict[int, float] = {}
    for processes in args.alone_processes:
        if processes != args.processors:
            say(f"processor alone in {processes} processes on {args.preload:,} preloaded events")
            scaled[processes] = processor_alone(
                kafka, args.workdir, args.preload, processes, name=f"alone{processes}"
            )
            say(f"  {scaled[processes]:,.0f} events/s ({scaled[processes] / aiokafka:.0%})")
    say(f"sink alone on {args.sink_preload:,} preloaded rated events")
    sink = sink_alone(kafka, args.workdir, args.sink_preload)
    say(f"  {sink:,.0f} rows/s with every rollup ({sink / insert:.0%} of the raw insert)")
    return Parts(producer, consumer, aiokafka, insert, alone, loop, sink, scaled)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="2000,5000,10000,20000,50000")
    parser.add_argument("--step-seconds", type=float, default=30)
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=0,
        help="after the steps, hold --soak-rate this long and track memory",
    )
    parser.add_argument("--soak-rate", type=float, default=10_000)
    parser.add_argument(
        "--preload",
        type=int,
        default=1_000_000,
        help="raw events for the processor alone: long enough for two processes to settle",
    )
    parser.add_argument(
        "--sink-preload",
        type=int,
        default=1_000_000,
        help="rated events for the sink alone: blocks of up to 600 records hold ~100,000",
    )
    parser.add_argument(
        "--processors",
        type=int,
        default=1,
        help="processor processes sharing usage.raw's partitions",
    )
    parser.add_argument(
        "--alone-processes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[2],
        help="the processor alone again in these numbers of processes (scale-out on this box)",
    )
    parser.add_argument("--workdir", type=Path, default=REPO / ".civicmeter" / "bench")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    began = datetime.now(UTC)

    with LocalKafka(args.workdir / "kafka") as kafka:
        say(f"Kafka {KAFKA_VERSION} at {kafka.bootstrap_servers}")
        settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, topics=TopicSettings())
        asyncio.run(ensure_topics(settings))
        say("ceilings of the parts on this machine")
        parts = measure_parts(kafka, args)

        steps: list[Step] = []
        profiles: dict[str, list[tuple[str, float]]] = {}
        soak: list[tuple[float, dict[str, int]]] = []
        with LocalStack(
            kafka.bootstrap_servers,
            args.workdir / "pipeline",
            extra_env={"CIVICMETER_LOG_LEVEL": "WARNING"},
            processors=args.processors,
        ) as stack:
            pids = {**stack.pids(), "kafka": kafka.pid or 0}
            probe = FreshnessProbe(stack)
            probe.start()
            for rate in rates:
                say(f"pipeline at {rate:,.0f} events/s for {args.step_seconds:.0f} s")
                step = run_step(stack, kafka, probe, rate, args.step_seconds, pids)
                steps.append(step)
                say(
                    f"  sent {step.sent:,}, stored {step.stored:,} in {step.seconds:.0f} s = "
                    f"{step.stored_rate:,.0f}/s; lag raw {step.lag_raw:,} rated "
                    f"{step.lag_rated:,}; freshness p50 {step.percentile(50)} "
                    f"p99 {step.percentile(99)}"
                )
                saturated = step.stored < 0.95 * step.sent or step.sent < 0.9 * rate * (
                    args.step_seconds
                )
                if saturated or rate == rates[-1]:
                    say("  profiling the services at this rate")
                    profile_dir = args.workdir / "profiles"
                    profile_dir.mkdir(exist_ok=True)
                    load = threading.Thread(
                        target=run_load,
                        daemon=True,
                        args=(stack.ingest_url, rate, 15.0),
                        kwargs={"progress": False, "token": stack.gateway_token},
                    )
                    load.start()
                    time.sleep(2)
                    for name in ("ingest", "processor", "storage"):
                        profiles[name] = measure.profile(pids[name], 8, profile_dir / f"{name}.txt")
                    load.join()
                if saturated:
                    break
            if args.soak_seconds > 0:
                say(f"soak at {args.soak_rate:,.0f} events/s for {args.soak_seconds:.0f} s")
                load = threading.Thread(
                    target=run_load,
                    daemon=True,
                    args=(stack.ingest_url, args.soak_rate, args.soak_seconds),
                    kwargs={"progress": False, "token": stack.gateway_token},
                )
                started = time.monotonic()
                load.start()
                while load.is_alive():
                    samples = measure.sample_all(pids)
                    soak.append(
                        (time.monotonic() - started, {n: s.rss_bytes for n, s in samples.items()})
                    )
                    time.sleep(SOAK_INTERVAL)
            probe.stop()

    write_results(args, began, parts, steps, profiles, soak)
    say(f"results written to {args.results}")
    return 0


def write_results(
    args: argparse.Namespace,
    began: datetime,
    parts: Parts,
    steps: list[Step],
    profiles: dict[str, list[tuple[str, float]]],
    soak: list[tuple[float, dict[str, int]]],
) -> None:
    producer_ceiling, aiokafka_rate = parts.kafka_producer, parts.aiokafka_consumer
    insert_ceiling, processor_rate = parts.clickhouse_insert, parts.processor_alone
    lines: list[str] = []

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 1000:,.0f} ms"

    best = max(steps, key=lambda s: s.stored_rate) if steps else None
    lines += [
        "# Benchmark results",
        "",
        f"Written by `python -m loadtests.bench --rates {args.rates} --step-seconds "
        f"{args.step_seconds:g} --soak-seconds {args.soak_seconds:g} --processors "
        f"{args.processors} --alone-processes {','.join(map(str, args.alone_processes))} "
        f"--preload {args.preload} --sink-preload {args.sink_preload}` (`make bench`) on "
        f"{began:%Y-%m-%d %H:%M} UTC.",
        "",
        f"Machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, "
        f"Python {platform.python_version()}, Kafka {KAFKA_VERSION} (single KRaft node), "
        "ClickHouse embedded (chDB). Everything co-located: the load generator (2 processes), "
        "the broker, ingest, processor, and sink+query share the cores.",
        "",
        "## Ceilings of the parts (same run, same broker, same engine)",
        "",
        "| part | rate |",
        "|---|---|",
        f"| kafka-producer-perf-test (250 B, acks=all, lz4) | {producer_ceiling:,.0f} records/s |",
        f"| kafka-consumer-perf-test | {parts.kafka_consumer:,.0f} records/s |",
        f"| aiokafka consumer (getmany, no decoding) | {aiokafka_rate:,.0f} records/s |",
        f"| ClickHouse insert into usage_events (+ its rollup views), 50k-row batches | "
        f"{insert_ceiling:,.0f} rows/s |",
        f"| **processor alone** (faust, detectors on, {args.processors} process(es), preloaded "
        f"usage.raw) | **{processor_rate:,.0f} events/s "
        f"= {processor_rate / aiokafka_rate:.0%} of aiokafka** |",
        *(
            f"| **processor alone** in {processes} processes (the same, sharing usage.raw's 6 "
            f"partitions) | **{rate:,.0f} events/s = {rate / aiokafka_rate:.0%} of aiokafka** |"
            for processes, rate in parts.processor_scaled.items()
        ),
        f"| the same pipeline on a plain aiokafka batch loop, no faust (design alternative) | "
        f"{parts.batch_loop:,.0f} events/s = {parts.batch_loop / aiokafka_rate:.0%} of aiokafka |",
        f"| **sink alone** (storage process, preloaded usage.rated, ledger and every rollup) | "
        f"**{parts.sink_alone:,.0f} rows/s = {parts.sink_alone / insert_ceiling:.0%} of the raw "
        "insert** |",
        "",
        "The consume ceilings count records; usage.raw and usage.rated records carry a few "
        "hundred events each, so an events/s figure above a records/s ceiling is no error.",
        "",
        "## The whole pipeline at increasing rates",
        "",
        "| target/s | sent | stored | stored/s | freshness p50 | p99 | lag raw | lag rated | "
        "CPU % ingest / processor / sink+query / kafka | RSS MB ingest / processor / storage |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        cpu = " / ".join(
            f"{s.cpu.get(n, 0):.0f}" for n in ("ingest", "processor", "storage", "kafka")
        )
        rss = " / ".join(
            f"{s.rss.get(n, 0) / 2**20:.0f}" for n in ("ingest", "processor", "storage")
        )
        lines.append(
            f"| {s.target:,.0f} | {s.sent:,} | {s.stored:,} | {s.stored_rate:,.0f} | "
            f"{ms(s.percentile(50))} | {ms(s.percentile(99))} | {s.lag_raw:,} | "
            f"{s.lag_rated:,} | {cpu} | {rss} |"
        )
    if best is not None:
        lines += [
            "",
            f"Sustained end to end: **{best.stored_rate:,.0f} events/s** "
            f"({best.stored_rate / producer_ceiling:.1%} of Kafka's producer ceiling, "
            f"{best.stored_rate / insert_ceiling:.1%} of the raw insert ceiling).",
        ]
    if profiles:
        lines += ["", "## Where the time goes (py-spy, own time, at the highest rate)", ""]
        for name, frames in profiles.items():
            lines.append(
                f"- **{name}**: " + "; ".join(f"{frame} {share:.0%}" for frame, share in frames[:6])
            )
    if soak:
        lines += [
            "",
            f"## Soak: {args.soak_rate:,.0f} events/s for {args.soak_seconds:.0f} s",
            "",
            f"Resident memory sampled every {SOAK_INTERVAL:g} s. Warm-up is the first "
            f"{WARM_UP:.0%}; growth compares the median of the last {WINDOW_SECONDS:g} s with "
            f"the median of the {WINDOW_SECONDS:g} s after warm-up (single samples swing with "
            "merges and freed pages not yet returned), beside the trend and the range after "
            "warm-up.",
            "",
            "| service | RSS first MB | after warm-up MB | last MB | growth after warm-up "
            "| trend MB/min | range after warm-up MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in soak[0][1]:
            found = growth([(t, sample.get(name, 0)) for t, sample in soak])
            lines.append(
                f"| {name} | {found.first / 2**20:.0f} | {found.warm / 2**20:.0f} | "
                f"{found.last / 2**20:.0f} | {found.ratio:+.1%} | "
                f"{found.trend_per_minute / 2**20:+.2f} | "
                f"{found.low / 2**20:.0f}-{found.high / 2**20:.0f} |"
            )
    args.results.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
