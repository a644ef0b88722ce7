"""Fault injection: every acknowledged event is counted exactly once, whatever crashes.

On a real Kafka broker (tools/localkafka) and the services as separate processes
(loadtests/stack.py), a gateway-like sender posts N distinct events of the 17 governments'
staff over HTTP at a steady rate. It retries each batch with the same event ids until ingest
acknowledges it, and resends about 5% of acknowledged batches on purpose. Meanwhile the
processor and the storage process (sink + query on embedded ClickHouse) are SIGKILLed and
restarted, and the broker is SIGKILLed and restarted on the same data directory and port.

The first storage kill lands between the usage_events commit and the rollups' commits: a
watcher thread polls the usage_events table directory of the embedded ClickHouse for a new
insert part (an insert writes tmp_insert_*, then renames it to its final name when the part
commits; the materialized views write their parts after that) and SIGKILLs the process group
the moment one appears. It then lists which rollup tables had their part by then.

After the pipeline drains, every service is stopped and the stored data is checked per
organisation against the acknowledged events: distinct events in usage_events and events
counted by each rollup level, token sums, cost to the won (priced from the same catalog,
independently of the pipeline), nothing dead-lettered, `civicmeter reconcile` exit 0.
Recovery per fault: seconds from the kill until the service commits progress again, and
until its consumer lag is back within two seconds of input (or the lag it had before).

    python -m loadtests.chaos                 # make chaos: 200,000 events at 1,000/s
    python -m loadtests.chaos --events 10000 --rate 300 --processor-kills 1 \\
        --storage-kills 1 --broker-kills 1 --no-results
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from civicmeter.api.seoul import SEOUL
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.config import ProcessorSettings, SinkSettings, TopicSettings
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.events.wire import length_delimited
from civicmeter.core.pricing import PriceCatalog, load_catalog
from civicmeter.core.store.rollups import ROLLUPS
from loadtests.loadgen import _EVENTS, FACTS, stamp, templates
from loadtests.scenario import governments_of, load_facts
from loadtests.stack import DEFAULT_PRICES, REPO, LocalStack, free_port
from tools.localkafka import LocalKafka

RESULTS = REPO / "loadtests" / "CHAOS_RESULTS.md"
LEVELS: tuple[str, ...] = tuple(rollup.table for rollup in ROLLUPS)
_COST_ONLY = {rollup.table for rollup in ROLLUPS if rollup.cost_only}
TOPICS = TopicSettings()
PROCESSOR_GROUP = ProcessorSettings.group_id
SINK_GROUP = SinkSettings.group_id
# A part is <partition>_<min block>_<max block>_<level>[_<mutation>]; an insert's part has one
# block (its level is 1 where the engine merges the block on insert), a merge's spans several.
_INSERT_PART = re.compile(r"^.+_(\d+)_(\d+)_\d+(?:_\d+)?$")
SAMPLE_SECONDS = 0.5
FAULT_TIMEOUT_SECONDS = 120.0  # a fault not recovered by then is reported as such


def say(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class ChaosPlan:
    events: int = 200_000
    rate: float = 1_000.0  # events per second
    batch: int = 100  # events per HTTP request
    resend_share: float = 0.05  # acknowledged batches sent once more on purpose
    processor_kills: int = 3
    storage_kills: int = 3  # the first lands between the events' and the rollups' commits
    broker_kills: int = 2
    seed: int = 7
    drain_seconds: float = 600.0

    def faults(self) -> list[str]:
        """The services to kill, in order, interleaved: processor, storage, kafka, ..."""
        left = {
            "processor": self.processor_kills,
            "storage": self.storage_kills,
            "kafka": self.broker_kills,
        }
        order: list[str] = []
        while any(left.values()):
            for name, count in left.items():
                if count:
                    left[name] = count - 1
                    order.append(name)
        return order

    @property
    def send_seconds(self) -> float:
        return self.events / self.rate


# -- ground truth ------------------------------------------------------------------------------


@dataclass
class Totals:
    events: int = 0
    cost: Decimal = Decimal(0)
    quantities: list[int] = field(default_factory=lambda: [0] * len(QUANTITIES))

    def add(self, events: int, cost: Decimal, quantities: Sequence[int]) -> None:
        self.events += events
        self.cost += cost
        for i, q in enumerate(quantities):
            self.quantities[i] += q


@dataclass(frozen=True)
class Template:
    event: pb.UsageEvent  # without id and time
    encoded: bytes
    quantities: tuple[int, ...]


def load_templates(count: int, seed: int) -> list[Template]:
    pool = templates(governments_of(load_facts(FACTS)), count, seed)
    out = []
    for encoded in pool:
        event = pb.UsageEvent.FromString(encoded)
        quantities = tuple(int(getattr(event.usage, q)) for q in QUANTITIES)
        out.append(Template(event, encoded, quantities))
    return out


class Pricer:
    """The cost of a template's event at a time, from the catalog, cached per UTC day."""

    def __init__(self, catalog: PriceCatalog, pool: Sequence[Template]) -> None:
        self.catalog = catalog
        self.pool = pool
        self._cache: dict[tuple[int, int], Decimal] = {}

    def cost(self, index: int, stamped_ns: int) -> Decimal:
        day = stamped_ns // 86_400_000_000_000
        key = (index, day)
        cost = self._cache.get(key)
        if cost is None:
            event = pb.UsageEvent()
            event.CopyFrom(self.pool[index].event)
            event.event_time.FromNanoseconds(stamped_ns)
            cost = self._cache[key] = self.catalog.rate(event).cost_krw
        return cost


