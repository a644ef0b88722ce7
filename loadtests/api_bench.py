"""Query API benchmark: unary GetCostBreakdown throughput, latency and CPU per call.

Seeds an embedded ClickHouse with a year of usage for the 17 governments and starts the query
service in its own process (API keys, per-key rate limiting and the audit log all on; the rate
limit set high enough not to refuse). Each call asks a 12-month cost breakdown by department of
one of the 17 organisations (fiscal year 2025 in Seoul time, which the monthly rollup
answers), in turn. Three ways of answering:

- cache hits: answers kept 60 s, so after a first call per organisation every call is a hit:
  the cost of the API itself (gRPC, authentication, role, rate limit, tenant scope, audit);
- 1 s answers: the dashboard case, hits plus a recomputation of each answer every second;
- uncached: every call reaches ClickHouse's rollups;

and, for scale, the floor: a bare grpc.aio server answering every call with the same bytes,
no access checks, no protobuf work: what the transport alone costs on this machine.

Two load generators, each a separate process with many calls in flight on one connection:
ghz (Go; installed with `go install` into the project's tool cache on first use, skipped
without Go) and a Python grpc.aio client sending pre-serialised requests. On a machine with few
cores the load generator takes CPU from the server, so the figure that travels is calls per
server core: calls / server CPU seconds. Writes loadtests/API_RESULTS.md.

    python -m loadtests.api_bench [--seconds 15] [--concurrency 32] [--load ghz,python]
                                  [--answers floor,hits,1s,uncached] [--rows 500000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import queue
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.synchronize import Event
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
from google.protobuf import json_format

from civicmeter.api.money import to_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.core.access.auth import hash_token
from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.grpc_server import new_server
from civicmeter.core.store.connection import connect
from civicmeter.core.store.migrations import migrate
from civicmeter.sink.event_writer import COLUMNS
from loadtests import measure
from loadtests.scenario import DEPARTMENTS, governments_of, load_facts
from loadtests.stack import REPO, LocalStack, free_port

FACTS = REPO.parent / "shared" / "data" / "kr_local_gov_genai_2024.yaml"
RESULTS = REPO / "loadtests" / "API_RESULTS.md"
TOKEN = "cmk_api_bench_admin"
METHOD = "/civicmeter.query.v1.QueryService/GetCostBreakdown"
METADATA = (("authorization", f"Bearer {TOKEN}"),)
# The governments' fiscal year 2025, in Seoul time: the months of the monthly rollups.
SEOUL = ZoneInfo("Asia/Seoul")
YEAR_START = datetime(2025, 1, 1, tzinfo=SEOUL)
YEAR_END = datetime(2026, 1, 1, tzinfo=SEOUL)
GHZ_VERSION = "v0.93.0"
NOTES = "## Notes"
# label, CIVICMETER_QUERY_CACHE_SECONDS (None: the floor server, not the query service)
ANSWERS: dict[str, tuple[str, str | None]] = {
    "floor": ("gRPC floor: a fixed answer, no API", None),
    "hits": ("cache hits (answers kept 60 s)", "60"),
    "1s": ("cached (1 s answers)", "1"),
    "uncached": ("uncached", "0"),
}


def seed(path: Path, rows: int, batch: int = 50_000) -> list[str]:
    """A year of usage rows for the 17 governments; returns their ids."""
    client = connect(ClickHouseSettings(path=str(path)))
    migrate(client)
    orgs = [g.id for g in governments_of(load_facts(FACTS))]
    rng = random.Random(7)
    start_ms = int(YEAR_START.timestamp() * 1000)
    span_ms = int((YEAR_END - YEAR_START).total_seconds() * 1000)
    zeros = [0] * len(QUANTITIES)
    for first in range(0, rows, batch):
        data = []
        for i in range(first, min(first + batch, rows)):
            quantities = list(zeros)
            quantities[0] = rng.randint(100, 5000)
            data.append([
                rng.choice(orgs), rng.choice(DEPARTMENTS), f"u_{rng.randrange(4000):04d}",
                f"bench-{i}", start_ms + rng.randrange(span_ms), "gw", "organizational",
                "openai", "openai-api", "gpt-4o", "chat", "work", *quantities, {}, "",
                Decimal(rng.randint(1, 50_000)) / 1000, "2024-10", start_ms, 0, "", [],
            ])  # fmt: skip
        client.insert("usage_events", data, column_names=COLUMNS)
    return orgs


def requests_for(orgs: Sequence[str]) -> list[query_pb.GetCostBreakdownRequest]:
    """One 12-month breakdown by department per organisation."""
    requests = []
    for org in orgs:
        request = query_pb.GetCostBreakdownRequest(
            group_by=query_pb.COST_DIMENSION_DEPARTMENT, organization_id=org, page_size=100
        )
        request.start_time.FromDatetime(YEAR_START)
        request.end_time.FromDatetime(YEAR_END)
        requests.append(request)
    return requests


@dataclass(frozen=True)
class Run:
    """One load generator against one server for a while."""

    calls: int  # answered OK
    failed: int
    seconds: float  # the load generator's own window
    p50: float
    p99: float
    server_cpu: float  # seconds, over the window
    server_wall: float  # seconds the server CPU was sampled over
    client_cpu: float  # seconds of the load generator's processes

    @property
    def qps(self) -> float:
        return self.calls / self.seconds

    @property
    def server_cores(self) -> float:
        return self.server_cpu / self.server_wall

    @property
    def per_core(self) -> float:
        return self.calls / max(self.server_cpu, 1e-9)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _python_load(
    target: str,
    requests: list[bytes],
    seconds: float,
    concurrency: int,
    ready: multiprocessing.Queue[str],
    start: Event,
    out: multiprocessing.Queue[tuple[list[float], int]],
) -> None:
    """Calls in flight on one connection; requests go as bytes and answers stay bytes, so
    the client does no protobuf work of its own."""

    async def run() -> tuple[list[float], int]:
        latencies: list[float] = []
        failed = 0
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(METHOD)
            await call(requests[0], metadata=METADATA, timeout=30)  # connected
            ready.put("ready")
            await asyncio.to_thread(start.wait)
            deadline = time.monotonic() + seconds

            async def worker(n: int) -> None:
                nonlocal failed
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    try:
                        await call(requests[n % len(requests)], metadata=METADATA, timeout=10)
                    except grpc.aio.AioRpcError:
                        failed += 1
                        continue
                    latencies.append(time.perf_counter() - started)
                    n += 1

            await asyncio.gather(*(worker(n) for n in range(concurrency)))
        return latencies, failed

    out.put(asyncio.run(run()))


def python_load(
    target: str,
    requests: list[query_pb.GetCostBreakdownRequest],
    seconds: float,
    concurrency: int,
    processes: int,
    server_pid: int,
) -> Run:
    context = multiprocessing.get_context("spawn")
    ready: multiprocessing.Queue[str] = context.Queue()
    out: multiprocessing.Queue[tuple[list[float], int]] = context.Queue()
    start = context.Event()
    raw = [r.SerializeToString() for r in requests]
    per_process = max(1, concurrency // processes)
    client_cpu = _children_cpu()
    procs = [
        context.Process(
            target=_python_load, args=(target, raw, seconds, per_process, ready, start, out)
        )
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    waiting, deadline = len(procs), time.monotonic() + 120
    while waiting:
        if any(proc.exitcode is not None for proc in procs) or time.monotonic() > deadline:
            raise RuntimeError("a load generator process failed to start")
        with contextlib.suppress(queue.Empty):
            ready.get(timeout=0.5)
            waiting -= 1
    before, began = measure.sample_process(server_pid), time.monotonic()
    start.set()
    time.sleep(seconds)
    after, ended = measure.sample_process(server_pid), time.monotonic()
    latencies: list[float] = []
    failed = 0
    for _ in procs:
        done, failures = out.get(timeout=120)
        latencies += done
        failed += failures
    for proc in procs:
        proc.join(30)
    return _run(
        latencies,
        failed,
        seconds,
        after.cpu_seconds - before.cpu_seconds,
        ended - began,
        _children_cpu() - client_cpu,
    )


def _run(
    latencies: list[float],
    failed: int,
    seconds: float,
    server_cpu: float,
    server_wall: float,
    client_cpu: float,
) -> Run:
    if len(latencies) < 2:
        raise RuntimeError(f"only {len(latencies)} calls answered, {failed} failed")
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    return Run(
        len(latencies),
        failed,
        seconds,
        statistics.median(latencies),
        p99,
        server_cpu,
        server_wall,
        client_cpu,
    )


def ghz_binary() -> Path | None:
    """ghz from the project's tool cache, installed there with `go install` if missing."""
    if shutil.which("go") is None:
        print("no Go on PATH: ghz skipped", flush=True)
        return None
    cache = Path(os.environ.get("CIVICMETER_CACHE_DIR", Path.home() / ".cache" / "civicmeter"))
    tools = cache / "tools"
    install = (
        f'source "{REPO}/scripts/lib/tools.sh" && '
        f"go_tool ghz {GHZ_VERSION} github.com/bojand/ghz/cmd/ghz"
    )
    env = {**os.environ, "TOOLS_DIR": str(tools), "BIN_DIR": str(tools / "bin")}
    if subprocess.run(["bash", "-c", install], env={**env, "SCRIPT_NAME": "api_bench"}).returncode:
        print("ghz could not be installed: skipped", flush=True)
        return None
    return tools / "bin" / "ghz"


