"""A month of billing through the real pipeline: seats, metered API use, duplicates, late
events and a retroactive price change, every figure checked against an independent
computation here (plain Decimal arithmetic over the events the test sent, not civicmeter's).

The stack runs on its own topics and consumer groups, next to the suite's shared stack.
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest

from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.gateway.emitter import UsageEmitter
from loadtests.stack import REPO, LocalStack
from tests.factories import user_id
from tests.integration.test_pipeline import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

SEOUL = ZoneInfo("Asia/Seoul")
SEAT_FEE = Decimal("29000")
INPUT_BEFORE, INPUT_AFTER = Decimal("0.0036"), Decimal("0.0040")  # gpt-4o, per input token
OUTPUT = Decimal("0.0144")
DEPARTMENTS = ("welfare", "transport", "culture")
CATALOG = """\
currency: KRW
versions:
  - version: "base"
    effective_from: "2020-01-01T00:00:00+09:00"
    prices:
    - {{provider: openai, service: chatgpt, unit: seat_months, price: "29000"}}
    - {{provider: openai, service: chatgpt, unit: input_tokens, price: "0"}}
    - {{provider: openai, service: openai-api, model: gpt-4o, unit: input_tokens, price: "0.0036"}}
    - {{provider: openai, service: openai-api, model: gpt-4o, unit: output_tokens, price: "0.0144"}}
    - {{provider: openai, service: openai-api, model: "*", unit: requests, price: "0"}}
{correction}"""
# The gpt-4o input price was wrong from the start of the replayed month: corrected afterwards.
CORRECTION = """\
  - version: "corrected"
    effective_from: "{start}"
    based_on: "base"
    prices:
    - {{provider: openai, service: openai-api, model: gpt-4o, unit: input_tokens, price: "0.0040"}}
