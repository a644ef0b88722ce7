"""Decision latency: the gateway's local Guard, and Decide over gRPC at a fixed rate.

    python -m loadtests.guard.bench [--calls 20000] [--rates 1000] [--seconds 30]
                                    [--floor-seconds 10] [--load ghz,python] [--no-write]

Local: `Guard.check` (PII and document detectors, the compiled policy of config/policies.yaml
for Seoul, the masking for REDACT) on prompts of about 4 KB made of the PII benchmark's corpus,
a third of them with a registration number, in this one process and thread; each call timed
alone, wall clock and thread CPU time. Target p99 <= 1 ms.

Remote: the decision service in its own process (`python -m civicmeter decision`, gRPC's
thread-pool server: API keys, roles, audit log and per-key rate limit on) on an empty embedded
ClickHouse of its own; the load generator is a separate process sending `Decide` open-loop at
each of --rates calls a second (each call starts on its schedule, whatever the ones before it
are doing) for --seconds, with findings counts as a gateway sends them; each call timed from
its start to its answer. Two generators, each in turn (--load): ghz (Go, `--rps --async`;
installed with `go install` into the project's tool cache on first use, skipped without Go),
which costs the shared cores less CPU per call, and a Python grpc.aio client (`--client`, no
garbage collection during the run). It reads the server's CPU time (/proc) and its own around the
run: CPU per call on both sides, since they share the machine's cores. Then, for scale, the
transport floor: a fixed answer and no API on grpc.aio and on the thread-pool server.
Target p99 <= 5 ms at 1,000 calls/s.

Writes loadtests/guard/RESULTS.md (unless --no-write); exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2

from civicmeter.api.decision.v1 import decision_service_pb2 as pb
from civicmeter.core.access.auth import hash_token
from civicmeter.gateway import Guard, RequestFacts
from civicmeter.query.decision_server import DECIDE_WORKERS
from loadtests.api_bench import GHZ_VERSION, ghz_binary
from loadtests.api_bench import protoset as ghz_protoset
from loadtests.measure import sample_process
from loadtests.pii.bench import _cpu_model
from loadtests.pii.corpus import generate
from loadtests.stack import REPO, LocalStack, free_port

RESULTS = Path(__file__).with_name("RESULTS.md")
PROMPT_BYTES = 4096
LOCAL_TARGET_MS = 1.0
REMOTE_TARGET_MS = 5.0
TOKEN = "cmk_guard_bench_gateway"
METHOD = "/civicmeter.decision.v1.DecisionService/Decide"
RRN = "9001011234568"  # a valid pre-2020 registration number (check digit 8)


def prompts(count: int, seed: int = 7) -> list[str]:
    """Prompts of about PROMPT_BYTES, corpus documents joined; every third with an RRN. The
    corpus is rich in personal information (nine documents in ten hold some), so most prompts
    take the REDACT path with its second, masking pass: a worst case for the guard."""
    docs = [d.text for d in generate(2000, seed)]
    rng = random.Random(seed)
    found: list[str] = []
    while len(found) < count:
        parts: list[str] = []
        while sum(len(p.encode()) for p in parts) < PROMPT_BYTES:
            parts.append(rng.choice(docs))
        text = "\n\n".join(parts).encode()[:PROMPT_BYTES].decode(errors="ignore")
        if len(found) % 3 == 0:
            text = f"주민등록번호 {RRN[:6]}-{RRN[6:]}\n" + text[:-30]
        found.append(text)
    return found


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def local(calls: int) -> tuple[list[float], list[float], dict[str, int], int]:
    """Wall-clock and CPU (thread) milliseconds of each call, the outcomes, and how many
    garbage collections ran during the calls."""
    guard = Guard.from_policy_file(REPO / "config" / "policies.yaml", "seoul")
    texts = prompts(min(calls, 600))
    facts = RequestFacts(
        department="welfare", user_id="u_bench", provider="openai", service="chatgpt",
        account_kind="organizational",
    )  # fmt: skip
    for text in texts[:100]:  # warm-up: caches, regex compilation
        guard.check(text, facts)
    times: list[float] = []
    cpu: list[float] = []
    outcomes: dict[str, int] = {}
    collections = sum(generation["collections"] for generation in gc.get_stats())
    for n in range(calls):
        text = texts[n % len(texts)]
        began, began_cpu = time.perf_counter_ns(), time.thread_time_ns()
        verdict = guard.check(text, facts)
        cpu.append((time.thread_time_ns() - began_cpu) / 1e6)
        times.append((time.perf_counter_ns() - began) / 1e6)
        outcomes[verdict.outcome] = outcomes.get(verdict.outcome, 0) + 1
    collections = sum(generation["collections"] for generation in gc.get_stats()) - collections
    return times, cpu, outcomes, collections


def replay_outliers(cpu: Sequence[float], calls: int, times: int = 10) -> tuple[float, float]:
    """The prompts of the slowest 1% of calls (CPU), each checked `times` times again: the
    median and the largest of their fastest CPU times. When these are close to the overall
    median, the outliers were the machine's (preemption, shared caches), not the prompt's
    (a regular expression backtracking on it would be slow every time)."""
    guard = Guard.from_policy_file(REPO / "config" / "policies.yaml", "seoul")
    texts = prompts(min(calls, 600))
    facts = RequestFacts(department="welfare", user_id="u_bench", provider="openai",
                         service="chatgpt", account_kind="organizational")  # fmt: skip
    slowest = sorted(range(len(cpu)), key=cpu.__getitem__)[-max(1, len(cpu) // 100) :]
    best: list[float] = []
    for n in slowest:
        text = texts[n % len(texts)]
        runs = []
        for _ in range(times):
            began = time.thread_time_ns()
            guard.check(text, facts)
            runs.append((time.thread_time_ns() - began) / 1e6)
        best.append(min(runs))
    return statistics.median(best), max(best)


def decide_requests() -> list[bytes]:
    base: dict[str, Any] = {"department_id": "welfare", "user_id": "u_bench", "provider": "openai",
            "service": "chatgpt", "account_kind": pb.ACCOUNT_KIND_ORGANIZATIONAL}  # fmt: skip
    variants = [
        pb.DecideRequest(**base),
        pb.DecideRequest(**base, pii_findings=[pb.FindingCount(type="kr_rrn", count=1)]),
        pb.DecideRequest(**{**base, "provider": "deepseek"}),
        pb.DecideRequest(**base, document_markings=[pb.FindingCount(type="confidential", count=2)]),
    ]
    return [v.SerializeToString() for v in variants]


def client_main(
    target: str, rate: float, seconds: float, server_pid: int, connections: int
) -> None:
    """The load generator, run as a process of its own (`--client`): JSON on stdout."""
    asyncio.run(_client(target, rate, seconds, server_pid, connections))


async def _client(
    target: str, rate: float, seconds: float, server_pid: int, connections: int
) -> None:
    bodies = decide_requests()
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    times: list[float] = []
    errors: dict[str, int] = {}
    # A connection each, as that many gateways would have (channels share one by default).
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    async with contextlib.AsyncExitStack() as open_channels:
        calls = []
        for channel in channels:
            await open_channels.enter_async_context(channel)
            calls.append(channel.unary_unary(METHOD))
        for call in calls:
            for body in bodies * 100:  # warm-up: connection, budget state, caches
                await call(body, metadata=metadata, timeout=10)

        async def one(call: Any, body: bytes) -> None:
            began = time.perf_counter()
            try:
                await call(body, metadata=metadata, timeout=5)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] = errors.get(error.code().name, 0) + 1
                return
            times.append((time.perf_counter() - began) * 1000)

        total = int(rate * seconds)
        tasks: list[asyncio.Task[None]] = []
        # The load generator's own full collections (30-50 ms with the run's calls alive,
        # measured) would be timed as the server's latency: none run during the run.
        gc.collect()
        gc.disable()
        server_began = ProcessCpu.of(server_pid)
        own_began = _own_cpu()
        start = time.perf_counter()
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(calls[n % len(calls)], bodies[n % len(bodies)])))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        gc.enable()
        server_cpu = ProcessCpu.of(server_pid) - server_began
        own_cpu = _own_cpu() - own_began
    print(json.dumps({"times": times, "errors": errors, "achieved": total / elapsed,
                      "seconds": elapsed, "calls": total, "servers_cpu": server_cpu.servers,
                      "storage_cpu": server_cpu.storage, "client_cpu": own_cpu,
                      "load": os.getloadavg()}))  # fmt: skip


def child_pids(pid: int) -> list[int]:
    """The processes `pid`'s threads started (each thread lists its own)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found += [int(child) for child in children.read_text().split()]
    return found


