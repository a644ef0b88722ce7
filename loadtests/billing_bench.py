"""Billing benchmark: a 12-month cost breakdown by department of one organisation with ten million
stored events, asked of the real query service over gRPC.

1. Fills a fresh embedded ClickHouse with a year of rated events for one organisation (about 50
   departments, 5,000 users, the services, models and operations of the 17-government scenario,
   priced by config/prices.yaml) and a few other organisations, generated inside ClickHouse by
   chunked `INSERT ... SELECT FROM numbers()`, so the materialized views fill the rollups as they
   do for the sink's inserts. A child process loads: the embedded engine opens a data path in
   one process at a time, and the query service needs it next.
2. Computes every expected answer from usage_events (FINAL) before the service starts.
3. For each question, first times the same breakdown in-process (no gRPC), with ClickHouse's
   own time per statement, to show where the time goes; then starts `civicmeter serve query`
   on the data as production does, with an API key of the organisation, the answer cache off
   (every call is a ClickHouse query) and no rate limit, and asks GetCostBreakdown: a warm-up,
   sequential calls, then concurrent clients, checking every answer (total and lines) against
   the expected one. The main question groups 12 whole Seoul months by department; service,
   user and two ranges that are not month-aligned come second.
4. Writes loadtests/BILLING_RESULTS.md and exits non-zero if any answer was wrong.

    python -m loadtests.billing_bench [--events 10000000] [--calls 300] [--clients 4]
        [--chunk-rows 1000000] [--data-dir DIR [--reuse]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast
from zoneinfo import ZoneInfo

import grpc
from clickhouse_connect.driver.client import Client

from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.access.auth import hash_token, new_token
from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.pricing import PriceCatalog, UnpricedError, load_catalog
from civicmeter.core.store.connection import connect
from civicmeter.core.store.migrations import migrate
from civicmeter.core.store.rollups import ROLLUPS as REGISTERED_ROLLUPS
from civicmeter.query import usage as planner
from civicmeter.query.usage import UsageQuery
from loadtests import measure
from loadtests.scenario import (
    API_MODELS,
    DEPARTMENTS,
    FILLER,
    SERVICES,
    SUBSCRIPTIONS,
    seat_usage,
)
from loadtests.stack import DEFAULT_PRICES, REPO, LocalStack, free_port

SEOUL = ZoneInfo("Asia/Seoul")
RESULTS = REPO / "loadtests" / "BILLING_RESULTS.md"
TARGET_P99_SECONDS = 0.050
PAGE_SIZE = 1000  # the API's maximum: department and service answers fit one page
DIMENSIONS = {
    "department": (query_pb.COST_DIMENSION_DEPARTMENT, "department_id"),
    "service": (query_pb.COST_DIMENSION_SERVICE, "service_id"),
    "user": (query_pb.COST_DIMENSION_USER, "user_id"),
}
SIZES = 64  # distinct quantity sets per product, each rated by the catalog for every day
TARIFF_TABLE = "billing_bench_tariff"  # the loader's own, dropped when it is done
OFFICE_HOURS = (9, 10, 10, 11, 11, 13, 14, 14, 15, 15, 16, 17)  # as the scenario's
_SAFE = re.compile(r"[A-Za-z0-9._:/@+-]*")

P = ParamSpec("P")
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# The dataset and the questions


@dataclass(frozen=True)
class Dataset:
    organization: str = "seoul"
    events: int = 10_000_000  # metered events of `organization`; seat-months and edges add more
    others: tuple[str, ...] = ("busan", "incheon", "daegu", "gyeonggi")
    other_events: int = 1_000_000  # spread evenly over `others`
    departments: int = 50
    users: int = 5_000  # per organisation
    year: int = 2025  # the 12 Seoul months of the main question
    api_permille: int = 150  # metered API calls (the rest is use under seats, included)
    after_hours_permille: int = 30  # any moment of the year; the rest in weekday office hours

    def department_names(self) -> list[str]:
        return [f"{DEPARTMENTS[i % len(DEPARTMENTS)]}-{i // len(DEPARTMENTS) + 1}"
                for i in range(self.departments)]  # fmt: skip

    def event_counts(self) -> list[tuple[str, int]]:
        share, rest = divmod(self.other_events, max(1, len(self.others)))
        others = [(org, share + (1 if i < rest else 0)) for i, org in enumerate(self.others)]
        return [(self.organization, self.events), *others]


@dataclass(frozen=True)
class Question:
    name: str
    dimension: str  # a key of DIMENSIONS
    start: datetime
    end: datetime
    main: bool = False


def questions(year: int) -> list[Question]:
    """The main question first; the ranges that are not month-aligned must be exact too."""
    start, end = datetime(year, 1, 1, tzinfo=SEOUL), datetime(year + 1, 1, 1, tzinfo=SEOUL)
    day, day_end = start.replace(day=16), end.replace(day=16)
    odd = timedelta(hours=10, minutes=23, seconds=17, milliseconds=123)
    return [
        Question("department, 12 Seoul months", "department", start, end, main=True),
        Question("service, 12 Seoul months", "service", start, end),
        Question("user, 12 Seoul months (first page)", "user", start, end),
        Question("department, 16 Jan to 16 Jan (Seoul days)", "department", day, day_end),
        Question("department, 16 Jan 10:23:17.123 to the same a year on (KST)", "department",
                 day + odd, day_end + odd),
    ]  # fmt: skip


def edge_instants(year: int) -> list[datetime]:
    """Every month start of the year and its end, and both ends of every question's range:
    the main organisation has an event at each of these instants and one millisecond before."""
    months = [datetime(year + m // 12, m % 12 + 1, 1, tzinfo=SEOUL) for m in range(13)]
    ends = [t for q in questions(year) for t in (q.start, q.end)]
    return sorted(set(months + ends))


@dataclass(frozen=True)
class Product:
    """What an event is about: a seat-month, a use under a seat, or a metered API call."""

    kind: str  # "seat", "use" or "api"
    service: str
    provider: str
    model: str
    operation: str

    def sizes(self) -> list[pb.Usage]:
        """SIZES quantity sets drawn as the scenario draws them (always the same ones)."""
        rng = random.Random(f"{self.kind}/{self.service}/{self.model}")
        if self.kind == "seat":
            return [pb.Usage(seat_months=1)] * SIZES
        if self.kind == "use":
            return [seat_usage(SERVICES[self.service], rng) for _ in range(SIZES)]
        sizes = []
        for _ in range(SIZES):
            tokens = rng.randint(200, 30_000)
            output = int(tokens * rng.uniform(0.05, 0.3))
            sizes.append(pb.Usage(input_tokens=tokens, output_tokens=output, requests=1))
        return sizes


@dataclass(frozen=True)
class Products:
    """An organisation's products: a seat-month and a use per subscribed service (index i of
    `services`), then the metered API models."""

    services: tuple[str, ...]
    items: tuple[Product, ...]

    @classmethod
    def of(cls, organization: str) -> Products:
        services = ("chatgpt", *SUBSCRIPTIONS.get(organization, ()))
        seats = [Product("seat", s, SERVICES[s].provider, "", "subscription") for s in services]
        uses = [Product("use", s, SERVICES[s].provider, "", SERVICES[s].operation)
                for s in services]  # fmt: skip
        api = [Product("api", service, provider, model, "chat")
               for provider, service, model in [m[:3] for m in API_MODELS] + [FILLER]]  # fmt: skip
        return cls(services, tuple(seats + uses + api))

    def seat(self, service: int) -> int:  # 0-based service index -> 1-based product index
        return 1 + service

    def use(self, service: int) -> int:
        return 1 + len(self.services) + service

    def api(self, model: int) -> int:
        return 1 + 2 * len(self.services) + model


# ---------------------------------------------------------------------------------------------
# Loading


def _q(value: str) -> str:
    """A SQL string literal of one of our own identifiers."""
    if not _SAFE.fullmatch(value):
        raise ValueError(f"unexpected characters in {value!r}")
    return f"'{value}'"


def _strings(values: Sequence[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _ints(values: Sequence[int]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _millis(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _days(year: int) -> list[date]:
    """Seoul days from the December before the year to the January after it."""
    first, last = date(year - 1, 12, 1), date(year + 1, 1, 31)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def tariff_rows(
    catalog: PriceCatalog, organization: str, products: Products, year: int
) -> list[list[object]]:
    """(product, size, first day, quantities..., cost, price version) of every stretch of Seoul
    days over which the catalog rates a product's size alike: the cost of each event is the
    catalog's own rating (FX rates and versions change by day at most; the loader's test
    re-rates every event to make sure)."""
    rows: list[list[object]] = []
    noons = [
        (day, int(datetime.combine(day, dt_time(12), SEOUL).timestamp())) for day in _days(year)
    ]
    for index, product in enumerate(products.items, start=1):
        event = pb.UsageEvent(
            organization_id=organization, provider_name=product.provider,
            service_id=product.service, request_model=product.model,
            operation_name=product.operation,
        )  # fmt: skip
        for size, usage in enumerate(product.sizes()):
            event.usage.CopyFrom(usage)
            quantities = [getattr(usage, q) for q in QUANTITIES]
            previous: tuple[Decimal, str] | None = None
            for day, noon in noons:
                event.event_time.seconds = noon
                try:
                    rating = catalog.rate(event)
                    priced = (rating.cost_krw, rating.price_version)
                except UnpricedError:
                    priced = (Decimal(0), "")  # an event on such a day fails the load
                if priced != previous:
                    previous = priced
                    rows.append([index, size, day, *quantities, *priced])
    return rows


def _insert_sql(org: str, dataset: Dataset, products: Products, draw: str) -> str:
    """INSERT of rated events from `draw`, a SELECT of (key, u, p, ms): the event's id suffix,
    user number, 1-based product index and epoch milliseconds. The quantities, cost and price
    version come from the tariff table (as of the event's Seoul day)."""
    departments = dataset.department_names()
    org_q = _q(org)
    return f"""
INSERT INTO usage_events (organization_id, department_id, user_id, event_id, event_time,
    gateway_id, account_kind, provider_name, service_id, request_model, operation_name, purpose,
    {", ".join(QUANTITIES)}, cost_krw, price_version, rated_time)
WITH
    {_strings(departments)} AS departments,
    {_strings([p.provider for p in products.items])} AS providers,
    {_strings([p.service for p in products.items])} AS services,
    {_strings([p.model for p in products.items])} AS models,
    {_strings([p.operation for p in products.items])} AS operations
SELECT {org_q},
    departments[1 + toUInt32({dataset.departments}
        * pow((cityHash64({org_q}, d.u, 'department') % 1000003) / 1000003, 1.6))],
    concat('u_', substring(lower(hex(SHA256(concat({org_q}, '-staff-', toString(d.u))))), 1, 32)),
    concat({org_q}, ':bench/', d.key),
    fromUnixTimestamp64Milli(toInt64(d.ms), 'UTC') AS time,
    concat('gw-', {org_q}, '-', toString(1 + d.u % 3)), 'organizational',
    providers[d.p], services[d.p], models[d.p], operations[d.p], 'administrative-work',
    {", ".join(f"t.{q}" for q in QUANTITIES)},
    t.cost_krw,
    if(throwIf(t.price_version = '', 'an event on a day not priced') = 0, t.price_version, ''),
    time
FROM
(
    SELECT key, u, p, ms, cityHash64(key, 'size') % {SIZES} AS size,
        toDate(fromUnixTimestamp64Milli(toInt64(ms), 'Asia/Seoul')) AS day
    FROM ({draw})
) AS d
ASOF LEFT JOIN {TARIFF_TABLE} AS t ON d.p = t.p AND d.size = t.size AND d.day >= t.first_day"""


def _tariff_table(client: Client, rows: list[list[object]]) -> None:
    quantities = ", ".join(f"{q} UInt64" for q in QUANTITIES)
    client.command(f"DROP TABLE IF EXISTS {TARIFF_TABLE}")
    client.command(
        f"CREATE TABLE {TARIFF_TABLE} (p UInt32, size UInt64, first_day Date, {quantities}, "
        "cost_krw Decimal(18, 6), price_version String) ENGINE = Memory"
    )
    client.insert(
        TARIFF_TABLE,
        rows,
        column_names=["p", "size", "first_day", *QUANTITIES, "cost_krw", "price_version"],
    )


def _holds(org_q: str, user: str, service: str, products: Products) -> str:
    """Whether user `user` holds a seat of service `service` (1-based): everyone holds ChatGPT,
    the others as many staff as the scenario's service weights say."""
    shares = [round(1000 * SERVICES[s].weight) for s in products.services]
    return f"cityHash64({org_q}, {user}, {service}, 'seat') % 1000 < {_ints(shares)}[{service}]"


def usage_draw(org: str, dataset: Dataset, products: Products, first: int, count: int) -> str:
    """Use under seats and metered API calls, numbers [first, first + count)."""
    org_q = _q(org)
    year = datetime(dataset.year, 1, 1, tzinfo=SEOUL)
    span = _millis(year.replace(year=dataset.year + 1)) - _millis(year)
    weekdays = [_millis(year + timedelta(days=d)) for d in range(366)
                if (year + timedelta(days=d)).year == dataset.year
                and (year + timedelta(days=d)).weekday() < 5]  # fmt: skip
    weights = [SERVICES[s].weight for s in products.services]
    cumulative = [round(1000 * sum(weights[: i + 1]) / sum(weights)) for i in range(len(weights))]
    api_cumulative = [round(1000 * sum(m[3] for m in API_MODELS[: i + 1]) * 0.85)
                      for i in range(len(API_MODELS))] + [1000]  # fmt: skip
    r = [f"cityHash64({org_q}, number, {k})" for k in range(10)]
    return f"""
        SELECT
            concat('use/', toString(number)) AS key,
            toUInt32({dataset.users} * pow(({r[1]} % 1000000) / 1000000, 1.5)) AS u,
            arrayFirstIndex(t -> {r[3]} % 1000 < t, {_ints(cumulative)}) AS service,
            multiIf(
                {r[2]} % 1000 < {dataset.api_permille},
                {products.api(0) - 1} + arrayFirstIndex(t -> {r[4]} % 1000 < t,
                    {_ints(api_cumulative)}),
                {_holds(org_q, "u", "service", products)}, {products.use(0) - 1} + service,
                {products.use(0)}) AS p,
            if({r[6]} % 1000 < {dataset.after_hours_permille},
               {_millis(year)} + {r[7]} % {span},
               {_ints(weekdays)}[1 + {r[7]} % {len(weekdays)}]
                   + {_ints(OFFICE_HOURS)}[1 + {r[8]} % {len(OFFICE_HOURS)}] * 3600000
                   + {r[9]} % 3600000) AS ms
        FROM numbers({first}, {count})"""


def seat_draw(org: str, dataset: Dataset, products: Products) -> str:
    """A seat-month per holder, service and month, charged on the month's first day."""
    n_services = len(products.services)
    months = [_millis(datetime(dataset.year, m, 1, tzinfo=SEOUL)) for m in range(1, 13)]
    return f"""
        SELECT
            number % {dataset.users} AS u,
            1 + intDiv(number, {dataset.users}) % {n_services} AS service,
            intDiv(number, {dataset.users * n_services}) AS m,
            concat('seat/', {_strings(products.services)}[service], '/',
                   toString(m + 1), '/', toString(u)) AS key,
            {products.seat(0) - 1} + service AS p,
            {_ints(months)}[m + 1] + 9 * 3600000 + (u % 60) * 60000 AS ms
        FROM numbers({dataset.users * n_services * 12})
        WHERE {_holds(_q(org), "u", "service", products)}"""


def edge_draw(dataset: Dataset, products: Products) -> str:
    """GPT-4o calls at each edge instant and one millisecond before it."""
    edges = [_millis(t) for t in edge_instants(dataset.year)]
    return f"""
        SELECT
            concat('edge/', toString(number)) AS key,
            (number * 7919) % {dataset.users} AS u,
            {products.api(0)} AS p,
            {_ints(edges)}[1 + intDiv(number, 2)] - number % 2 AS ms
        FROM numbers({2 * len(edges)})"""


@dataclass(frozen=True)
class Expected:
    """An answer computed from usage_events: the total and every line, ordered by key."""

    total: Decimal
    lines: list[tuple[str, Decimal, int]]  # (key, cost, events)

    @property
    def events(self) -> int:
        return sum(n for _, _, n in self.lines)


def reference(client: Client, organization: str, question: Question) -> Expected:
    """The answer from the stored events themselves (FINAL: exact, whatever merges have run)."""
    column = DIMENSIONS[question.dimension][1]
    where = (
        "organization_id = %(org)s AND event_time >= fromUnixTimestamp64Milli(%(start)s, 'UTC') "
        "AND event_time < fromUnixTimestamp64Milli(%(end)s, 'UTC')"
    )
    params = {"org": organization, "start": _millis(question.start), "end": _millis(question.end)}
    rows = client.query(
        f"SELECT {column} AS key, sum(cost_krw), count() FROM usage_events FINAL WHERE {where} "
        "GROUP BY key ORDER BY key",
        parameters=params,
    ).result_rows
    total = client.query(
        f"SELECT sum(cost_krw) FROM usage_events FINAL WHERE {where}", parameters=params
    ).result_rows[0][0]
    return Expected(Decimal(total or 0), [(str(k), Decimal(c), int(n)) for k, c, n in rows])


ROLLUPS = tuple(reversed([rollup.table for rollup in REGISTERED_ROLLUPS]))  # coarsest first


@dataclass(frozen=True)
class TableSize:
    rows: int
    parts: int
    bytes_on_disk: int


@dataclass(frozen=True)
class LoadReport:
    dataset: Dataset
    chunk_rows: int
    seconds: float
    merge_seconds: float  # then waiting for the background merges to settle
    chunk_seconds: list[float]
    events: dict[str, int]  # stored events by organisation
    main_range_events: int  # of the main organisation in the 12 months
    departments: int
    users: int
    tables: dict[str, TableSize]
    peak_rss_bytes: int
    expected: dict[str, Expected]  # by question name


def load(path: Path, dataset: Dataset, chunk_rows: int) -> LoadReport:
    """Migrate a fresh database at `path`, load the dataset, compute the expected answers.
    Runs in a child process (see in_child)."""
    client = connect(ClickHouseSettings(path=str(path)))
    migrate(client)
    catalog = load_catalog(DEFAULT_PRICES)
    started = time.perf_counter()
    chunk_seconds: list[float] = []
    for org, events in dataset.event_counts():
        products = Products.of(org)
        _tariff_table(client, tariff_rows(catalog, org, products, dataset.year))
        draws = [usage_draw(org, dataset, products, first, min(chunk_rows, events - first))
                 for first in range(0, events, chunk_rows)]  # fmt: skip
        draws.append(seat_draw(org, dataset, products))
        if org == dataset.organization:
            draws.append(edge_draw(dataset, products))
        for draw in draws:
            chunk_started = time.perf_counter()
            client.command(_insert_sql(org, dataset, products, draw))
            chunk_seconds.append(time.perf_counter() - chunk_started)
    client.command(f"DROP TABLE {TARIFF_TABLE}")
    seconds = time.perf_counter() - started
    merge_seconds = settle_merges(client)
    main = questions(dataset.year)[0]
    expected = {q.name: reference(client, dataset.organization, q) for q in questions(dataset.year)}
    by_org = client.query(
        "SELECT organization_id, count() FROM usage_events FINAL GROUP BY organization_id"
    ).result_rows
    shape = client.query(
        "SELECT uniqExact(department_id), uniqExact(user_id) FROM usage_events "
        "WHERE organization_id = %(org)s",
        parameters={"org": dataset.organization},
    ).result_rows[0]
    report = LoadReport(
        dataset=dataset,
        chunk_rows=chunk_rows,
        seconds=seconds,
        merge_seconds=merge_seconds,
        chunk_seconds=chunk_seconds,
        events={str(org): int(n) for org, n in by_org},
        main_range_events=expected[main.name].events,
        departments=int(shape[0]),
        users=int(shape[1]),
        tables={name: table_size(client, name) for name in ("usage_events", *ROLLUPS)},
        peak_rss_bytes=_peak_rss(),
        expected=expected,
    )
    client.close()
    return report


def settle_merges(client: Client, quiet_seconds: float = 5, limit_seconds: float = 3600) -> float:
    """Wait until no merge has run for `quiet_seconds`: the parts left are those ClickHouse's
    merge policy keeps, as in a store that has been running, rather than a bulk load's backlog
    (which would otherwise be merged by the query service while it is measured)."""
    started = time.monotonic()
    quiet_since: float | None = None
    while time.monotonic() - started < limit_seconds:
        running = int(client.query("SELECT count() FROM system.merges").result_rows[0][0])
        now = time.monotonic()
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_seconds:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def table_size(client: Client, table: str) -> TableSize:
    rows = int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])
    parts, size = client.query(
        "SELECT count(), sum(bytes_on_disk) FROM system.parts "
        "WHERE database = currentDatabase() AND table = %(t)s AND active",
        parameters={"t": table},
    ).result_rows[0]
    return TableSize(rows, int(parts), int(size))


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def in_child(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """fn(*args) in a fresh process, which exits after: its embedded engine closes with it."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


# ---------------------------------------------------------------------------------------------
# The query service and its clients


@contextmanager
def query_service(data: Path, workdir: Path, organization: str) -> Iterator[tuple[str, str, int]]:
    """`civicmeter serve query` on `data` as production runs it; yields (target, token, pid).
    The key is a finance reader's of `organization`; answers are not cached, nor calls limited."""
    token = new_token()
    keys = workdir / "api-keys.yaml"
    keys.write_text(
        f"keys:\n  - id: billing-bench\n    organization_id: {organization}\n"
        f"    role: finance-reader\n    sha256: {hash_token(token)}\n",
        encoding="utf-8",
    )
    port = free_port()
    env = {**os.environ, "CLICKHOUSE_INTERFACE": "chdb", "CLICKHOUSE_PATH": str(data),
           "CIVICMETER_QUERY_HOST": "127.0.0.1", "CIVICMETER_QUERY_GRPC_PORT": str(port),
           "CIVICMETER_API_KEYS_FILE": str(keys), "CIVICMETER_QUERY_CACHE_SECONDS": "0",
           "CIVICMETER_QUERY_RATE_PER_KEY": "0", "CIVICMETER_LOG_LEVEL": "WARNING"}  # fmt: skip
    target = f"127.0.0.1:{port}"
    with (workdir / "query.log").open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "civicmeter", "serve", "query"],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not LocalStack._grpc_serving(target):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the query service did not start; see {workdir / 'query.log'}")
            time.sleep(0.2)
        yield target, token, server.pid
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)


