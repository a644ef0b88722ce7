from collections import Counter
from datetime import UTC, date
from decimal import Decimal
from pathlib import Path

import pytest

from civicmeter.api.seoul import SEOUL
from civicmeter.billing.seat_file import load_seats
from civicmeter.billing.seat_ledger import months_charged
from civicmeter.core.pricing import PriceCatalog, load_catalog
from loadtests.scenario import Scenario, build_scenario, expected_totals, load_facts

REPO = Path(__file__).resolve().parents[2]
FACTS = load_facts(REPO.parent / "shared" / "data" / "kr_local_gov_genai_2024.yaml")


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return load_catalog(REPO / "config" / "prices.yaml")


@pytest.fixture(scope="module")
def scenario(catalog: PriceCatalog) -> Scenario:
    return build_scenario(FACTS, catalog, events=5_000)


def test_reported_spend_is_kept_and_the_rest_adds_up_to_the_total(scenario: Scenario) -> None:
    reported = {g["id"]: g["spend_krw"] for g in FACTS["governments"]}
    for gov in scenario.governments:
        if reported[gov.id] is not None:
            assert gov.spend_krw == reported[gov.id]
            assert gov.reported_spend
    assert sum(g.spend_krw for g in scenario.governments) == FACTS["total_spend_krw"]


def test_reported_users_are_kept_and_the_rest_match_the_reported_total(
    scenario: Scenario,
) -> None:
    users = {g.id: g.users for g in scenario.governments}
    assert users["seoul"] == 440 and users["chungnam"] == 1274
    without_gyeonggi = sum(n for gov, n in users.items() if gov != "gyeonggi")
    assert without_gyeonggi == FACTS["total_users_excluding_gyeonggi"]


def test_governments_use_as_many_services_as_the_report_says(scenario: Scenario) -> None:
    said = {g["id"]: g["services"] for g in FACTS["governments"] if g["services"] is not None}
    used = {g.id: len(g.service_ids) for g in scenario.governments if g.id in said}
    assert used == said == {"seoul": 10, "gyeonggi": 10}
    seoul = next(g for g in scenario.governments if g.id == "seoul")
    assert {e.service_id for e in seoul.events} | {s.service_id for s in seoul.seats} == {
        "chatgpt", "claude", "midjourney", "gamma", "suno", "perplexity", "clova-dubbing",
        "bluedot", "openai-api", "claude-api"}  # fmt: skip


def test_the_catalog_prices_every_government_to_its_spend_exactly(
    scenario: Scenario, catalog: PriceCatalog
) -> None:
    totals = expected_totals(scenario, catalog)
    assert {g.id: totals[g.id] for g in scenario.governments} == {
        g.id: Decimal(g.spend_krw) for g in scenario.governments
    }


def test_seat_fees_are_most_of_the_spend_and_metered_use_the_rest(
    scenario: Scenario, catalog: PriceCatalog
) -> None:
    for gov in scenario.governments:
        fees = sum((catalog.rate(c).cost_krw for c in scenario.charges(gov)), Decimal(0))
        assert Decimal("0.90") * gov.spend_krw < fees <= Decimal("0.96") * gov.spend_krw, gov.id
        assert not any(e.operation_name == "subscription" for e in gov.events), gov.id


def test_the_seat_file_holds_every_seat_and_billing_accepts_it(
    scenario: Scenario, tmp_path: Path
) -> None:
    path = tmp_path / "seats.csv"
    assert scenario.write_seats(path) == sum(len(g.seats) for g in scenario.governments)
    assert load_seats(path) == [seat for g in scenario.governments for seat in g.seats]


def test_seat_months_per_service_spread_evenly_over_the_period(scenario: Scenario) -> None:
    """Each month of the period has the same seats of a service, give or take one, as the
    reported year of subscriptions would."""
    last_day = date(2025, 1, 31)
    for gov in scenario.governments:
        per_month = Counter(
            (seat.service_id, month)
            for seat in gov.seats
            for month in months_charged(seat, last_day)
        )
        for service in gov.services:
            counts = [n for (s, _), n in per_month.items() if s == service]
            assert len(counts) == 13, (gov.id, service)
            assert max(counts) - min(counts) <= 1, (gov.id, service)


def test_usage_under_a_seat_falls_while_its_holder_has_it(scenario: Scenario) -> None:
    for gov in scenario.governments:
        held = {(s.user_id, s.service_id): s for s in gov.seats}
        for event in gov.events:
            seat = held.get((event.user_id, event.service_id))
            if event.service_id in gov.services:
                assert seat is not None, event.event_id
                day = event.event_time.ToDatetime(tzinfo=UTC).astimezone(SEOUL).date()
                assert seat.start <= day and (seat.end is None or day <= seat.end)


def test_event_ids_are_unique_and_the_interleaving_keeps_every_event(scenario: Scenario) -> None:
    ids = [e.event_id for e in scenario.events()]
    assert len(ids) == scenario.event_count == len(set(ids))


def test_subscription_counts_follow_the_report(scenario: Scenario) -> None:
    subscribers = {s["id"]: s["governments"] for s in FACTS["services"]}
    for service in ("chatgpt", "claude", "midjourney", "gamma"):
        have = sum(service in g.services for g in scenario.governments)
        assert have == subscribers[service], service


def test_the_daily_curve_keeps_the_average_rate_and_peaks_in_office_hours() -> None:
    from loadtests.loadgen import DAILY_CURVE, curve_factor

    assert abs(sum(DAILY_CURVE) / 24 - 1) < 1e-9
    assert curve_factor(123.0, 0) == 1.0
    day = 240.0
    at = {hour: curve_factor(day * hour / 24, day) for hour in range(24)}
    assert at[10] > 2 * at[12] > at[3] * 10  # morning peak, lunch dip, quiet night
    assert curve_factor(day + day * 10 / 24, day) == at[10]  # the next day repeats
