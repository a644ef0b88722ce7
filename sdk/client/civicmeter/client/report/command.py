"""`civicmeter report`: the HTML report of one month (or several) of one organisation, or of
every organisation the caller sees, from the query API.

    civicmeter report --month 2025-01 --organization seoul [--to 2025-03] [--output FILE]
        [--target host:port] [--token TOKEN]

--target defaults to CIVICMETER_QUERY_TARGET (else 127.0.0.1:50052), --token to
CIVICMETER_API_TOKEN; with CIVICMETER_QUERY_TLS_CA the channel is TLS with that CA. Without
--output the page is written to report-<organisation>-<month>.html.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc

from civicmeter.client._client import CivicmeterClient
from civicmeter.client.report.figures import gather
from civicmeter.client.report.page import render

DEFAULT_TARGET = "127.0.0.1:50052"
_MONTH = re.compile(r"(\d{4})-(\d{2})")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report", help="an HTML report with charts of spend, seats and alerts (self-contained)"
    )
    report.add_argument("--month", required=True, metavar="YYYY-MM", help="the (first) month")
    report.add_argument(
        "--to", dest="last", metavar="YYYY-MM", help="the last month (default: --month)"
    )
    report.add_argument("--organization", default="", help="one organisation (default: all)")
    report.add_argument("--output", type=Path, help="the file to write")
    report.add_argument("--target", help="the query API, host:port")
    report.add_argument("--token", help="the API token")
    report.add_argument("--time-zone", default="Asia/Seoul", help="of the months")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Carry out `report`; the exit status."""
    try:
        first = _month(args.month, "--month")
        last = _month(args.last, "--to") if args.last else first
        _time_zone(args.time_zone)
    except ValueError as exc:
        print(f"civicmeter report: {exc}", file=sys.stderr)
        return 2
    if last < first:
        print("civicmeter report: --to: must not be before --month", file=sys.stderr)
        return 2
    ca = env.get("CIVICMETER_QUERY_TLS_CA")
    root_certificates = Path(ca).read_bytes() if ca else None

    async def build() -> str:
        # The channel is made inside the event loop that uses it.
        async with CivicmeterClient(
            args.target or env.get("CIVICMETER_QUERY_TARGET", DEFAULT_TARGET),
            args.token or env.get("CIVICMETER_API_TOKEN") or None,
            tls=bool(ca),
            root_certificates=root_certificates,
        ) as api:
            return render(await gather(api, first, last, organization_id=args.organization,
                                       time_zone=args.time_zone))  # fmt: skip

    try:
        page = asyncio.run(build())
    except grpc.aio.AioRpcError as exc:
        print(f"civicmeter report: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    output = args.output or Path(f"report-{args.organization or 'all'}-{args.month}.html")
    output.write_text(page, encoding="utf-8")
    print(f"wrote the report to {output}", file=sys.stderr)
    return 0


def _month(text: str, option: str) -> date:
    match = _MONTH.fullmatch(text)
    if match is None or not 1 <= int(match[2]) <= 12:
        raise ValueError(f"{option}: {text!r} is not a month such as 2025-01")
    return date(int(match[1]), int(match[2]), 1)


def _time_zone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"--time-zone: {name!r} is not an IANA time zone") from None