def request(
    question: Question, page_token: str = "", page_size: int = PAGE_SIZE
) -> query_pb.GetCostBreakdownRequest:
    message = query_pb.GetCostBreakdownRequest(
        group_by=DIMENSIONS[question.dimension][0], page_size=page_size, page_token=page_token
    )  # no organization_id: the key's organisation
    message.start_time.FromDatetime(question.start.astimezone(UTC))
    message.end_time.FromDatetime(question.end.astimezone(UTC))
    return message


def check_answer(
    answer: query_pb.GetCostBreakdownResponse,
    expected: Expected,
    offset: int = 0,
    page_size: int = PAGE_SIZE,
) -> str | None:
    """None when the answer is the expected total and lines [offset, offset + page_size),
    with a page token exactly when lines remain; otherwise what differs."""
    total = from_money(answer.total_cost)
    if total != expected.total or answer.total_cost.currency_code != "KRW":
        return (f"total {total} {answer.total_cost.currency_code} != {expected.total} KRW "
                f"(off by {total - expected.total})")  # fmt: skip
    want = expected.lines[offset : offset + page_size]
    got = [(line.key, from_money(line.cost), line.event_count) for line in answer.lines]
    if got != want:
        wrong = [(g, w) for g, w in zip(got, want, strict=False) if g != w][:3]
        return f"{len(got)} lines, {len(want)} expected; first differences (got, expected): {wrong}"
    if bool(answer.next_page_token) != (offset + page_size < len(expected.lines)):
        return f"next_page_token {'present' if answer.next_page_token else 'missing'} wrongly"
    return None


