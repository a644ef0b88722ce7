"""Precision and recall of the detection engine on the labelled misuse scenario.

    python -m loadtests.misuse.bench [--scale 0.4] [--weeks 6] [--per-type 40] [--seed N]
                                     [--more-seeds 0] [--batch 500] [--no-write]

Builds the scenario (loadtests/misuse/scenario.py: synthetic, deterministic by seed) for the
17 governments, runs DetectionEngine over its deliveries in batches, in this process, and
scores the alerts against the labels per detector (loadtests/misuse/scoring.py). Also times
the engine (CPU time of `process` alone). --more-seeds N scores N more scenarios of the same
size with the next seeds (about 20 s each), to show how much the figures move. Writes
loadtests/misuse/RESULTS.md (unless --no-write). Exit status 1 when any detector's precision
or recall is below 0.95 in any scenario.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from civicmeter.core.pricing import load_catalog
from civicmeter.policy.detectors import DETECTOR_NAMES
from civicmeter.processor.detection import Alert, DetectionEngine
from loadtests.misuse.scenario import DEFAULT_SEED, REPO, MisuseScenario, build_misuse_scenario
from loadtests.misuse.scoring import Mismatch, Score, score
from loadtests.scenario import governments_of, load_facts

RESULTS = Path(__file__).with_name("RESULTS.md")
FACTS = REPO.parent / "shared" / "data" / "kr_local_gov_genai_2024.yaml"
TARGET = 0.95


@dataclass(frozen=True)
class Run:
    scenario: MisuseScenario
    alerts: list[Alert]
    scores: dict[str, Score]
    mismatches: list[Mismatch]
    build_seconds: float
    cpu_seconds: float
    wall_seconds: float
    repeats: int
    state: dict[str, int]


def run(
    *,
    scale: float = 0.4,
    weeks: int = 6,
    per_type: int = 40,
    seed: int = DEFAULT_SEED,
    batch: int = 500,
    governments: Sequence[str] | None = None,
) -> Run:
    started = time.perf_counter()
    catalog = load_catalog(REPO / "config" / "prices.yaml")
    chosen = [
        g for g in governments_of(load_facts(FACTS)) if governments is None or g.id in governments
    ]
    scenario = build_misuse_scenario(
        chosen, catalog, scale=scale, weeks=weeks, per_type=per_type, seed=seed
    )
    build_seconds = time.perf_counter() - started
    engine = DetectionEngine(scenario.policies)
    alerts: list[Alert] = []
    deliveries = scenario.deliveries
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(deliveries), batch):
        alerts.extend(engine.process(deliveries[start : start + batch]))
    cpu_seconds = time.process_time() - cpu
    wall_seconds = time.perf_counter() - wall
    scores, mismatches = score(alerts, scenario.labels)
    return Run(
        scenario,
        alerts,
        scores,
        mismatches,
        build_seconds,
        cpu_seconds,
        wall_seconds,
        engine.repeats,
        engine.state_sizes(),
    )


def _table(scores: dict[str, Score]) -> list[str]:
    rows = [
        "| detector | labels | alerts | TP | FP | FN | precision | recall "
        "| raised by the first event | not scored |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in DETECTOR_NAMES:
        s = scores[name]
        rows.append(
            f"| `{name}` | {s.labels} | {s.alerts} | {s.tp} | {s.fp} | {s.fn} "
            f"| {s.precision:.4f} | {s.recall:.4f} | {s.exact}/{s.tp} | {s.ambiguous} |"
        )
    return rows


def _seeds_table(runs: Sequence[Run]) -> list[str]:
    rows = [
        "| detector | labels | alerts | TP | FP | FN | lowest precision | lowest recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in DETECTOR_NAMES:
        scores = [r.scores[name] for r in runs]
        rows.append(
            f"| `{name}` | {sum(s.labels for s in scores)} | {sum(s.alerts for s in scores)} "
            f"| {sum(s.tp for s in scores)} | {sum(s.fp for s in scores)} "
            f"| {sum(s.fn for s in scores)} | {min(s.precision for s in scores):.4f} "
            f"| {min(s.recall for s in scores):.4f} |"
        )
    return rows


def report(result: Run, command: str, others: Sequence[Run] = ()) -> str:
    sc = result.scenario
    events = len(sc.deliveries)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# Detection engine: precision and recall on a labelled misuse scenario",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with:",
        "",
        "```",
        command,
        "```",
        "",
        f"Python {platform.python_version()} on {_cpu_model()}, {os.cpu_count()} CPUs, load "
        f"average {load} when the run ended.",
        "",
        "**The scenario is synthetic.** `loadtests/misuse/scenario.py` generates it with a seeded "
        f"random generator (seed {sc.seed}): {sc.staff} staff of {len(sc.governments)} "
        f"governments (each government's reported or spread user count, scaled), "
        f"{sc.start} to {sc.end}, {sc.unique_events} events, {sc.redeliveries} of them "
        f"delivered twice ({events} deliveries), under `config/policies.yaml` with a named "
        "night shift per government. "
        f"{sc.legit_outside_office} normal events fall outside office hours but inside the hour "
        "of grace or a remote-work, weekend-duty, 24-hour or night-shift schedule, and must not "
        "be flagged. Normal use is built to be regular (Poisson counts around a fixed daily "
        "rate, sessions of 1-5 requests, only habitual services); the injected misuse is built "
        "to be clear (see the scenario's docstring for every choice). So these figures say "
        "that each detector does what it is designed to do on cases made for it, and that "
        "normal use of this shape, legitimate overtime and remote work included, stays quiet; "
        "they are not an estimate of accuracy on real traffic, whose irregular users, "
        "department moves and scripts that pace themselves like people the scenario does not "
        "model.",
        "",
        "## Accuracy",
        "",
        "Alerts are matched to labels by (alert type, dedup key), and must be raised by one of "
        "the label's events: the misuse event itself for per-event detectors, an event of the "
        "anomalous day (volume, bursts) or month (peers) for the stateful ones. The last column "
        "counts the true positives raised by the first such event.",
        "",
        *_table(result.scores),
        "",
        f"Target: precision and recall ≥ {TARGET} for every detector.",
        "",
    ]
    if result.mismatches:
        lines += ["Mismatches:", ""]
        lines += [f"- {m.kind}: `{m.dedup_key}`: {m.detail}" for m in result.mismatches[:30]]
        lines.append("")
    if others:
        seeds = ", ".join(str(r.scenario.seed) for r in others)
        lines += [
            f"### {len(others)} more scenarios of the same size (seeds {seeds})",
            "",
            "Sums over the scenarios, and the lowest precision and recall any one of them had:",
            "",
            *_seeds_table(others),
            "",
        ]
        mismatches = [(r.scenario.seed, m) for r in others for m in r.mismatches]
        if mismatches:
            lines += ["Their mismatches:", ""]
            lines += [
                f"- seed {seed}, {m.kind}: `{m.dedup_key}`: {m.detail}"
                for seed, m in mismatches[:30]
            ]
            lines.append("")
    lines += [
        "## Speed and state",
        "",
        f"`DetectionEngine.process` over the {events} deliveries in batches, one process: "
        f"{result.cpu_seconds:.2f} s CPU ({events / result.cpu_seconds:,.0f} events/s, "
        f"{1e6 * result.cpu_seconds / events:.1f} µs per event), {result.wall_seconds:.2f} s "
        f"wall clock. Building the scenario took {result.build_seconds:.1f} s. "
        f"{result.repeats} redelivered events were skipped.",
        "",
        "State held at the end (each capped by `EngineLimits`): "
        + ", ".join(f"{k} {v}" for k, v in result.state.items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=0.4, help="share of each government's staff")
    parser.add_argument("--weeks", type=int, default=6)
    parser.add_argument("--per-type", type=int, default=40, help="injected cases per kind")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--more-seeds", type=int, default=0, help="score more scenarios")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    result = run(
        scale=args.scale,
        weeks=args.weeks,
        per_type=args.per_type,
        seed=args.seed,
        batch=args.batch,
    )
    others = [
        run(
            scale=args.scale,
            weeks=args.weeks,
            per_type=args.per_type,
            seed=args.seed + n,
            batch=args.batch,
        )
        for n in range(1, args.more_seeds + 1)
    ]
    command = "python -m loadtests.misuse.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(result, command.strip(), others)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text, encoding="utf-8")
        print(f"wrote {RESULTS}")
    failed = sorted(
        {
            name
            for r in (result, *others)
            for name, s in r.scores.items()
            if s.precision < TARGET or s.recall < TARGET
        }
    )
    if failed:
        print(f"below {TARGET}: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
