"""`civicmeter rerate` and `civicmeter reconcile`: the billing commands operators run.

Both work on the configured ClickHouse (CLICKHOUSE_* variables). With the embedded engine,
which one process opens at a time, run them while the storage process is stopped.

    civicmeter rerate --from 2026-10 --to 2026-11 [--organization seoul] [--dry-run]
    civicmeter reconcile --from 2026-01 --to 2027-01 [--organization seoul]

Months are Asia/Seoul calendar months (YYYY-MM); --from is inclusive, --to exclusive.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from civicmeter.api.seoul import SEOUL
from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.store.connection import connect
from civicmeter.core.store.migrations import migrate

COMMANDS = ("rerate", "reconcile")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rerate = commands.add_parser(
        "rerate", help="re-rate stored events with the current price catalog"
    )
    reconcile = commands.add_parser(
        "reconcile", help="prove every rollup level equals the raw rated events"
    )
    for parser in (rerate, reconcile):
        parser.add_argument("--from", dest="start", required=True, type=_month,
                            help="first month, YYYY-MM (Asia/Seoul)")  # fmt: skip
        parser.add_argument("--to", dest="end", required=True, type=_month,
                            help="month after the last, YYYY-MM (Asia/Seoul)")  # fmt: skip
        parser.add_argument("--organization", default=None, help="one organisation only")
    rerate.add_argument("--dry-run", action="store_true", help="report, write nothing")
    rerate.add_argument(
        "--prices", type=Path, default=None, help="catalog file (default CIVICMETER_PRICES_FILE)"
    )


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the command; the exit status (reconcile: 1 when anything differs, 2 bad arguments)."""
    if args.end <= args.start:
        print(
            f"civicmeter {args.command}: --to ({args.end:%Y-%m}) must be a later month than "
            f"--from ({args.start:%Y-%m}); --to is exclusive",
            file=sys.stderr,
        )
        return 2
    client = connect(ClickHouseSettings.from_env(env))
    migrate(client)
    if args.command == "rerate":
        return _rerate(client, args, env)
    return _reconcile(client, args)


def _rerate(client: Client, args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from civicmeter.billing.rerate import rerate
    from civicmeter.core.pricing import load_catalog

    path = args.prices or Path(env.get("CIVICMETER_PRICES_FILE", "config/prices.yaml"))
    report = rerate(
        client,
        load_catalog(path),
        args.start,
        args.end,
        args.organization,
        dry_run=args.dry_run,
    )
    mode = " (dry run: nothing written)" if args.dry_run else ""
    print(f"re-rating {args.start:%Y-%m} to {args.end:%Y-%m} with {path}: {report.run_id}{mode}")
    print(f"{'organisation':<16}{'events':>10}{'changed':>10}{'before KRW':>22}"
          f"{'after KRW':>22}{'difference':>20}")  # fmt: skip
    for org, o in sorted(report.organizations.items()):
        print(f"{org:<16}{o.events:>10,}{o.changed:>10,}{o.before:>22,.6f}{o.after:>22,.6f}"
              f"{o.difference:>+20,.6f}")  # fmt: skip
    for reason, count in sorted(report.unpriced_reasons.items()):
        print(f"left unchanged, {count:,} event(s): {reason}")
    return 0


def _reconcile(client: Client, args: argparse.Namespace) -> int:
    from civicmeter.billing.reconcile import reconcile

    result = reconcile(client, args.start, args.end, args.organization)
    print(f"reconciling {args.start:%Y-%m} to {args.end:%Y-%m} (Asia/Seoul)")
    for org, totals in sorted(result.ledger.items()):
        print(f"{org:<16}{totals.events:>12,} events {totals.cost:>24,.6f} KRW")
    differences = result.differences()
    for line in differences:
        print(f"✗ {line}")
    levels = ", ".join(result.levels)
    if differences:
        print(f"✗ {len(differences)} difference(s)")
        return 1
    print(f"✓ every organisation equal to the won at every level: {levels}")
    return 0


def _month(value: str) -> datetime:
    try:
        parsed = datetime.strptime(value, "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a month as YYYY-MM") from None
    return parsed.replace(tzinfo=SEOUL)
