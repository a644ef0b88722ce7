"""A year of generative-AI usage by Korea's 17 metropolitan and provincial governments.

Built on the reported facts in shared/data/kr_local_gov_genai_2024.yaml: each government's
events, priced by the catalog, add up to its reported spend to the won. Spend that was not
reported is the reported total less the reported figures, spread over the other governments
by population; users that were not reported share the reported total of users the same way.

Spend is subscription fees, so most of it is seats: seat assignment records (written to a seat
file for the billing service, which charges each seat a month's fee for every month it is held);
staff use under a seat is metered at no extra charge; a few percent is metered API use, whose
last events top up the exact sum. Some holders stop using their seat months before it ends:
the idle seats a seat report should find.
"""

from __future__ import annotations

import csv
import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.billing.seat_file import COLUMNS as SEAT_COLUMNS
from civicmeter.billing.seat_ledger import charge_event, months_charged
from civicmeter.core.pricing import PriceCatalog
from civicmeter.core.store.seats import Seat
from civicmeter.gateway.identity import pseudonymise_user

KST = timezone(timedelta(hours=9), "KST")
DEMO_HMAC_KEY = b"civicmeter-demo-key-not-for-production"

# 2024 resident population (millions), to spread what the report left out.
POPULATION = {
    "seoul": 9.39,
    "busan": 3.29,
    "daegu": 2.37,
    "incheon": 3.02,
    "gwangju": 1.42,
    "daejeon": 1.44,
    "ulsan": 1.10,
    "sejong": 0.39,
    "gyeonggi": 13.69,
    "gangwon": 1.52,
    "chungbuk": 1.59,
    "chungnam": 2.13,
    "jeonbuk": 1.75,
    "jeonnam": 1.80,
    "gyeongbuk": 2.55,
    "gyeongnam": 3.25,
    "jeju": 0.67,
}
DEPARTMENTS = (
    "planning-budget",
    "digital-policy",
    "culture-tourism",
    "welfare",
    "transport",
    "environment",
    "economy-jobs",
    "safety",
    "press-office",
    "urban-planning",
)
# Which governments subscribe to what, consistent with the report's counts (ChatGPT 17,
# Claude 5, Midjourney 5, Gamma 4; Seoul and Gyeonggi 10 services each: ChatGPT and these seven
# subscriptions, and the two metered APIs every government's developers call, API_MODELS).
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "seoul": ("claude", "midjourney", "gamma", "suno", "perplexity", "clova-dubbing", "bluedot"),
    "gyeonggi": ("claude", "midjourney", "gamma", "suno", "perplexity", "clova-dubbing", "bluedot"),
    "busan": ("midjourney", "perplexity"),
    "incheon": ("claude",),
    "daegu": ("gamma",),
    "gangwon": ("gamma", "clova-dubbing"),
    "chungnam": ("claude", "suno"),
    "jeonnam": ("midjourney",),
    "jeju": ("claude", "midjourney", "bluedot"),
}


@dataclass(frozen=True)
class Service:
    id: str
    provider: str
    operation: str
    weight: float  # share of seat spend relative to ChatGPT's 1.0
    plan: str  # the subscription plan the seats are on


SERVICES = {
    "chatgpt": Service("chatgpt", "openai", "chat", 1.0, "team"),
    "claude": Service("claude", "anthropic", "chat", 0.35, "team"),
    "midjourney": Service("midjourney", "midjourney", "image_generation", 0.25, "pro"),
    "gamma": Service("gamma", "gamma", "presentation", 0.12, "pro"),
    "suno": Service("suno", "suno", "music_generation", 0.06, "pro"),
    "perplexity": Service("perplexity", "perplexity", "search", 0.15, "enterprise-pro"),
    "clova-dubbing": Service("clova-dubbing", "naver", "speech_synthesis", 0.08, "pro"),
    "bluedot": Service("bluedot", "bluedot", "video_generation", 0.05, "pro"),
}
IDLE_SHARE = 0.15  # of seats whose holder stops using the service before the seat ends
# (provider, service, model, share of API calls)
API_MODELS = (
    ("openai", "openai-api", "gpt-4o", 0.55),
    ("anthropic", "claude-api", "claude-3-5-sonnet", 0.45),
)
FILLER = ("openai", "openai-api", "gpt-4o-mini")
FILLER_PRICE = Decimal("0.0002")  # gpt-4o-mini input tokens: every token price is a multiple
MAX_FILLER_TOKENS = 5_000_000