def protoset(path: Path, proto: str = "civicmeter/query/v1/query_service.proto") -> Path:
    """An API's descriptors with their imports (the query API's by default), for ghz."""
    import google.type.money_pb2

    googleapis = Path(google.type.money_pb2.__file__).parents[2]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(REPO / "proto"),
         "-I", str(googleapis), "--include_imports", f"--descriptor_set_out={path}",
         proto],
        check=True,
    )  # fmt: skip
    return path


def ghz_load(
    ghz: Path,
    descriptors: Path,
    target: str,
    requests: list[query_pb.GetCostBreakdownRequest],
    seconds: float,
    concurrency: int,
    server_pid: int,
) -> Run:
    # An array of requests: ghz sends them in turn.
    data = json.dumps([json_format.MessageToDict(r) for r in requests])
    command = [
        str(ghz), "--insecure", f"--protoset={descriptors}", f"--call={METHOD[1:]}",
        f"--metadata={json.dumps(dict(METADATA))}", f"--data={data}",
        f"--concurrency={concurrency}", "--connections=1", f"--duration={seconds}s",
        "--timeout=10s", "--format=json", target,
    ]  # fmt: skip
    client_cpu = _children_cpu()
    before, began = measure.sample_process(server_pid), time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    after, ended = measure.sample_process(server_pid), time.monotonic()
    report = json.loads(done.stdout)
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    calls = codes.get("OK", 0)
    # ghz reports latency percentiles, not every call: p50 and p99 from its distribution.
    quantiles = {d["percentage"]: d["latency"] / 1e9 for d in report["latencyDistribution"]}
    # Calls cut off when the duration ends come back UNAVAILABLE; they are not failures.
    failed = sum(n for code, n in codes.items() if code not in ("OK", "Unavailable"))
    return Run(
        calls,
        failed,
        report["total"] / 1e9,
        quantiles[50],
        quantiles[99],
        after.cpu_seconds - before.cpu_seconds,
        ended - began,
        _children_cpu() - client_cpu,
    )


