"""The labelled misuse scenario through the real pipeline: ingest → Kafka → processor →
usage.alerts → sink → ClickHouse → AlertService, three ways: one processor; three processors
sharing the partitions; three processors with one SIGKILLed when `--kill-at` of the events
are sent and started again at once (it rejoins with its static member id, within the group
session). Reports precision and recall per detector (the same scoring as the in-process
bench) for each way, whether the three alert sets are the same (by dedup key), and the time
from a triggering event's acceptance by ingest to its alert arriving on WatchAlerts.

    python -m loadtests.misuse.pipeline [--scale 0.2] [--weeks 6] [--per-type 15]
                                        [--ways one,three,kill] [--kill-at 0.6]

The services log at WARNING; MISUSE_LOG_LEVEL=INFO shows the processors' assignments and
state restores (logs/ under each way's work directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import yaml

from civicmeter.api.alert.v1 import alert_pb2, alert_service_pb2, alert_service_pb2_grpc
from civicmeter.api.severity import SEVERITY_NAMES
from civicmeter.core.pricing import load_catalog
from civicmeter.gateway import UsageEmitter
from civicmeter.processor.detection import Alert
from civicmeter.processor.detector_state import DetectionTopics
from loadtests import measure
from loadtests.misuse.scenario import MisuseScenario, build_misuse_scenario
from loadtests.misuse.scoring import Mismatch, Score, score
from loadtests.scenario import governments_of, load_facts
from loadtests.stack import DEFAULT_PRICES, REPO, LocalStack
from tools.localkafka import LocalKafka

FACTS = REPO.parent / "shared" / "data" / "kr_local_gov_genai_2024.yaml"
RESULTS = Path(__file__).with_name("PIPELINE_RESULTS.md")
BATCH = 500


def from_record(record: alert_pb2.Alert) -> Alert:
    return Alert(
        alert_type=record.alert_type,
        severity=SEVERITY_NAMES[record.severity],
        organization_id=record.organization_id,
        department_id=record.department_id,
        user_id=record.user_id,
        service_id=record.service_id,
        provider_name=record.provider_name,
        event_id=record.trigger_event_id,
        event_time=record.first_seen_time.ToDatetime(UTC),
        dedup_key=record.dedup_key,
        explanation=record.explanation,
        attributes=dict(record.attributes),
    )


@dataclass(frozen=True)
class Way:
    name: str
    processors: int
    kill_at: float | None = None  # the fraction of events sent when processor-2 is killed


WAYS = {
    "one": Way("one processor", 1),
    "three": Way("three processors", 3),
    "kill": Way("three processors, one SIGKILLed and restarted", 3, 0.6),
}
KILLED = "processor-2"
TOPICS = ("raw", "rated", "dlq", "alerts")
DRAIN_SECONDS = 600


@dataclass
class Outcome:
    way: Way
    alerts: list[alert_pb2.Alert]
    latencies: list[float]
    sending: float
    scores: dict[str, Score]
    mismatches: list[Mismatch]

    @property
    def keys(self) -> set[str]:
        return {a.dedup_key for a in self.alerts}

    @property
    def worst(self) -> float:
        return min(
            (min(s.precision, s.recall) for s in self.scores.values() if s.labels or s.alerts),
            default=1.0,
        )

    def percentile(self, q: int) -> float | None:
        if len(self.latencies) < 2:
            return None
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]


async def send_all(
    stack: LocalStack,
    scenario: MisuseScenario,
    sent_at: dict[str, float],
    rate: float,
    kill_at: float | None = None,
) -> None:
    """Deliver the scenario through ingest in its order at `rate` events/s, noting when each
    event was accepted; with `kill_at`, SIGKILL a processor there and start it again."""
    events = [event for event, _ in scenario.deliveries]
    kill = None if kill_at is None else int(len(events) * kill_at) // BATCH * BATCH
    started = time.monotonic()
    async with UsageEmitter(stack.ingest_url, binary=True, token=stack.gateway_token) as emitter:
        for start in range(0, len(events), BATCH):
            if start == kill:
                stack.kill(KILLED)
                stack.restart(KILLED)
            delay = started + start / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            batch = events[start : start + BATCH]
            await emitter.send(batch)
            now = time.monotonic()
            for event in batch:
                sent_at.setdefault(event.event_id, now)


async def watch(
    stack: LocalStack, received: dict[str, tuple[float, alert_pb2.Alert]], stop: asyncio.Event
) -> None:
    async with grpc.aio.insecure_channel(stack.query_target) as channel:
        call = alert_service_pb2_grpc.AlertServiceStub(channel).WatchAlerts(
            alert_service_pb2.WatchAlertsRequest(replay_seconds=3600)
        )
        reader = asyncio.ensure_future(_read(call, received))
        await stop.wait()
        call.cancel()
        reader.cancel()


async def _read(
    call: grpc.aio.UnaryStreamCall, received: dict[str, tuple[float, alert_pb2.Alert]]
) -> None:
    async for message in call:
        received.setdefault(message.alert.dedup_key, (time.monotonic(), message.alert))


async def drained(stack: LocalStack) -> None:
    """Wait until the processors have consumed usage.raw and their activity topic, and the
    sink usage.alerts: every alert is then stored (a slow stretch never ends a run early)."""
    env = stack.env()
    raw = env.get("CIVICMETER_TOPIC_RAW", "usage.raw")
    processors = env.get("CIVICMETER_PROCESSOR_GROUP_ID", "civicmeter-processor")
    consumed = [
        (processors, raw),
        (processors, DetectionTopics.of(processors, raw).activity),
        (env.get("CIVICMETER_SINK_GROUP_ID", "civicmeter-sink"),
         env.get("CIVICMETER_TOPIC_ALERTS", "usage.alerts")),
    ]  # fmt: skip
    deadline = time.monotonic() + DRAIN_SECONDS
    for group, topic in consumed:
        while await measure.consumer_lag(stack.kafka_bootstrap, group, topic):
            stack.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group} did not consume {topic} in time")
            await asyncio.sleep(0.5)


async def run_through(
    stack: LocalStack,
    scenario: MisuseScenario,
    settle_seconds: float,
    rate: float,
    kill_at: float | None = None,
) -> tuple[list[alert_pb2.Alert], list[float], float]:
    sent_at: dict[str, float] = {}
    received: dict[str, tuple[float, alert_pb2.Alert]] = {}
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(stack, received, stop))
    await asyncio.sleep(1.0)
    started = time.monotonic()
    await send_all(stack, scenario, sent_at, rate, kill_at)
    sending = time.monotonic() - started
    await drained(stack)
    quiet_since, count = time.monotonic(), -1
    while time.monotonic() - quiet_since < settle_seconds:  # until no new alert for a while
        if len(received) != count:
            count, quiet_since = len(received), time.monotonic()
        await asyncio.sleep(0.5)
    stop.set()
    await watcher
    latencies = [
        at - sent_at[a.trigger_event_id]
        for at, a in received.values()
        if a.trigger_event_id in sent_at
    ]
    return [a for _, a in received.values()], latencies, sending


def run_way(
    scenario: MisuseScenario,
    way: Way,
    workdir: Path,
    *,
    rate: float,
    settle_seconds: float,
    kafka_bootstrap: str | None = None,
) -> Outcome:
    """The scenario through a stack of its own run `way`: on a broker of its own too, or on
    `kafka_bootstrap` with topics and consumer groups of its own."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    policy_file = workdir / "policies.yaml"
    policy_file.write_text(
        yaml.safe_dump(scenario.policy_document, allow_unicode=True), encoding="utf-8"
    )
    env = {
        "CIVICMETER_POLICY_FILE": str(policy_file),
        "CIVICMETER_MAX_EVENT_AGE_DAYS": "3650",
        "CIVICMETER_LOG_LEVEL": os.environ.get("MISUSE_LOG_LEVEL", "WARNING"),
    }
    with contextlib.ExitStack() as resources:
        if kafka_bootstrap is None:
            kafka_bootstrap = resources.enter_context(
                LocalKafka(workdir / "kafka")
            ).bootstrap_servers
        else:
            tag = f"misuse-{uuid.uuid4().hex[:8]}"
            env.update({f"CIVICMETER_TOPIC_{t.upper()}": f"{tag}.{t}" for t in TOPICS})
            env["CIVICMETER_PROCESSOR_GROUP_ID"] = f"{tag}-processor"
            env["CIVICMETER_SINK_GROUP_ID"] = f"{tag}-sink"
        stack = resources.enter_context(
            LocalStack(kafka_bootstrap, workdir, extra_env=env, processors=way.processors)
        )
        records, latencies, sending = asyncio.run(
            run_through(stack, scenario, settle_seconds, rate, way.kill_at)
        )
    scores, mismatches = score([from_record(r) for r in records], scenario.labels)
    return Outcome(way, records, latencies, sending, scores, mismatches)


