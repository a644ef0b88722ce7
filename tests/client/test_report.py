"""The HTML report in a real browser: Debian's chromium, headless, opens the page built through
the client from the real query server on the embedded ClickHouse, draws it (the screenshot
shows the charts' colours) and its DOM holds the API's figures.

Two governments, January and February 2025: seats with their monthly charges priced by the
project's catalog (one seat idle), staff use under the seats, metered API calls, and alerts of
three types. chromium comes from scripts/chromium.sh (`make unit` runs it); without it the test
fails, it never skips.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from clickhouse_connect.driver.client import Client

from civicmeter.__main__ import main
from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.seoul import SEOUL
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.billing.seat_ledger import charge_event
from civicmeter.client import CivicmeterClient
from civicmeter.client.report import gather, krw, render
from civicmeter.client.report.svg import PALETTE
from civicmeter.core.access.auth import hash_token
from civicmeter.core.config import ClickHouseSettings, QuerySettings
from civicmeter.core.pricing import PriceCatalog, load_catalog
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.seats import Seat, sync_seats
from civicmeter.query.access import AuditLog
from civicmeter.query.server import build_server
from civicmeter.sink.alert_writer import write_alerts
from civicmeter.sink.event_writer import write_events
from tests.factories import event, user_id
from tests.query.live_server import free_port

REPO = Path(__file__).resolve().parents[2]
PRICES = REPO / "config" / "prices.yaml"
ADMIN = "cmk_report_admin"
SEOUL_KEY = "cmk_report_seoul"
JAN, FEB = date(2025, 1, 1), date(2025, 2, 1)
# (organisation, service, plan, holders); the last Seoul ChatGPT holder never uses the seat.
SEATS = (
    ("seoul", "openai", "chatgpt", "team", ("kim", "lee", "park")),
    ("seoul", "anthropic", "claude", "team", ("kim", "choi")),
    ("busan", "openai", "chatgpt", "team", ("jung", "kang")),
)
IDLE = "park"
BLOCKED = (("seoul", JAN), ("seoul", JAN), ("seoul", FEB), ("busan", FEB))


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("chromium is not installed: run bash scripts/chromium.sh (make unit does)")
    return found


def rated(catalog: PriceCatalog, e: pb.UsageEvent) -> pb.RatedUsageEvent:
    rating = catalog.rate(e)
    return pb.RatedUsageEvent(
        event=e, cost_krw=str(rating.cost_krw), price_version=rating.price_version
    )


def dataset(catalog: PriceCatalog) -> tuple[list[Seat], list[pb.RatedUsageEvent]]:
    seats, events = [], []
    for org, provider, service, plan, holders in SEATS:
        for n, holder in enumerate(holders):
            seat = Seat(org, f"{service}-{n}", "welfare", user_id(holder), provider, service,
                        plan, JAN, None)  # fmt: skip
            seats.append(seat)
            events += [rated(catalog, charge_event(seat, month)) for month in (JAN, FEB)]
            if holder == IDLE:
                continue
            for day in range(2, 28, 5):  # staff use under the seat, included in the fee
                for month in (JAN, FEB):
                    when = datetime(month.year, month.month, day, 10, tzinfo=SEOUL)
                    events.append(rated(catalog, event(
                        organization_id=org, department_id="welfare", user_id=user_id(holder),
                        provider_name=provider, service_id=service, request_model="",
                        event_time=when, usage=pb.Usage(input_tokens=900,
                                                        output_tokens=300))))  # fmt: skip
    for n in range(12):  # metered API calls, priced per token
        org = ("seoul", "busan")[n % 2]
        when = datetime(2025, 1 + n % 2, 3 + n, 14, tzinfo=SEOUL)
        events.append(rated(catalog, event(
            organization_id=org, department_id="digital-policy", user_id=user_id("dev"),
            event_time=when, usage=pb.Usage(input_tokens=40_000 + 1_000 * n,
                                            output_tokens=5_000))))  # fmt: skip
    for n, (org, month) in enumerate(BLOCKED):  # refused by the gateway guard: rated 0
        when = datetime(month.year, month.month, 20, 11, n, tzinfo=SEOUL)
        refused = event(organization_id=org, user_id=user_id("kim"), event_time=when,
                        decision=pb.DECISION_DENY)  # fmt: skip
        events.append(pb.RatedUsageEvent(event=refused, cost_krw="0", price_version="v1"))
    return seats, events


def alerts() -> list[alert_pb2.Alert]:
    kinds = [("off_hours", "seoul", JAN), ("off_hours", "seoul", FEB), ("pii_sent", "seoul", FEB),
             ("banned_provider", "busan", JAN), ("off_hours", "busan", FEB)]  # fmt: skip
    made = []
    for n, (kind, org, month) in enumerate(kinds):
        message = alert_pb2.Alert(
            dedup_key=f"{kind}/{org}/{n}", alert_type=kind, severity=alert_pb2.SEVERITY_MEDIUM,
            organization_id=org, department_id="welfare", user_id=user_id("kim"),
            service_id="chatgpt", provider_name="openai", trigger_event_id=f"e{n}",
            explanation="used outside working hours")  # fmt: skip
        # Half past midnight of the 1st in Seoul: still the month before in UTC.
        message.first_seen_time.FromDatetime(
            datetime(month.year, month.month, 1, 0, 30 + n, tzinfo=SEOUL).astimezone(UTC)
        )
        message.last_seen_time.CopyFrom(message.first_seen_time)
        made.append(message)
    return made


@pytest.fixture
async def target(clickhouse: Client, tmp_path: Path) -> AsyncIterator[str]:
    seats, events = dataset(load_catalog(PRICES))
    sync_seats(clickhouse, seats)
    write_events(clickhouse, events)
    write_alerts(clickhouse, alerts(), 1_740_000_000_000)
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [
        {"id": "platform", "organization_id": "*", "role": "admin", "sha256": hash_token(ADMIN)},
        {"id": "seoul", "organization_id": "seoul", "role": "admin",
         "sha256": hash_token(SEOUL_KEY)},
    ]}))  # fmt: skip
    settings = QuerySettings(clickhouse=ClickHouseSettings(), grpc_port=free_port(),
                             reflection=False, api_keys_file=keys, rate_per_key=0,
                             cache_seconds=0, policy_file=tmp_path / "none.yaml")  # fmt: skip
    (tmp_path / "none.yaml").write_text(yaml.safe_dump({"version": "t"}))
    server = build_server(settings, Storage(clickhouse), AuditLog(Storage(clickhouse)))
    await server.start()
    yield f"127.0.0.1:{settings.grpc_port}"
    await server.stop(0)


class Figures(HTMLParser):
    """The page's figures: headline id -> (value, text); chart id -> series -> category ->
    (value, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.headlines: dict[str, tuple[str, str]] = {}
        self.charts: dict[str, dict[str, dict[str, tuple[str, str]]]] = {}
        self.svgs = 0
        self._chart = self._series = ""
        self._open: tuple[dict[str, tuple[str, str]], str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg":
            self.svgs += 1
        elif tag == "table" and "data-chart" in a:
            self._chart = a["data-chart"]
            self.charts[self._chart] = {}
        elif tag == "tr" and "data-series" in a:
            self._series = a["data-series"]
            self.charts[self._chart][self._series] = {}
        elif tag == "td" and "data-category" in a:
            cells = self.charts[self._chart][self._series]
            self._open = (cells, a["data-category"], a["data-value"])
        elif tag == "dd" and "data-figure" in a:
            self._open = (self.headlines, a["data-figure"], a["data-value"])

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            into, key, value = self._open
            into[key] = (value, data)
            self._open = None


def values(cells: dict[str, tuple[str, str]]) -> dict[str, Decimal]:
    return {category: Decimal(value) for category, (value, _) in cells.items()}


def png_pixels(path: Path) -> np.ndarray:
    """The RGB(A) pixels of a non-interlaced 8-bit PNG (what chromium writes), rows x columns
    x channels."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, compressed = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour_type in (2, 6) and not interlace
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            compressed += body
        pos += 12 + size
    raw = np.frombuffer(zlib.decompress(compressed), np.uint8).reshape(height, -1)
    stride = width * channels
    out = np.zeros((height + 1, stride), np.int32)  # row 0: the zero row above the image
    for y in range(height):
        method, line = int(raw[y, 0]), raw[y, 1:].astype(np.int32)
        above = out[y]
        if method == 0:
            row = line
        elif method == 2:
            row = (line + above) & 255
        elif method == 1:  # Sub: a running sum per channel
            row = np.cumsum(line.reshape(width, channels), axis=0).reshape(stride) & 255
        else:
            row = _sequential(line.tolist(), above.tolist(), channels, method)
        out[y + 1] = row
    return out[1:].reshape(height, width, channels).astype(np.uint8)


def _sequential(line: list[int], above: list[int], bpp: int, method: int) -> np.ndarray:
    """Average (3) and Paeth (4) rows, byte after byte: each byte needs the one to its left."""
    row = [0] * len(line)
    for i, x in enumerate(line):
        left = row[i - bpp] if i >= bpp else 0
        up = above[i]
        if method == 3:
            row[i] = (x + (left + up) // 2) & 255
            continue
        corner = above[i - bpp] if i >= bpp else 0
        p = left + up - corner
        pa, pb_, pc = abs(p - left), abs(p - up), abs(p - corner)
        guess = left if pa <= pb_ and pa <= pc else up if pb_ <= pc else corner
        row[i] = (x + guess) & 255
    return np.array(row, np.int32)


async def browse(page: Path, tmp_path: Path) -> tuple[str, Path]:
    """The DOM chromium builds from the page, and its screenshot (at half scale: a quarter of
    the pixels to decode), from one run."""
    shot = tmp_path / "report.png"
    # Root (CI containers) needs --no-sandbox.
    process = await asyncio.create_subprocess_exec(
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
        f"--screenshot={shot}", "--window-size=900,2600", "--force-device-scale-factor=0.5",
        page.as_uri(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(), shot


async def test_the_report_renders_in_chromium_with_the_apis_figures(
    target: str, tmp_path: Path
) -> None:
    async with CivicmeterClient(target, ADMIN) as api:
        report = await gather(api, JAN, FEB, names={"seoul": "Seoul", "busan": "Busan"})
        by_org = {m: await api.cost_breakdown(*month_range(m), "organization") for m in (JAN, FEB)}
        by_service = {m: await api.cost_breakdown(*month_range(m), "service") for m in (JAN, FEB)}
        seats = await api.seat_summary(FEB, "service")
        per_org = {org: await api.seat_summary(FEB, "service", organization_id=org)
                   for org in ("seoul", "busan")}  # fmt: skip
        listed = [a async for a in api.alerts()]
        decisions = {
            (org, month): await api.usage(*month_range(month), group_by=["decision"],
                                          organization_id=org)
            for org in ("seoul", "busan") for month in (JAN, FEB)
        }  # fmt: skip
    html = render(report)
    assert "<script" not in html and not re.search(r"\b(src|href)=", html), "self-contained"
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    dom, shot = await browse(page, tmp_path)

    figures = Figures()
    figures.feed(dom)
    assert figures.svgs == 6, "a chart per section, drawn inline"
    spend = figures.charts["spend-by-organization"]
    names = {"seoul": "Seoul", "busan": "Busan"}
    for month, breakdown in by_org.items():
        for line in breakdown.lines:
            value, text = spend[names[line.key]][f"{month:%Y-%m}"]
            assert Decimal(value) == line.cost_krw and text == krw(line.cost_krw)
    services = figures.charts["spend-by-service"]
    assert set(services) == {line.key for b in by_service.values() for line in b.lines}
    assert int(figures.headlines["services"][0]) == len(services) == 3
    for month, breakdown in by_service.items():
        for line in breakdown.lines:
            assert Decimal(services[line.key][f"{month:%Y-%m}"][0]) == line.cost_krw
    total = sum((b.total_krw for b in by_org.values()), Decimal(0))
    assert Decimal(figures.headlines["spend"][0]) == total
    assert figures.headlines["spend"][1] == krw(total)

    held = figures.charts["seats-by-service"]
    assert values(held["in use"]) == {
        **{line.key: Decimal(line.seats - line.idle_seats) for line in seats.lines if line.seats},
        "total": Decimal(seats.total.seats - seats.total.idle_seats),
    }
    assert values(held["idle"])["chatgpt"] == 1 == seats.total.idle_seats  # park's seat
    assert int(figures.headlines["seats"][0]) == seats.total.seats == 7
    per_user = values(figures.charts["cost-per-active-user-by-government"]["KRW per active user"])
    assert per_user == {names[org]: s.total.cost_per_active_user_krw for org, s in per_org.items()}

    counted = figures.charts["alerts-by-type"]
    for kind in {a.alert_type for a in listed}:
        for month in (JAN, FEB):
            expected = sum(
                1 for a in listed if a.alert_type == kind
                and a.first_seen_time.ToDatetime(UTC).astimezone(SEOUL).month == month.month
            )  # fmt: skip
            assert Decimal(counted[kind][f"{month:%Y-%m}"][0]) == expected
    assert values(counted["off_hours"]) == {"2025-01": 1, "2025-02": 2, "total": 3}
    assert Decimal(figures.headlines["alerts"][0]) == len(listed) == 5

    blocked = figures.charts["blocked-requests"]
    for org in ("seoul", "busan"):
        for month in (JAN, FEB):
            decided = decisions[org, month]
            denied = sum(line.event_count for line in decided.lines
                         if line.group["decision"] == "deny")  # fmt: skip
            assert Decimal(blocked[names[org]][f"{month:%Y-%m}"][0]) == denied
    assert values(blocked["Seoul"]) == {"2025-01": 2, "2025-02": 1, "total": 3}
    assert int(figures.headlines["blocked"][0]) == len(BLOCKED)

    pixels = png_pixels(shot)
    assert pixels.shape[:2] == (1300, 450)
    colours = {tuple(p) for p in pixels[:, :, :3].reshape(-1, 3)[::7].tolist()}
    drawn = {c for c in PALETTE if tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) in colours}
    assert len(colours) > 50, f"the screenshot is nearly blank: {len(colours)} colours"
    assert len(drawn) >= 4, f"only {sorted(drawn)} of the charts' colours are on screen"


def month_range(month: date) -> tuple[datetime, datetime]:
    after = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return (datetime(month.year, month.month, 1, tzinfo=SEOUL),
            datetime(after.year, after.month, 1, tzinfo=SEOUL))  # fmt: skip


def test_won_are_rounded_half_up_and_grouped() -> None:
    cases = {"1234567.5": "₩1,234,568", "1234567.49": "₩1,234,567", "-0.4": "₩0",
             "-2500.5": "-₩2,501", "0": "₩0"}  # fmt: skip
    assert {text: krw(Decimal(text)) for text in cases} == cases


async def test_civicmeter_report_writes_an_organisations_month(target: str, tmp_path: Path) -> None:
    output = tmp_path / "seoul.html"
    argv = ["report", "--month", "2025-01", "--organization", "seoul", "--output", str(output),
            "--target", target, "--token", SEOUL_KEY]  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        await asyncio.to_thread(main, argv)
    assert exited.value.code == 0
    figures = Figures()
    figures.feed(output.read_text(encoding="utf-8"))
    async with CivicmeterClient(target, SEOUL_KEY) as api:
        january = await api.cost_breakdown(*month_range(JAN), "service")
        seats = await api.seat_summary(JAN, "service")
    assert list(figures.charts["spend-by-organization"]) == ["seoul"]  # Busan is not Seoul's
    services = figures.charts["spend-by-service"]
    assert {key: values(cells)["2025-01"] for key, cells in services.items()} == {
        line.key: line.cost_krw for line in january.lines
    }
    per_user = values(figures.charts["cost-per-active-user-by-service"]["KRW per active user"])
    assert per_user == {
        line.key: line.cost_per_active_user_krw for line in seats.lines
        if line.cost_per_active_user_krw is not None
    }  # fmt: skip
    assert Decimal(figures.headlines["spend"][0]) == january.total_krw
