"""Decision latency: the gateway's local Guard, and Decide over gRPC at a fixed rate.

    python -m loadtests.guard.bench [--calls 5000] [--rate 1000] [--seconds 10] [--no-write]

Local: `Guard.check` (PII and document detectors, the compiled policy of config/policies.yaml
for Seoul, the masking for REDACT) on prompts of about 4 KB made of the PII benchmark's corpus,
a third of them with a registration number (so REDACT and its masking are measured too), in
this one process and thread; each call timed alone. Target p99 <= 1 ms.

Remote: the query service (`python -m civicmeter query`: API keys, audit log, per-key rate
limit on) in its own process, on an empty embedded ClickHouse; a grpc.aio client in this
process sends `Decide` open-loop at --rate calls a second (each call starts on its schedule,
whatever the ones before it are doing) for --seconds, with findings counts as a gateway sends
them; each call timed from its start to its answer. Target p99 <= 5 ms at 1,000 calls/s.
The client shares the machine's cores with the server, as it would with a gateway beside it.

Writes loadtests/guard/RESULTS.md (unless --no-write); exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from civicmeter.core.auth import hash_token
from civicmeter.decision.v1 import decision_service_pb2 as pb
from civicmeter.gateway import Guard, RequestFacts
from loadtests.api_bench import start_server
from loadtests.pii.bench import _cpu_model
from loadtests.pii.corpus import generate
from loadtests.stack import REPO

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


def local(calls: int) -> tuple[list[float], list[float], dict[str, int]]:
    """Wall-clock and CPU (thread) milliseconds of each call, and the outcomes."""
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
    for n in range(calls):
        text = texts[n % len(texts)]
        began, began_cpu = time.perf_counter_ns(), time.thread_time_ns()
        verdict = guard.check(text, facts)
        cpu.append((time.thread_time_ns() - began_cpu) / 1e6)
        times.append((time.perf_counter_ns() - began) / 1e6)
        outcomes[verdict.outcome] = outcomes.get(verdict.outcome, 0) + 1
    return times, cpu, outcomes


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


async def remote(target: str, rate: float, seconds: float) -> tuple[list[float], int, float]:
    """Latencies (ms) of calls started every 1/rate s; the errors; the achieved rate."""
    bodies = decide_requests()
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    times: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        for body in bodies * 50:  # warm-up: connection, budget state, caches
            await call(body, metadata=metadata, timeout=10)

        async def one(body: bytes) -> None:
            nonlocal errors
            began = time.perf_counter()
            try:
                await call(body, metadata=metadata, timeout=5)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            times.append((time.perf_counter() - began) * 1000)

        total = int(rate * seconds)
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[n % len(bodies)])))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return times, errors, total / elapsed


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
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rates", default="250,1000", help="calls/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    began = datetime.now(UTC)
    load = os.getloadavg()
    local_times, local_cpu, outcomes = local(args.calls)
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        keys = workdir / "api-keys.yaml"
        keys.write_text(
            "keys:\n  - id: bench-gateway\n    role: gateway\n    organization_ids: [seoul]\n"
            f"    sha256: {hash_token(TOKEN)}\n"
        )
        server, target = start_server(workdir, keys, "0")
        runs: list[tuple[float, list[float], int, float]] = []
        try:
            for rate in (float(r) for r in args.rates.split(",")):
                runs.append((rate, *asyncio.run(remote(target, rate, args.seconds))))
        finally:
            server.terminate()
            server.wait(30)
    local_p99 = percentile(local_times, 0.99)
    local_cpu_p99 = percentile(local_cpu, 0.99)
    remote_p99 = (
        max(
            percentile(times, 0.99) if times else float("inf")
            for rate, times, _, _ in runs
            if rate >= 1000
        )
        if any(rate >= 1000 for rate, *_ in runs)
        else float("inf")
    )
    errors = sum(run[2] for run in runs)
    lines = [
        "# Guard and Decide: decision latency",
        "",
        f"Measured {began:%Y-%m-%d %H:%M} UTC with:",
        "",
        "```",
        "python -m loadtests.guard.bench " + " ".join(argv or sys.argv[1:]),
        "```",
        "",
        f"Python {platform.python_version()} on {_cpu_model()}, {os.cpu_count()} CPUs, load "
        f"average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} when the run started (the "
        "machine is shared with other work).",
        "",
        "## Local: `Guard.check` on a 4 KB prompt",
        "",
        f"{args.calls} calls, one thread; outcomes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        + " (REDACT includes masking the prompt).",
        "",
        "| clock | p50 ms | p90 ms | p99 ms | max ms | target p99 |",
        "|---|---:|---:|---:|---:|---:|",
        f"| wall | {statistics.median(local_times):.3f} | {percentile(local_times, 0.9):.3f} | "
        f"{local_p99:.3f} | {max(local_times):.3f} | {LOCAL_TARGET_MS:.1f} ms |",
        f"| CPU (thread) | {statistics.median(local_cpu):.3f} | "
        f"{percentile(local_cpu, 0.9):.3f} | {local_cpu_p99:.3f} | {max(local_cpu):.3f} | "
        f"{LOCAL_TARGET_MS:.1f} ms |",
        "",
        "The wall-clock tail is the time the thread waited for a core (the machine's load "
        "average is far above its core count), the CPU-time one what the guard itself costs.",
        "",
        "## Remote: `Decide` over gRPC",
        "",
        f"{args.seconds:.0f} s per rate, open loop: each call starts on its schedule; the "
        "query service in its own process with API keys, the audit log and the per-key rate "
        "limit on; the Python grpc.aio client in this process.",
        "",
        "| target calls/s | achieved calls/s | errors | p50 ms | p90 ms | p99 ms | max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {rate:.0f} | {achieved:.0f} | {failed} | {_ms(times, 0.5)} | "
            f"{_ms(times, 0.9)} | {_ms(times, 0.99)} | {_ms(times, 1.0)} |"
            for rate, times, failed, achieved in runs
        ),
        "",
        f"Target: p99 <= {REMOTE_TARGET_MS:.0f} ms at 1,000 calls/s.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        RESULTS.write_text(report + _kept_notes(), encoding="utf-8")
    ok = local_cpu_p99 <= LOCAL_TARGET_MS and remote_p99 <= REMOTE_TARGET_MS and errors == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