@dataclass(frozen=True)
class ProcessCpu:
    """CPU seconds of a server and the processes it started, told apart by name
    (core.prctl.name_process): its storage process (`cm-storage`), and each server process of
    a group (`cm-decision-N`); everything else counts as the server's."""

    servers: list[float]  # per server process: one, or each of a group's
    storage: float

    @classmethod
    def of(cls, pid: int) -> ProcessCpu:
        servers: list[float] = []
        rest = storage = 0.0
        for process in _descendants(pid):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                name = Path(f"/proc/{process}/comm").read_text().strip()
                cpu = sample_process(process).cpu_seconds
                if name == "cm-storage":
                    storage += cpu
                elif name.startswith("cm-decision"):
                    servers.append(cpu)
                else:
                    rest += cpu
        if not servers:
            return cls([rest], storage)
        servers[0] += rest  # the group's parent, which only watches
        return cls(servers, storage)

    def __sub__(self, before: ProcessCpu) -> ProcessCpu:
        return ProcessCpu(
            [a - b for a, b in zip(self.servers, before.servers, strict=True)],
            self.storage - before.storage,
        )


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for process in found:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found.extend(child_pids(process))
    return found


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class RemoteRun:
    server: str  # what answered
    rate: float
    times: list[float]
    errors: dict[str, int]  # by status code
    achieved: float
    seconds: float
    server_ms_per_call: float  # all its server processes
    storage_ms_per_call: float  # its storage process
    client_ms_per_call: float
    load_after: float
    client: str = "python"  # the load generator: "python" (grpc.aio) or "ghz"
    split: tuple[float, ...] = ()  # ms/call of each server process, when several