"""


def month_start(t: datetime, shift: int = 0) -> datetime:
    local = t.astimezone(SEOUL)
    index = local.year * 12 + local.month - 1 + shift
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=SEOUL)


NOW = datetime.now(UTC)
THIS_MONTH = month_start(NOW)
MONTH = month_start(NOW, -1)  # the replayed month
NEXT = THIS_MONTH
# Events before BOUNDARY arrive later than the allowed lateness: they are late corrections.
BOUNDARY = MONTH + timedelta(days=18)


@dataclass(frozen=True)
class SeatRow:
    seat_id: str
    department: str
    user: str
    start: date
    end: date | None

    def months_charged(self, today: date) -> list[datetime]:
        """Seoul months overlapping [start, end or today]: one whole fee each."""
        last = min(self.end or today, today)
        months = []
        m = month_start(datetime(self.start.year, self.start.month, 1, tzinfo=SEOUL))
        while m.date() <= last:
            months.append(m)
            m = month_start(m, 1)
        return months


@pytest.fixture(scope="module")
def month_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalStack, str, list[SeatRow]]]:
    workdir = tmp_path_factory.mktemp("billing-month")
    org = f"bm-{uuid.uuid4().hex[:8]}"
    seats = [
        SeatRow("s-open", "welfare", user_id("seat_open"), MONTH.date(), None),
        SeatRow("s-mid", "transport", user_id("seat_mid"), (MONTH + timedelta(days=10)).date(),
                (MONTH + timedelta(days=24)).date()),
        SeatRow("s-before", "culture", user_id("seat_before"), month_start(MONTH, -2).date(),
                (MONTH - timedelta(days=1)).date()),
    ]  # fmt: skip
    seats_file = workdir / "seats.csv"
    seats_file.write_text(
        "seat_id,organization,department,user,provider,service,plan,start,end\n"
        + "".join(
            f"{s.seat_id},{org},{s.department},{s.user},openai,chatgpt,team,{s.start},"
            f"{s.end or ''}\n"
            for s in seats
        ),
        encoding="utf-8",
    )
    prices = workdir / "prices.yaml"
    prices.write_text(CATALOG.format(correction=""), encoding="utf-8")
    lateness = int((datetime.now(UTC) - BOUNDARY).total_seconds())
    suffix = uuid.uuid4().hex[:6]
    env = {
        "CIVICMETER_SEATS_FILE": str(seats_file),
        "CIVICMETER_ALLOWED_LATENESS_SECONDS": str(lateness),
        "CIVICMETER_BILLING_INTERVAL_SECONDS": "1",
        "CIVICMETER_SINK_MAX_BATCH_WAIT_MS": "200",
        **{f"CIVICMETER_TOPIC_{t.upper()}": f"bm{suffix}.{t}"
           for t in ("raw", "rated", "dlq", "alerts")},
        "CIVICMETER_PROCESSOR_GROUP_ID": f"bm-processor-{suffix}",
        "CIVICMETER_SINK_GROUP_ID": f"bm-sink-{suffix}",
    }  # fmt: skip
    stack = LocalStack(kafka_bootstrap, workdir, prices_file=prices, extra_env=env)
    with stack:
        yield stack, org, seats


def api_events(org: str) -> list[pb.UsageEvent]:
    rng = random.Random(3)
    events = []
    for i in range(600):
        # Late ones well before the boundary, timely ones well after it.
        if i % 3 == 0:
            when = MONTH + timedelta(
                seconds=rng.randrange(int((BOUNDARY - MONTH).total_seconds()) - 7200)
            )
        else:
            when = BOUNDARY + timedelta(hours=2, seconds=rng.randrange(
                int((NEXT - BOUNDARY).total_seconds()) - 4 * 3600))  # fmt: skip
        e = pb.UsageEvent(
            event_id=f"{org}-api-{i}",
            gateway_id="gw-month",
            organization_id=org,
            department_id=rng.choice(DEPARTMENTS),
            user_id=user_id(f"user-{rng.randrange(30)}"),
            account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL,
            provider_name="openai",
            service_id="openai-api",
            request_model="gpt-4o",
            operation_name="chat",
            usage=pb.Usage(input_tokens=rng.randrange(1, 30_000),
                           output_tokens=rng.randrange(0, 5_000), requests=1),
        )  # fmt: skip
        e.event_time.FromDatetime(when)
        events.append(e)
    return events


def cost(e: pb.UsageEvent, input_price: Decimal) -> Decimal:
    return input_price * e.usage.input_tokens + OUTPUT * e.usage.output_tokens


def is_late(e: pb.UsageEvent) -> bool:
    return e.event_time.ToDatetime(UTC) < BOUNDARY


def expected_by_department_month(
    events: list[pb.UsageEvent], seats: list[SeatRow], input_price: Decimal
) -> dict[tuple[datetime, str], Decimal]:
    out: dict[tuple[datetime, str], Decimal] = {}
    for e in events:
        key = (month_start(e.event_time.ToDatetime(UTC)), e.department_id)
        out[key] = out.get(key, Decimal(0)) + cost(e, input_price)
    for s in seats:
        for m in s.months_charged(datetime.now(SEOUL).date()):
            out[(m, s.department)] = out.get((m, s.department), Decimal(0)) + SEAT_FEE
    return out


async def by_department_month(stack: LocalStack, org: str) -> query_pb.QueryUsageResponse:
    request = query_pb.QueryUsageRequest(
        organization_id=org,
        group_by=[query_pb.DIMENSION_DEPARTMENT],
        granularity=query_pb.GRANULARITY_MONTH,
        page_size=1000,
    )
    request.start_time.FromDatetime(month_start(MONTH, -2))
    request.end_time.FromDatetime(month_start(NEXT, 1))
    async with grpc.aio.insecure_channel(stack.query_target) as channel:
        answer: query_pb.QueryUsageResponse = await query_grpc.QueryServiceStub(channel).QueryUsage(
            request, timeout=20
        )
        return answer


async def summary(stack: LocalStack, org: str) -> query_pb.GetCostSummaryResponse:
    request = query_pb.GetCostSummaryRequest(organization_id=org)
    request.start_time.FromDatetime(MONTH)
    request.end_time.FromDatetime(NEXT)
    async with grpc.aio.insecure_channel(stack.query_target) as channel:
        answer: query_pb.GetCostSummaryResponse = await query_grpc.QueryServiceStub(
            channel
        ).GetCostSummary(request, timeout=20)
        return answer


def as_dict(answer: query_pb.QueryUsageResponse) -> dict[tuple[datetime, str], Decimal]:
    return {
        (line.bucket_start_time.ToDatetime(UTC).astimezone(SEOUL), line.group_values[0]):
        from_money(line.cost) for line in answer.lines
    }  # fmt: skip


def civicmeter(stack: LocalStack, *args: str, prices: Path) -> subprocess.CompletedProcess[str]:
    env = {**stack.env(), "CIVICMETER_PRICES_FILE": str(prices)}
    return subprocess.run(
        [sys.executable, "-m", "civicmeter", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_a_month_with_seats_late_events_and_a_retroactive_price_change(
    month_stack: tuple[LocalStack, str, list[SeatRow]],
) -> None:
    stack, org, seats = month_stack
    events = api_events(org)
    async with UsageEmitter(stack.ingest_url, token=stack.gateway_token, batch_size=200) as emitter:
        for e in events:
            await emitter.emit(e)
        for e in events[::6]:  # a gateway's retries: the same ids again
            await emitter.emit(e)
    want = expected_by_department_month(events, seats, INPUT_BEFORE)
    charges = sum(len(s.months_charged(datetime.now(SEOUL).date())) for s in seats)
    answer = await eventually(
        lambda: by_department_month(stack, org),
        lambda a: a.totals.event_count >= len(events) + charges,
        timeout=180,
    )
    assert answer.totals.event_count == len(events) + charges
    assert as_dict(answer) == want
    late = [e for e in events if is_late(e)]
    assert answer.totals.late_event_count == len(late)
    assert from_money(answer.totals.late_cost) == sum(cost(e, INPUT_BEFORE) for e in late)

    month = await summary(stack, org)
    [period] = month.periods
    assert from_money(period.subscription_cost) == SEAT_FEE * sum(
        MONTH in s.months_charged(datetime.now(SEOUL).date()) for s in seats
    )
    assert from_money(period.usage_cost) == sum(cost(e, INPUT_BEFORE) for e in events)
    assert from_money(period.late_correction_cost) == sum(cost(e, INPUT_BEFORE) for e in late)
    assert from_money(period.rerating_adjustment) == 0

    # The retroactive correction: stop, re-rate the month with the corrected catalog, prove
    # every rollup level against the ledger, and serve the corrected figures.
    stack.stop()
    corrected = stack.workdir / "prices-corrected.yaml"
    corrected.write_text(
        CATALOG.format(correction=CORRECTION.format(start=MONTH.isoformat())), encoding="utf-8"
    )
    difference = sum((INPUT_AFTER - INPUT_BEFORE) * e.usage.input_tokens for e in events)
    rerated = civicmeter(stack, "rerate", "--from", f"{MONTH:%Y-%m}", "--to", f"{NEXT:%Y-%m}",
                         "--organization", org, prices=corrected)  # fmt: skip
    assert rerated.returncode == 0, rerated.stderr
    [line] = [ln for ln in rerated.stdout.splitlines() if ln.startswith(org)]
    assert Decimal(line.split()[-1].replace(",", "")) == difference
    again = civicmeter(stack, "rerate", "--from", f"{MONTH:%Y-%m}", "--to", f"{NEXT:%Y-%m}",
                       "--organization", org, prices=corrected)  # fmt: skip
    [line] = [ln for ln in again.stdout.splitlines() if ln.startswith(org)]
    assert Decimal(line.split()[-1].replace(",", "")) == 0  # idempotent
    checked = civicmeter(stack, "reconcile", "--from", f"{month_start(MONTH, -2):%Y-%m}",
                         "--to", f"{month_start(NEXT, 1):%Y-%m}", prices=corrected)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "✓ every organisation equal to the won at every level" in checked.stdout

    stack.prices_file = corrected
    stack.start()
    after = await by_department_month(stack, org)
    assert as_dict(after) == expected_by_department_month(events, seats, INPUT_AFTER)
    month = await summary(stack, org)
    [period] = month.periods
    assert from_money(period.rerating_adjustment) == difference
    assert from_money(period.usage_cost) == sum(cost(e, INPUT_AFTER) for e in events)
    # FOCUS: the closed month is exported as it was charged; its re-rating is a Correction in
    # the month the re-rating was made.
    exported = {"charges": Decimal(0), "corrections": Decimal(0)}
    for start, end in ((MONTH, NEXT), (NEXT, month_start(NEXT, 1))):
        request = query_pb.ExportUsageRequest(organization_id=org)
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(end)
        async with grpc.aio.insecure_channel(stack.query_target) as channel:
            stub = query_grpc.QueryServiceStub(channel)
            async for chunk in stub.ExportUsage(request, timeout=30):
                for x in chunk.lines:
                    kind = "corrections" if x.charge_class == "Correction" else "charges"
                    if start == MONTH or kind == "corrections":
                        exported[kind] += from_money(x.billed_cost)
    assert exported["charges"] == from_money(period.total_cost) - difference
    assert exported["corrections"] == difference
