"""OTLP throughput: GenAI spans per second into ingest over OTLP/HTTP protobuf.

Starts a Kafka broker (or uses --kafka) and the ingest service in its own process (gateway
keys on, as in production), then posts pre-encoded ExportTraceServiceRequests, each of
--spans-per-request GenAI spans made by the real OpenTelemetry SDK (the OTLP exporter's
encoding), from --concurrency connections for --seconds. An export counts once ingest answers
200 with no span refused, i.e. once every event of it is durable in Kafka. Reports events/s
and events per ingest CPU-second (the figure that travels on a machine whose cores the load
generator shares). Writes loadtests/OTLP_RESULTS.md.

    python -m loadtests.otlp_bench [--seconds 20] [--concurrency 8] [--spans-per-request 512]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp_pb
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from civicmeter.gateway.identity import pseudonymise_user
from loadtests.measure import sample_process
from loadtests.stack import LocalStack
from tools.localkafka import LocalKafka

RESULTS = Path(__file__).with_name("OTLP_RESULTS.md")
DEPARTMENTS = ("welfare", "transport", "culture", "digital-policy")


def export_bodies(count: int, spans_per_request: int) -> list[bytes]:
    """`count` distinct requests of GenAI spans as a LiteLLM-style gateway exports them."""
    bodies = []
    key = b"bench-hmac-key-32-bytes-long-0000"
    for n in range(count):
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({
            "service.name": "gw-bench", "civicmeter.organization_id": "seoul",
            "civicmeter.department_id": DEPARTMENTS[n % len(DEPARTMENTS)],
        }))  # fmt: skip
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("bench")
        for i in range(spans_per_request):
            with tracer.start_as_current_span("chat gpt-4o") as span:
                span.set_attributes({
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 800 + i, "gen_ai.usage.output_tokens": 90,
                    "gen_ai.usage.cache_read.input_tokens": 100,
                    "civicmeter.user_id": pseudonymise_user(key, f"user{i % 200}"),
                })  # fmt: skip
        provider.shutdown()
        bodies.append(encode_spans(memory.get_finished_spans()).SerializeToString())
    return bodies


async def load(
    url: str, headers: dict[str, str], bodies: Sequence[bytes], seconds: float, concurrency: int
) -> tuple[int, int, float]:
    """(exports answered in full, exports that were not, elapsed seconds)."""
    done = failed = 0
    deadline = time.monotonic() + seconds
    headers = {**headers, "Content-Type": "application/x-protobuf"}

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal done, failed
        n = offset
        while time.monotonic() < deadline:
            async with session.post(url, data=bodies[n % len(bodies)], headers=headers) as resp:
                answer = otlp_pb.ExportTraceServiceResponse.FromString(await resp.read())
                if resp.status == 200 and not answer.partial_success.rejected_spans:
                    done += 1
                else:
                    failed += 1
            n += 1

    start = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session, i) for i in range(concurrency)))
    return done, failed, time.monotonic() - start


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--spans-per-request", type=int, default=512)
    parser.add_argument("--kafka", default="", help="bootstrap servers (default: start one)")
    args = parser.parse_args(argv)
    bodies = export_bodies(8, args.spans_per_request)
    with tempfile.TemporaryDirectory() as workdir:
        if args.kafka:
            run(args, args.kafka, Path(workdir), bodies)
        else:
            with LocalKafka() as kafka:
                run(args, kafka.bootstrap_servers, Path(workdir), bodies)


def run(args: argparse.Namespace, bootstrap: str, workdir: Path, bodies: list[bytes]) -> None:
    with LocalStack(bootstrap, workdir, services=("ingest",)) as stack:
        url = f"{stack.ingest_url}/v1/traces"
        asyncio.run(load(url, stack.ingest_headers, bodies[:1], 2.0, 2))  # warm up
        before = sample_process(stack.pids()["ingest"]).cpu_seconds
        done, failed, elapsed = asyncio.run(
            load(url, stack.ingest_headers, bodies, args.seconds, args.concurrency)
        )
        cpu = sample_process(stack.pids()["ingest"]).cpu_seconds - before
    events = done * args.spans_per_request
    rate, per_cpu = events / elapsed, events / cpu if cpu else 0.0
    print(
        f"{events} events in {elapsed:.1f} s: {rate:,.0f} events/s, {per_cpu:,.0f} per "
        f"ingest CPU-second ({failed} exports not answered in full)"
    )
    command = (
        f"python -m loadtests.otlp_bench --seconds {args.seconds:g} "
        f"--concurrency {args.concurrency} --spans-per-request {args.spans_per_request}"
    )
    RESULTS.write_text(
        "# OTLP ingest throughput\n\n"
        f"`{command}` on {datetime.now(UTC):%Y-%m-%d} ({platform.machine()}, "
        f"{os.cpu_count()} cores shared by the load generator, ingest and Kafka; Python "
        f"{platform.python_version()}).\n\n"
        "GenAI spans made by the OpenTelemetry SDK, encoded as its OTLP exporter encodes them, "
        "posted to ingest's `/v1/traces` (OTLP/HTTP protobuf, gateway key on); an export "
        "counts once ingest answers 200 with no span refused, i.e. once every event of it is "
        "durable in Kafka (acks=all).\n\n"
        "| spans per export | concurrency | events | seconds | events/s | "
        "events per ingest CPU-second | exports not answered in full |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        f"| {args.spans_per_request} | {args.concurrency} | {events} | {elapsed:.1f} | "
        f"{rate:,.0f} | {per_cpu:,.0f} | {failed} |\n"
    )


if __name__ == "__main__":
    main()