def remote(
    target: str, server_pid: int, server: str, rate: float, seconds: float, connections: int
) -> RemoteRun:
    """One open-loop run of the client process against the server."""
    out = subprocess.run(
        [sys.executable, "-m", "loadtests.guard.bench", "--client", target,
         "--server-pid", str(server_pid), "--rates", str(rate), "--seconds", str(seconds),
         "--connections", str(connections)],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=seconds + 120,
    ).stdout  # fmt: skip
    found = json.loads(out.strip().splitlines()[-1])
    calls = max(1, found["calls"])
    cpu = ProcessCpu(found["servers_cpu"], found["storage_cpu"])
    return RemoteRun(server, rate, found["times"], found["errors"], found["achieved"],
                     found["seconds"], sum(cpu.servers) / calls * 1000,
                     cpu.storage / calls * 1000, found["client_cpu"] / calls * 1000,
                     found["load"][0], split=_split(cpu, calls))  # fmt: skip


def _split(cpu: ProcessCpu, calls: int) -> tuple[float, ...]:
    return tuple(s / calls * 1000 for s in cpu.servers) if len(cpu.servers) > 1 else ()


GHZ_CONCURRENCY = 16  # ghz's workers: each starts its calls on the schedule without waiting
CONNECTIONS = 16  # gateways (or gateway workers) calling: a connection each
GHZ_WARM_UP_CALLS = 400
DECISION_PROTO = "civicmeter/decision/v1/decision_service.proto"