@dataclass
class Government:
    id: str
    name: str
    spend_krw: int
    reported_spend: bool
    users: int
    reported_users: bool
    services: tuple[str, ...]  # subscribed to: seats
    reported_services: int | None  # how many services the report says it uses (None: unsaid)
    events: list[pb.UsageEvent] = field(default_factory=list)  # metered use, through ingest
    seats: list[Seat] = field(default_factory=list)  # charged by the billing service

    @property
    def service_ids(self) -> set[str]:
        """Every service it uses, as stored: its seats' and its metered use's."""
        return {seat.service_id for seat in self.seats} | {e.service_id for e in self.events}


@dataclass(frozen=True)
class Scenario:
    period_start: datetime
    period_end: datetime  # exclusive
    total_spend_krw: int
    governments: list[Government]

    @property
    def event_count(self) -> int:
        """The usage events sent through ingest."""
        return sum(len(g.events) for g in self.governments)

    def charges(self, government: Government) -> Iterator[pb.UsageEvent]:
        """The monthly seat charges the billing service makes for a government's seats."""
        return _charges(government, self.period_end)

    @property
    def charge_count(self) -> int:
        return sum(1 for g in self.governments for _ in self.charges(g))

    def write_seats(self, path: Path) -> int:
        """Every government's seats as a seat file (CSV); returns the number of seats."""
        count = 0
        with path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(SEAT_COLUMNS)
            for gov in self.governments:
                for seat in gov.seats:
                    end = seat.end.isoformat() if seat.end else ""
                    writer.writerow([seat.seat_id, seat.organization_id, seat.department_id,
                                     seat.user_id, seat.provider_name, seat.service_id, seat.plan,
                                     seat.start.isoformat(), end])  # fmt: skip
                    count += 1
        return count

    def events(self) -> Iterator[pb.UsageEvent]:
        """All events, governments interleaved as gateways would send them."""
        iterators = [iter(g.events) for g in self.governments]
        while iterators:
            for it in list(iterators):
                event = next(it, None)
                if event is None:
                    iterators.remove(it)
                else:
                    yield event


def load_facts(path: Path) -> dict[str, Any]:
    facts: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return facts


