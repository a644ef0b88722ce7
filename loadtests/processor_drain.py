"""The processor alone on a real broker, with its CPU: bench.py's processor_alone (a preloaded
usage.raw, the faust worker with its detectors draining it) while the processor's process is
watched for CPU time and, optionally, sampled by py-spy.

    python -m loadtests.processor_drain [--events 200000] [--processes 1] [--profile-seconds 10]

Prints events/s (processor_alone's: from the last look with no rated record out to the first
with all out; and from the first rated record seen to the last) and the processor's CPU µs per
event from just before its first rated record out to the last commit; with --profile-seconds,
the functions with the most own time.
CPU time is what to compare on a shared machine: wall-clock rates move with the neighbours.
The span starts at the first output, not the first commit: the processor commits a record's
offset only once the detector state counting it is written, seconds after the record is rated.
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

    def __init__(
        self, bootstrap: str, profile_seconds: int, workdir: Path, processes: int = 1
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.processes = processes
        self.profile_seconds = profile_seconds
        self.workdir = workdir
        # (monotonic, cpu seconds, lag, rated records out)
        self.samples: list[tuple[float, float, int, int]] = []
        self.profile: list[tuple[str, float]] = []
        self.profiler: threading.Thread | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        pids: list[int] = []
        while len(pids) < self.processes and not self.stop.is_set():
            children = _children(os.getpid()).items()
            pids = [p for p, cmd in children if "civicmeter\0processor" in cmd]
            time.sleep(0.05)
        if not pids:
            return
        pid = pids[0]  # the one profiled
        raw = bench.ALONE_TOPICS["CIVICMETER_TOPIC_RAW"]
        rated = bench.ALONE_TOPICS["CIVICMETER_TOPIC_RATED"]
        profiling = not self.profile_seconds
        while not self.stop.is_set():
            lag = asyncio.run(measure.consumer_lag(self.bootstrap, bench.ALONE_GROUP, raw))
            out = sum(asyncio.run(measure.topic_ends(self.bootstrap, rated)).values())
            cpus = [_cpu_seconds(p) for p in pids]
            if None in cpus:
                return
            cpu = sum(c for c in cpus if c is not None)
            self.samples.append((time.monotonic(), cpu, lag, out))
            if not profiling and out > self.samples[0][3]:  # draining: past start-up and join
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
    parser.add_argument("--processes", type=int, default=1, help="processor processes")
    parser.add_argument("--profile-seconds", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="processor-drain-") as tmp:
        workdir = Path(tmp)
        with LocalKafka(workdir / "kafka") as kafka:
            watch = ProcessorWatch(
                kafka.bootstrap_servers, args.profile_seconds, workdir, args.processes
            )
            watch.start()
            rate = bench.processor_alone(kafka, workdir, args.events, args.processes)
            watch.stop.set()
            watch.join(timeout=30)
            if watch.profiler is not None:
                watch.profiler.join(timeout=args.profile_seconds + 60)
    samples = watch.samples
    # CPU from the last sample before the first rated record out to the last commit.
    initial_out, final_out = samples[0][3], samples[-1][3]
    start = max((s for s in samples if s[3] == initial_out), key=lambda s: s[0])
    end = samples[-1]
    total_records = samples[0][2] or 1
    events = args.events * (start[2] - end[2]) / total_records
    cpu = end[1] - start[1]
    # Wall clock from the first rated record out to the last.
    first = min((s for s in samples if s[3] > initial_out), key=lambda s: s[0], default=end)
    last = min((s for s in samples if s[3] == final_out), key=lambda s: s[0])
    share = (last[3] - first[3]) / max(final_out - initial_out, 1)
    out_rate = args.events * share / max(last[0] - first[0], 1e-9)
    print(
        f"processor alone, {args.processes} process(es): {rate:,.0f} events/s "
        "(wall clock, as make bench counts)"
    )
    print(f"processor alone: {out_rate:,.0f} events/s (wall clock, first rated output to last)")
    print(
        f"processor CPU: {cpu:.2f} s for {events:,.0f} events = {cpu / max(events, 1) * 1e6:.1f} "
        f"µs/event ({events / max(cpu, 1e-9):,.0f} events per CPU second)"
    )
    for frame, share in watch.profile:
        print(f"  {share:5.1%}  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