def start_server(
    workdir: Path, keys: Path, cache_seconds: str | None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "CLICKHOUSE_PATH": str(workdir / "chdb"),
           "CIVICMETER_QUERY_GRPC_PORT": str(port), "CIVICMETER_API_KEYS_FILE": str(keys),
           "CIVICMETER_QUERY_RATE_PER_KEY": "1000000", "CIVICMETER_LOG_LEVEL": "WARNING",
           "CIVICMETER_QUERY_CACHE_SECONDS": cache_seconds or "0"}  # fmt: skip
    command = (
        ["-m", "civicmeter", "query"]
        if cache_seconds is not None
        else ["-m", "loadtests.api_bench", "--floor-port", str(port)]
    )
    server = subprocess.Popen([sys.executable, *command], env=env, cwd=REPO)
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not LocalStack._grpc_serving(target):
        if server.poll() is not None or time.monotonic() > deadline:
            server.terminate()
            raise RuntimeError("the query service did not start")
        time.sleep(0.2)
    return server, target


def serve_floor(port: int) -> None:
    """grpc.aio and nothing of the API: every call gets the same prepared answer."""
    response = query_pb.GetCostBreakdownResponse(total_cost=to_money(Decimal("123456.789")))
    for n, department in enumerate(DEPARTMENTS):
        response.lines.add(key=department, cost=to_money(Decimal(n * 1000)), event_count=n)
    answer = response.SerializeToString()

    async def prepared(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    async def run() -> None:
        floor = new_server([], reflection_enabled=False)  # health checks, to know it is up
        handler = grpc.unary_unary_rpc_method_handler(prepared)
        service, method = METHOD[1:].split("/")
        floor.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service, {method: handler})]
        )
        floor.server.add_insecure_port(f"127.0.0.1:{port}")
        await floor.start()
        await floor.server.wait_for_termination()

    asyncio.run(run())


