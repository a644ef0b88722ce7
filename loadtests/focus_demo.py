"""The demo's year as a FOCUS file, judged by the FinOps Foundation's validator.

Builds the demo's scenario (the 17 governments' year of use and their monthly seat charges),
rates every event with the project's catalog as the processor does, stores them in an embedded
ClickHouse (chDB), serves them through the real query service and exports the year with
`civicmeter export focus`, then runs focus-validator (scripts/focus_validator.sh) on the file
with civicmeter's declared capabilities and prints its summary and failing rules. It skips
Kafka and ingest: what it judges is the export of the stored year, not the pipeline.

    python -m loadtests.focus_demo [--events N] [--format csv|parquet] [--workdir DIR]

Exit status 0 when the validator ran; its verdict is in the summary it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import grpc

from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.client.focus_export import SUPPORTED
from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.pricing import PriceCatalog, load_catalog
from civicmeter.core.pricing.catalog_source import CatalogSource
from civicmeter.core.store.connection import Storage, connect
from civicmeter.core.store.migrations import migrate
from civicmeter.query.access import AccessInterceptor
from civicmeter.query.usage_api import QueryService
from civicmeter.sink.event_writer import write_events
from loadtests.scenario import Scenario, build_scenario, load_facts
from loadtests.stack import DEFAULT_PRICES, REPO

FACTS = REPO.parent / "shared" / "data" / "kr_local_gov_genai_2024.yaml"
INSTALLER = REPO / "scripts" / "focus_validator.sh"
BLOCK = 20_000


def rated(catalog: PriceCatalog, events: Sequence[pb.UsageEvent]) -> list[pb.RatedUsageEvent]:
    out = []
    for event in events:
        rating = catalog.rate(event)
        out.append(
            pb.RatedUsageEvent(
                event=event, cost_krw=str(rating.cost_krw), price_version=rating.price_version
            )
        )
    return out


def store(scenario: Scenario, catalog: PriceCatalog, workdir: Path) -> Storage:
    shutil.rmtree(workdir / "chdb", ignore_errors=True)  # a fresh database each run
    client = connect(ClickHouseSettings(path=str(workdir / "chdb"), database="focus_demo"))
    migrate(client)
    events = [
        *scenario.events(),
        *(charge for gov in scenario.governments for charge in scenario.charges(gov)),
    ]
    for i in range(0, len(events), BLOCK):
        write_events(client, rated(catalog, events[i : i + BLOCK]))
    print(f"stored {len(events):,} rated events (usage and seat charges)", flush=True)
    return Storage(client)


async def export(storage: Storage, scenario: Scenario, path: Path, file_format: str) -> None:
    server = grpc.aio.server(interceptors=[AccessInterceptor(None, None)])  # open, loopback
    service = QueryService(storage, prices=CatalogSource(DEFAULT_PRICES))
    query_grpc.add_QueryServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    last = scenario.period_end - timedelta(days=1)
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "civicmeter", "export", "focus",
        "--from", f"{scenario.period_start:%Y-%m}", "--to", f"{last:%Y-%m}",
        "--format", file_format, "--output", str(path),
        env={**os.environ, "CIVICMETER_QUERY_TARGET": f"127.0.0.1:{port}"},
    )  # fmt: skip
    status = await command.wait()
    await server.stop(None)
    if status != 0:
        raise SystemExit(f"civicmeter export focus exited with {status}")


def validate(path: Path, file_format: str) -> str:
    subprocess.run(["bash", str(INSTALLER)], check=True)
    bin_dir = subprocess.run(
        ["bash", str(INSTALLER), "--print-bin-dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    result = subprocess.run(
        [str(Path(bin_dir) / "focus-validator"), "--data-file", str(path),
         "--data-format", file_format, "--validate-version", "1.2",
         "--applicability-criteria", ",".join(SUPPORTED)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="as the demo (200,000)")
    parser.add_argument("--format", dest="file_format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--workdir", type=Path, default=REPO / ".civicmeter" / "focus-demo")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    catalog = load_catalog(DEFAULT_PRICES)
    scenario = build_scenario(load_facts(FACTS), catalog, events=args.events)
    storage = store(scenario, catalog, args.workdir)
    path = args.workdir / f"focus.{args.file_format}"
    asyncio.run(export(storage, scenario, path, args.file_format))
    output = validate(path, args.file_format)
    summary = re.search(r"Total: .*", output)
    print(summary[0] if summary else output[-4000:])
    for failing in re.findall(r"\u274c (\S+): FAIL.*", output):
        print(f"failing: {failing}")
    print(f"in {time.monotonic() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