def remote_ghz(
    ghz: Path, protoset: Path, target: str, server_pid: int, server: str, rate: float,
    seconds: float, connections: int,
) -> RemoteRun:  # fmt: skip
    """One open-loop run of ghz (Go) against the server: `--rps` with `--async`, each call
    started on its schedule whatever the ones before it are doing, over `connections`, with
    the same requests in turn as the Python client. Every call's latency is in its report
    (`details`); the percentiles are computed from them as for the Python client."""
    data = json.dumps(
        [json_format.MessageToDict(pb.DecideRequest.FromString(b)) for b in decide_requests()]
    )
    total = int(rate * seconds)
    command = [
        str(ghz), "--insecure", f"--protoset={protoset}", f"--call={METHOD[1:]}",
        f"--metadata={json.dumps({'authorization': f'Bearer {TOKEN}'})}", f"--data={data}",
        f"--rps={rate:g}", "--async", f"--concurrency={GHZ_CONCURRENCY}",
        f"--connections={connections}", "--timeout=5s", "--format=json", target,
    ]  # fmt: skip
    # Warm-up: the connection, the organisation's first budget read, the server's caches.
    subprocess.run([*command, f"--total={GHZ_WARM_UP_CALLS}"], check=True, capture_output=True)
    children_before = _own_children_cpu()
    server_began = ProcessCpu.of(server_pid)
    began = time.perf_counter()
    done = subprocess.run(
        [*command, f"--total={total}"],
        check=True, capture_output=True, text=True, timeout=seconds + 120,
    )  # fmt: skip
    elapsed = time.perf_counter() - began
    server_cpu = ProcessCpu.of(server_pid) - server_began
    client_cpu = _own_children_cpu() - children_before
    report = json.loads(done.stdout)
    times: list[float] = []
    errors: dict[str, int] = {}
    for call in report.get("details") or []:
        if call["status"] == "OK":
            times.append(call["latency"] / 1e6)
        else:
            errors[call["status"]] = errors.get(call["status"], 0) + 1
    calls = max(1, total)
    return RemoteRun(server, rate, times, errors, float(report.get("rps") or 0.0),
                     report["total"] / 1e9 if report.get("total") else elapsed,
                     sum(server_cpu.servers) / calls * 1000, server_cpu.storage / calls * 1000,
                     client_cpu / calls * 1000, os.getloadavg()[0], "ghz",
                     _split(server_cpu, calls))  # fmt: skip


def _own_children_cpu() -> float:
    """CPU time of this process's waited-for children (ghz, run to its end)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_decision_server(workdir: Path, processes: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    """`civicmeter decision` in `processes` server processes, on an empty embedded ClickHouse
    of its own, with one gateway key (TOKEN, for seoul)."""
    keys = workdir / "api-keys.yaml"
    keys.write_text(
        "keys:\n  - id: bench-gateway\n    role: gateway\n    organization_ids: [seoul]\n"
        f"    sha256: {hash_token(TOKEN)}\n"
    )
    port = free_port()
    env = {**os.environ, "CLICKHOUSE_PATH": str(workdir / "chdb-decision"),
           "CIVICMETER_DECISION_GRPC_PORT": str(port), "CIVICMETER_API_KEYS_FILE": str(keys),
           "CIVICMETER_DECISION_RATE_PER_KEY": "1000000",
           "CIVICMETER_DECISION_PROCESSES": str(processes),
           "CIVICMETER_LOG_LEVEL": "WARNING"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "civicmeter", "decision"], env=env, cwd=REPO)
    return server, _serving(server, f"127.0.0.1:{port}")


def start_floor_server(kind: str) -> tuple[subprocess.Popen[bytes], str]:
    """A fixed DecideResponse, no API at all, over grpc.aio or the thread-pool server."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "loadtests.guard.bench", "--floor", kind, "--port", str(port)],
        cwd=REPO,
    )
    return server, _serving(server, f"127.0.0.1:{port}")