def warm_up(target: str, requests: list[query_pb.GetCostBreakdownRequest]) -> None:
    """One call per organisation: the answers are in the cache before the clock starts."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        for request in requests:
            call(request.SerializeToString(), metadata=METADATA, timeout=60)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--load", default="ghz,python", help="load generators, in order")
    parser.add_argument("--python-processes", type=int, default=1)
    parser.add_argument("--answers", default=",".join(ANSWERS), help=", ".join(ANSWERS))
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--workdir", type=Path, default=REPO / ".civicmeter" / "api-bench")
    parser.add_argument("--floor-port", type=int, help=argparse.SUPPRESS)  # the floor server
    args = parser.parse_args(argv)
    if args.floor_port:
        serve_floor(args.floor_port)
        return 0
    loads = [name.strip() for name in args.load.split(",") if name.strip()]
    answers = [name.strip() for name in args.answers.split(",") if name.strip()]
    unknown = sorted(set(loads) - {"ghz", "python"}) + sorted(set(answers) - set(ANSWERS))
    if unknown:
        parser.error(f"unknown --load or --answers: {', '.join(unknown)}")
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    began = datetime.now(UTC)
    ghz = ghz_binary() if "ghz" in loads else None
    if ghz is None and "ghz" in loads:
        loads.remove("ghz")
    descriptors = protoset(args.workdir / "query.protoset") if ghz else None
    print(f"seeding {args.rows:,} usage rows", flush=True)
    requests = requests_for(seed(args.workdir / "chdb", args.rows))
    keys = args.workdir / "api-keys.yaml"
    keys.write_text(
        f"keys:\n  - id: bench\n    organization_id: '*'\n    role: admin\n"
        f"    sha256: {hash_token(TOKEN)}\n",
        encoding="utf-8",
    )
    results: list[tuple[str, str, Run]] = []
    for answer in answers:
        label, cache_seconds = ANSWERS[answer]
        for load in loads:
            server, target = start_server(args.workdir, keys, cache_seconds)
            try:
                warm_up(target, requests)
                print(f"{label}, {load}: {args.concurrency} calls in flight for "
                      f"{args.seconds:g} s", flush=True)  # fmt: skip
                if load == "ghz":
                    assert ghz is not None and descriptors is not None
                    run = ghz_load(ghz, descriptors, target, requests, args.seconds,
                                   args.concurrency, server.pid)  # fmt: skip
                else:
                    run = python_load(target, requests, args.seconds, args.concurrency,
                                      args.python_processes, server.pid)  # fmt: skip
            finally:
                server.terminate()
                server.wait(30)
            results.append((label, load, run))
            print("  " + _row(label, load, args.concurrency, run), flush=True)
    text = report(args, began, results) + kept_notes(RESULTS)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0


def _row(label: str, load: str, concurrency: int, run: Run) -> str:
    client = f"{run.client_cpu / run.calls * 1000:.2f} ms" if run.calls else "-"
    return (
        f"| {label} | {load} | {concurrency} | {run.qps:,.0f} | {run.p50 * 1000:.1f} ms | "
        f"{run.p99 * 1000:.1f} ms | {run.server_cpu / run.calls * 1000:.2f} ms | "
        f"{run.server_cores:.2f} | **{run.per_core:,.0f}** | {client} | {run.failed} |"
    )


def report(args: argparse.Namespace, began: datetime, results: list[tuple[str, str, Run]]) -> str:
    command = (
        f"python -m loadtests.api_bench --seconds {args.seconds:g} --concurrency "
        f"{args.concurrency} --load {args.load} --answers {args.answers} --rows {args.rows}"
    )
    lines = [
        "# Query API benchmark",
        "",
        f"Written by `{command}` on {began:%Y-%m-%d %H:%M} UTC; {platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores ({_cpu_model()}), Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}, embedded ClickHouse (chDB); "
        f"load average {os.getloadavg()[0]:.1f} when it ended. {args.rows:,} usage rows of "
        "2025 for the 17 governments; each call asks a 12-month cost breakdown by department "
        "of one of them (fiscal year 2025 in Seoul time: the monthly rollup), in turn, with "
        "an API key; rate limiting and the audit log are on. "
        "The load generator shares the cores with the server, so compare calls per server "
        "core (calls / server CPU seconds), not calls/s.",
        "",
        "| answers | load generator | in flight | calls/s | p50 | p99 | server CPU per call "
        "| server cores busy | calls/s per server core | load generator CPU per call | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(_row(label, load, args.concurrency, run) for label, load, run in results),
    ]
    return "\n".join(lines) + "\n"


def kept_notes(results: Path) -> str:
    """The hand-written part of the results file (from its `## Notes` on): runs keep it."""
    text = results.read_text(encoding="utf-8") if results.exists() else ""
    start = text.find(NOTES)
    return "" if start < 0 else "\n" + text[start:]


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor() or "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())