def _spread(total: int, weights: dict[str, float], unit: int) -> dict[str, int]:
    """Split `total` by weight in multiples of `unit`; the largest share takes the remainder."""
    weight_sum = sum(weights.values())
    shares = {k: int(total * w / weight_sum) // unit * unit for k, w in weights.items()}
    largest = max(weights, key=lambda k: weights[k])
    shares[largest] += total - sum(shares.values())
    return shares


def governments_of(facts: dict[str, Any]) -> list[Government]:
    """The 17 governments with spend and users as reported, the rest spread plausibly."""
    rows = facts["governments"]
    total = int(facts["total_spend_krw"])
    reported = {r["id"]: int(r["spend_krw"]) for r in rows if r["spend_krw"] is not None}
    unreported = {r["id"]: POPULATION[r["id"]] for r in rows if r["spend_krw"] is None}
    spend = {**reported, **_spread(total - sum(reported.values()), unreported, 10_000)}
    known_users = {r["id"]: int(r["users"]) for r in rows if r["users"] is not None}
    # Gyeonggi answered "not available"; the report's user total excludes it.
    users_total = int(facts["total_users_excluding_gyeonggi"])
    unknown_users = {
        r["id"]: spend[r["id"]] / 1.0 for r in rows if r["users"] is None and r["id"] != "gyeonggi"
    }
    users = {**known_users, **_spread(users_total - sum(known_users.values()), unknown_users, 1)}
    users["gyeonggi"] = 520
    return [
        Government(
            r["id"],
            r["name"],
            spend[r["id"]],
            r["id"] in reported,
            users[r["id"]],
            r["id"] in known_users,
            ("chatgpt", *SUBSCRIPTIONS.get(r["id"], ())),
            r.get("services"),
        )
        for r in rows
    ]


def build_scenario(
    facts: dict[str, Any], catalog: PriceCatalog, *, events: int = 200_000, seed: int = 2024
) -> Scenario:
    """Every government's events; `events` is the approximate total to generate."""
    rng = random.Random(seed)
    period_start = datetime.fromisoformat(facts["period"]["start"]).replace(tzinfo=KST)
    period_end = datetime.fromisoformat(facts["period"]["end"]).replace(tzinfo=KST) + timedelta(
        days=1
    )
    governments = governments_of(facts)
    months = _months(period_start, period_end)
    user_total = sum(g.users for g in governments)
    for gov in governments:
        budget = max(200, events * gov.users // user_total)
        _generate(gov, catalog, months, period_start, period_end, budget, rng)
        used = len(gov.service_ids)
        if gov.reported_services is not None and used != gov.reported_services:
            raise ValueError(f"{gov.id} uses {used} services; the report says "
                             f"{gov.reported_services}")  # fmt: skip
    return Scenario(period_start, period_end, int(facts["total_spend_krw"]), governments)


def _months(start: datetime, end: datetime) -> list[datetime]:
    months, current = [], start.replace(day=1, hour=0, minute=0, second=0)
    while current < end:
        months.append(current)
        current = (current + timedelta(days=32)).replace(day=1)
    return months


@functools.cache
def user_id(government: str, user: int) -> str:
    return pseudonymise_user(DEMO_HMAC_KEY, f"{government}-staff-{user:05d}")


def _event(
    gov: Government,
    user: int,
    dept: str,
    when: datetime,
    service: str,
    provider: str,
    operation: str,
    model: str,
    key: str,
    usage: pb.Usage,
) -> pb.UsageEvent:
    event = pb.UsageEvent(
        event_id=f"{gov.id}:{key}",
        gateway_id=f"gw-{gov.id}-1",
        organization_id=gov.id,
        department_id=dept,
        user_id=user_id(gov.id, user),
        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL,
        provider_name=provider,
        service_id=service,
        request_model=model,
        operation_name=operation,
        purpose="administrative-work",
        usage=usage,
    )
    event.event_time.FromDatetime(when.astimezone(UTC))
    return event


def _working_time(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A weekday moment in office hours, busier mid-morning and mid-afternoon."""
    days = (end - start).days
    while True:
        day = start + timedelta(days=rng.randrange(days))
        if day.weekday() < 5:
            break
    hour = rng.choice((9, 10, 10, 11, 11, 13, 14, 14, 15, 15, 16, 17))
    return day.replace(
        hour=hour,
        minute=rng.randrange(60),
        second=rng.randrange(60),
        microsecond=rng.randrange(1000) * 1000,
    )


def _generate(
    gov: Government,
    catalog: PriceCatalog,
    months: list[datetime],
    start: datetime,
    end: datetime,
    budget: int,
    rng: random.Random,
) -> None:
    dept_of = {u: DEPARTMENTS[u % len(DEPARTMENTS)] for u in range(gov.users)}
    # 1. Seats: about 96% of spend, split across the services by weight. A service's seat-months
    # are whole-period seats, plus one that ends early for the months left over.
    seat_budget = Decimal(gov.spend_krw) * Decimal("0.96")
    weights = {s: SERVICES[s].weight for s in gov.services}
    weight_sum = sum(weights.values())
    in_use: dict[str, list[tuple[int, datetime, datetime]]] = {}  # (holder, from, until)
    for service_id in gov.services:
        svc = SERVICES[service_id]
        price = _unit_price(catalog, svc.provider, svc.id, svc.plan, "seat_months", start)
        seat_months = int(seat_budget * Decimal(weights[service_id] / weight_sum) / price)
        whole, left_over = divmod(seat_months, len(months))
        count = whole + (1 if left_over else 0)
        if count > gov.users:
            raise ValueError(f"{gov.id}: {count} {service_id} seats for {gov.users} users")
        holders = rng.sample(range(gov.users), count)
        in_use[service_id] = []
        for n, holder in enumerate(sorted(holders)):
            last_month = months[-1] if n < whole else months[left_over - 1]
            ends = (last_month + timedelta(days=32)).replace(day=1)  # exclusive
            seat = Seat(gov.id, f"{service_id}-{n + 1:04d}", dept_of[holder],
                        user_id(gov.id, holder), svc.provider, svc.id, svc.plan, start.date(),
                        (ends - timedelta(days=1)).date())  # fmt: skip
            gov.seats.append(seat)
            # Some holders stop using their seat one to six months before it ends.
            until = ends
            if rng.random() < IDLE_SHARE:
                until = ends - timedelta(days=rng.randint(31, 183))
            if until > start + timedelta(days=14):
                in_use[service_id].append((holder, start, until))
    spent = sum((catalog.rate(charge).cost_krw for charge in _charges(gov, end)), Decimal(0))
    # 2. Staff use under the seats, while the holders use them: metered, included in the fee.
    api_calls = max(20, budget // 12)
    used = [s for s in gov.services if in_use[s]]
    for n in range(max(0, budget - api_calls)):
        service_id = rng.choices(used, weights=[weights[s] for s in used])[0]
        svc = SERVICES[service_id]
        holder, since, until = rng.choice(in_use[service_id])
        gov.events.append(
            _event(
                gov,
                holder,
                dept_of[holder],
                _working_time(rng, since, until),
                svc.id,
                svc.provider,
                svc.operation,
                "",
                f"use/{n}",
                seat_usage(svc, rng),
            )
        )
    # 3. Metered API use tops the spend up to the reported figure, to the won.
    remaining = Decimal(gov.spend_krw) - spent
    per_call = remaining / api_calls
    developers = rng.sample(range(gov.users), min(gov.users, 12))
    for n in range(api_calls):
        provider, service, model, _ = rng.choices(API_MODELS, weights=[m[3] for m in API_MODELS])[0]
        when = _working_time(rng, start, end)
        target = per_call * Decimal(rng.uniform(0.4, 1.2))
        usage = _api_usage(catalog, provider, service, model, when, target, rng)
        event = _event(
            gov,
            developers[n % len(developers)],
            "digital-policy",
            when,
            service,
            provider,
            "chat",
            model,
            f"api/{n}",
            usage,
        )
        cost = catalog.rate(event).cost_krw
        if cost > remaining:
            break
        gov.events.append(event)
        remaining -= cost
    n = 0
    while remaining > 0:
        tokens = min(MAX_FILLER_TOKENS, int(remaining / FILLER_PRICE))
        when = _working_time(rng, start, end)
        provider, service, model = FILLER
        gov.events.append(
            _event(
                gov,
                developers[0],
                "digital-policy",
                when,
                service,
                provider,
                "chat",
                model,
                f"batch/{n}",
                pb.Usage(input_tokens=tokens),
            )
        )
        remaining -= FILLER_PRICE * tokens
        n += 1
    rng.shuffle(gov.events)


def _charges(gov: Government, end: datetime) -> Iterator[pb.UsageEvent]:
    """The seat charges of the period ending (exclusive) at `end`, as the ledger makes them."""
    last_day = (end - timedelta(days=1)).date()
    for seat in gov.seats:
        for month in months_charged(seat, last_day):
            yield charge_event(seat, month)


def _unit_price(
    catalog: PriceCatalog, provider: str, service: str, model: str, unit: str, when: datetime
) -> Decimal:
    price = catalog.unit_price(provider, service, model, unit, when.timestamp())
    if price is None:
        raise LookupError(f"the catalog has no {unit} price for {provider}/{service}/{model}")
    return price


def seat_usage(svc: Service, rng: random.Random) -> pb.Usage:
    if svc.operation == "chat" or svc.operation == "search":
        return pb.Usage(
            input_tokens=rng.randint(200, 4000), output_tokens=rng.randint(50, 1500), requests=1
        )
    if svc.operation == "image_generation":
        return pb.Usage(images=rng.choice((1, 4)), requests=1)
    if svc.operation == "music_generation":
        return pb.Usage(audio_milliseconds=rng.randint(30_000, 240_000), requests=1)
    if svc.operation == "speech_synthesis":
        return pb.Usage(characters=rng.randint(200, 5000))
    if svc.operation == "video_generation":
        return pb.Usage(video_milliseconds=rng.randint(60_000, 1_800_000))
    return pb.Usage(requests=1)


def _api_usage(
    catalog: PriceCatalog,
    provider: str,
    service: str,
    model: str,
    when: datetime,
    target: Decimal,
    rng: random.Random,
) -> pb.Usage:
    """Token counts for an API call costing about `target` KRW (a batch job, say)."""
    input_price = _unit_price(catalog, provider, service, model, "input_tokens", when)
    output_price = _unit_price(catalog, provider, service, model, "output_tokens", when)
    ratio = rng.uniform(0.05, 0.3)  # output tokens per input token
    input_tokens = int(target / (input_price + output_price * Decimal(ratio)))
    input_tokens = max(100, min(input_tokens, 9_000_000))
    return pb.Usage(
        input_tokens=input_tokens,
        output_tokens=min(int(input_tokens * ratio), 9_000_000),
        requests=1,
    )


def expected_totals(scenario: Scenario, catalog: PriceCatalog) -> dict[str, Decimal]:
    """Each government's spend as the catalog prices its usage events and its seat charges
    (the generator's own check)."""
    return {
        g.id: sum((catalog.rate(e).cost_krw for e in (*g.events, *scenario.charges(g))), Decimal(0))
        for g in scenario.governments
    }
