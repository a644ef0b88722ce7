"""`civicmeter export focus`: a FOCUS 1.2 cost and usage file (CSV or Parquet) of whole months,
from the query API's ExportUsage.

    civicmeter export focus --from 2025-01 --to 2025-02 [--organization seoul] \\
        [--format csv|parquet] [--output FILE] [--users]

--from and --to are months (both included) in the time zone (default Asia/Seoul). The query API
is CIVICMETER_QUERY_TARGET (default 127.0.0.1:50052), the token CIVICMETER_API_TOKEN; with
CIVICMETER_QUERY_TLS_CA the channel is TLS with that CA. Without --output the file is written
to standard output.

A FOCUS validator judges a file against what the provider declares it supports: SUPPORTED is
civicmeter's declaration (organisations have departments as sub-accounts, use is measured and
unit-priced, organisations can have negotiated contract prices, lines carry tags).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import re
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc

from civicmeter.client._client import CivicmeterClient
from civicmeter.client._usage import FOCUS_COLUMNS

Format = Literal["csv", "parquet"]
SUPPORTED: tuple[str, ...] = (
    "SUB_ACCOUNT_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
    "UNIT_PRICING_SUPPORTED",
    "NEGOTIATED_PRICING_SUPPORTED",
    "TAGGING_SUPPORTED",
)
DEFAULT_TARGET = "127.0.0.1:50052"
# Parquet column types: FOCUS decimals as exact decimals, counts as integers, the rest text.
_MONEY = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")
_QUANTITIES = ("ConsumedQuantity", "PricingQuantity", "ListUnitPrice", "ContractedUnitPrice")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


class ExportError(ValueError):
    """The command line cannot be carried out; the message names the option."""


def month_range(first: str, last: str, time_zone: str) -> tuple[datetime, datetime]:
    """[start of `first`, end of `last`) in the time zone; months are YYYY-MM."""
    try:
        tz = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExportError(f"--time-zone: {time_zone!r} is not an IANA time zone") from None
    start = _month(first, "--from", tz)
    end = _next_month(_month(last, "--to", tz))
    if end <= start:
        raise ExportError("--to: must not be before --from")
    return start, end


async def write_focus(
    rows: AsyncIterator[dict[str, object]], out: IO[bytes], file_format: Format
) -> int:
    """Write the rows as FOCUS CSV (header first, UTF-8) or Parquet; the number of rows."""
    if file_format == "csv":
        text = io.TextIOWrapper(out, encoding="utf-8", newline="")
        writer = csv.DictWriter(text, fieldnames=FOCUS_COLUMNS)
        writer.writeheader()
        count = 0
        async for row in rows:
            writer.writerow(row)
            count += 1
        text.flush()
        text.detach()
        return count
    collected = [row async for row in rows]
    _write_parquet(collected, out)
    return len(collected)


def _write_parquet(rows: list[dict[str, object]], out: IO[bytes]) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    fields = []
    for name in FOCUS_COLUMNS:
        if name in _MONEY or name in _QUANTITIES:
            kind = pa.decimal128(38, 12)
        elif name == "x_EventCount":
            kind = pa.int64()
        else:
            kind = pa.string()
        fields.append(pa.field(name, kind))
    schema = pa.schema(fields)
    columns = {name: [_parquet_value(row[name]) for row in rows] for name in FOCUS_COLUMNS}
    pq.write_table(pa.table(columns, schema=schema), out)


def _parquet_value(value: object) -> object:
    if isinstance(value, Decimal):
        return value.quantize(Decimal("1e-12"))  # the column's scale, exactly
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser("export", help="export usage and cost in standard formats")
    formats = export.add_subparsers(dest="export_command", required=True)
    focus = formats.add_parser(
        "focus", help="a FOCUS 1.2 cost and usage file of whole months (CSV or Parquet)"
    )
    focus.add_argument("--from", dest="first", required=True, metavar="YYYY-MM")
    focus.add_argument("--to", dest="last", required=True, metavar="YYYY-MM")
    focus.add_argument("--organization", default="", help="one organisation (default: all)")
    focus.add_argument("--format", dest="file_format", choices=["csv", "parquet"], default="csv")
    focus.add_argument("--output", type=Path, help="the file to write (default: stdout)")
    focus.add_argument("--time-zone", default="Asia/Seoul", help="of months and charge days")
    focus.add_argument("--users", action="store_true", help="one line per user too")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Carry out `export focus`; the exit status."""
    try:
        start, end = month_range(args.first, args.last, args.time_zone)
    except ExportError as exc:
        print(f"civicmeter export focus: {exc}", file=sys.stderr)
        return 2
    ca = env.get("CIVICMETER_QUERY_TLS_CA")
    root_certificates = Path(ca).read_bytes() if ca else None

    async def export(out: IO[bytes]) -> int:
        client = CivicmeterClient(  # in the loop that runs it: a gRPC channel belongs to one
            env.get("CIVICMETER_QUERY_TARGET", DEFAULT_TARGET),
            env.get("CIVICMETER_API_TOKEN") or None,
            tls=root_certificates is not None,
            root_certificates=root_certificates,
            timeout_seconds=float(env.get("CIVICMETER_EXPORT_TIMEOUT_SECONDS", "600")),
        )
        async with client as api:
            rows = api.export_usage(
                start,
                end,
                time_zone=args.time_zone,
                include_users=args.users,
                organization_id=args.organization,
            )
            return await write_focus(rows, out, args.file_format)

    try:
        if args.output is None:
            count = asyncio.run(export(sys.stdout.buffer))
            sys.stdout.buffer.flush()
        else:
            with args.output.open("wb") as out:
                count = asyncio.run(export(out))
    except grpc.aio.AioRpcError as exc:
        print(f"civicmeter export focus: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    where = args.output or "standard output"
    print(f"wrote {count} FOCUS line(s) of {args.first} .. {args.last} to {where}", file=sys.stderr)
    return 0


def _month(text: str, option: str, tz: ZoneInfo) -> datetime:
    match = _MONTH.fullmatch(text)
    if match is None or not 1 <= int(match[2]) <= 12:
        raise ExportError(f"{option}: {text!r} is not a month such as 2025-01")
    return datetime(int(match[1]), int(match[2]), 1, tzinfo=tz)


def _next_month(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=1)
