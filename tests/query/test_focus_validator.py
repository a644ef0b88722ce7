"""The FOCUS export judged by the FinOps Foundation's own validator (focus-validator, FOCUS 1.2
rules), with civicmeter's declared capabilities: no rule may fail that a dataset can satisfy
(one of the InvoiceId nullability pair fails on any dataset; see UNDECIDABLE).

The data is small but has every kind of line: seats (Purchase), metered API use with input and
output tokens at KRW and USD prices, a contract's negotiated price, events that arrived late
inside the open month, and a re-rating of January made in February (a Correction). It is rated
with the project's own catalog, stored in real ClickHouse (chDB) and exported through the real
query server and client, as CSV and as Parquet.

The validator lives in its own virtualenv (scripts/focus_validator.sh; `make unit` installs
it). Without it the test skips on a developer's machine and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from clickhouse_connect.driver.client import Client

from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.seoul import SEOUL
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.client import CivicmeterClient
from civicmeter.client.focus_export import SUPPORTED, month_range, write_focus
from civicmeter.core.pricing import PriceCatalog, load_catalog, parse_catalog
from civicmeter.core.pricing.catalog_source import CatalogSource
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.ledger import CORRECTION_COLUMNS
from civicmeter.query.access import AccessInterceptor
from civicmeter.query.focus import usage_lines
from civicmeter.query.focus_charges import UsageCharge
from civicmeter.query.usage_api import QueryService
from civicmeter.sink.event_writer import write_events
from tests.factories import event

REPO = Path(__file__).resolve().parents[2]
PRICES = REPO / "config" / "prices.yaml"
INSTALLER = REPO / "scripts" / "focus_validator.sh"
JAN = datetime(2025, 1, 1, tzinfo=SEOUL)
FEB = datetime(2025, 2, 1, tzinfo=SEOUL)
# The contract of the data: Seoul's negotiated price for gpt-4o input tokens from February.
CONTRACT = {
    "contract": "seoul-2025",
    "organization": "seoul",
    "effective_from": "2025-02-01T00:00:00+09:00",
    "currency": "USD",
    "prices": [
        {"provider": "openai", "service": "openai-api", "model": "gpt-4o",
         "unit": "input_tokens", "price": "2.25", "per": 1000000},
    ],
}  # fmt: skip


def validator() -> Path:
    path = Path(
        subprocess.run(
            ["bash", str(INSTALLER), "--print-bin-dir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    binary = path / "focus-validator"
    if not binary.exists():
        message = f"focus-validator is not installed: run bash {INSTALLER} (make unit does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def catalog_with_contract(tmp_path: Path) -> Path:
    """The project's catalog plus a contract, next to the project's FX table."""
    document: dict[str, Any] = yaml.safe_load(PRICES.read_text())
    document["fx_file"] = str(PRICES.parent / document["fx_file"])
    document["contracts"] = [CONTRACT]
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def rated(catalog: PriceCatalog, i: int, when: datetime, **fields: Any) -> pb.RatedUsageEvent:
    late = fields.pop("late", False)
    e = event(event_id=f"f-{i}", event_time=when, **fields)
    rating = catalog.rate(e)
    return pb.RatedUsageEvent(
        event=e, cost_krw=str(rating.cost_krw), price_version=rating.price_version, late=late
    )


def dataset(catalog: PriceCatalog) -> list[pb.RatedUsageEvent]:
    out = []
    i = 0
    for org, departments in (("seoul", ("welfare", "transport")), ("busan", ("ocean",))):
        for month in (JAN, FEB):
            for d, department in enumerate(departments):
                for seat_plan in (("openai", "chatgpt", "business"), ("anthropic", "claude", "")):
                    provider, service, plan = seat_plan
                    i += 1
                    out.append(rated(
                        catalog, i, month + timedelta(hours=1), organization_id=org,
                        department_id=department, provider_name=provider, service_id=service,
                        request_model=plan, operation_name="subscription",
                        usage=pb.Usage(seat_months=1),
                    ))  # fmt: skip
                for day in range(0, 27, 3):
                    for model, tokens in (("gpt-4o", 1200), ("gpt-4o-mini", 5300)):
                        i += 1
                        late = day == 24  # arrived hours late, while the month was open
                        out.append(rated(
                            catalog, i, month + timedelta(days=day, hours=10 + d),
                            organization_id=org, department_id=department,
                            provider_name="openai", service_id="openai-api",
                            request_model=model, operation_name="chat",
                            purpose="drafting" if day % 2 else "",
                            usage=pb.Usage(input_tokens=tokens + 7 * day + i,
                                           output_tokens=tokens // 3 + i, requests=1),
                            late=late,
                        ))  # fmt: skip
                    i += 1
                    out.append(rated(
                        catalog, i, month + timedelta(days=day, hours=15),
                        organization_id=org, department_id=department,
                        provider_name="openai", service_id="chatgpt", request_model="business",
                        operation_name="chat", usage=pb.Usage(input_tokens=800, output_tokens=300),
                    ))  # fmt: skip
    return out


def january_rerating(
    clickhouse: Client, events: list[pb.RatedUsageEvent], catalog: PriceCatalog
) -> Decimal:
    """Re-rate Seoul's January gpt-4o use in February at a corrected price (+0.0002 KRW an
    input token), as `civicmeter rerate` records it; the sum of the deltas."""
    rows, total = [], Decimal(0)
    corrected = datetime(2025, 2, 10, 9, tzinfo=UTC)
    for rated_event in events:
        e = rated_event.event
        when = e.event_time.ToDatetime(UTC)
        if e.organization_id != "seoul" or e.request_model != "gpt-4o" or when >= FEB:
            continue
        delta = Decimal("0.0002") * e.usage.input_tokens
        total += delta
        rows.append([
            e.organization_id, e.department_id, e.user_id, e.event_id, when, e.service_id,
            e.provider_name, e.request_model, e.operation_name, e.purpose, delta,
            rated_event.price_version, "2024-10-corrected", "rerate-test", corrected,
        ])  # fmt: skip
    clickhouse.insert("cost_corrections", rows, column_names=CORRECTION_COLUMNS)
    return total


@pytest.fixture
async def exported(clickhouse: Client, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    prices = catalog_with_contract(tmp_path)
    catalog = load_catalog(prices)
    events = dataset(catalog)
    write_events(clickhouse, events)
    correction = january_rerating(clickhouse, events, catalog)
    server = grpc.aio.server(interceptors=[AccessInterceptor(None, None)])  # open access
    service = QueryService(Storage(clickhouse), prices=CatalogSource(prices))
    query_grpc.add_QueryServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    start, end = month_range("2025-01", "2025-02", "Asia/Seoul")
    files = {"csv": tmp_path / "focus.csv", "parquet": tmp_path / "focus.parquet"}
    async with CivicmeterClient(f"127.0.0.1:{port}") as api:
        rows = [row async for row in api.export_usage(start, end, include_users=True)]
        with files["csv"].open("wb") as out:
            await write_focus(api.export_usage(start, end, include_users=True), out, "csv")
    # The Parquet file as the command writes it.
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "civicmeter", "export", "focus", "--from", "2025-01", "--to",
        "2025-02", "--format", "parquet", "--users", "--output", str(files["parquet"]),
        env={**os.environ, "CIVICMETER_QUERY_TARGET": f"127.0.0.1:{port}"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    said, _ = await asyncio.wait_for(command.communicate(), 120)
    assert command.returncode == 0, said.decode()
    assert f"wrote {len(rows)} FOCUS line(s)" in said.decode()
    await server.stop(None)
    yield {"rows": rows, "files": files, "events": events, "correction": correction}


def run_validator(path: Path, file_format: str) -> str:
    result = subprocess.run(
        [str(validator()), "--data-file", str(path), "--data-format", file_format,
         "--validate-version", "1.2", "--applicability-criteria", ",".join(SUPPORTED)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


# FOCUS 1.2 makes InvoiceId null when a charge has no invoice (C-004) and not null when it has
# one (C-005). The rule model the validator ships (model-1.2.0.1.json, also FOCUS_Spec's current
# requirements model) encodes both with an empty Condition, so it checks each on every row:
# with the column present and any row, one of the pair fails whatever the data (all null: C-005;
# none null: C-004; mixed: both), and without the column 7 InvoiceId rules fail. Only their
# composite C-003 ("either holds") is decidable, and passes. An open upstream report:
# FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec#2394. civicmeter's lines name the organisation's
# monthly statement, so C-004 is the one; every row counts against it, and only it fails.
UNDECIDABLE = {"InvoiceId-C-004-C"}


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_the_validator_fails_no_rule_a_dataset_can_satisfy(
    exported: dict[str, Any], file_format: str
) -> None:
    output = run_validator(exported["files"][file_format], file_format)
    summary = re.search(r"Pass:\s*(\d+)\s*\|\s*Fail:\s*(\d+)", output)
    assert summary is not None, output[-4000:]
    failing = set(re.findall(r"\u274c (\S+): FAIL", output))
    assert int(summary[2]) == len(failing), output[-6000:]
    assert failing <= UNDECIDABLE, output[-6000:]
    assert "\u2705 InvoiceId-C-003-C: PASS" in output
    assert "\u2705 InvoiceId-C-005-C: PASS" in output
    if failing:  # it fails for naming an invoice on every line, not for anything a row lacks
        violations = re.search(r"\u274c InvoiceId-C-004-C: FAIL\s+\(violations=(\d+)", output)
        assert violations is not None and int(violations[1]) == len(exported["rows"]), output
    assert int(summary[1]) > 150  # the rules civicmeter's columns bring in were checked


def test_without_invoice_ids_the_other_rule_of_the_pair_fails(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    """The exemption above holds only while the validator cannot decide the pair: the same
    lines with no invoice named fail C-005 instead. (A validator that learns which charges are
    invoiced fails this test, and UNDECIDABLE can go.)"""
    with exported["files"]["csv"].open(newline="", encoding="utf-8") as source:
        rows = list(csv.DictReader(source))
    blank = tmp_path / "no-invoice.csv"
    with blank.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "InvoiceId": ""} for row in rows)
    output = run_validator(blank, "csv")
    assert set(re.findall(r"\u274c (\S+): FAIL", output)) == {"InvoiceId-C-005-C"}, output[-6000:]
    assert "\u2705 InvoiceId-C-004-C: PASS" in output


def test_lines_add_up_to_the_ledger_and_price_each_unit(exported: dict[str, Any]) -> None:
    rows, events = exported["rows"], exported["events"]
    rated_cost = sum((Decimal(e.cost_krw) for e in events), Decimal(0))
    billed = sum((row["BilledCost"] for row in rows), Decimal(0))
    assert billed == rated_cost + exported["correction"]
    usage = [row for row in rows if row["ChargeClass"] is None]
    assert sum(row["x_EventCount"] for row in usage if row["SkuMeter"] == "Requests") == len(
        [e for e in events if e.event.usage.requests]
    )
    # Input and output tokens are separate SKU prices; quantity x unit price = contracted cost.
    for row in usage:
        product = row["PricingQuantity"] * row["ContractedUnitPrice"]
        assert abs(product - row["ContractedCost"]) <= Decimal("0.000001"), row
    meters = {row["SkuMeter"] for row in usage if row["ServiceName"] == "openai-api"}
    assert {"Input Tokens", "Output Tokens", "Requests"} <= meters
    # The contract's price is negotiated below the published one.
    negotiated = [row for row in usage if row["ContractedUnitPrice"] != row["ListUnitPrice"]]
    assert negotiated
    assert all(row["ContractedUnitPrice"] < row["ListUnitPrice"] for row in negotiated)
    assert {row["BillingAccountId"] for row in negotiated} == {"seoul"}
    # Seats are purchases without a consumed quantity.
    seats = [row for row in usage if row["ChargeCategory"] == "Purchase"]
    assert len(seats) == 12  # 2 plans x 3 departments x 2 months
    assert all(row["ConsumedQuantity"] is None and row["PricingQuantity"] == 1 for row in seats)
    # Late events are ordinary usage; the only correction is February's re-rating of January.
    corrections = [row for row in rows if row["ChargeClass"] == "Correction"]
    assert sum((row["BilledCost"] for row in corrections), Decimal(0)) == exported["correction"]
    assert {row["BillingPeriodStart"] for row in corrections} == {"2025-01-31T15:00:00Z"}
    assert all(row["ChargePeriodStart"] < "2025-01-31T15:00:00Z" for row in corrections)
    assert all(row["BillingAccountName"] and row["SubAccountName"] for row in rows)
    assert all(isinstance(row["Tags"], str) for row in rows)
    assert {row["Tags"] for row in rows} == {"{}", '{"purpose": "drafting"}'}


def test_unknown_price_versions_stay_one_line_per_charge() -> None:
    """A version the catalog does not know (deleted from the file) is exported without unit
    prices rather than with invented ones."""
    price = {"provider": "x", "service": "y", "unit": "requests", "price": "1"}
    version = {"version": "other", "effective_from": "2020-01-01", "prices": [price]}
    catalog = parse_catalog({"versions": [version]})

    charge = UsageCharge(
        day=JAN.astimezone(UTC), seoul_date=JAN.date(), keys=("seoul", "welfare", "openai-api",
        "openai", "gpt-4o", "chat", ""), price_version="2024-10", events=3,
        quantities={"input_tokens": 10, "output_tokens": 5}, events_with={"input_tokens": 3,
        "output_tokens": 3}, cost=Decimal("1.5"),
    )  # fmt: skip
    dims = ["organization", "department", "service", "provider", "model", "operation", "purpose"]
    [line] = usage_lines([charge], dims, "Asia/Seoul", catalog)
    assert (line.billed_cost.units, line.billed_cost.nanos) == (1, 500_000_000)
    assert line.contracted_unit_price == line.pricing_quantity == ""