def _serving(server: subprocess.Popen[bytes], target: str) -> str:
    deadline = time.monotonic() + 60
    while not LocalStack._grpc_serving(target):
        if server.poll() is not None or time.monotonic() > deadline:
            server.terminate()
            raise RuntimeError(f"the server at {target} did not start")
        time.sleep(0.2)
    return target


def serve_floor(kind: str, port: int) -> None:
    answer = pb.DecideResponse(outcome=pb.OUTCOME_ALLOW, policy_version="v1",
                               organization_id="seoul").SerializeToString()  # fmt: skip
    service, method = METHOD[1:].split("/")
    health_only = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(lambda request, context: _SERVING)},
    )
    if kind == "sync":

        def prepared(request: bytes, context: grpc.ServicerContext) -> bytes:
            return answer

        server = grpc.server(ThreadPoolExecutor(max_workers=DECIDE_WORKERS))
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(
                service, {method: grpc.unary_unary_rpc_method_handler(prepared)}), health_only]
        )  # fmt: skip
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    async def prepared_aio(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    async def run() -> None:
        aio = grpc.aio.server()
        aio.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(
                service, {method: grpc.unary_unary_rpc_method_handler(prepared_aio)}),
             health_only]
        )  # fmt: skip
        aio.add_insecure_port(f"127.0.0.1:{port}")
        await aio.start()
        await aio.wait_for_termination()

    asyncio.run(run())


_SERVING = health_pb2.HealthCheckResponse(
    status=health_pb2.HealthCheckResponse.SERVING
).SerializeToString()


def _kept_notes() -> str:
    """The results file's `## Notes`, which each run keeps (the tables above are rewritten)."""
    try:
        text = RESULTS.read_text(encoding="utf-8")
    except OSError:
        return ""
    at = text.find("\n## Notes\n")
    return text[at:] if at >= 0 else ""


