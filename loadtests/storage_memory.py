"""Where the storage process's memory goes under the soak's load.

Runs the bench's stack (a broker, ingest, the processor, and the storage process serving sink,
query, decision, notifier and billing on the embedded ClickHouse) with the load and the
freshness probe of the bench's soak, and samples the storage process from inside every
`--interval` seconds: its resident memory (anonymous and file-backed), the engine's own view
(tracked memory, jemalloc's allocated/resident/retained, the size of each cache, the parts,
the merges running and their memory), glibc malloc's heap (Python's large objects, gRPC) and
Python's objects. The storage process is `civicmeter serve ...` as the stack runs it, with a
sampling thread started beside it.

    python -m loadtests.storage_memory [--rate 10000] [--seconds 900] [--interval 10]
        [--samples FILE]

Prints each figure's first sample, its level after warm-up and at the end, and its trend after
warm-up, as the bench reads its soak (loadtests.soak); every sample goes to FILE as a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from civicmeter.core.config import ClickHouseSettings, KafkaSettings, TopicSettings
from civicmeter.core.kafka import ensure_topics
from loadtests.soak import growth
from loadtests.stack import REPO, LocalStack
from tools.localkafka import LocalKafka

STORAGE_SERVICES = ("sink", "query", "decision", "notifier", "billing")  # as LocalStack runs
ENGINE_METRICS = (
    "MemoryTracking",
    "MarkCacheBytes",
    "MarkCacheFiles",
    "PrimaryIndexCacheBytes",
    "UncompressedCacheBytes",
    "IndexMarkCacheBytes",
    "IndexUncompressedCacheBytes",
    "QueryCacheBytes",
    "QueryConditionCacheBytes",
    "QueryConditionCacheEntries",
    "PageCacheBytes",
    "MMapCacheCells",
    "CompiledExpressionCacheBytes",
    "SerializationCacheBytesInMemoryAllocated",
)
# The tables that grow under the load: the ledger, and the staging table and journal of the
# crash-safe writes (kept for sink.write_journal.RETENTION).
GROWING_TABLES = ("usage_events", "usage_staged", "usage_write_journal")
_baseline: list[tracemalloc.Snapshot] = []  # the first traced snapshot, with --tracemalloc
_JEMALLOC = re.compile(
    r"Allocated: (\d+), active: (\d+), metadata: (\d+).*?resident: (\d+), mapped: (\d+), "
    r"retained: (\d+)"
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _proc_kib(path: str, names: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(path).read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in names:
            out[key] = int(rest.split()[0]) * 1024
    return out


def _engine(client: Client) -> dict[str, int]:
    names = ", ".join(f"'{name}'" for name in ENGINE_METRICS)
    rows = client.query(f"SELECT metric, value FROM system.metrics WHERE metric IN ({names})")
    out = {str(metric): int(value) for metric, value in rows.result_rows}
    stats = str(client.command("SELECT stats FROM system.jemalloc_stats"))
    found = _JEMALLOC.search(stats)
    if found:
        for key, value in zip(
            ("allocated", "active", "metadata", "resident", "mapped", "retained"),
            found.groups(),
            strict=True,
        ):
            out[f"jemalloc.{key}"] = int(value)
    parts = client.query(
        "SELECT countIf(active), count(), sumIf(primary_key_bytes_in_memory_allocated, active)"
        " FROM system.parts"
    ).result_rows[0]
    out["parts.active"], out["parts.all"], out["parts.primary_key_bytes"] = map(int, parts)
    tables = client.query(
        "SELECT table, countIf(active), sumIf(rows, active) FROM system.parts"
        " WHERE table IN {tables:Array(String)} GROUP BY table",
        parameters={"tables": list(GROWING_TABLES)},
    ).result_rows
    for table, active, rows in tables:
        out[f"{table}.parts"], out[f"{table}.rows"] = int(active), int(rows)
    merges = client.query("SELECT count(), sum(memory_usage) FROM system.merges").result_rows[0]
    out["merges"], out["merges.memory_bytes"] = map(int, merges)
    return out


def sample(settings: ClickHouseSettings) -> dict[str, Any]:
    """One look at this process's memory, by owner."""
    from civicmeter.core.store.connection import open_storage

    status = _proc_kib("/proc/self/status", ("VmRSS", "RssAnon", "RssFile", "RssShmem"))
    rollup = _proc_kib("/proc/self/smaps_rollup", ("Pss_Anon", "Pss_File"))
    info = _MallInfo2()
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    out: dict[str, Any] = {
        "time": time.time(),
        **status,
        **rollup,
        "threads": len(os.listdir("/proc/self/task")),
        "glibc.in_use": info.uordblks + info.hblkhd,
        "glibc.free": info.fordblks,
        "glibc.arena": info.arena,
        "python.blocks": sys.getallocatedblocks(),
        # The objects the collector walks: those of start-up are frozen out of them.
        "python.objects": len(gc.get_objects()),
        "python.types": dict(
            Counter(type(o).__qualname__ for o in gc.get_objects()).most_common(25)
        ),
    }
    if tracemalloc.is_tracing():
        out["python.traced"] = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.take_snapshot().compare_to(_baseline[0], "traceback")
        out["python.grown"] = [
            [stat.size_diff, stat.count_diff, [str(f) for f in stat.traceback.format()[-12:]]]
            for stat in grown[:12]
        ]
    try:
        out.update(open_storage(settings).call(_engine))
    except Exception as exc:  # noqa: BLE001 (a look that failed is recorded, not fatal)
        out["engine_error"] = str(exc)[:200]
    return out