@dataclass
class Run:
    question: str
    clients: int
    latencies: list[float] = field(default_factory=list)  # seconds, of answered calls
    seconds: float = 0.0  # wall time of the run
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    server_cpu_percent: float = 0.0
    load_average: float = 0.0  # the machine's, over the last minute, at the end of the run

    @property
    def calls(self) -> int:
        return len(self.latencies) + len(self.errors)

    @property
    def qps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def drive(
    target: str, token: str, question: Question, expected: Expected, *,
    calls: int, clients: int, max_seconds: float,
) -> Run:  # fmt: skip
    """`calls` first pages spread over `clients` concurrent callers, each on its own channel,
    stopping early after `max_seconds`; every answer is checked. Each caller asks for its own
    page size (1,000, 999, ...): the service lets concurrent identical questions share one
    computation, and this measures calls that each run their own ClickHouse queries."""
    run = Run(question.name, clients)
    metadata = (("authorization", f"Bearer {token}"),)
    remaining = [calls]
    deadline = time.monotonic() + max_seconds

    async def caller(page_size: int) -> None:
        message = request(question, page_size=page_size)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = query_grpc.QueryServiceStub(channel)
            while remaining[0] > 0 and time.monotonic() < deadline:
                remaining[0] -= 1
                started = time.perf_counter()
                try:
                    answer = await stub.GetCostBreakdown(message, metadata=metadata, timeout=300)
                except grpc.aio.AioRpcError as exc:
                    run.errors.append(f"{exc.code().name}: {exc.details()}")
                    continue
                run.latencies.append(time.perf_counter() - started)
                problem = check_answer(answer, expected, page_size=page_size)
                if problem is not None:
                    run.mismatches.append(problem)

    started = time.perf_counter()
    await asyncio.gather(*(caller(PAGE_SIZE - n) for n in range(clients)))
    run.seconds = time.perf_counter() - started
    return run


