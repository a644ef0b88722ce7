"""The demo: a year of the 17 Korean governments' generative-AI use through civicmeter.

Starts a real Kafka broker and every service, with the scenario's seats as the billing
service's seat file; replays the scenario's usage through ingest over HTTP, waits until every
event and every monthly seat charge is stored, asks the query service over gRPC for each
government's spend and checks it against the reported figures to the won, and shows the seat
summary of a few governments (seats, idle seats, cost per active user), and writes the year's
HTML report with charts (report.html in the work directory). Exit status 0 only if all match.

    python -m loadtests.demo [--events N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import grpc

from civicmeter.api.alert.v1 import alert_pb2, alert_service_pb2, alert_service_pb2_grpc
from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.billing.seat_ledger import charge_event
from civicmeter.client import CivicmeterClient
from civicmeter.client.report import gather, render
from civicmeter.core.pricing import PriceCatalog, load_catalog
from civicmeter.gateway.emitter import UsageEmitter
from loadtests.scenario import Scenario, build_scenario, expected_totals, load_facts
from loadtests.stack import DEFAULT_PRICES, REPO, LocalStack
from tools.localkafka import KAFKA_VERSION, LocalKafka

FACTS = REPO.parent / "shared" / "data" / "kr_local_gov_genai_2024.yaml"
SENDERS = 4
BATCH = 2_000
SEAT_GOVERNMENTS = ("seoul", "jeju")  # whose seat summary the demo shows


def say(message: str) -> None:
    print(message, flush=True)


class Progress:
    """A bar redrawn in place on a terminal; a line per tenth of the way in a log."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = max(total, 1)
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty()
        self._last_draw = 0.0
        self._last_tenth = -1

    def update(self, done: int) -> None:
        now = time.monotonic()
        tenth = 10 * done // self.total
        if self.tty and now - self._last_draw < 0.1 and done < self.total:
            return
        if not self.tty and tenth == self._last_tenth:
            return
        self._last_draw, self._last_tenth = now, tenth
        filled = 30 * done // self.total
        rate = done / max(now - self.started, 1e-9)
        line = (
            f"      {self.label} [{'#' * filled}{'.' * (30 - filled)}] "
            f"{done:,}/{self.total:,}  {rate:,.0f} events/s"
        )
        sys.stdout.write(f"\r{line}  " if self.tty else f"{line}\n")
        sys.stdout.flush()

    def finish(self) -> None:
        if self.tty:
            sys.stdout.write("\n")


def batches(events: Iterator[pb.UsageEvent], size: int) -> Iterator[list[pb.UsageEvent]]:
    batch: list[pb.UsageEvent] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def replay(stack: LocalStack, scenario: Scenario) -> float:
    """Send every event through ingest with a few concurrent senders; return seconds taken."""
    queue: asyncio.Queue[list[pb.UsageEvent] | None] = asyncio.Queue(maxsize=SENDERS * 2)
    sent = 0
    bar = Progress("sent  ", scenario.event_count)
    started = time.monotonic()

    async def sender() -> None:
        nonlocal sent
        async with UsageEmitter(
            stack.ingest_url, batch_size=BATCH, token=stack.gateway_token
        ) as emitter:
            while (batch := await queue.get()) is not None:
                accepted = await emitter.send(batch)
                sent += accepted
                bar.update(sent)

    tasks = [asyncio.create_task(sender()) for _ in range(SENDERS)]
    for batch in batches(scenario.events(), BATCH):
        await queue.put(batch)
    for _ in tasks:
        await queue.put(None)
    await asyncio.gather(*tasks)
    bar.finish()
    return time.monotonic() - started


async def cost_by(
    stack: LocalStack, scenario: Scenario, dimension: query_pb.CostDimension.ValueType
) -> query_pb.GetCostBreakdownResponse:
    request = query_pb.GetCostBreakdownRequest(group_by=dimension, page_size=1000)
    request.start_time.FromDatetime(scenario.period_start)
    request.end_time.FromDatetime(scenario.period_end)
    async with grpc.aio.insecure_channel(stack.query_target) as channel:
        response: query_pb.GetCostBreakdownResponse = await query_grpc.QueryServiceStub(
            channel
        ).GetCostBreakdown(request, timeout=30)
        return response


async def wait_until_stored(stack: LocalStack, scenario: Scenario, limit_seconds: float) -> float:
    """Until every usage event and every seat charge the billing service makes is stored."""
    total = scenario.event_count + scenario.charge_count
    bar = Progress("stored", total)
    while True:
        stack.check_alive()
        response = await cost_by(stack, scenario, query_pb.COST_DIMENSION_ORGANIZATION)
        stored = sum(line.event_count for line in response.lines)
        bar.update(stored)
        if stored >= total:
            bar.finish()
            return time.monotonic()
        if time.monotonic() - bar.started > limit_seconds:
            bar.finish()
            raise TimeoutError(
                f"only {stored:,} of {total:,} events stored after {limit_seconds:.0f} s"
            )
        await asyncio.sleep(0.5)