def _ms(times: Sequence[float], share: float) -> str:
    return f"{percentile(times, share):.2f}" if times else "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20000, help="local Guard.check calls")
    parser.add_argument("--rates", default="1000", help="Decide calls/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="per Decide run")
    parser.add_argument(
        "--floor-seconds", type=float, default=10.0, help="per floor server run; 0: none"
    )
    parser.add_argument(
        "--load", default="ghz,python",
        help="load generators for the remote runs, in order: ghz (Go, installed with `go "
        "install` on first use; skipped without Go), python (a grpc.aio client process)",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1,
        help="civicmeter decision's server processes (CIVICMETER_DECISION_PROCESSES); "
        "default: one per CPU",
    )  # fmt: skip
    parser.add_argument(
        "--connections", type=int, default=CONNECTIONS,
        help="connections each load generator opens (gateways), calls spread over them",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--client", metavar="TARGET", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--floor", choices=("aio", "sync"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    if args.client:
        client_main(args.client, rates[0], args.seconds, args.server_pid, args.connections)
        return 0
    if args.floor:
        serve_floor(args.floor, args.port)
        return 0
    began = datetime.now(UTC)
    load = os.getloadavg()
    local_times, local_cpu, outcomes, collections = local(args.calls)
    replayed_median, replayed_max = replay_outliers(local_cpu, args.calls)
    generators = [name.strip() for name in args.load.split(",") if name.strip()]
    if set(generators) - {"ghz", "python"} or not generators:
        parser.error("--load: ghz and/or python")
    ghz = ghz_binary() if "ghz" in generators else None
    if ghz is None and "ghz" in generators:
        generators.remove("ghz")
    runs: list[RemoteRun] = []
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        protoset = ghz_protoset(workdir / "decision.protoset", DECISION_PROTO) if ghz else None
        # The group the target is judged on, and one process for comparison.
        groups = sorted({args.processes, 1}, reverse=True)
        servers: list[tuple[str, float, Any]] = [
            (
                _decision_label(processes),
                args.seconds,
                lambda processes=processes: start_decision_server(workdir, processes),
            )
            for processes in groups
        ]
        if args.floor_seconds > 0:
            servers += [
                (FLOORS[kind], args.floor_seconds, lambda kind=kind: start_floor_server(kind))
                for kind in ("aio", "sync")
            ]
        for label, seconds, start in servers:
            server, target = start()
            try:
                for rate in rates:
                    for generator in generators:
                        if generator == "ghz":
                            assert ghz is not None and protoset is not None
                            run = remote_ghz(
                                ghz, protoset, target, server.pid, label, rate, seconds,
                                args.connections,
                            )  # fmt: skip
                        else:
                            run = remote(target, server.pid, label, rate, seconds,
                                         args.connections)  # fmt: skip
                        runs.append(run)
                        print(_row(run), flush=True)
            finally:
                server.terminate()
                server.wait(30)
    load_after = os.getloadavg()
    local_p99, local_cpu_p99 = percentile(local_times, 0.99), percentile(local_cpu, 0.99)
    decided = [run for run in runs if run.server == _decision_label(args.processes)]
    remote_ok = bool(decided) and all(_met(run) for run in decided)
    lines = [
        "# Guard and Decide: decision latency",
        "",
        f"Measured {began:%Y-%m-%d %H:%M} UTC with:",
        "",
        "```",
        "python -m loadtests.guard.bench " + " ".join(argv or sys.argv[1:]),
        "```",
        "",
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, on {_cpu_model()}, "
        f"{os.cpu_count()} CPUs shared with other work: load average (1 / 5 / 15 min) "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} when the run started, "
        f"{load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} when it ended. "
        "Wall-clock tails on a shared machine include the time a thread waits for a core; "
        "the CPU-time figures are what the code itself costs.",
        "",
        "## Local: `Guard.check` on a 4 KB prompt",
        "",
        f"{args.calls} calls, one thread, each timed alone; outcomes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        + f" (REDACT includes masking the prompt); {collections} garbage collections (young "
        "generations) ran during the calls.",
        "",
        "| clock | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | target p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {clock} | {statistics.median(values):.3f} | {percentile(values, 0.9):.3f} | "
            f"{percentile(values, 0.99):.3f} | {percentile(values, 0.999):.3f} | "
            f"{max(values):.3f} | {LOCAL_TARGET_MS:.1f} ms |"
            for clock, values in (("wall", local_times), ("CPU (thread)", local_cpu))
        ),
        "",
        f"The outliers: the prompts of the slowest 1% of calls (CPU), checked 10 times again "
        f"each, take {replayed_median:.3f} ms (median of their fastest runs; at most "
        f"{replayed_max:.3f} ms) against a p90 of {percentile(local_cpu, 0.9):.3f} ms for all: "
        + (
            "no slower than the usual prompt, so a slow call was the machine's (preemption, "
            "caches shared with other work), not its prompt's (a backtracking pattern is slow "
            "every time)."
            if replayed_max <= percentile(local_cpu, 0.9) * 1.5
            else "some prompts are slow every time: the detectors' cost depends on them."
        ),
        "",
        "## Remote: `Decide` over gRPC",
        "",
        "Open loop: each call starts on its schedule (1/rate apart), whatever the ones before "
        "it are doing, and is timed from its start to its answer. The load generator is a "
        f"process of its own on {args.connections} connections (as many gateways, or gateway "
        "workers, would hold; calls spread evenly over them), sending the same four requests "
        "in turn (findings counts as a gateway sends them), on the same two cores as the "
        "server, so its CPU is shown too: **ghz** "
        f"{GHZ_VERSION} (Go, `--rps --async`: the standard gRPC benchmarking tool, every "
        "call's latency from its report) and **python** (a grpc.aio client, pre-serialised "
        "requests, its garbage collector off during the run so that its own pauses are not "
        "timed as the server's). Each server is measured by each generator in turn, in the "
        "same run. Server CPU per call is the server processes' CPU time (all their threads, "
        "/proc) over the run divided by the calls, and per process when several share the "
        "port (each takes the calls of the connections the kernel handed it: SO_REUSEPORT "
        "spreads connections, not calls, so the shares are uneven); their storage process's "
        "(a child doing their ClickHouse work) is shown apart.",
        "",
        f"- **{_decision_label(args.processes)}**: `python -m civicmeter decision` with "
        f"CIVICMETER_DECISION_PROCESSES={args.processes} (the target is judged on it; "
        f"**{_decision_label(1)}** for comparison); each process on the "
        f"thread-pool server (grpc.server: {DECIDE_WORKERS} threads for calls, streams on a "
        "pool of their own): API keys, role check, per-key rate limit, argument checks, an "
        "audit row per call (queued, written in batches each second by a background task), "
        "the policy from config/policies.yaml and the budget state read again every 2 s by a "
        "background thread; the audit batches and the budget reads run in the storage "
        "process, a child at idle priority owning an empty embedded ClickHouse of its own "
        "(one for the group).",
        f"- **{FLOORS['aio']}** / **{FLOORS['sync']}**: the transport alone, a fixed "
        "DecideResponse with no API work, on grpc.aio and on the thread-pool server "
        f"(grpc.server, {DECIDE_WORKERS} workers): the floor either server model puts under "
        "any API.",
        "",
        "| server | client | offered calls/s | achieved calls/s | seconds | errors | p50 ms | "
        "p90 ms | p99 ms | max ms | server CPU ms/call | server cores busy | per server "
        "process ms/call | storage process CPU ms/call | client CPU ms/call | load avg after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(run) for run in runs),
        "",
        f"Targets: `Decide` p99 <= {REMOTE_TARGET_MS:.0f} ms at 1,000 calls/s "
        f"({_verdicts(decided)} in this run); the guard's local p99 "
        f"<= {LOCAL_TARGET_MS:.0f} ms for a 4 KB prompt (wall {local_p99:.3f} ms, CPU "
        f"{local_cpu_p99:.3f} ms in this run).",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        RESULTS.write_text(report + _kept_notes(), encoding="utf-8")
    ok = remote_ok and local_p99 <= LOCAL_TARGET_MS and local_cpu_p99 <= LOCAL_TARGET_MS
    return 0 if ok else 1


DECISION_SERVER = "civicmeter decision"


def _decision_label(processes: int) -> str:
    return f"{DECISION_SERVER}, {processes} process{'es' if processes > 1 else ''}"


FLOORS = {"aio": "floor, grpc.aio", "sync": "floor, thread pool"}


def _met(run: RemoteRun) -> bool:
    return bool(
        run.times
        and percentile(run.times, 0.99) <= REMOTE_TARGET_MS
        and not run.errors
        and run.achieved >= 0.98 * run.rate
    )


def _verdicts(decided: Sequence[RemoteRun]) -> str:
    """Met or missed, per load generator."""
    if not decided:
        return "not measured"
    return ", ".join(
        f"{'met' if _met(run) else 'missed'} with {run.client} at {run.rate:.0f}/s"
        for run in decided
    )


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{count} {code}" for code, count in sorted(errors.items())) or "0"


def _per_process(run: RemoteRun) -> str:
    return " / ".join(f"{share:.2f}" for share in run.split) if run.split else "one"


def _row(run: RemoteRun) -> str:
    busy = run.server_ms_per_call * run.achieved / 1000
    return (
        f"| {run.server} | {run.client} | {run.rate:.0f} | {run.achieved:.0f} | "
        f"{run.seconds:.0f} | {_errors(run.errors)} | {_ms(run.times, 0.5)} | "
        f"{_ms(run.times, 0.9)} | {_ms(run.times, 0.99)} | {_ms(run.times, 1.0)} | "
        f"{run.server_ms_per_call:.3f} | {busy:.2f} | {_per_process(run)} | "
        f"{run.storage_ms_per_call:.3f} | "
        f"{run.client_ms_per_call:.3f} | "
        f"{run.load_after:.1f} |"
    )


if __name__ == "__main__":
    raise SystemExit(main())