async def verify_all_pages(target: str, token: str, question: Question, expected: Expected) -> str:
    """Walk every page once; '' when all of them are exactly the expected answer."""
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = query_grpc.QueryServiceStub(channel)
        page_token, offset = "", 0
        while True:
            try:
                answer = await stub.GetCostBreakdown(
                    request(question, page_token), metadata=metadata, timeout=300
                )
            except grpc.aio.AioRpcError as exc:
                return f"page at line {offset}: {exc.code().name}: {exc.details()}"
            problem = check_answer(answer, expected, offset)
            if problem is not None:
                return f"page at line {offset}: {problem}"
            if not answer.next_page_token:
                return ""
            page_token, offset = answer.next_page_token, offset + PAGE_SIZE


async def foreign_organization_refused(
    target: str, token: str, question: Question, other: str
) -> bool:
    """A key of one organisation asking for another gets PERMISSION_DENIED."""
    message = request(question)
    message.organization_id = other
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            await query_grpc.QueryServiceStub(channel).GetCostBreakdown(
                message, metadata=(("authorization", f"Bearer {token}"),), timeout=60
            )
        except grpc.aio.AioRpcError as exc:
            return bool(exc.code() == grpc.StatusCode.PERMISSION_DENIED)
    return False


# ---------------------------------------------------------------------------------------------
# Where the time goes: the same breakdown in-process, with ClickHouse's time per statement


