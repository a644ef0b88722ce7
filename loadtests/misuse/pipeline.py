"""The labelled misuse scenario through the real pipeline: ingest → Kafka → processor →
usage.alerts → sink → ClickHouse → AlertService. Reports precision and recall per detector
(the same scoring as the in-process bench) and the time from sending a triggering event to
its alert arriving on WatchAlerts.

    python -m loadtests.misuse.pipeline [--scale 0.2] [--weeks 6] [--per-type 15]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc
import yaml

from civicmeter.alert.v1 import alert_pb2, alert_service_pb2, alert_service_pb2_grpc
from civicmeter.core.pricing import load_catalog
from civicmeter.core.severity import SEVERITY_NAMES
from civicmeter.gateway import UsageEmitter
from civicmeter.processor.detection import Alert
from loadtests.misuse.scenario import MisuseScenario, build_misuse_scenario
from loadtests.misuse.scoring import score
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


async def send_all(
    stack: LocalStack, scenario: MisuseScenario, sent_at: dict[str, float], rate: float
) -> None:
    """Deliver the scenario through ingest in its order at `rate` events/s, noting when each
    event was accepted."""
    events = [event for event, _ in scenario.deliveries]
    started = time.monotonic()
    async with UsageEmitter(stack.ingest_url, binary=True, token=stack.gateway_token) as emitter:
        for start in range(0, len(events), BATCH):
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


async def run_through(
    stack: LocalStack, scenario: MisuseScenario, settle_seconds: float, rate: float
) -> tuple[list[alert_pb2.Alert], list[float], float]:
    sent_at: dict[str, float] = {}
    received: dict[str, tuple[float, alert_pb2.Alert]] = {}
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(stack, received, stop))
    await asyncio.sleep(1.0)
    started = time.monotonic()
    await send_all(stack, scenario, sent_at, rate)
    sending = time.monotonic() - started
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
    parser.add_argument("--workdir", type=Path, default=REPO / ".civicmeter" / "misuse")
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    began = datetime.now(UTC)
    scenario = build_misuse_scenario(
        governments_of(load_facts(FACTS)),
        load_catalog(DEFAULT_PRICES),
        scale=args.scale,
        weeks=args.weeks,
        per_type=args.per_type,
    )
    policy_file = args.workdir / "policies.yaml"
    policy_file.write_text(
        yaml.safe_dump(scenario.policy_document, allow_unicode=True), encoding="utf-8"
    )
    print(
        f"scenario: {len(scenario.deliveries):,} deliveries, {len(scenario.labels)} labels",
        flush=True,
    )
    env = {
        "CIVICMETER_POLICY_FILE": str(policy_file),
        "CIVICMETER_MAX_EVENT_AGE_DAYS": "3650",
        "CIVICMETER_LOG_LEVEL": "WARNING",
    }
    with (
        LocalKafka(args.workdir / "kafka") as kafka,
        LocalStack(kafka.bootstrap_servers, args.workdir, extra_env=env) as stack,
    ):
        records, latencies, sending = asyncio.run(
            run_through(stack, scenario, args.settle_seconds, args.rate)
        )
    scores, mismatches = score([from_record(r) for r in records], scenario.labels)
    lines = [
        "# Misuse detection through the whole pipeline",
        "",
        f"Written by `python -m loadtests.misuse.pipeline --scale {args.scale} --weeks "
        f"{args.weeks} --per-type {args.per_type} --rate {args.rate:g}` on "
        f"{began:%Y-%m-%d %H:%M} UTC. The synthetic labelled scenario of loadtests/misuse "
        f"({len(scenario.deliveries):,} deliveries, {len(scenario.labels)} labelled cases) "
        f"went through ingest (HTTP, {BATCH} per batch, {args.rate:,.0f} events/s, sent in "
        f"{sending:.0f} s), the Kafka broker, the faust processor, the sink and ClickHouse; "
        "alerts were read from AlertService.WatchAlerts.",
        "",
        "| detector | labels | alerts | precision | recall |",
        "|---|---|---|---|---|",
    ]
    worst = 1.0
    for name, s in scores.items():
        lines.append(f"| {name} | {s.labels} | {s.alerts} | {s.precision:.3f} | {s.recall:.3f} |")
        if s.labels or s.alerts:
            worst = min(worst, s.precision, s.recall)
    if latencies:
        p50 = statistics.median(latencies)
        p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
        lines += [
            "",
            f"Triggering event accepted by ingest → alert on WatchAlerts, over "
            f"{len(latencies)} alerts: p50 {p50 * 1000:,.0f} ms, p99 "
            f"{p99 * 1000:,.0f} ms, max {max(latencies) * 1000:,.0f} ms.",
        ]
    if mismatches:
        lines += ["", "Mismatches (first 20):", ""]
        lines += [f"- {m.kind}: {m.alert_type} `{m.dedup_key}` {m.detail}" for m in mismatches[:20]]
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0 if worst >= 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main())
