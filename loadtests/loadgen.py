"""Load generator: live usage events of the 17 governments' staff, at a set rate.

Each worker is its own process, sends protobuf batches to ingest over HTTP at its share of
the rate, and stops at the deadline. Users, departments and services follow the demo
scenario's populations; event times are now. Events are stamped cheaply: a pool of encoded
templates gets a fresh event_id and event_time prepended as protobuf fields, so the
generator spends its CPU on sending, not on building messages.

    python -m loadtests.loadgen --url http://127.0.0.1:8080 --rate 5000 --seconds 30 --token cmk_...
    python -m loadtests.loadgen --rate 2000 --seconds 240 --day-seconds 240   # a day in 4 min
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time

import aiohttp
from google.protobuf.timestamp_pb2 import Timestamp
from holidays import country_holidays

from civicmeter.api.seoul import SEOUL
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.wire import length_delimited, tag
from loadtests.scenario import (
    API_MODELS,
    DEPARTMENTS,
    SERVICES,
    Government,
    governments_of,
    load_facts,
    seat_usage,
    user_id,
)
from loadtests.stack import REPO

FACTS = REPO.parent / "shared" / "data" / "kr_local_gov_genai_2024.yaml"
TEMPLATES = 4_096
_EVENT_ID, _EVENT_TIME = tag(1), tag(2)  # UsageEvent fields
_EVENTS = tag(1)  # PublishEventsRequest.events
MAX_WORKERS = 8
MAX_SECONDS = 3_600


def templates(governments: Sequence[Government], count: int, seed: int) -> list[bytes]:
    """Encoded events without id and time, users and services weighted as in the scenario."""
    rng = random.Random(seed)
    weights = [g.users for g in governments]
    out: list[bytes] = []
    for _ in range(count):
        gov = rng.choices(governments, weights=weights)[0]
        user = rng.randrange(gov.users)
        event = pb.UsageEvent(
            gateway_id=f"gw-{gov.id}-1",
            organization_id=gov.id,
            department_id=DEPARTMENTS[user % len(DEPARTMENTS)],
            user_id=user_id(gov.id, user),
            account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL,
            purpose="administrative-work",
        )
        if rng.random() < 0.1:
            provider, service, model, _ = rng.choice(API_MODELS)
            event.provider_name, event.service_id, event.request_model = provider, service, model
            event.operation_name = "chat"
            event.usage.input_tokens = rng.randint(500, 20_000)
            event.usage.output_tokens = rng.randint(50, 2_000)
        else:
            svc = SERVICES[rng.choice(gov.services)]
            event.provider_name, event.service_id = svc.provider, svc.id
            event.operation_name = svc.operation
            event.usage.CopyFrom(seat_usage(svc, rng))
        out.append(event.SerializeToString())
    return out


def with_fresh_usage(encoded: bytes, rng: random.Random) -> bytes:
    """A template (from `templates`) with token counts of its own, as each real API call has;
    a seat or media service keeps its usage, the same call after call."""
    message = pb.UsageEvent.FromString(encoded)
    if not message.usage.input_tokens:
        return encoded
    message.usage.input_tokens = rng.randint(500, 20_000)
    message.usage.output_tokens = rng.randint(50, 2_000)
    return message.SerializeToString()


@dataclass(frozen=True)
class WorkerPlan:
    url: str
    rate: float  # events per second for this worker
    seconds: float
    batch: int
    seed: int
    day_seconds: float = 0.0  # > 0: a working day's curve compressed into this many seconds
    token: str | None = None  # the gateway key ingest authenticates


# Relative request rate by hour of the day in Seoul: quiet nights, a morning and an
# afternoon peak, a lunch dip (mean 1, so the average rate is the one asked for).
_HOURLY = (0.05, 0.03, 0.03, 0.03, 0.03, 0.05, 0.1, 0.3, 0.9, 1.9, 2.4, 2.2, 1.1, 1.9, 2.4,
           2.3, 2.0, 1.5, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1)  # fmt: skip
DAILY_CURVE = tuple(w * 24 / sum(_HOURLY) for w in _HOURLY)


def curve_factor(elapsed: float, day_seconds: float) -> float:
    """The daily curve's weight at `elapsed` seconds into the run (1 when there is no curve)."""
    if day_seconds <= 0:
        return 1.0
    hour = int(elapsed / day_seconds * 24) % 24
    return DAILY_CURVE[hour]


