"""The processor alone on a real broker, with its CPU: bench.py's processor_alone (a preloaded
usage.raw, the faust worker with its detectors draining it) while the processor's process is
watched for CPU time and, optionally, sampled by py-spy.

    python -m loadtests.processor_drain [--events 200000] [--profile-seconds 10]

Prints events/s (from the first commit on, as processor_alone counts) and the processor's CPU
µs per event over the same span; with --profile-seconds, the functions with the most own time.
CPU time is what to compare on a shared machine: wall-clock rates move with the neighbours.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from loadtests import bench, measure
from tools.localkafka import LocalKafka

_TICKS = os.sysconf("SC_CLK_TCK")


def _children(root: int) -> dict[int, str]:
    """Descendants of `root` (pid -> command line), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                frontier.append(pid)
                try:
                    found[pid] = (Path("/proc") / str(pid) / "cmdline").read_text()
                except OSError:
                    continue
    return found


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


class ProcessorWatch(threading.Thread):
    """Samples the processor's CPU time and the consumer lag until the processor exits."""

    def __init__(self, bootstrap: str, profile_seconds: int, workdir: Path) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.profile_seconds = profile_seconds
        self.workdir = workdir
        self.samples: list[tuple[float, float, int]] = []  # (monotonic, cpu seconds, lag)
        self.profile: list[tuple[str, float]] = []
        self.profiler: threading.Thread | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        pid = None
        while pid is None and not self.stop.is_set():
            pid = next(
                (p for p, cmd in _children(os.getpid()).items() if "civicmeter\0processor" in cmd),
                None,
            )
            time.sleep(0.05)
        if pid is None:
            return
        raw = bench.ALONE_TOPICS["CIVICMETER_TOPIC_RAW"]
        profiling = not self.profile_seconds
        while not self.stop.is_set():
            lag = asyncio.run(measure.consumer_lag(self.bootstrap, bench.ALONE_GROUP, raw))
            cpu = _cpu_seconds(pid)
            if cpu is None:
                return
            self.samples.append((time.monotonic(), cpu, lag))
            if not profiling and lag < self.samples[0][2]:  # draining: past start-up and join
                profiling = True
                self.profiler = threading.Thread(target=self._profile, args=(pid,), daemon=True)
                self.profiler.start()
            if lag == 0:
                return
            time.sleep(0.1)

    def _profile(self, pid: int) -> None:
        self.profile = measure.profile(pid, self.profile_seconds, self.workdir / "processor.spy")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--profile-seconds", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="processor-drain-") as tmp:
        workdir = Path(tmp)
        with LocalKafka(workdir / "kafka") as kafka:
            watch = ProcessorWatch(kafka.bootstrap_servers, args.profile_seconds, workdir)
            watch.start()
            rate = bench.processor_alone(kafka, workdir, args.events)
            watch.stop.set()
            watch.join(timeout=30)
            if watch.profiler is not None:
                watch.profiler.join(timeout=args.profile_seconds + 60)
    # CPU over the span the events were processed: from the first sample with progress on.
    progressed = [s for s in watch.samples if s[2] < watch.samples[0][2]] or watch.samples
    start = max((s for s in watch.samples if s[0] <= progressed[0][0]), key=lambda s: s[0])
    end = watch.samples[-1]
    lag_records = start[2] - end[2]
    total_records = watch.samples[0][2] or 1
    events = args.events * lag_records / total_records
    cpu = end[1] - start[1]
    print(f"processor alone: {rate:,.0f} events/s (wall clock)")
    print(
        f"processor CPU: {cpu:.2f} s for {events:,.0f} events = {cpu / max(events, 1) * 1e6:.1f} "
        f"µs/event ({events / max(cpu, 1e-9):,.0f} events per CPU second)"
    )
    for frame, share in watch.profile:
        print(f"  {share:5.1%}  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