async def services_stored(stack: LocalStack, scenario: Scenario) -> dict[str, int]:
    """How many services each government's stored usage and seat charges are of."""
    async with CivicmeterClient(stack.query_target) as api:
        usage = await api.usage(scenario.period_start, scenario.period_end,
                                group_by=["organization", "service"])  # fmt: skip
    return Counter(line.group["organization"] for line in usage.lines)


def report(
    scenario: Scenario,
    by_org: query_pb.GetCostBreakdownResponse,
    by_service: query_pb.GetCostBreakdownResponse,
    services: dict[str, int],
) -> bool:
    measured = {line.key: (from_money(line.cost), line.event_count) for line in by_org.lines}
    say(
        f"      {'government':<11} {'reported (KRW)':>15} {'metered (KRW)':>15}  "
        f"{'events':>8} {'users':>6}  {'services':>8}"
    )
    all_match = True
    for gov in scenario.governments:
        cost, events = measured.get(gov.id, (Decimal(0), 0))
        match = cost == gov.spend_krw
        all_match &= match
        reported = f"{gov.spend_krw:,}" if gov.reported_spend else f"({gov.spend_krw:,})"
        users = f"{gov.users:,}" if gov.reported_users else f"({gov.users:,})"
        # Stored services: as many as the scenario made and, where it says, the report.
        used = services.get(gov.id, 0)
        all_match &= used == len(gov.service_ids) and gov.reported_services in (None, used)
        said = f"{used}" if gov.reported_services is not None else f"({used})"
        say(
            f"      {gov.name:<11} {reported:>15} {cost:>15,.0f} {'✓' if match else '✗'} "
            f"{events:>8,} {users:>6}  {said:>8}"
        )
    total = from_money(by_org.total_cost)
    all_match &= total == scenario.total_spend_krw
    say(
        f"      {'total':<11} {scenario.total_spend_krw:>15,} {total:>15,.0f} "
        f"{'✓' if total == scenario.total_spend_krw else '✗'}"
    )
    say(
        "      (figures in parentheses were not reported: the unreported spend and users are "
        "spread by population; services: those its stored use and seats are of)"
    )
    say("\n      by service:")
    for line in sorted(by_service.lines, key=lambda line: -from_money(line.cost)):
        say(
            f"        {line.key:<14} {from_money(line.cost):>15,.0f} KRW  "
            f"{line.event_count:>8,} events"
        )
    return all_match


async def run_demo(
    stack: LocalStack, scenario: Scenario, catalog: PriceCatalog, report_file: Path
) -> tuple[bool, float, float]:
    say(
        f"[4/6] replaying {scenario.event_count:,} events through ingest "
        f"(HTTP, CloudEvents JSON, {SENDERS} senders, {BATCH:,} per batch)"
    )
    first_sent = time.monotonic()
    send_seconds = await replay(stack, scenario)
    say(
        f"[5/6] waiting until every event is priced and stored, and the "
        f"{scenario.charge_count:,} monthly seat charges billing makes from the seat file"
    )
    stored_at = await wait_until_stored(stack, scenario, limit_seconds=600)
    say("[6/6] spend per government, from the query service (gRPC GetCostBreakdown)")
    by_org = await cost_by(stack, scenario, query_pb.COST_DIMENSION_ORGANIZATION)
    by_service = await cost_by(stack, scenario, query_pb.COST_DIMENSION_SERVICE)
    matched = report(scenario, by_org, by_service, await services_stored(stack, scenario))
    matched &= await seat_summary(stack, scenario, catalog)
    await alert_summary(stack)
    await write_report(stack, scenario, report_file)
    return matched, send_seconds, stored_at - first_sent


async def seat_summary(stack: LocalStack, scenario: Scenario, catalog: PriceCatalog) -> bool:
    """The last month's seats of a few governments, from SeatService.GetSeatSummary, checked
    against the scenario's seats and the catalog's fees."""
    month = (scenario.period_end - timedelta(days=1)).date().replace(day=1)
    say(
        f"\n      seats in {month:%B %Y} (SeatService.GetSeatSummary; idle: no use of the "
        "service in the last 30 days of the month)"
    )
    say(
        f"      {'':<11} {'service':<14} {'seats':>6} {'idle':>5} {'seat fees (KRW)':>16} "
        f"{'active users':>13} {'KRW per active user':>20}"
    )
    all_match = True
    async with CivicmeterClient(stack.query_target) as api:
        for gov in (g for g in scenario.governments if g.id in SEAT_GOVERNMENTS):
            summary = await api.seat_summary(month, "service", organization_id=gov.id)
            last = month.replace(day=28)  # any day of the month: seats are held whole months
            held = [s for s in gov.seats if s.active_on(month) or s.active_on(last)]
            fees = sum((catalog.rate(charge_event(s, month)).cost_krw for s in held), Decimal(0))
            total = summary.total
            match = total.seats == len(held) and total.seat_cost_krw == fees
            all_match &= match
            name = gov.name
            for line in [*summary.lines, total]:
                if not line.seats:
                    continue  # metered API services: no seats
                per_user = line.cost_per_active_user_krw
                say(
                    f"      {name:<11} {line.key or 'total':<14} {line.seats:>6,} "
                    f"{line.idle_seats:>5,} {line.seat_cost_krw:>16,.0f} {line.active_users:>13,} "
                    f"{'-' if per_user is None else f'{per_user:,.0f}':>20}"
                    + (f" {'✓' if match else '✗'}" if line is total else "")
                )
                name = ""
    say(
        "      (✓: the seats and seat fees billing charged match the scenario's seat file and the "
        "catalog; cost per active user counts seat fees and metered use)"
    )
    return all_match