def working_hours_offset_ns(now: datetime | None = None) -> int:
    """How far to move the load's clock back so that its events fall in Seoul working hours.

    Staff use AI services at work: a load stamped on a Sunday night would make every event an
    off-hours alert, which is not the traffic the system is sized for. Within a weekday's
    10:00-17:00 (not a public holiday) the offset is 0; otherwise the clock goes back to 11:00
    of the last working day (the events are then late, and billed like any other).
    """
    now = now or datetime.now(UTC)
    local = now.astimezone(SEOUL)
    closed = country_holidays("KR", years=range(local.year - 1, local.year + 1))

    def working(day: date) -> bool:
        return day.weekday() < 5 and day not in closed

    if working(local.date()) and 10 <= local.hour < 17:
        return 0
    day = local.date() if local.hour >= 11 else local.date() - timedelta(days=1)
    while not working(day):
        day -= timedelta(days=1)
    target = datetime.combine(day, dt_time(11), tzinfo=SEOUL)
    return int((now - target).total_seconds() * 1e9)


def stamp(template: bytes, event_id: str, now_ns: int) -> bytes:
    ts = Timestamp(seconds=now_ns // 1_000_000_000, nanos=now_ns % 1_000_000_000)
    return (
        length_delimited(tag(1), event_id.encode())
        + length_delimited(tag(2), ts.SerializeToString())
        + template
    )


async def _send_loop(plan: WorkerPlan, pool: list[bytes], counter: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    started = time.monotonic()
    deadline = started + plan.seconds
    next_send = time.monotonic()
    sequence = 0
    run = f"lg{time.time_ns():x}-{plan.seed}"  # ids unique across runs and workers
    shift = working_hours_offset_ns()
    headers = {"Content-Type": "application/x-protobuf"}
    if plan.token:
        headers["Authorization"] = f"Bearer {plan.token}"
    async with aiohttp.ClientSession() as session:
        while next_send < deadline:
            delay = next_send - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now_ns = time.time_ns() - shift
            body = b"".join(
                length_delimited(
                    _EVENTS,
                    stamp(pool[(sequence + i) % len(pool)], f"{run}-{sequence + i}", now_ns),
                )
                for i in range(plan.batch)
            )
            sequence += plan.batch
            async with session.post(
                f"{plan.url}/v1/events",
                data=body,
                headers=headers,
            ) as resp:
                if resp.status != 202:
                    raise RuntimeError(f"ingest answered {resp.status}: {await resp.text()}")
            with counter.get_lock():  # type: ignore[attr-defined]
                counter.value += plan.batch  # type: ignore[attr-defined]
            # Behind schedule (ingest saturated): do not burst to catch up, keep the pace.
            rate = plan.rate * curve_factor(time.monotonic() - started, plan.day_seconds)
            interval = plan.batch / max(rate, 1e-3)
            next_send = max(next_send + interval, time.monotonic() - interval)


def _worker(plan: WorkerPlan, counter: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    governments = governments_of(load_facts(FACTS))
    pool = templates(governments, TEMPLATES, plan.seed)
    asyncio.run(_send_loop(plan, pool, counter))


def run_load(
    url: str,
    rate: float,
    seconds: float,
    workers: int = 2,
    batch: int = 1_000,
    progress: bool = True,
    day_seconds: float = 0.0,
    token: str | None = None,
) -> int:
    """Send at `rate` events/s for `seconds` (shaped by the daily curve when `day_seconds`);
    return how many events ingest accepted."""
    if not 0 < seconds <= MAX_SECONDS or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS}] and workers in 1..{MAX_WORKERS}")
    batch = max(1, min(batch, int(rate / workers / 2) or 1))
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    procs = [
        context.Process(
            target=_worker,
            daemon=True,
            args=(
                WorkerPlan(url, rate / workers, seconds, batch, seed, day_seconds, token),
                counter,
            ),
        )
        for seed in range(workers)
    ]
    for proc in procs:
        proc.start()
    started = time.monotonic()
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(1.0)
            if progress:
                elapsed = time.monotonic() - started
                sent = counter.value
                print(
                    f"      load: {sent:,} events in {elapsed:.0f} s "
                    f"({sent / max(elapsed, 1e-9):,.0f}/s, target {rate:,.0f}/s)",
                    flush=True,
                )
            if time.monotonic() - started > seconds + 60:
                raise TimeoutError("load workers did not stop in time")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(5)
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise RuntimeError(f"{len(failed)} load worker(s) failed (exit codes {failed})")
    return int(counter.value)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--rate", type=float, default=5_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument(
        "--day-seconds",
        type=float,
        default=0,
        help="shape the rate by a working day's curve compressed into this "
        "many seconds (0: a flat rate)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CIVICMETER_GATEWAY_TOKEN"),
        help="the gateway key ingest asks for (default: $CIVICMETER_GATEWAY_TOKEN)",
    )
    args = parser.parse_args(argv)
    sent = run_load(
        args.url,
        args.rate,
        args.seconds,
        args.workers,
        args.batch,
        day_seconds=args.day_seconds,
        token=args.token,
    )
    print(f"sent {sent:,} events")


if __name__ == "__main__":
    main()
