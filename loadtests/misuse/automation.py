"""automation_burst on simulated traffic: false alerts on random human use, recall on scripts.

    python -m loadtests.misuse.automation [--user-days 5000] [--cases 300] [--seed N]
                                          [--seeds 1] [--no-write]

False alerts. A person whose request times are random: a Poisson process at R requests a day
over the nine office hours (09:00-18:00, the densest a working day gets), for R in each band
from 10 to 300. Every simulated user-day goes, request by request in time order, through the
real AutomationBurstDetector with the default policy of config/policies.yaml; an alert on such
a day is false. The rate is alerts per user-day, with its one-sided 95% upper bound (Poisson:
3 / user-days when there is none).

Recall. A script on a person's account: 11 to 16 requests at a fixed period of 20-600 s, each
gap the period times 1 + N(0, sigma) for a jitter sigma of 0.5%, 2% or 5%, starting at a random
moment of the day; alone, or among the person's own random requests at 10 to 300 a day. A case
is caught when a request of the script raises the alert.

--seeds N repeats everything with N successive seeds (each user-day draws its own times from
its seed, band and number). Writes loadtests/misuse/AUTOMATION_RESULTS.md unless --no-write.
Exit status 1 when any band's false-alert rate reaches 1 per 10,000 user-days.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.policy.organization import OrganizationPolicy, load_policies
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.automation_burst import AutomationBurstDetector
from loadtests.misuse.scenario import POLICIES

RESULTS = Path(__file__).with_name("AUTOMATION_RESULTS.md")
BANDS = (10, 20, 50, 80, 100, 150, 200, 300)  # requests a day
BACKGROUNDS = (0, 10, 50, 100, 150, 300)  # the person's own requests a day beside a script
JITTERS = (0.005, 0.02, 0.05)
TARGET = 1e-4  # false alerts per user-day
DEFAULT_SEED = 20261206
OFFICE_START = 9 * 3600
OFFICE_SECONDS = 9 * 3600
DAY = date(2024, 9, 2)  # a Monday; Asia/Seoul midnight is 15:00 UTC the day before
MIDNIGHT = datetime(2024, 9, 1, 15, 0, tzinfo=UTC).timestamp()


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count (inversion by sequential search; fine for means up to a few hundred)."""
    # Split large means: the sum of Poisson counts is Poisson.
    count = 0
    while mean > 0:
        part = min(mean, 50.0)
        mean -= part
        threshold, product = math.exp(-part), rng.random()
        while product > threshold:
            count += 1
            product *= rng.random()
    return count


def human_day(rng: random.Random, per_day: int) -> list[float]:
    """Seconds after local midnight of a Poisson day of `per_day` requests on average."""
    n = poisson(rng, per_day)
    return sorted(OFFICE_START + rng.random() * OFFICE_SECONDS for _ in range(n))


def script_run(rng: random.Random, jitter: float) -> list[float]:
    period = rng.uniform(20, 600)
    count = rng.randint(11, 16)
    start = OFFICE_START + rng.random() * (OFFICE_SECONDS - period * count)
    times = [start]
    for _ in range(count - 1):
        times.append(times[-1] + period * max(0.0, 1 + rng.gauss(0, jitter)))
    return times


class Feed:
    """User-days through one AutomationBurstDetector, each under a user id of its own."""

    def __init__(self, policy: OrganizationPolicy) -> None:
        self.detector = AutomationBurstDetector(users=1024)
        self.policy = policy
        self.event = pb.UsageEvent(event_id="bench")
        self.users = 0
        self.events = 0

    def day(self, seconds: Sequence[float]) -> list[tuple[int, Alert]]:
        """(index of the request that raised it, alert) for a day of requests in time order."""
        self.users += 1
        user = f"u_bench{self.users:08d}"
        alerts: list[tuple[int, Alert]] = []
        detect, policy, event = self.detector.detect, self.policy, self.event
        day = DAY.toordinal()
        for index, second in enumerate(seconds):
            ctx = EventContext(
                event=event,
                organization_id="bench",
                department_id="bench",
                user_id=user,
                service_id="chatgpt",
                provider_name="openai",
                risk=None,
                cost=Decimal(0),
                policy=policy,
                policy_version="bench",
                seconds=MIDNIGHT + second,
                day=day,
                second=int(second),
                month=202409,
                activity=True,
                banned=False,
                sanctioned=True,
            )
            alerts.extend((index, alert) for alert in detect(ctx))
        self.events += len(seconds)
        return alerts


@dataclass
class Band:
    per_day: int
    user_days: int = 0
    events: int = 0
    alerts: int = 0
    patterns: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.alerts / self.user_days if self.user_days else 0.0

    @property
    def upper(self) -> float:
        """One-sided 95% upper bound of the rate (exact for 0 and 1 alerts, else normal)."""
        if not self.user_days:
            return 0.0
        bound = {0: 2.996, 1: 4.744}.get(self.alerts)
        if bound is None:
            bound = self.alerts + 1.645 * self.alerts**0.5 + 1
        return bound / self.user_days


@dataclass
class Recall:
    jitter: float
    background: int
    cases: int = 0
    caught: int = 0
    interleaved_caught: int = 0  # caught by a chain with the person's requests in between


def false_alerts(feed: Feed, seed: int, user_days: int) -> list[Band]:
    bands = []
    for per_day in BANDS:
        band = Band(per_day)
        for n in range(user_days):
            rng = random.Random(f"{seed}/human/{per_day}/{n}")
            times = human_day(rng, per_day)
            alerts = feed.day(times)
            band.user_days += 1
            band.events += len(times)
            band.alerts += len(alerts)
            for _, alert in alerts:
                pattern = alert.attributes.get("pattern", "?")
                band.patterns[pattern] = band.patterns.get(pattern, 0) + 1
        bands.append(band)
    return bands