# -- the sender --------------------------------------------------------------------------------


@dataclass
class Batch:
    first: int  # sequence number of its first event
    size: int
    stamped_ns: int
    body: bytes


class Sender:
    """A gateway: posts each batch until ingest answers 202, with the same ids every time."""

    def __init__(
        self,
        url: str,
        credentials: Mapping[str, str],
        pool: Sequence[Template],
        plan: ChaosPlan,
        run_id: str,
    ) -> None:
        self.url = f"{url}/v1/events"
        self.pool = pool
        self.plan = plan
        self.run_id = run_id
        # The gateway key the stack issued, as an Authorization header.
        self.headers = {"Content-Type": "application/x-protobuf", **credentials}
        self.rng = random.Random(plan.seed)
        self.sent_events = 0  # distinct events posted at least once
        self.acked: list[Batch] = []
        self.resent_batches = 0
        self.retries = 0
        self.answers: dict[str, int] = {}  # non-202 answers and errors, by kind
        self.done = False
        self._slots = asyncio.Semaphore(32)

    def event_id(self, sequence: int) -> str:
        return f"{self.run_id}-{sequence}"

    def template_of(self, sequence: int) -> int:
        return sequence % len(self.pool)

    @property
    def acked_events(self) -> int:
        return sum(b.size for b in self.acked)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks: list[asyncio.Task[None]] = []
            interval = self.plan.batch / self.plan.rate
            next_send = time.monotonic()
            for first in range(0, self.plan.events, self.plan.batch):
                delay = next_send - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_send += interval
                size = min(self.plan.batch, self.plan.events - first)
                now_ns = time.time_ns()
                body = b"".join(
                    length_delimited(
                        _EVENTS,
                        stamp(self.pool[self.template_of(s)].encoded, self.event_id(s), now_ns),
                    )
                    for s in range(first, first + size)
                )
                self.sent_events += size
                tasks.append(
                    asyncio.create_task(self._deliver(session, Batch(first, size, now_ns, body)))
                )
            await asyncio.gather(*tasks)
        self.done = True

    async def _deliver(self, session: aiohttp.ClientSession, batch: Batch) -> None:
        await self._post_until_acked(session, batch)
        self.acked.append(batch)
        if self.rng.random() < self.plan.resend_share:
            self.resent_batches += 1
            await self._post_until_acked(session, batch)

    async def _post_until_acked(self, session: aiohttp.ClientSession, batch: Batch) -> None:
        backoff = 0.2
        while True:
            async with self._slots:
                try:
                    async with session.post(self.url, data=batch.body, headers=self.headers) as r:
                        text = await r.text()
                        if r.status == 202:
                            return
                        kind = f"HTTP {r.status}"
                        if 400 <= r.status < 500 and r.status not in (408, 429):
                            raise RuntimeError(f"ingest refused a batch: {r.status} {text[:300]}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    kind = type(exc).__name__
            self.answers[kind] = self.answers.get(kind, 0) + 1
            self.retries += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


# -- watching the pipeline ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic
    raw_end: int  # records in usage.raw
    processed: int  # committed by the processor's group
    rated_end: int  # records in usage.rated
    stored: int  # committed by the sink's group

    @property
    def processor_lag(self) -> int:
        return self.raw_end - self.processed

    @property
    def storage_lag(self) -> int:
        return self.rated_end - self.stored


class Monitor:
    """Samples both consumer groups' committed offsets and the topics' ends twice a second."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.samples: list[Sample] = []
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._raw = [TopicPartition(TOPICS.raw, p) for p in range(TOPICS.partitions)]
        self._rated = [TopicPartition(TOPICS.rated, p) for p in range(TOPICS.partitions)]
        self._lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.sample_now()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=SAMPLE_SECONDS)
        finally:
            await self._close()

    async def sample_now(self) -> Sample | None:
        """Take a sample now (None while the broker cannot answer)."""
        async with self._lock:
            try:
                sample = await asyncio.wait_for(self._sample(), timeout=3)
            except Exception:  # noqa: BLE001 (broker down or restarting: reconnect)
                await self._close()
                return None
            self.samples.append(sample)
            return sample

    async def _sample(self) -> Sample:
        if self._admin is None or self._consumer is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
            await self._admin.start()
            await self._consumer.start()
        ends = await self._consumer.end_offsets(self._raw + self._rated)
        processed = await self._admin.list_consumer_group_offsets(
            PROCESSOR_GROUP, partitions=self._raw
        )
        stored = await self._admin.list_consumer_group_offsets(SINK_GROUP, partitions=self._rated)
        return Sample(
            at=time.monotonic(),
            raw_end=sum(ends[tp] for tp in self._raw),
            processed=sum(max(m.offset, 0) for m in processed.values()),
            rated_end=sum(ends[tp] for tp in self._rated),
            stored=sum(max(m.offset, 0) for m in stored.values()),
        )

    async def _close(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        for client in (consumer, admin):
            if client is None:
                continue
            with contextlib.suppress(Exception):
                closing = client.stop() if isinstance(client, AIOKafkaConsumer) else client.close()
                await asyncio.wait_for(closing, timeout=5)

    def last_before(self, at: float) -> Sample | None:
        earlier = [s for s in self.samples if s.at <= at]
        return earlier[-1] if earlier else None


def _groups(sample: Sample, service: str) -> tuple[tuple[int, int], ...]:
    """(committed position, lag) of each consumer group a fault of `service` stops."""
    processor = (sample.processed, sample.processor_lag)
    storage = (sample.stored, sample.storage_lag)
    return {"processor": (processor,), "storage": (storage,)}.get(service, (processor, storage))


def _positions(sample: Sample, service: str) -> tuple[int, ...]:
    return tuple(position for position, _ in _groups(sample, service))


def _lags(sample: Sample, service: str) -> tuple[int, ...]:
    return tuple(lag for _, lag in _groups(sample, service))


@dataclass
class Fault:
    service: str  # processor, storage or kafka
    at: float  # seconds into the run
    killed: float  # monotonic
    note: str = ""
    down_seconds: float = 0.0  # kill until the restarted process was launched / broker ready
    consuming: float | None = None  # kill until the service committed progress again
    caught_up: float | None = None  # kill until its lag was back to normal
    # Set once the service consumes again, or measuring is over (timed out, no input left).
    back: asyncio.Event = field(default_factory=asyncio.Event)
    # Committed positions with the killed service down (the broker: just before its kill).
    at_kill: Sample | None = None
    _limits: tuple[int, ...] = ()

    def baseline(self, monitor: Monitor) -> None:
        """The lag allowed once recovered: the most seen in the 5 s before the kill, or two
        seconds of input, whichever is more."""
        recent = [s for s in monitor.samples if self.killed - 5 <= s.at <= self.killed]
        if len(recent) < 2:
            self._limits = (0,) * (2 if self.service == "kafka" else 1)
            return
        span = recent[-1].at - recent[0].at
        raw_rate = (recent[-1].raw_end - recent[0].raw_end) / span if span else 0.0
        rated_rate = (recent[-1].rated_end - recent[0].rated_end) / span if span else 0.0
        worst = [max(lags) for lags in zip(*(_lags(s, self.service) for s in recent), strict=True)]
        input_rates = {"processor": (raw_rate,), "storage": (rated_rate,)}.get(
            self.service, (raw_rate, rated_rate)
        )
        self._limits = tuple(max(w, int(2 * r)) for w, r in zip(worst, input_rates, strict=True))

    def update(self, monitor: Monitor) -> None:
        """Fill in the recovery times from the samples taken since the kill."""
        before = self.at_kill
        for sample in monitor.samples:
            if sample.at <= self.killed:
                continue
            if self.consuming is None:
                if before is None or all(
                    now > then
                    for now, then in zip(
                        _positions(sample, self.service),
                        _positions(before, self.service),
                        strict=True,
                    )
                ):
                    self.consuming = sample.at - self.killed
                continue
            if sample.at < self.killed + self.consuming:
                continue
            if self.caught_up is None and all(
                lag <= limit
                for lag, limit in zip(_lags(sample, self.service), self._limits, strict=True)
            ):
                self.caught_up = sample.at - self.killed
                return


# -- the faults --------------------------------------------------------------------------------


def _insert_parts(table_dir: Path) -> set[str]:
    try:
        names = os.listdir(table_dir)
    except FileNotFoundError:
        return set()
    # tmp_insert_* is a part being written, not committed yet.
    return {
        n
        for n in names
        if not n.startswith(("tmp", "delete_tmp")) and (m := _INSERT_PART.match(n)) and m[1] == m[2]
    }


def _table_dir(chdb: Path, table: str) -> Path:
    found = sorted((chdb / "data").glob(f"*/{table}"))
    if not found:
        raise FileNotFoundError(f"no directory of table {table} under {chdb / 'data'}")
    return found[0]


def kill_between_commits(pid: int, chdb: Path, timeout: float) -> str:
    """SIGKILL `pid`'s process group the moment usage_events gets a new insert part; say which
    rollup tables had theirs by then (the materialized views write after the base part)."""
    events_dir = _table_dir(chdb, "usage_events")
    # The levels kept by materialized views; those that are views of another have no parts.
    rollup_dirs = {t: d for t in LEVELS for d in sorted((chdb / "data").glob(f"*/{t}"))[:1]}
    known = _insert_parts(events_dir)
    rollups = {t: _insert_parts(d) for t, d in rollup_dirs.items()}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = _insert_parts(events_dir) - known
        if new:
            os.killpg(pid, signal.SIGKILL)
            written = [t for t, d in rollup_dirs.items() if _insert_parts(d) - rollups[t]]
            missing = len(rollup_dirs) - len(written)
            return (
                f"between commits: killed as usage_events part {min(new)} appeared, "
                f"{len(written)} of {len(rollup_dirs)} rollup parts written"
                + (" (in the window)" if missing else " (too late: all rollups had theirs)")
            )
        rollups = {t: _insert_parts(d) for t, d in rollup_dirs.items()}
        time.sleep(0.0005)
    os.killpg(pid, signal.SIGKILL)
    return "between commits: no insert within the wait; killed anyway"


def crash_broker(kafka: LocalKafka) -> None:
    """SIGKILL the broker JVM and start it again on the same data directory and ports."""
    if kafka.pid is None:
        raise RuntimeError("the broker is not running")
    os.killpg(kafka.pid, signal.SIGKILL)
    while kafka.is_running():
        time.sleep(0.01)
    kafka.start()


class Chaos:
    def __init__(
        self, plan: ChaosPlan, stack: LocalStack, kafka: LocalKafka, monitor: Monitor
    ) -> None:
        self.plan = plan
        self.stack = stack
        self.kafka = kafka
        self.monitor = monitor
        self.faults: list[Fault] = []
        self.self_exits: list[str] = []
        self.started = time.monotonic()
        self._injecting = False

    async def inject(self, service: str, between_commits: bool) -> Fault:
        killed = time.monotonic()
        fault = Fault(service, killed - self.started, killed)
        self._injecting = True
        try:
            await self._kill_and_restart(fault, between_commits)
        finally:
            self._injecting = False
        fault.down_seconds = time.monotonic() - fault.killed
        fault.baseline(self.monitor)
        self.faults.append(fault)
        return fault

    async def _kill_and_restart(self, fault: Fault, between_commits: bool) -> None:
        service = fault.service
        if service == "processor":
            self.stack.kill("processor")
            fault.at_kill = await self.monitor.sample_now()
            self.stack.restart("processor")
        elif service == "storage":
            if between_commits:
                pid = self.stack.pids()["storage"]
                chdb = self.stack.workdir / "chdb"
                fault.note = await asyncio.to_thread(kill_between_commits, pid, chdb, 30.0)
                fault.killed = time.monotonic()
            self.stack.kill("storage")
            fault.at_kill = await self.monitor.sample_now()
            self.stack.restart("storage")
        else:
            fault.at_kill = await self.monitor.sample_now()
            await asyncio.to_thread(crash_broker, self.kafka)

    def supervise(self) -> None:
        """Restart a service that exited on its own, as its supervisor would, and note it."""
        if self._injecting:
            return
        for name, code in self.stack.exited().items():
            self.self_exits.append(f"{name} exited with {code} at {self.elapsed():.0f} s")
            say(f"      {name} exited on its own ({code}); restarting it")
            self.stack.kill(name)
            self.stack.restart(name)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def run(self, sending: asyncio.Task[None]) -> None:
        """Faults spread evenly over the sending time, so they land while events flow; each
        waits only until the previous fault's service consumes again, and recoveries are
        measured alongside."""
        order = self.plan.faults()
        spacing = self.plan.send_seconds / (len(order) + 1)
        storage_kills = 0
        watching: list[asyncio.Task[None]] = []
        for i, service in enumerate(order):
            due = self.started + spacing * (i + 1)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.faults:
                await self.faults[-1].back.wait()
            between = service == "storage" and storage_kills == 0
            storage_kills += service == "storage"
            fault = await self.inject(service, between)
            say(
                f"      [{fault.at:6.1f} s] SIGKILL {service}"
                + (f" — {fault.note}" if fault.note else "")
                + f"; back up in {fault.down_seconds:.1f} s"
            )
            watching.append(asyncio.create_task(self.wait_recovered(fault, sending)))
        await asyncio.gather(*watching)

    async def wait_recovered(self, fault: Fault, sending: asyncio.Task[None]) -> None:
        try:
            await self._watch(fault, sending)
        finally:
            fault.back.set()

    async def _watch(self, fault: Fault, sending: asyncio.Task[None]) -> None:
        while time.monotonic() - fault.killed < FAULT_TIMEOUT_SECONDS:
            self.supervise()
            fault.update(self.monitor)
            if fault.consuming is not None:
                fault.back.set()
            last = self.monitor.samples[-1] if self.monitor.samples else None
            idle = (
                last is not None and last.at > fault.killed and not any(_lags(last, fault.service))
            )
            if fault.consuming is None and sending.done() and idle:
                fault.note = (fault.note + "; " if fault.note else "") + "no input left to measure"
                return
            if fault.caught_up is not None:
                say(
                    f"      {fault.service}: consuming again after {fault.consuming:.1f} s, "
                    f"caught up after {fault.caught_up:.1f} s"
                )
                return
            await asyncio.sleep(SAMPLE_SECONDS)
        say(f"      {fault.service}: not caught up within {FAULT_TIMEOUT_SECONDS:.0f} s")


# -- the run -----------------------------------------------------------------------------------


@dataclass
class LevelCount:
    level: str
    counted: int
    lost: int
    duplicated: int
    delta_krw: Decimal
    quantities_ok: bool
    findings: list[str]


@dataclass
class ChaosReport:
    plan: ChaosPlan
    sent: int
    acknowledged: int
    resent_batches: int
    retries: int
    answers: dict[str, int]
    stored: int
    levels: list[LevelCount]
    dead_letters: int
    unexpected_ids: int
    reconcile_exit: int
    reconcile_output: str
    faults: list[Fault]
    self_exits: list[str]
    seconds: float
    drain_seconds: float

    @property
    def passed(self) -> bool:
        return (
            self.sent == self.acknowledged
            and all(
                lv.lost == 0 and lv.duplicated == 0 and lv.delta_krw == 0 and lv.quantities_ok
                for lv in self.levels
            )
            and self.dead_letters == 0
            and self.unexpected_ids == 0
            and self.reconcile_exit == 0
        )

    def table(self) -> str:
        lines = [
            f"sent {self.sent:,} distinct events, acknowledged {self.acknowledged:,} "
            f"({self.resent_batches:,} batches resent on purpose, {self.retries:,} retries: "
            + (", ".join(f"{k} ×{v}" for k, v in sorted(self.answers.items())) or "none")
            + f"); stored {self.stored:,}; dead letters {self.dead_letters:,}; "
            f"ids never sent {self.unexpected_ids:,}; `civicmeter reconcile` exit "
            f"{self.reconcile_exit}",
            "",
            "| level | counted | lost | duplicated | Δ KRW | tokens and quantities |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for lv in self.levels:
            lines.append(
                f"| {lv.level} | {lv.counted:,} | {lv.lost:,} | {lv.duplicated:,} | "
                f"{lv.delta_krw:+,.6f} | {'equal' if lv.quantities_ok else 'DIFFER'} |"
            )
        lines += [
            "",
            "| # | fault | at (s) | restarted after (s) | consuming again after (s) | "
            "caught up after (s) | note |",
            "|---:|---|---:|---:|---:|---:|---|",
        ]
        for i, f in enumerate(self.faults, 1):
            name = {"kafka": "broker", "storage": "storage (sink+query)"}.get(f.service, f.service)
            lines.append(
                f"| {i} | SIGKILL {name} | {f.at:.1f} | {f.down_seconds:.1f} | "
                f"{_seconds(f.consuming)} | {_seconds(f.caught_up)} | {f.note} |"
            )
        if self.self_exits:
            lines += [
                "",
                "Services that exited on their own (restarted): " + "; ".join(self.self_exits),
            ]
        findings = [x for lv in self.levels for x in lv.findings]
        if findings:
            lines += ["", "Findings (first 20):", *(f"- {x}" for x in findings[:20])]
        if self.reconcile_exit != 0:
            lines += ["", "```", self.reconcile_output.strip()[-3000:], "```"]
        lines += [
            "",
            f"{'PASSED' if self.passed else 'FAILED'}: run {self.seconds:.0f} s, "
            f"drained {self.drain_seconds:.1f} s after the last acknowledgement.",
        ]
        return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


async def _dead_letters(bootstrap: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(TOPICS.dlq) or set()
        if not partitions:
            await consumer.topics()  # refresh metadata once
            partitions = consumer.partitions_for_topic(TOPICS.dlq) or set()
        tps = [TopicPartition(TOPICS.dlq, p) for p in partitions]
        ends = await consumer.end_offsets(tps) if tps else {}
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _drain(monitor: Monitor, chaos: Chaos, limit: float) -> float:
    """Seconds until both groups have committed everything in their topics, twice in a row."""
    started = time.monotonic()
    settled = 0
    seen = len(monitor.samples)
    while time.monotonic() - started < limit:
        chaos.supervise()
        await asyncio.sleep(SAMPLE_SECONDS)
        if len(monitor.samples) == seen:
            continue
        seen = len(monitor.samples)
        last = monitor.samples[-1]
        settled = settled + 1 if last.processor_lag == 0 and last.storage_lag == 0 else 0
        if settled >= 3:
            return time.monotonic() - started
    raise TimeoutError(f"the pipeline did not drain within {limit:.0f} s")


def _python(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m ...` on the stopped storage (one process opens a chDB path at a time)."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _stored_totals(env: Mapping[str, str]) -> dict[str, Any]:
    """What the stopped storage holds, read by a separate process."""
    out = _python(env, "loadtests.chaos", "--count-stored")
    if out.returncode != 0:
        raise RuntimeError(f"counting the stored events failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def count_stored(env: Mapping[str, str]) -> dict[str, Any]:
    from civicmeter.core.config import ClickHouseSettings
    from civicmeter.core.store.connection import connect

    client = connect(ClickHouseSettings.from_env(env))
    sums = ", ".join(f"sum({q})" for q in QUANTITIES)
    events: dict[str, Any] = {}
    for org, rows, distinct in client.query(
        "SELECT organization_id, count(), uniqExact(event_id) FROM usage_events "
        "GROUP BY organization_id"
    ).result_rows:
        events[org] = {"rows": int(rows), "distinct": int(distinct)}
    for org, cost, *quantities in client.query(
        f"SELECT organization_id, sum(toDecimal128(cost_krw, 6)), {sums} "
        "FROM usage_events FINAL GROUP BY organization_id"
    ).result_rows:
        events[org]["cost"] = str(cost)
        events[org]["quantities"] = [int(q) for q in quantities]
    ids = [row[0] for row in client.query("SELECT DISTINCT event_id FROM usage_events").result_rows]
    levels: dict[str, Any] = {}
    for table in LEVELS:
        columns = "" if table in _COST_ONLY else f", {sums}"
        levels[table] = {
            org: {
                "events": int(count),
                "cost": str(cost),
                "quantities": [int(q) for q in rest] if table not in _COST_ONLY else None,
            }
            for org, count, cost, *rest in client.query(
                f"SELECT organization_id, sum(events), sum(cost_krw){columns} FROM {table} "
                "GROUP BY organization_id"
            ).result_rows
        }
    return {"events": events, "ids": ids, "levels": levels}


def _reconcile(env: Mapping[str, str]) -> tuple[int, str]:
    """`civicmeter reconcile` over the Seoul months around now (the events are stamped now)."""
    now = datetime.now(SEOUL)
    months = [(now.year + (now.month - 1 + k) // 12, (now.month - 1 + k) % 12 + 1) for k in (-1, 2)]
    first, after = (f"{year:04d}-{month:02d}" for year, month in months)
    proc = _python(env, "civicmeter", "reconcile", "--from", first, "--to", after)
    return proc.returncode, proc.stdout + proc.stderr


def truth(sender: Sender, pricer: Pricer) -> dict[str, Totals]:
    per_org: dict[str, Totals] = {}
    for batch in sender.acked:
        for s in range(batch.first, batch.first + batch.size):
            index = sender.template_of(s)
            template = sender.pool[index]
            org = template.event.organization_id
            per_org.setdefault(org, Totals()).add(
                1, pricer.cost(index, batch.stamped_ns), template.quantities
            )
    return per_org


def compare(expected: Mapping[str, Totals], stored: Mapping[str, Any]) -> list[LevelCount]:
    out = []
    ledger = {
        org: {
            "events": v["distinct"],
            "duplicates": v["rows"] - v["distinct"],
            "cost": v["cost"],
            "quantities": v["quantities"],
        }
        for org, v in stored["events"].items()
    }
    for level, per_org in [("usage_events", ledger), *stored["levels"].items()]:
        lost = duplicated = 0
        delta = Decimal(0)
        quantities_ok = True
        findings: list[str] = []
        for org in sorted(set(expected) | set(per_org)):
            want = expected.get(org, Totals())
            got = per_org.get(org, {"events": 0, "cost": "0", "quantities": [0] * len(QUANTITIES)})
            counted = int(got["events"])
            lost += max(0, want.events - counted)
            duplicated += max(0, counted - want.events) + int(got.get("duplicates", 0))
            org_delta = Decimal(got["cost"]) - want.cost
            delta += org_delta
            if counted != want.events or org_delta:
                findings.append(
                    f"{level} {org}: {counted:,} events (want {want.events:,}), "
                    f"Δ {org_delta:+,.6f} KRW"
                )
            if got["quantities"] is not None and list(got["quantities"]) != want.quantities:
                quantities_ok = False
                findings.append(
                    f"{level} {org}: quantities {got['quantities']} != {want.quantities}"
                )
        counted_total = sum(int(v["events"]) for v in per_org.values())
        out.append(
            LevelCount(level, counted_total, lost, duplicated, delta, quantities_ok, findings)
        )
    return out


async def _run(plan: ChaosPlan, kafka: LocalKafka, stack: LocalStack) -> ChaosReport:
    began = time.monotonic()
    workdir = stack.workdir
    say(f"chaos: {plan.events:,} events at {plan.rate:,.0f}/s; faults {plan.faults()}")
    pool = load_templates(4_096, plan.seed)
    pricer = Pricer(load_catalog(DEFAULT_PRICES), pool)
    await asyncio.to_thread(kafka.start)
    await asyncio.to_thread(stack.start, 120.0)
    say(f"      stack up in {time.monotonic() - began:.1f} s (logs in {workdir}/logs)")
    monitor = Monitor(kafka.bootstrap_servers)
    stop_monitor = asyncio.Event()
    monitoring = asyncio.create_task(monitor.run(stop_monitor))
    sender = Sender(stack.ingest_url, stack.ingest_headers, pool, plan, f"chaos{time.time_ns():x}")
    chaos = Chaos(plan, stack, kafka, monitor)
    sending = asyncio.create_task(sender.run())
    faults = asyncio.create_task(chaos.run(sending))
    while not (sending.done() and faults.done()):
        await asyncio.sleep(5)
        chaos.supervise()
        last = monitor.samples[-1] if monitor.samples else None
        lags = (
            f"lag raw {last.processor_lag:,} rated {last.storage_lag:,} records"
            if last
            else "lag unknown"
        )
        say(
            f"      [{chaos.elapsed():6.1f} s] sent {sender.sent_events:,}, acknowledged "
            f"{sender.acked_events:,}, {sender.retries:,} retries; {lags}"
        )
    await sending
    await faults
    drain_seconds = await _drain(monitor, chaos, plan.drain_seconds)
    say(f"      drained {drain_seconds:.1f} s after the last acknowledgement")
    stop_monitor.set()
    await monitoring
    dead = await _dead_letters(kafka.bootstrap_servers)
    await asyncio.to_thread(stack.stop)
    chdb_env = stack.env()
    code, output = await asyncio.to_thread(_reconcile, chdb_env)
    stored = await asyncio.to_thread(_stored_totals, chdb_env)
    expected = truth(sender, pricer)
    sent_ids = {sender.event_id(s) for s in range(plan.events)}
    levels = compare(expected, stored)
    return ChaosReport(
        plan=plan,
        sent=sender.sent_events,
        acknowledged=sender.acked_events,
        resent_batches=sender.resent_batches,
        retries=sender.retries,
        answers=sender.answers,
        stored=levels[0].counted,
        levels=levels,
        dead_letters=dead,
        unexpected_ids=len(set(stored["ids"]) - sent_ids),
        reconcile_exit=code,
        reconcile_output=output,
        faults=chaos.faults,
        self_exits=chaos.self_exits,
        seconds=time.monotonic() - began,
        drain_seconds=drain_seconds,
    )


def run_chaos(plan: ChaosPlan, workdir: Path) -> ChaosReport:
    """Run the plan in a fresh `workdir` (removed first) and return what it found."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    # The between-commits watcher is a thread: let it have the interpreter often.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    # The monitor's clients log every refused connection while the broker is down.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    port = free_port()
    kafka = LocalKafka(workdir / "kafka", port=port, controller_port=free_port())
    env = {
        "CIVICMETER_LOG_LEVEL": os.environ.get("CIVICMETER_LOG_LEVEL", "WARNING"),
        # Shorter than the default so the final check runs soon after the last write.
        "CIVICMETER_SINK_MAX_BATCH_WAIT_MS": "200",
    }
    stack = LocalStack(f"127.0.0.1:{port}", workdir, extra_env=env)
    try:
        return asyncio.run(_run(plan, kafka, stack))
    finally:  # also when interrupted: no service or broker outlives the run
        stack.stop()
        kafka.stop()
        sys.setswitchinterval(previous)


def write_results(report: ChaosReport, command: str) -> None:
    RESULTS.write_text(
        "# Fault injection (`make chaos`)\n\n"
        f"`{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores shared "
        "by the broker, ingest, processor, storage and the sender (load average over the last "
        f"15 minutes at the end: {os.getloadavg()[2]:.1f}; recovery times grow with it).\n\n"
        "Recovery: *consuming again* is the first sample (every 0.5 s) at which the "
        "service's consumer group has committed past where it stood at the kill; *caught up* "
        "the first at which its lag is back within two seconds of input (or the lag it had "
        "just before). For the broker both groups count.\n\n" + report.table() + "\n",
        encoding="utf-8",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = ChaosPlan()
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="events per second")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="events per request")
    parser.add_argument("--processor-kills", type=int, default=defaults.processor_kills)
    parser.add_argument("--storage-kills", type=int, default=defaults.storage_kills)
    parser.add_argument("--broker-kills", type=int, default=defaults.broker_kills)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workdir", type=Path, default=REPO / ".civicmeter" / "chaos")
    parser.add_argument("--no-results", action="store_true", help="do not rewrite the results")
    parser.add_argument("--count-stored", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # SIGTERM (and SIGINT, which a background shell ignores) stop the run and its services.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.count_stored:  # the verification step's own process
        print(json.dumps(count_stored(os.environ)))
        return 0
    plan = ChaosPlan(
        events=args.events,
        rate=args.rate,
        batch=args.batch,
        processor_kills=args.processor_kills,
        storage_kills=args.storage_kills,
        broker_kills=args.broker_kills,
        seed=args.seed,
    )
    report = run_chaos(plan, args.workdir)
    say("\n" + report.table())
    if not args.no_results:
        command = (
            f"python -m loadtests.chaos --events {plan.events} --rate {plan.rate:g} "
            f"--batch {plan.batch} --processor-kills {plan.processor_kills} "
            f"--storage-kills {plan.storage_kills} --broker-kills {plan.broker_kills} "
            f"--seed {plan.seed}"
        )
        write_results(report, command)
        say(f"\nwrote {RESULTS}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
