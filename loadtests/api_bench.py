"""Query API benchmark: unary GetCostBreakdown throughput and latency with concurrent clients.

Seeds an embedded ClickHouse with a year of usage for the 17 governments, starts the query
service in its own process (API keys on, rate limit off), and drives it from client processes
asking 12-month cost breakdowns by department, first with the answer cache on (the dashboard
case: the same questions again and again), then off (every call reaches ClickHouse's rollups).
Writes loadtests/API_RESULTS.md.

    python -m loadtests.api_bench [--seconds 20] [--clients 2] [--concurrency 16] [--rows 500000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc

from civicmeter.core.auth import hash_token
from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.storage import connect, migrate
from civicmeter.query.v1 import query_service_pb2 as query_pb
from civicmeter.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.sink.writer import COLUMNS, QUANTITY_COLUMNS
from loadtests import measure
from loadtests.scenario import DEPARTMENTS, governments_of, load_facts
from loadtests.stack import REPO, LocalStack, free_port

FACTS = REPO.parent / "shared" / "data" / "kr_local_gov_genai_2024.yaml"
RESULTS = REPO / "loadtests" / "API_RESULTS.md"
TOKEN = "cmk_api_bench_admin"
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2026, 1, 1, tzinfo=UTC)


def seed(path: Path, rows: int, batch: int = 50_000) -> list[str]:
    """A year of usage rows for the 17 governments; returns their ids."""
    client = connect(ClickHouseSettings(path=str(path)))
    migrate(client)
    orgs = [g.id for g in governments_of(load_facts(FACTS))]
    rng = random.Random(7)
    start_ms = int(YEAR_START.timestamp() * 1000)
    span_ms = int((YEAR_END - YEAR_START).total_seconds() * 1000)
    zeros = [0] * len(QUANTITY_COLUMNS)
    for first in range(0, rows, batch):
        data = []
        for i in range(first, min(first + batch, rows)):
            quantities = list(zeros)
            quantities[0] = rng.randint(100, 5000)
            data.append([
                rng.choice(orgs), rng.choice(DEPARTMENTS), f"u_{rng.randrange(4000):04d}",
                f"bench-{i}", start_ms + rng.randrange(span_ms), "gw", "organizational",
                "openai", "openai-api", "gpt-4o", "chat", "work", *quantities, {}, "",
                Decimal(rng.randint(1, 50_000)) / 1000, "2024-10", start_ms,
            ])  # fmt: skip
        client.insert("usage_events", data, column_names=COLUMNS)
    return orgs


def _client(
    target: str,
    orgs: list[str],
    seconds: float,
    concurrency: int,
    out: multiprocessing.Queue[list[float]],
) -> None:
    async def run() -> list[float]:
        latencies: list[float] = []
        deadline = time.monotonic() + seconds
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = query_grpc.QueryServiceStub(channel)

            async def worker(n: int) -> None:
                rng = random.Random(n)
                while time.monotonic() < deadline:
                    request = query_pb.GetCostBreakdownRequest(
                        group_by=query_pb.COST_DIMENSION_DEPARTMENT,
                        organization_id=rng.choice(orgs),
                        page_size=100,
                    )
                    request.start_time.FromDatetime(YEAR_START)
                    request.end_time.FromDatetime(YEAR_END)
                    started = time.perf_counter()
                    await stub.GetCostBreakdown(request, metadata=metadata, timeout=10)
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(worker(n) for n in range(concurrency)))
        return latencies

    out.put(asyncio.run(run()))


def drive(
    target: str, orgs: list[str], seconds: float, clients: int, concurrency: int, server_pid: int
) -> tuple[float, float, float, float]:
    """(calls/s, p50 s, p99 s, server CPU %) over `seconds` of load."""
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[float]] = context.Queue()
    procs = [
        context.Process(target=_client, args=(target, orgs, seconds, concurrency, queue))
        for _ in range(clients)
    ]
    before = measure.sample_process(server_pid)
    started = time.monotonic()
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    for _ in procs:
        latencies += queue.get(timeout=seconds + 120)
    for proc in procs:
        proc.join(30)
    elapsed = time.monotonic() - started
    after = measure.sample_process(server_pid)
    cpu = 100 * (after.cpu_seconds - before.cpu_seconds) / elapsed
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    return len(latencies) / seconds, statistics.median(latencies), p99, cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--workdir", type=Path, default=REPO / ".civicmeter" / "api-bench")
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    began = datetime.now(UTC)
    print(f"seeding {args.rows:,} usage rows", flush=True)
    orgs = seed(args.workdir / "chdb", args.rows)
    keys = args.workdir / "api-keys.yaml"
    keys.write_text(
        f"keys:\n  - id: bench\n    organization_id: '*'\n    role: admin\n"
        f"    sha256: {hash_token(TOKEN)}\n",
        encoding="utf-8",
    )
    results: dict[str, tuple[float, float, float, float]] = {}
    for label, cache in (("cached (1 s answers)", "1"), ("uncached", "0")):
        port = free_port()
        env = {**os.environ, "CLICKHOUSE_PATH": str(args.workdir / "chdb"),
               "CIVICMETER_QUERY_GRPC_PORT": str(port), "CIVICMETER_API_KEYS_FILE": str(keys),
               "CIVICMETER_QUERY_RATE_PER_KEY": "0", "CIVICMETER_QUERY_CACHE_SECONDS": cache,
               "CIVICMETER_LOG_LEVEL": "WARNING"}  # fmt: skip
        server = subprocess.Popen([sys.executable, "-m", "civicmeter", "query"], env=env, cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while not LocalStack._grpc_serving(f"127.0.0.1:{port}"):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the query service did not start")
                time.sleep(0.2)
            print(
                f"{label}: {args.clients} client processes × {args.concurrency} concurrent "
                f"calls for {args.seconds:.0f} s",
                flush=True,
            )
            results[label] = drive(
                f"127.0.0.1:{port}", orgs, args.seconds, args.clients, args.concurrency, server.pid
            )
            qps, p50, p99, cpu = results[label]
            print(
                f"  {qps:,.0f} calls/s, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
                f"server CPU {cpu:.0f}%",
                flush=True,
            )
        finally:
            server.terminate()
            server.wait(30)
    lines = [
        "# Query API benchmark",
        "",
        f"Written by `python -m loadtests.api_bench --seconds {args.seconds:g} --clients "
        f"{args.clients} --concurrency {args.concurrency} --rows {args.rows}` on "
        f"{began:%Y-%m-%d %H:%M} UTC; {platform.machine()}, {len(os.sched_getaffinity(0))} "
        f"cores, Python {platform.python_version()}, embedded ClickHouse (chDB). "
        f"{args.rows:,} usage rows of 2025 for the 17 governments; every call asks a 12-month "
        "cost breakdown by department of one organisation (daily rollup), authenticated with "
        "an API key; the clients run on the same 2 cores as the server.",
        "",
        "| answers | calls/s | p50 | p99 | server CPU | calls/s per server core |",
        "|---|---|---|---|---|---|",
    ]
    for label, (qps, p50, p99, cpu) in results.items():
        per_core = qps / max(cpu / 100, 1e-9)
        lines.append(
            f"| {label} | {qps:,.0f} | {p50 * 1000:.1f} ms | {p99 * 1000:.1f} ms | "
            f"{cpu:.0f}% | {per_core:,.0f} |"
        )
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