@dataclass(frozen=True)
class Statement:
    table: str
    engine_seconds: float  # ClickHouse's own elapsed time
    seconds: float  # including clickhouse-connect's conversion of the result


class _StatementTimer:
    """Forwards to a client and notes every query's table and times."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.statements: list[Statement] = []

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = self._client.query(sql, *args, **kwargs)
        seconds = time.perf_counter() - started
        found = re.search(r"\bFROM\s+\(?\s*(?:SELECT\b.*?\bFROM\s+)?([A-Za-z_][\w]*)", sql, re.S)
        engine = int(result.summary.get("elapsed_ns", 0)) / 1e9
        self.statements.append(Statement(found.group(1) if found else "?", engine, seconds))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass(frozen=True)
class InProcess:
    calls: int
    seconds_p50: float  # the whole breakdown (both statements), no gRPC
    engine_p50: float  # ClickHouse's own time, both statements
    tables: str  # the tables the planner chose


def in_process(
    path: Path, organization: str, question: Question, calls: int, warmup: int, max_seconds: float
) -> InProcess:
    """The breakdown's usage query as the service runs it, on the same data (in a child
    process)."""
    client = connect(ClickHouseSettings(path=str(path)))
    timer = _StatementTimer(client)
    query = UsageQuery(question.start, question.end, (question.dimension,),
                       organization_id=organization, limit=PAGE_SIZE)  # fmt: skip
    durations: list[float] = []
    engine: list[float] = []
    deadline = time.monotonic() + max_seconds
    for n in range(warmup + calls):
        timer.statements.clear()
        started = time.perf_counter()
        planner.usage(cast(Client, timer), query, quantities=False)
        if n >= warmup:
            durations.append(time.perf_counter() - started)
            engine.append(sum(s.engine_seconds for s in timer.statements))
        if time.monotonic() > deadline and durations:
            break
    client.close()
    tables = ", ".join(dict.fromkeys(s.table for s in timer.statements))
    return InProcess(len(durations), percentile(durations, 50), percentile(engine, 50), tables)


# ---------------------------------------------------------------------------------------------
# The report


def _machine() -> str:
    model = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) * 1024
    return (f"{model}, {len(os.sched_getaffinity(0))} cores, {memory / 2**30:.0f} GiB RAM, "
            f"Python {platform.python_version()}")  # fmt: skip


def _query_code() -> str:
    """Which query planner ran: the last commit of usage_api.py and usage.py, and local edits."""
    files = ["services/civicmeter/query/usage_api.py", "services/civicmeter/query/usage.py"]
    git = ["git", "-C", str(REPO)]
    last = subprocess.run([*git, "log", "-1", "--format=%h %s", "--", *files],
                          capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    dirty = subprocess.run([*git, "status", "--porcelain", "--", *files],
                           capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return f"`{last or 'unknown'}`" + (" plus uncommitted edits" if dirty else "")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _size(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def render(
    command: str, began: datetime, load_report: LoadReport, outcome: Outcome, loaded_now: bool
) -> str:
    runs, inside = outcome.runs, outcome.inside
    d = load_report.dataset
    main = next(q for q in questions(d.year) if q.main)
    main_seq = next(r for r in runs if r.question == main.name and r.clients == 1)
    p99 = percentile(main_seq.latencies, 99) if main_seq.latencies else math.inf
    exact = not main_seq.errors and not main_seq.mismatches
    verdict = "✓" if p99 < TARGET_P99_SECONDS and exact else "✗"
    chunks = load_report.chunk_seconds
    rows = sum(load_report.events.values())
    others = ", ".join(f"`{o}` {load_report.events.get(o, 0):,}" for o in d.others)
    lines = [
        "# Billing benchmark: a 12-month cost breakdown over gRPC",
        "",
        f"Written by `{command}` on {began:%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Machine: {_machine()}; embedded ClickHouse (chDB) in the query service's process; "
        "the benchmark's clients run on the same cores.",
        f"- Query code: {_query_code()}.",
        "- Service: `civicmeter serve query` with an API key of the organisation (finance "
        "reader), answer cache off (`CIVICMETER_QUERY_CACHE_SECONDS=0`: every call is a "
        "ClickHouse query), rate limit off.",
        "",
        "## Target",
        "",
        f"GetCostBreakdown by department over 12 whole Asia/Seoul months of one organisation "
        f"with {load_report.main_range_events:,} stored events, sequential calls: p99 "
        f"**{_ms(p99)}** against a target under {_ms(TARGET_P99_SECONDS)}: **{verdict}**"
        + ("" if exact else " (answers wrong or failing: see Correctness)"),
        "",
        "## Dataset",
        "",
        "| | |",
        "|---|---|",
        f"| organisation | `{d.organization}`: {load_report.main_range_events:,} events in "
        f"{d.year}-01..{d.year}-12 (Asia/Seoul), {load_report.departments} departments, "
        f"{load_report.users:,} users |",
        f"| other organisations | {others} |",
        "| mix | the scenario's services (ChatGPT, Claude, Midjourney, Gamma, Suno, Perplexity, "
        "Clova Dubbing, Bluedot by subscription), operations and purpose; "
        f"{d.api_permille / 10:g}% metered API calls (GPT-4o, Claude 3.5 Sonnet, GPT-4o mini), "
        "a seat-month per holder "
        "and month, costs in Decimal rated by config/prices.yaml; weekday office hours, "
        f"{d.after_hours_permille / 10:g}% at any time; events at every month boundary and "
        "range end and 1 ms before |",
        f"| stored events | {rows:,} (all organisations) |",
        f"| load | {load_report.seconds:,.0f} s ({rows / load_report.seconds:,.0f} events/s) "
        f"in {len(chunks)} `INSERT ... SELECT FROM numbers()` chunks of at most "
        f"{load_report.chunk_rows:,} rows (slowest {max(chunks):,.1f} s), materialized views "
        f"filling the rollups; then {load_report.merge_seconds:,.0f} s until background "
        f"merges settled; loader peak RSS {_size(load_report.peak_rss_bytes)}"
        + ("" if loaded_now else " (data reused from an earlier run)")
        + " |",
        "",
        "| table | rows | active parts | on disk |",
        "|---|---|---|---|",
    ]
    for name, size in load_report.tables.items():
        lines.append(f"| {name} | {size.rows:,} | {size.parts} | {_size(size.bytes_on_disk)} |")
    lines += [
        "",
        f"## Latency (client-side, per call; first page of up to {PAGE_SIZE:,} lines)",
        "",
        "A warm-up, then sequential calls (1 client), then concurrent ones, each client on "
        "its own channel and with its own page size (1,000, 999, ...), so that no call shares "
        "another's computation (the service lets identical concurrent questions share one). "
        "Runs stop early after the time cap. Server CPU is the query process's, over the run; "
        "machine load is the 1-minute load average at its end (2 cores: above 2, other work "
        "was queueing for them).",
        "",
        "| question | clients | calls | p50 | p90 | p99 | max | calls/s | server CPU "
        "| machine load | exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        ok = (
            "✓"
            if not run.errors and not run.mismatches
            else (f"✗ {len(run.mismatches)} wrong, {len(run.errors)} failed")
        )
        if run.latencies:
            figures = " | ".join(_ms(percentile(run.latencies, p)) for p in (50, 90, 99, 100))
        else:
            figures = " | ".join(["–"] * 4)
        lines.append(
            f"| {run.question} | {run.clients} | {run.calls} | {figures} | {run.qps:,.1f} | "
            f"{run.server_cpu_percent:.0f}% | {run.load_average:.1f} | {ok} |"
        )
    lines += [
        "",
        "## Where the time goes",
        "",
        "The same usage query GetCostBreakdown runs, in one process on the same data just "
        "before the service is started for the question (no gRPC, no asyncio, no "
        "authentication or audit); ClickHouse's time is the engine's own elapsed time of its "
        "statements (a total and a grouped page); the rest of in-process is clickhouse-connect "
        "turning results into Python values. The last column is the gRPC p50 less the "
        "in-process p50.",
        "",
        "| question | planner's table | calls | ClickHouse p50 | in-process p50 | gRPC p50 "
        "| gRPC and service |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, inner in inside.items():
        seq = next((r for r in runs if r.question == name and r.clients == 1), None)
        rpc = percentile(seq.latencies, 50) if seq and seq.latencies else math.nan
        rest = (
            "–"
            if math.isnan(rpc)
            else f"{_ms(rpc - inner.seconds_p50)} ({(rpc - inner.seconds_p50) / rpc:.0%})"
        )
        lines.append(
            f"| {name} | {inner.tables} | {inner.calls} | {_ms(inner.engine_p50)} | "
            f"{_ms(inner.seconds_p50)} | {_ms(rpc)} | {rest} |"
        )
    lines += ["", "## Correctness", ""]
    lines.append(
        "Every answer's total and lines (key, cost, event count) are compared with the same "
        "breakdown computed once from usage_events FINAL before the service started."
    )
    lines.append("")
    for name, problem in outcome.pages.items():
        lines.append(f"- {name}: every page {'✓ exact' if not problem else '✗ ' + problem}")
    lines.append(
        f"- a key of `{d.organization}` asking for `{d.others[0] if d.others else '-'}`: "
        + ("✓ PERMISSION_DENIED" if outcome.tenant_refused else "✗ not refused")
    )
    for run in runs:
        for problem in [*run.mismatches[:3], *run.errors[:3]]:
            lines.append(f"- ✗ {run.question}, {run.clients} client(s): {problem}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The whole run


def _save(report: LoadReport, path: Path) -> None:
    path.write_text(json.dumps(asdict(report), default=str), encoding="utf-8")


def _restore(path: Path) -> LoadReport:
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["dataset"] = Dataset(**{**raw["dataset"], "others": tuple(raw["dataset"]["others"])})
    raw["tables"] = {k: TableSize(**v) for k, v in raw["tables"].items()}
    raw["expected"] = {
        k: Expected(Decimal(v["total"]), [(key, Decimal(c), n) for key, c, n in v["lines"]])
        for k, v in raw["expected"].items()
    }
    return LoadReport(**raw)


@dataclass
class Outcome:
    runs: list[Run]
    pages: dict[str, str]  # by question: '' when every page was exact, else what was not
    inside: dict[str, InProcess]
    tenant_refused: bool


def benchmark(
    data: Path, workdir: Path, report: LoadReport, *,
    calls: int, clients: int, warmup: int, max_seconds: float,
) -> Outcome:  # fmt: skip
    """Ask every question: first in-process, then of the service (warm-up, sequential calls,
    concurrent calls), so both meet the machine in much the same state."""
    d = report.dataset
    outcome = Outcome([], {}, {}, False)
    for n, question in enumerate(questions(d.year)):
        expected = report.expected[question.name]
        outcome.inside[question.name] = in_child(
            in_process, data, d.organization, question, calls // 6, warmup, max_seconds
        )
        with query_service(data, workdir, d.organization) as (target, token, pid):
            if n == 0 and d.others:
                outcome.tenant_refused = asyncio.run(
                    foreign_organization_refused(target, token, question, d.others[0])
                )
            outcome.pages[question.name] = asyncio.run(
                verify_all_pages(target, token, question, expected)
            )
            asyncio.run(drive(target, token, question, expected, calls=warmup, clients=1,
                              max_seconds=max_seconds))  # fmt: skip
            for n_clients in dict.fromkeys((1, clients)):
                before = measure.sample_process(pid)
                run = asyncio.run(drive(target, token, question, expected, calls=calls,
                                        clients=n_clients, max_seconds=max_seconds))  # fmt: skip
                cpu = measure.sample_process(pid).cpu_seconds - before.cpu_seconds
                run.server_cpu_percent = 100 * cpu / max(run.seconds, 1e-9)
                run.load_average = os.getloadavg()[0]
                outcome.runs.append(run)
                print(_summary(run), flush=True)
    return outcome


def _summary(run: Run) -> str:
    if not run.latencies:
        return f"{run.question}, {run.clients} client(s): no answers; {run.errors[:1]}"
    figures = ", ".join(f"p{p} {_ms(percentile(run.latencies, p))}" for p in (50, 90, 99))
    return (f"{run.question}, {run.clients} client(s): {run.calls} calls, {figures}, "
            f"max {_ms(max(run.latencies))}, {run.qps:,.1f} calls/s, "
            f"{len(run.mismatches)} wrong, {len(run.errors)} failed")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=Dataset.events)
    parser.add_argument("--other-events", type=int, default=Dataset.other_events)
    parser.add_argument("--users", type=int, default=Dataset.users)
    parser.add_argument("--departments", type=int, default=Dataset.departments)
    parser.add_argument("--chunk-rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=300, help="per run")
    parser.add_argument("--clients", type=int, default=4, help="concurrent callers")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=60, help="cap on each run")
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--reuse", action="store_true",
                        help="use the dataset already loaded in --data-dir")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    dataset = Dataset(events=args.events, other_events=args.other_events, users=args.users,
                      departments=args.departments)  # fmt: skip
    began = datetime.now(UTC)
    command = "python -m loadtests.billing_bench" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    temporary = args.data_dir is None
    workdir = Path(tempfile.mkdtemp(prefix="billing-bench-")) if temporary else args.data_dir
    data, saved = workdir / "chdb", workdir / "load.json"
    try:
        reused = args.reuse and saved.exists() and _restore(saved).dataset == dataset
        if reused:
            report = _restore(saved)
            print(f"reusing the dataset in {data}", flush=True)
        else:
            shutil.rmtree(data, ignore_errors=True)
            saved.unlink(missing_ok=True)
            workdir.mkdir(parents=True, exist_ok=True)
            print(f"loading {dataset.events:,} + {dataset.other_events:,} events into {data} "
                  f"in chunks of {args.chunk_rows:,}", flush=True)  # fmt: skip
            report = in_child(load, data, dataset, args.chunk_rows)
            _save(report, saved)
            print(f"loaded in {report.seconds:,.0f} s; rows: " + ", ".join(
                f"{k} {v.rows:,}" for k, v in report.tables.items()), flush=True)  # fmt: skip
        outcome = benchmark(data, workdir, report, calls=args.calls, clients=args.clients,
                            warmup=args.warmup, max_seconds=args.max_seconds)  # fmt: skip
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    text = render(command, began, report, outcome, loaded_now=not reused)
    args.results.write_text(text, encoding="utf-8")
    print(text)
    wrong = any(r.mismatches or r.errors for r in outcome.runs) or any(outcome.pages.values())
    return 1 if wrong or not outcome.tenant_refused else 0


if __name__ == "__main__":
    # Through the imported module, so what the child processes return unpickles here.
    from loadtests.billing_bench import main as imported_main

    raise SystemExit(imported_main())
