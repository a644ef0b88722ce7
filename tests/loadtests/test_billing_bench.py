"""The billing benchmark's figures are right, on a small dataset: every generated event is rated
as the catalog rates it, the expected answers are the sums of the stored events, the query
service's answers the benchmark accepts are exactly those, and a wrong answer is caught."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from civicmeter.api.money import to_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.pricing import load_catalog
from civicmeter.core.store.connection import connect
from loadtests.billing_bench import (
    DIMENSIONS,
    PAGE_SIZE,
    SEOUL,
    Dataset,
    Expected,
    LoadReport,
    check_answer,
    drive,
    edge_instants,
    foreign_organization_refused,
    in_child,
    load,
    percentile,
    query_service,
    questions,
    verify_all_pages,
)
from loadtests.stack import DEFAULT_PRICES

pytestmark = pytest.mark.clickhouse

# More users than a page holds, so the breakdown by user takes two pages.
DATASET = Dataset(events=20_000, other_events=4_000, users=1_200, others=("busan", "gyeonggi"))
COLUMNS = ("organization_id", "department_id", "user_id", "service_id", "provider_name",
           "request_model", "operation_name", "event_id", "price_version", *QUANTITIES)  # fmt: skip


def stored_events(path: Path) -> list[dict[str, Any]]:
    """Every stored event, read raw (runs in a child process, as the engine is per process)."""
    client = connect(ClickHouseSettings(path=str(path)))
    rows = client.query(
        f"SELECT {', '.join(COLUMNS)}, toUnixTimestamp64Milli(event_time), toString(cost_krw) "
        "FROM usage_events"
    ).result_rows
    client.close()
    return [
        {**dict(zip(COLUMNS, row, strict=False)), "ms": int(row[-2]), "cost": Decimal(row[-1])}
        for row in rows
    ]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LoadReport]:
    workdir = tmp_path_factory.mktemp("billing-bench")
    return workdir, in_child(load, workdir / "chdb", DATASET, 7_000)  # several chunks


@pytest.fixture(scope="module")
def events(loaded: tuple[Path, LoadReport]) -> list[dict[str, Any]]:
    return in_child(stored_events, loaded[0] / "chdb")


def test_every_event_is_rated_as_the_catalog_rates_it(events: list[dict[str, Any]]) -> None:
    catalog = load_catalog(DEFAULT_PRICES)
    assert len({e["event_id"] for e in events}) == len(events)  # no duplicates: FINAL is moot
    for row in events:
        event = pb.UsageEvent(
            organization_id=row["organization_id"], provider_name=row["provider_name"],
            service_id=row["service_id"], request_model=row["request_model"],
            operation_name=row["operation_name"],
            usage=pb.Usage(**{unit: row[unit] for unit in QUANTITIES if row[unit]}),
        )  # fmt: skip
        event.event_time.FromMilliseconds(row["ms"])
        rating = catalog.rate(event)
        assert (row["cost"], row["price_version"]) == (rating.cost_krw, rating.price_version), row
    assert sum(e["cost"] > 0 for e in events) > len(events) // 10  # costs are not all zero


def test_expected_answers_are_the_sums_of_the_stored_events(
    loaded: tuple[Path, LoadReport], events: list[dict[str, Any]]
) -> None:
    report = loaded[1]
    for question in questions(DATASET.year):
        start, end = (round(t.timestamp() * 1000) for t in (question.start, question.end))
        column = DIMENSIONS[question.dimension][1]
        costs: dict[str, Decimal] = defaultdict(Decimal)
        counts: dict[str, int] = defaultdict(int)
        for e in events:
            if e["organization_id"] == DATASET.organization and start <= e["ms"] < end:
                costs[e[column]] += e["cost"]
                counts[e[column]] += 1
        want = Expected(sum(costs.values(), Decimal(0)),
                        [(k, costs[k], counts[k]) for k in sorted(costs)])  # fmt: skip
        assert report.expected[question.name] == want, question.name
    main = questions(DATASET.year)[0]
    assert report.main_range_events == report.expected[main.name].events >= DATASET.events


def test_the_dataset_has_the_shape_asked_for(
    loaded: tuple[Path, LoadReport], events: list[dict[str, Any]]
) -> None:
    report = loaded[1]
    ours = [e for e in events if e["organization_id"] == DATASET.organization]
    departments = {e["department_id"] for e in ours}
    assert departments <= set(DATASET.department_names())
    assert report.departments == len(departments) > DATASET.departments * 0.8
    assert report.users == len({e["user_id"] for e in ours}) > PAGE_SIZE
    assert report.events == {
        org: sum(e["organization_id"] == org for e in events)
        for org in (DATASET.organization, *DATASET.others)
    }
    at = {e["ms"] for e in ours}
    for edge in edge_instants(DATASET.year):
        millis = round(edge.timestamp() * 1000)
        assert {millis - 1, millis} <= at, edge
    assert report.tables["usage_events"].rows == len(events)
    months = {datetime.fromtimestamp(e["ms"] / 1000, SEOUL).strftime("%Y-%m") for e in ours}
    assert {f"{DATASET.year}-{m:02d}" for m in range(1, 13)} <= months


async def test_the_service_answers_are_checked_against_the_expected_ones(
    loaded: tuple[Path, LoadReport],
) -> None:
    workdir, report = loaded
    with query_service(workdir / "chdb", workdir, DATASET.organization) as (target, token, _):
        for question in questions(DATASET.year):
            expected = report.expected[question.name]
            assert await verify_all_pages(target, token, question, expected) == ""
            run = await drive(target, token, question, expected, calls=5, clients=2,
                              max_seconds=60)  # fmt: skip
            assert (len(run.latencies), run.errors, run.mismatches) == (5, [], [])
            assert run.qps == 5 / run.seconds
            off_by_a_millionth = replace(expected, total=expected.total + Decimal("0.000001"))
            assert (await drive(target, token, question, off_by_a_millionth, calls=1,
                                clients=1, max_seconds=60)).mismatches  # fmt: skip
        assert await foreign_organization_refused(
            target, token, questions(DATASET.year)[0], DATASET.others[0]
        )


def test_a_wrong_line_or_page_token_is_a_mismatch() -> None:
    expected = Expected(Decimal("3.5"), [("a", Decimal("1.25"), 2), ("b", Decimal("2.25"), 1)])
    answer = query_pb.GetCostBreakdownResponse(total_cost=to_money(expected.total))
    for key, cost, count in expected.lines:
        answer.lines.add(key=key, cost=to_money(cost), event_count=count)
    assert check_answer(answer, expected) is None
    answer.lines[1].event_count = 2
    assert check_answer(answer, expected)
    answer.lines[1].event_count = 1
    answer.next_page_token = "more"
    assert check_answer(answer, expected)


def test_percentile_is_the_nearest_rank() -> None:
    rng = random.Random(5)
    for n in (1, 2, 7, 100, 301):
        values = [rng.random() for _ in range(n)]
        for p in (50, 90, 99, 100):
            x = percentile(values, p)
            at_or_below = sum(v <= x for v in values)
            assert x in values and at_or_below >= p / 100 * n
            assert sum(v < x for v in values) < p / 100 * n  # nothing smaller qualifies