def recall(feed: Feed, seed: int, cases: int) -> list[Recall]:
    results = []
    for jitter in JITTERS:
        for background in BACKGROUNDS:
            result = Recall(jitter, background)
            for n in range(cases):
                rng = random.Random(f"{seed}/script/{jitter}/{background}/{n}")
                script = script_run(rng, jitter)
                own = human_day(rng, background)
                merged = sorted([(t, True) for t in script] + [(t, False) for t in own])
                alerts = feed.day([t for t, _ in merged])
                result.cases += 1
                hits = [a for i, a in alerts if merged[i][1]]
                if hits:
                    result.caught += 1
                    if hits[0].attributes.get("requests_in_between", "0") != "0":
                        result.interleaved_caught += 1
            results.append(result)
    return results


def merge_bands(runs: list[list[Band]]) -> list[Band]:
    total = [Band(b.per_day) for b in runs[0]]
    for run in runs:
        for into, band in zip(total, run, strict=True):
            into.user_days += band.user_days
            into.events += band.events
            into.alerts += band.alerts
            for k, v in band.patterns.items():
                into.patterns[k] = into.patterns.get(k, 0) + v
    return total


def merge_recall(runs: list[list[Recall]]) -> list[Recall]:
    total = [Recall(r.jitter, r.background) for r in runs[0]]
    for run in runs:
        for into, r in zip(total, run, strict=True):
            into.cases += r.cases
            into.caught += r.caught
            into.interleaved_caught += r.interleaved_caught
    return total


def band_table(bands: list[Band]) -> list[str]:
    lines = [
        "| requests/day | user-days | requests | false alerts | per 10,000 user-days "
        "| 95% upper bound per 10,000 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for b in bands:
        patterns = ", ".join(f"{k} {v}" for k, v in sorted(b.patterns.items()))
        counted = f"{b.alerts} ({patterns})" if patterns else str(b.alerts)
        lines.append(
            f"| {b.per_day} | {b.user_days:,} | {b.events:,} | {counted} "
            f"| {b.rate * 1e4:.2f} | {b.upper * 1e4:.2f} |"
        )
    days = sum(b.user_days for b in bands)
    alerts = sum(b.alerts for b in bands)
    pooled = Band(0, days, sum(b.events for b in bands), alerts)
    lines.append(
        f"| all | {days:,} | {pooled.events:,} | {alerts} | {pooled.rate * 1e4:.2f} "
        f"| {pooled.upper * 1e4:.2f} |"
    )
    return lines


def recall_table(results: list[Recall], interleaved: bool = False) -> list[str]:
    header = " | ".join(f"{b}/day" if b else "alone" for b in BACKGROUNDS)
    lines = [
        f"| jitter (sigma of each gap) | {header} |",
        "|---:|" + "---:|" * len(BACKGROUNDS),
    ]
    for jitter in JITTERS:
        row = [r for r in results if r.jitter == jitter]
        cells = " | ".join(
            f"{(r.interleaved_caught if interleaved else r.caught) / r.cases:.3f}" for r in row
        )
        lines.append(f"| {jitter:.1%} | {cells} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user-days", type=int, default=5000, help="per band and seed")
    parser.add_argument("--cases", type=int, default=300, help="scripted days per cell and seed")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    policy = load_policies(POLICIES).defaults
    settings = policy.detectors.automation_burst
    started = time.perf_counter()
    band_runs, recall_runs, events = [], [], 0
    for seed in range(args.seed, args.seed + args.seeds):
        feed = Feed(policy)
        band_runs.append(false_alerts(feed, seed, args.user_days))
        recall_runs.append(recall(feed, seed, args.cases))
        events += feed.events
    elapsed = time.perf_counter() - started
    bands, recalls = merge_bands(band_runs), merge_recall(recall_runs)
    last_seed = args.seed + args.seeds - 1

    command = "python -m loadtests.misuse.automation" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    lines = [
        "# automation_burst: false alerts on random human traffic, recall on scripts",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with:",
        "",
        "```",
        command,
        "```",
        "",
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs (load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end); {events:,} requests "
        f"through the detector in {elapsed:.0f} s; seeds {args.seed}..{last_seed}.",
        f"Policy: the defaults of config/policies.yaml (regular_intervals "
        f"{settings.regular_intervals}, max_interval_cv {settings.max_interval_cv}, "
        f"max_mean_interval_seconds {settings.max_mean_interval_seconds}, max_requests "
        f"{settings.max_requests} in {settings.window_seconds} s).",
        "",
        "## False alerts on random (Poisson) human traffic",
        "",
        "Each user-day: a Poisson number of requests (mean: the band) at uniformly random "
        "moments of the nine office hours, in time order.",
        "",
        *band_table(bands),
        "",
        f"Target: under 1 per 10,000 user-days in every band ({TARGET:g} per user-day).",
        "",
        "## Recall on scripted traffic",
        "",
        "Share of scripted days caught by a request of the script: 11-16 requests at a period "
        "of 20-600 s, each gap the period times 1 + N(0, sigma); alone, or among the person's "
        "own Poisson requests (requests a day).",
        "",
        *recall_table(recalls),
        "",
        "Of these, the share caught by a chain with the person's own requests in between (the "
        "rest: requests in a row):",
        "",
        *recall_table(recalls, interleaved=True),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text, encoding="utf-8")
    return 1 if any(b.rate >= TARGET for b in bands) else 0


if __name__ == "__main__":
    raise SystemExit(main())