async def alert_summary(stack: LocalStack) -> None:
    """What the detectors flagged in the year, from AlertService.ListAlerts."""
    counts: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], str] = {}
    async with grpc.aio.insecure_channel(stack.query_target) as channel:
        stub = alert_service_pb2_grpc.AlertServiceStub(channel)
        token = ""
        while True:
            page = await stub.ListAlerts(
                alert_service_pb2.ListAlertsRequest(page_size=1000, page_token=token), timeout=30
            )
            for alert in page.alerts:
                severity = alert_pb2.Severity.Name(alert.severity).removeprefix("SEVERITY_")
                kind = (alert.alert_type, severity.lower())
                counts[kind] += 1
                examples.setdefault(kind, alert.explanation[:80])
            token = page.next_page_token
            if not token:
                break
    say(f"\n      alerts raised (AlertService.ListAlerts): {sum(counts.values()):,}")
    for kind, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        alert_type, severity = kind
        say(f"        {alert_type:<26} {severity:<8} {count:>6,}   e.g. {examples[kind]}")


async def write_report(stack: LocalStack, scenario: Scenario, path: Path) -> None:
    """The year's HTML report of every government, charts and figures, from the query API."""
    first = scenario.period_start.date()
    last = (scenario.period_end - timedelta(days=1)).date()
    names = {gov.id: gov.name for gov in scenario.governments}
    async with CivicmeterClient(stack.query_target) as api:
        page = render(await gather(api, first, last, names=names))
    await asyncio.to_thread(path.write_text, page, encoding="utf-8")
    say(f"\n      the year as a report with charts (open it in a browser): {path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events",
        type=int,
        default=200_000,
        help="approximate number of events to generate (default 200,000)",
    )
    parser.add_argument("--workdir", type=Path, default=REPO / ".civicmeter" / "demo")
    parser.add_argument("--facts", type=Path, default=FACTS)
    args = parser.parse_args(argv)
    began = time.monotonic()
    say(
        "civicmeter demo: a year of generative-AI use by Korea's 17 metropolitan and "
        "provincial governments"
    )
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    catalog = load_catalog(DEFAULT_PRICES)

    t = time.monotonic()
    say(f"[1/6] starting Apache Kafka {KAFKA_VERSION} (KRaft, single node) on loopback")
    with LocalKafka(args.workdir / "kafka") as kafka:
        say(f"      ready at {kafka.bootstrap_servers} in {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        scenario = build_scenario(load_facts(args.facts), catalog, events=args.events)
        check = expected_totals(scenario, catalog)
        assert all(check[g.id] == g.spend_krw for g in scenario.governments)
        seats_file = args.workdir / "seats.csv"
        seats = scenario.write_seats(seats_file)
        say(
            f"[2/6] scenario: {scenario.event_count:,} usage events and {seats:,} seats "
            f"({scenario.charge_count:,} seat-months), {scenario.period_start:%Y-%m-%d} to "
            f"{scenario.period_end:%Y-%m-%d}, built in {time.monotonic() - t:.1f} s; "
            f"seat file {seats_file}"
        )
        t = time.monotonic()
        say(
            "[3/6] starting ingest, processor, and sink+query+notifier+billing on embedded "
            "ClickHouse (chDB)"
        )
        env = {
            # The scenario is history (2024): let events up to ten years old through.
            "CIVICMETER_MAX_EVENT_AGE_DAYS": "3650",
            "CIVICMETER_LOG_LEVEL": "WARNING",
            # billing charges the seats in its first round, as it starts.
            "CIVICMETER_SEATS_FILE": str(seats_file),
        }
        with LocalStack(kafka.bootstrap_servers, args.workdir, extra_env=env) as stack:
            say(f"      ready in {time.monotonic() - t:.1f} s (logs in {args.workdir}/logs)")
            ok, send_seconds, end_to_end = asyncio.run(
                run_demo(stack, scenario, catalog, args.workdir / "report.html")
            )
            count = scenario.event_count
            say(
                f"\nthroughput: {count:,} events sent in {send_seconds:.1f} s "
                f"({count / send_seconds:,.0f} events/s into ingest); first sent to last "
                f"stored {end_to_end:.1f} s ({count / end_to_end:,.0f} events/s end to end)"
            )
            say("shutting down")
    say(
        f"demo {'passed' if ok else 'FAILED'}: every government's spend "
        f"{'matches' if ok else 'does not match'} the report; took {time.monotonic() - began:.0f} s"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
