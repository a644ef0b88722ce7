"""Precision, recall and throughput of the gateway's public-document marking detector.

    python -m loadtests.documents.bench [--docs 20000] [--seed 20240315] [--runs 3] [--no-write]

Accuracy: every document's count of markings per class against its ground truth, summed over
the corpus: tp = min(found, true), fp = max(found - true, 0), fn = max(true - found, 0). The
detector reports counts only, so this is the finest scoring its output allows.

Throughput: UTF-8 bytes over the CPU and wall-clock time `detect_document_markings` takes on
the texts one by one, in this one process and thread; the best of --runs passes. Three sets of
texts: the corpus; its hard negatives alone; and ordinary prompts (the PII benchmark's corpus),
which is what most traffic looks like. Latency: each call on prompts of about 4 KB (corpus
documents joined), the size the gateway guard budgets for.

Writes loadtests/documents/RESULTS.md (unless --no-write). Exit status 1 when any class's
precision or recall is below 0.95, or throughput on the corpus (CPU time) below the target.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from civicmeter.gateway import DOCUMENT_MARKINGS, detect_document_markings
from loadtests.documents.corpus import (
    DEFAULT_SEED,
    MEMO_SHARE,
    NEGATIVE_KINDS,
    OFFICIAL_SHARE,
    TABLE_SHARE,
    Document,
    generate,
)
from loadtests.pii.bench import Score, Speed, _cpu_model, measure
from loadtests.pii.corpus import generate as ordinary_prompts

RESULTS = Path(__file__).with_name("RESULTS.md")
TARGET_PRECISION = 0.95
TARGET_RECALL = 0.95
TARGET_MB_PER_S = 10.0
PROMPT_BYTES = 4096


def score(
    docs: Sequence[Document], detect: Callable[[str], dict[str, int]] = detect_document_markings
) -> dict[str, Score]:
    """Per class, the counts `detect` finds against the truth, summed over `docs`."""
    scores = {cls: Score() for cls in DOCUMENT_MARKINGS}
    for doc in docs:
        found = detect(doc.text)
        for cls, s in scores.items():
            s.add(found.get(cls, 0), doc.truth.get(cls, 0))
    return scores


def prompts_of_size(docs: Sequence[Document], size: int) -> list[str]:
    """The documents joined, in order, into prompts of about `size` UTF-8 bytes each."""
    prompts, parts, length = [], [], 0
    for doc in docs:
        parts.append(doc.text)
        length += len(doc.text.encode()) + 2
        if length >= size:
            prompts.append("\n\n".join(parts))
            parts, length = [], 0
    return prompts


@dataclass(frozen=True)
class Latency:
    """Percentiles in microseconds of one call per prompt, by CPU time and by wall clock."""

    prompts: int
    cpu_p50: float
    cpu_p99: float
    wall_p50: float
    wall_p99: float


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def latency(prompts: Sequence[str], runs: int) -> Latency:
    """One call on each prompt, timed; per percentile, the best of `runs` passes."""
    cpu: list[list[float]] = []
    wall: list[list[float]] = []
    for _ in range(runs):
        cpu_took, wall_took = [], []
        for prompt in prompts:
            wall_start, cpu_start = time.perf_counter(), time.thread_time()
            detect_document_markings(prompt)
            cpu_took.append((time.thread_time() - cpu_start) * 1e6)
            wall_took.append((time.perf_counter() - wall_start) * 1e6)
        cpu.append(sorted(cpu_took))
        wall.append(sorted(wall_took))
    return Latency(
        len(prompts),
        min(_percentile(took, 0.5) for took in cpu),
        min(_percentile(took, 0.99) for took in cpu),
        min(_percentile(took, 0.5) for took in wall),
        min(_percentile(took, 0.99) for took in wall),
    )


def _accuracy_table(scores: dict[str, Score]) -> list[str]:
    rows = [
        "| class | documents | positives | TP | FP | FN | precision | recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cls, s in scores.items():
        rows.append(
            f"| `{cls}` | {s.documents} | {s.positives} | {s.tp} | {s.fp} | {s.fn}"
            f" | {s.precision:.4f} | {s.recall:.4f} |"
        )
    return rows


def _speed_table(speeds: dict[str, Speed]) -> list[str]:
    rows = ["| text | MB (UTF-8) | MB/s, CPU time | MB/s, wall clock |", "|---|---:|---:|---:|"]
    for name, speed in speeds.items():
        rows.append(
            f"| {name} | {speed.megabytes:.1f} | {speed.cpu_mb_per_s:.1f}"
            f" | {speed.wall_mb_per_s:.1f} |"
        )
    return rows


def report(
    docs: Sequence[Document],
    scores: dict[str, Score],
    speeds: dict[str, Speed],
    timing: Latency,
    *,
    command: str,
    seed: int,
    runs: int,
    load: str,
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    kinds: dict[str, int] = {}
    for doc in docs:
        kinds[doc.kind] = kinds.get(doc.kind, 0) + 1
    negatives = sum(kinds.get(kind, 0) for kind in NEGATIVE_KINDS)
    lines = [
        "# Public-document marking detector: precision, recall, throughput",
        "",
        f"Measured {now} with:",
        "",
        "```",
        command,
        "```",
        "",
        f"Python {platform.python_version()} on {_cpu_model()}, {os.cpu_count()} CPUs,"
        f" load average {load} when the run started (the machine was shared with other work;"
        " the CPU-time figures are the steadier ones).",
        "",
        "**The corpus is synthetic.** `loadtests/documents/corpus.py` writes it from templates"
        f" with a seeded random generator (seed {seed}): {len(docs)} prompts, of which"
        f" {kinds.get('official', 0)} pasted official documents (공문, 보고서; share"
        f" {OFFICIAL_SHARE:.0%}), {kinds.get('memo', 0)} English memos ({MEMO_SHARE:.0%}),"
        f" {kinds.get('table', 0)} pasted metadata tables ({TABLE_SHARE:.0%}) and {negatives}"
        " hard negatives: "
        + ", ".join(f"{kind} {kinds.get(kind, 0)}" for kind in NEGATIVE_KINDS)
        + " (password notices with 비밀번호, security-training announcements naming 비밀 and"
        " 대외비, news articles about a 비공개 회의 or a leaked 대외비 문건, public press releases"
        " with their contact block and 시행일, public schedules with 간부회의(비공개), prose using"
        " 결재, 협조, 검토 and 전결 as words, advice about personal information). Official"
        " documents carry such sentences in their body too. The shapes and their shares are"
        " choices made in that file, not measured from real prompts, and the detector's rules"
        " and this corpus were written together: these figures say the rules do what they"
        " claim on the shapes listed; they are not an estimate of accuracy on real traffic.",
        "",
        "## Accuracy",
        "",
        "Counts per document against the truth, summed: TP = min(found, true),"
        " FP = max(found - true, 0), FN = max(true - found, 0).",
        "",
        *_accuracy_table(scores),
        "",
        "The corpus holds only shapes the rules name, so these figures cannot show what the"
        " rules leave out. By design (see the docstring of"
        " `sdk/gateway/civicmeter/gateway/documents.py`), these are not counted:",
        "",
        "- a marking inside a line of other text, outside brackets, a label or a declaration"
        " (`청사 보안점검 결과 보고 - 대외비`), and a marking after a lone bullet (`○ 대외비`,"
        " read as a list item);",
        "- a disclosure decision in round brackets after a word (`간부회의(비공개)`: public"
        " schedules write it so);",
        "- a marking split over lines or cells by a pasted table (`대` / `외` / `비`);",
        "- an approval label followed by a bare name after a single space (`기안 홍길동`), and a"
        " lone label: a block needs two roles or a 결재 row of ranks;",
        "- an office number whose office name ends otherwise than the listed suffixes"
        " (`교육부-123`), or whose serial has more than 6 digits.",
        "",
        "## Throughput",
        "",
        f"`detect_document_markings` on each text in turn, one process, one thread; best of"
        f" {runs} passes. Ordinary prompts are the PII benchmark's corpus"
        " (`loadtests/pii/corpus.py`, same seed): what most traffic looks like.",
        "",
        *_speed_table(speeds),
        "",
        f"Latency on {timing.prompts} prompts of about {PROMPT_BYTES} bytes (corpus documents"
        f" joined), one call each, best of {runs} passes: CPU time p50 {timing.cpu_p50:.0f} µs,"
        f" p99 {timing.cpu_p99:.0f} µs; wall clock p50 {timing.wall_p50:.0f} µs, p99"
        f" {timing.wall_p99:.0f} µs (the wall clock counts the time other work held the CPU).",
        "",
        f"Target: precision and recall ≥ {TARGET_PRECISION} for every class,"
        f" ≥ {TARGET_MB_PER_S:.0f} MB/s on the corpus.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.documents.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--docs", type=int, default=20_000, help="documents in the corpus")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--runs", type=int, default=3, help="throughput passes; best counts")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)

    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    started = time.perf_counter()
    docs = generate(args.docs, seed=args.seed)
    ordinary = [doc.text for doc in ordinary_prompts(args.docs, seed=args.seed)]
    print(f"{len(docs)} documents generated in {time.perf_counter() - started:.1f} s", flush=True)

    scores = score(docs)
    texts = [doc.text for doc in docs]
    speeds = {
        "the corpus": measure(texts, detect_document_markings, args.runs),
        "its hard negatives": measure(
            [doc.text for doc in docs if doc.kind in NEGATIVE_KINDS],
            detect_document_markings,
            args.runs,
        ),
        "ordinary prompts": measure(ordinary, detect_document_markings, args.runs),
    }
    timing = latency(prompts_of_size(docs, PROMPT_BYTES), args.runs)

    print("\n".join(_accuracy_table(scores)))
    print()
    print("\n".join(_speed_table(speeds)))
    print(
        f"\n{timing.prompts} prompts of ~{PROMPT_BYTES} B, CPU time: p50 {timing.cpu_p50:.0f} µs,"
        f" p99 {timing.cpu_p99:.0f} µs"
    )

    command = "python -m loadtests.documents.bench" + "".join(
        f" {a}" for a in (argv or sys.argv[1:])
    )
    if not args.no_write:
        RESULTS.write_text(
            report(
                docs,
                scores,
                speeds,
                timing,
                command=command,
                seed=args.seed,
                runs=args.runs,
                load=load,
            ),
            encoding="utf-8",
        )
        print(f"\nwrote {RESULTS}")

    missed = [
        cls
        for cls, s in scores.items()
        if s.precision < TARGET_PRECISION or s.recall < TARGET_RECALL
    ]
    if missed:
        print(f"below target: {', '.join(missed)}", file=sys.stderr)
    slow = speeds["the corpus"].cpu_mb_per_s < TARGET_MB_PER_S
    if slow:
        print(f"throughput below {TARGET_MB_PER_S} MB/s", file=sys.stderr)
    return 1 if missed or slow else 0


if __name__ == "__main__":
    raise SystemExit(main())
