"""CPU of the storage process (sink, query, notifier and billing on embedded ClickHouse), in CPU
seconds per 100,000 events so that other work on a shared machine counts as little as it can.

    python -m loadtests.storage_cpu sink [--events 1000000]
    python -m loadtests.storage_cpu pipeline [--rate 2000] [--seconds 20] [--profile]

`sink`: the storage process alone draining a preloaded usage.rated (loadtests.bench's sink
alone), from its first commit to the last. `pipeline`: the whole stack with the benchmark's
freshness probe, the load generator at a fixed rate; CPU of each service over the load's
window, the consumer lag of both topics each second, freshness of the probes, and with
`--profile` the storage process's top py-spy lines (own time) over 10 s of the load.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from civicmeter.core.config import KafkaSettings, TopicSettings
from civicmeter.core.kafka import ensure_topics
from loadtests import measure
from loadtests.bench import (
    SINK_ALONE_GROUP,
    SINK_ALONE_TOPICS,
    FreshnessProbe,
    preload_rated,
)
from loadtests.loadgen import run_load
from loadtests.stack import REPO, LocalStack
from tools.localkafka import LocalKafka

QUIET = {"CIVICMETER_LOG_LEVEL": "WARNING"}


def per_100k(cpu_seconds: float, events: float) -> float:
    return 100_000 * cpu_seconds / max(events, 1)


def sink_alone(kafka: LocalKafka, workdir: Path, count: int) -> None:
    topic = SINK_ALONE_TOPICS["CIVICMETER_TOPIC_RATED"]
    settings = KafkaSettings(
        bootstrap_servers=kafka.bootstrap_servers, topics=TopicSettings.from_env(SINK_ALONE_TOPICS)
    )
    asyncio.run(ensure_topics(settings))
    asyncio.run(preload_rated(kafka.bootstrap_servers, topic, count))

    def lag() -> int:
        return asyncio.run(measure.consumer_lag(kafka.bootstrap_servers, SINK_ALONE_GROUP, topic))

    records = lag()
    env = {**SINK_ALONE_TOPICS, "CIVICMETER_SINK_GROUP_ID": SINK_ALONE_GROUP, **QUIET}
    first: tuple[float, int, float] | None = None
    with LocalStack(
        kafka.bootstrap_servers, workdir / "sink-alone", extra_env=env, services=("storage",)
    ) as stack:
        pid = stack.pids()["storage"]
        deadline = time.monotonic() + 600
        while (left := lag()) > 0:
            if first is None and left < records:
                first = (time.monotonic(), left, measure.sample_process(pid).cpu_seconds)
            stack.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the sink did not drain the preloaded topic")
            time.sleep(0.1)
        ended, cpu = time.monotonic(), measure.sample_process(pid).cpu_seconds
    if first is None:
        raise RuntimeError("the sink drained the topic before the first look at its lag")
    started, remaining, cpu_before = first
    rows = remaining * count / max(records, 1)
    print(
        f"sink alone: {rows:,.0f} rows in {ended - started:.2f} s = "
        f"{rows / (ended - started):,.0f} rows/s (wall); "
        f"{per_100k(cpu - cpu_before, rows):.2f} CPU s per 100k rows"
    )


def pipeline(kafka: LocalKafka, workdir: Path, rate: float, seconds: float, spy: bool) -> None:
    asyncio.run(
        ensure_topics(
            KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, topics=TopicSettings())
        )
    )
    with LocalStack(kafka.bootstrap_servers, workdir / "pipeline", extra_env=QUIET) as stack:
        pids = stack.pids()
        probe = FreshnessProbe(stack)
        probe.start()
        time.sleep(5)
        probe.take()  # the probes of the start-up: not the load's
        lags: list[tuple[int, int, int]] = []
        done = threading.Event()
        started = time.monotonic()

        def watch() -> None:
            servers = kafka.bootstrap_servers
            while not done.is_set():
                raw = asyncio.run(
                    measure.consumer_lag(servers, "civicmeter-processor", "usage.raw")
                )
                rated = asyncio.run(measure.consumer_lag(servers, "civicmeter-sink", "usage.rated"))
                lags.append((round(time.monotonic() - started), raw, rated))
                done.wait(1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        profile: list[tuple[str, float]] = []
        profiler = threading.Thread(
            target=lambda: profile.extend(
                measure.profile(pids["storage"], 10, workdir / "storage-profile.txt")
            ),
            daemon=True,
        )
        if spy:
            threading.Timer(3, profiler.start).start()
        before = measure.sample_all(pids)
        sent = run_load(
            stack.ingest_url, rate, seconds, workers=2, progress=False, token=stack.gateway_token
        )
        window = time.monotonic() - started
        after = measure.sample_all(pids)
        done.set()
        time.sleep(3)  # the last probes of the load
        freshness = probe.stop()
        if spy:
            profiler.join()
    cpu = {name: after[name].cpu_seconds - before[name].cpu_seconds for name in after}
    print(f"pipeline at {rate:,.0f}/s: {sent:,} events accepted in {window:.1f} s")
    for name, seconds_used in cpu.items():
        print(
            f"  {name}: {100 * seconds_used / window:.0f}% CPU, "
            f"{per_100k(seconds_used, sent):.2f} CPU s per 100k events"
        )
    print("  consumer lag in records (s, usage.raw, usage.rated): " + str(lags))
    values = sorted(freshness.values())
    if len(values) >= 2:
        q = statistics.quantiles(values, n=100, method="inclusive")
        print(f"  freshness p50 {q[49]:.2f} s, p99 {q[98]:.2f} s ({len(values)} probes)")
    for frame, share in profile[:8]:
        print(f"  storage py-spy {share:.0%} {frame}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("sink", "pipeline"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--workdir", type=Path, default=REPO / ".civicmeter" / "storage-cpu")
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    with LocalKafka(args.workdir / "kafka") as kafka:
        if args.mode == "sink":
            sink_alone(kafka, args.workdir, args.events)
        else:
            pipeline(kafka, args.workdir, args.rate, args.seconds, args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