def serve_sampled(samples: Path, interval: float, traced: bool) -> None:
    """The storage process with a sampling thread: `civicmeter serve` of STORAGE_SERVICES.
    `traced`: Python's allocations traced (tracemalloc) from the first sample on, and the
    biggest growths since then recorded with each sample (slows the process down)."""
    from civicmeter.__main__ import main

    settings = ClickHouseSettings.from_env(os.environ)

    def watch() -> None:
        with samples.open("a") as out:
            time.sleep(interval)
            if traced:
                tracemalloc.start(12)
                _baseline.append(tracemalloc.take_snapshot())
            while True:
                time.sleep(interval)
                out.write(json.dumps(sample(settings)) + "\n")
                out.flush()

    threading.Thread(target=watch, daemon=True, name="memory-samples").start()
    main(["serve", *STORAGE_SERVICES])


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from loadtests.bench import FreshnessProbe
    from loadtests.loadgen import run_load

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    args.samples.unlink(missing_ok=True)
    with LocalKafka(args.workdir / "kafka") as kafka:
        settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, topics=TopicSettings())
        asyncio.run(ensure_topics(settings))
        with LocalStack(
            kafka.bootstrap_servers,
            args.workdir / "pipeline",
            extra_env={"CIVICMETER_LOG_LEVEL": "WARNING"},
            services=("ingest", "processor"),
        ) as stack:
            env = {**stack.env(), "KAFKA_GROUP_INSTANCE_ID": "storage-memory"}
            log = (args.workdir / "pipeline" / "logs" / "storage.log").open("ab")
            storage = subprocess.Popen(
                [sys.executable, "-m", "loadtests.storage_memory", "--serve"]
                + ["--samples", str(args.samples), "--interval", str(args.interval)]
                + (["--tracemalloc"] if args.tracemalloc else []),
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + 120
                while not (
                    LocalStack._grpc_serving(stack.query_target)
                    and LocalStack._grpc_serving(stack.decision_target)
                ):
                    if storage.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the storage process did not start")
                    time.sleep(0.5)
                print(f"storage pid {storage.pid}; {args.rate:,.0f} events/s for "
                      f"{args.seconds:.0f} s", flush=True)  # fmt: skip
                probe = FreshnessProbe(stack)
                if args.probe:
                    probe.start()
                sent = run_load(
                    stack.ingest_url, args.rate, args.seconds, workers=2, progress=False,
                    token=stack.gateway_token,
                )  # fmt: skip
                if args.probe:
                    probe.stop()
                print(f"sent {sent:,} events", flush=True)
                stack.check_alive()
                if storage.poll() is not None:
                    raise RuntimeError(f"the storage process exited with {storage.returncode}")
            finally:
                storage.terminate()
                try:
                    storage.wait(30)
                except subprocess.TimeoutExpired:
                    storage.kill()
                    storage.wait()
                log.close()
    return [json.loads(line) for line in args.samples.read_text().splitlines()]


def summary(samples: list[dict[str, Any]]) -> str:
    """Each figure: the first sample, the level after warm-up and at the end (medians of a
    minute), the growth between them and the trend after warm-up (loadtests.soak)."""
    if len(samples) < 5:
        return "too few samples"
    lines = [
        f"{'figure':<42} {'first':>12} {'warmed':>12} {'last':>12} {'growth':>10} {'trend/min':>10}"
    ]
    for key in samples[0]:
        if key == "time" or not isinstance(samples[0][key], int):
            continue
        found = growth([(s["time"], s.get(key, 0)) for s in samples])
        scale = 2**20 if key.startswith(("Vm", "Rss", "Pss", "glibc", "jemalloc")) or (
            "Bytes" in key or "bytes" in key or key == "MemoryTracking"
        ) else 1  # fmt: skip
        unit = " MB" if scale > 1 else ""
        lines.append(
            f"{key:<42} {found.first / scale:>12,.1f} {found.warm / scale:>12,.1f} "
            f"{found.last / scale:>12,.1f} {(found.last - found.warm) / scale:>+10,.1f} "
            f"{found.trend_per_minute / scale:>+10,.2f}{unit}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--seconds", type=float, default=900)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--samples", type=Path, default=Path("/tmp/storage_memory.jsonl"))
    parser.add_argument("--workdir", type=Path, default=REPO / ".civicmeter" / "storage-memory")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="trace Python's allocations (slower)"
    )
    parser.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="without the bench's freshness probe (its queries over gRPC)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_sampled(args.samples, args.interval, args.tracemalloc)
        return 0
    print(summary(run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
