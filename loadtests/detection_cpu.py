"""CPU per event of DetectionEngine.process alone, over the rated events and validation's
columns (identities, ids, times, quantities) the processor hands it for processor_cpu's
realistic records (recorded once through BatchProcessor), with the engine's ordinary path
(default) or every event through every detector (--reference).

    python -m loadtests.detection_cpu [--events 100000] [--repeat 3] [--reference] [--user]
                                      [--baseline OLD_ENGINE_PY] [--gc-threshold N]

--baseline: e.g. `git show 44bb052:services/civicmeter/processor/detection/engine.py >
/tmp/engine_before.py`, timed in turn with this version on the same batches.

--user: the processor's engine (USER_DETECTORS, activity reported after every batch).

--gc-threshold: the collector's young threshold while timing (the worker sets
civicmeter.processor.worker.YOUNG_COLLECTION_THRESHOLD; default: CPython's own).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.validation import EventColumns
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.pricing.catalog_source import CatalogSource
from civicmeter.processor.detection import Alert, DetectionEngine
from civicmeter.processor.detection.engine import USER_DETECTORS, SourceMark
from civicmeter.processor.pipeline import BatchProcessor
from loadtests.processor_cpu import RECORDS_PER_BATCH, realistic_records
from loadtests.stack import DEFAULT_POLICIES, DEFAULT_PRICES

Call = tuple[list[tuple[pb.UsageEvent, Decimal]], list[SourceMark], EventColumns]


class _Recorder:
    """Stands in for the engine: keeps what the processor hands it."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def process(
        self,
        batch: Sequence[tuple[pb.UsageEvent, Decimal]],
        sources: Sequence[SourceMark],
        columns: EventColumns,
    ) -> list[Alert]:
        self.calls.append((list(batch), list(sources), columns))
        return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="every event, every detector")
    parser.add_argument("--user", action="store_true", help="the processor's user detectors")
    parser.add_argument(
        "--baseline", help="an engine.py of another version, timed alternately against this one"
    )
    parser.add_argument("--gc-threshold", type=int, help="young collection threshold")
    args = parser.parse_args(argv)
    recorder = _Recorder()
    processor = BatchProcessor(CatalogSource(DEFAULT_PRICES).catalog, "usage.raw")
    processor.detection = recorder  # type: ignore[assignment]
    records = realistic_records(args.events)
    now = datetime.now(UTC)
    for i in range(0, len(records), RECORDS_PER_BATCH):
        processor.process(records[i : i + RECORDS_PER_BATCH], now)
    events = sum(len(batch) for batch, _, _ in recorder.calls)
    options: dict[str, Any] = (
        {"detectors": USER_DETECTORS, "fold_repeats": False, "activity_updates": True}
        if args.user
        else {}
    )
    policies = PolicySource(DEFAULT_POLICIES).current()
    engines: dict[str, Callable[[], Any]] = {
        "reference" if args.reference else "ordinary path": lambda: _current(
            DetectionEngine(policies, **options), args.reference
        )
    }
    if args.baseline:  # the same records, alternately, in this process
        engines[f"baseline {args.baseline}"] = lambda: _baseline(args.baseline)(policies, **options)
    best = dict.fromkeys(engines, float("inf"))
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    for _ in range(args.repeat):
        for name, make in engines.items():
            engine = make()
            started = time.process_time()
            for batch, sources, columns in recorder.calls:
                if name.startswith("baseline") and "identities" in _parameters(engine.process):
                    # As an engine before the columns was called: with the identities.
                    engine.process(batch, sources, columns.identities)
                else:
                    engine.process(batch, sources, columns)
                if args.user:
                    engine.take_activity()
            best[name] = min(best[name], (time.process_time() - started) / events * 1e6)
    for name, figure in best.items():
        print(f"{events} events, detection alone ({name}): {figure:.2f} µs CPU/event")
    return 0


def _parameters(method: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(method).parameters)


def _current(engine: DetectionEngine, reference: bool) -> DetectionEngine:
    engine._ordinary_path = not reference
    return engine


def _baseline(path: str) -> Any:
    """The DetectionEngine class of another version of engine.py (e.g. from `git show`)."""
    spec = importlib.util.spec_from_file_location("baseline_engine", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_engine"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.DetectionEngine


if __name__ == "__main__":
    raise SystemExit(main())