def build(
    scale: float, weeks: int, per_type: int, governments: Sequence[str] | None = None
) -> MisuseScenario:
    chosen = [
        g for g in governments_of(load_facts(FACTS)) if governments is None or g.id in governments
    ]
    return build_misuse_scenario(
        chosen, load_catalog(DEFAULT_PRICES), scale=scale, weeks=weeks, per_type=per_type
    )


def report(
    outcomes: Sequence[Outcome], scenario: MisuseScenario, command: str, began: datetime
) -> str:
    lines = [
        "# Misuse detection through the whole pipeline, three ways",
        "",
        f"Written by `{command}` on {began:%Y-%m-%d %H:%M} UTC. The synthetic labelled "
        f"scenario of loadtests/misuse ({len(scenario.deliveries):,} deliveries, "
        f"{len(scenario.labels)} labelled cases, {len(scenario.governments)} organisations) "
        f"went through ingest (HTTP, {BATCH} per batch), the Kafka broker, the faust "
        "processors, the sink and ClickHouse; alerts were read from AlertService.WatchAlerts. "
        "Each way ran on a stack and broker of its own.",
        "",
    ]
    reference = outcomes[0].keys
    for outcome in outcomes:
        way = outcome.way
        same = "the same alert set" if outcome.keys == reference else "A DIFFERENT alert set"
        diff = sorted(outcome.keys ^ reference)
        lines += [
            f"## {way.name}",
            "",
            f"{len(outcome.alerts)} alerts ({same} as {outcomes[0].way.name}, by dedup key"
            + (f"; differing: {', '.join(f'`{k}`' for k in diff[:10])}" if diff else "")
            + f"), events sent in {outcome.sending:.0f} s.",
            "",
            "| detector | labels | alerts | precision | recall |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, s in outcome.scores.items():
            lines.append(
                f"| {name} | {s.labels} | {s.alerts} | {s.precision:.3f} | {s.recall:.3f} |"
            )
        p50, p99 = outcome.percentile(50), outcome.percentile(99)
        if p50 is not None and p99 is not None:
            lines += [
                "",
                f"Triggering event accepted by ingest → alert on WatchAlerts, over "
                f"{len(outcome.latencies)} alerts: p50 {p50 * 1000:,.0f} ms, p99 "
                f"{p99 * 1000:,.0f} ms, max {max(outcome.latencies) * 1000:,.0f} ms.",
            ]
        if outcome.mismatches:
            lines += ["", "Mismatches (first 20):", ""]
            lines += [
                f"- {m.kind}: {m.alert_type} `{m.dedup_key}` {m.detail}"
                for m in outcome.mismatches[:20]
            ]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--weeks", type=int, default=6)
    parser.add_argument("--per-type", type=int, default=15)
    parser.add_argument("--settle-seconds", type=float, default=20)
    parser.add_argument(
        "--rate",
        type=float,
        default=1_500,
        help="events/s to send at, below the pipeline's capacity",
    )
    parser.add_argument("--ways", default="one,three,kill", help=f"of {', '.join(WAYS)}")
    parser.add_argument("--kill-at", type=float, default=0.6)
    parser.add_argument("--governments", help="comma-separated ids (default: all 17)")
    parser.add_argument("--workdir", type=Path, default=REPO / ".civicmeter" / "misuse")
    args = parser.parse_args(argv)
    began = datetime.now(UTC)
    governments = args.governments.split(",") if args.governments else None
    scenario = build(args.scale, args.weeks, args.per_type, governments)
    print(
        f"scenario: {len(scenario.deliveries):,} deliveries, {len(scenario.labels)} labels",
        flush=True,
    )
    outcomes = []
    for name in args.ways.split(","):
        way = WAYS[name]
        if way.kill_at is not None:
            way = Way(way.name, way.processors, args.kill_at)
        outcomes.append(
            run_way(
                scenario,
                way,
                args.workdir / name,
                rate=args.rate,
                settle_seconds=args.settle_seconds,
            )
        )
        print(f"{way.name}: {len(outcomes[-1].alerts)} alerts", flush=True)
    command = (
        f"python -m loadtests.misuse.pipeline --scale {args.scale} --weeks {args.weeks} "
        f"--per-type {args.per_type} --rate {args.rate:g} --ways {args.ways} "
        f"--kill-at {args.kill_at:g}"
        + (f" --governments {args.governments}" if args.governments else "")
    )
    text = report(outcomes, scenario, command, began)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    same = all(o.keys == outcomes[0].keys for o in outcomes)
    return 0 if same and all(o.worst >= 0.95 for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
