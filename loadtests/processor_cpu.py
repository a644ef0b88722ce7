"""CPU per event of the processor's pipeline in process, without Kafka: BatchProcessor.process
over realistic usage.raw records (the load generator's mix of the 17 governments), timed with
process time so that other work on a shared machine does not count.

    python -m loadtests.processor_cpu [--events 200000] [--detection] [--repeat 3]
                                      [--gc-threshold N] [--fresh-usage]

Prints the best of the repeats: CPU µs per event and the events/s that CPU time allows.

--gc-threshold: the collector's young threshold while timing (the worker sets
civicmeter.processor.worker.YOUNG_COLLECTION_THRESHOLD; default: CPython's own).

--fresh-usage: each API call its own token counts, as real calls have (the load generator's
4,096 templates make every usage recur, which validation's memory of usages favours).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from civicmeter.core.events.event_batch import frame
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.pricing.catalog_source import CatalogSource
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.pipeline import BatchProcessor, RawRecord
from loadtests.loadgen import (
    FACTS,
    stamp,
    templates,
    with_fresh_usage,
    working_hours_offset_ns,
)
from loadtests.scenario import governments_of, load_facts
from loadtests.stack import DEFAULT_POLICIES, DEFAULT_PRICES

EVENTS_PER_RECORD = 170  # a 1,000-event request batch over usage.raw's 6 partitions
RECORDS_PER_BATCH = 64  # the processor's default micro-batch (CIVICMETER_PROCESSOR_BATCH_SIZE)


def realistic_records(count: int, seed: int = 99, fresh_usage: bool = False) -> list[RawRecord]:
    """`count` events of the load generator's mix as usage.raw batch records; `fresh_usage`:
    each API call with token counts of its own."""
    pool = templates(governments_of(load_facts(FACTS)), 4096, seed=seed)
    now = time.time_ns() - working_hours_offset_ns()
    rng = random.Random(seed)

    def template(i: int) -> bytes:
        encoded = pool[i % len(pool)]
        return with_fresh_usage(encoded, rng) if fresh_usage else encoded

    records: list[RawRecord] = []
    for start in range(0, count, EVENTS_PER_RECORD):
        value = b"".join(
            frame(stamp(template(i), f"cpu-{i}", now))
            for i in range(start, min(start + EVENTS_PER_RECORD, count))
        )
        records.append(RawRecord(value, 0, len(records)))
    return records


def cpu_per_event(processor: BatchProcessor, records: Sequence[RawRecord], now: datetime) -> float:
    """Process time (µs) per event of processing `records` in micro-batches."""
    events = 0
    started = time.process_time()
    for i in range(0, len(records), RECORDS_PER_BATCH):
        result = processor.process(records[i : i + RECORDS_PER_BATCH], now)
        events += result.events
    return (time.process_time() - started) / events * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--detection", action="store_true", help="with the detectors on")
    parser.add_argument("--gc-threshold", type=int, help="young collection threshold")
    parser.add_argument(
        "--fresh-usage", action="store_true", help="each API call's usage its own (not recurring)"
    )
    args = parser.parse_args(argv)
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    records = realistic_records(args.events, fresh_usage=args.fresh_usage)
    catalog = CatalogSource(DEFAULT_PRICES).catalog
    best = float("inf")
    for _ in range(args.repeat):
        detection = None
        if args.detection:
            detection = DetectionEngine(PolicySource(DEFAULT_POLICIES).current())
        processor = BatchProcessor(catalog, "usage.raw", detection=detection)
        best = min(best, cpu_per_event(processor, records, datetime.now(UTC)))
    what = "with detection" if args.detection else "validate+price+encode"
    if args.fresh_usage:
        what += ", fresh usages"
    print(f"{args.events} events, {what}: {best:.2f} µs CPU/event = {1e6 / best:,.0f} events/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
