"""Runs the processor as a faust worker, from the settings and telemetry its entry point built,
with the catalog and policy loaded and checked first."""

from __future__ import annotations

import asyncio
import gc

import faust

from civicmeter.core.config import ProcessorSettings
from civicmeter.core.kafka import ensure_topics
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.pricing.catalog_source import CatalogSource
from civicmeter.core.telemetry.consumer_lag import LAG_REFRESH_SECONDS, ConsumerLag
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.processor.app import build_app
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.detection.engine import ORGANIZATION_DETECTORS, USER_DETECTORS
from civicmeter.processor.detector_state import DetectionTopics, ensure_detection_topics

# Allocations between young collections (CPython's default: 700). A micro-batch allocates tens
# of thousands of objects that live until it ends; at 700 they are promoted to older
# generations and die there, which makes the collector walk the detectors' long-lived state
# over and over. Measured in process (loadtests.processor_cpu --detection): 23.6 µs/event at
# the default, 20.2 at this threshold, 18.2 with the collector off.
YOUNG_COLLECTION_THRESHOLD = 10_000


def run(settings: ProcessorSettings, telemetry: Telemetry, log_level: str) -> None:
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
    # A bad catalog or policy file stops start-up, with the file, the entry and the reason.
    prices = CatalogSource(settings.prices_file)
    policies = PolicySource(settings.policy_file)
    # Every occurrence goes out: the sink folds them into one alert with a count. Per-user
    # detectors run where the user's partition is; organisation-wide ones on the day totals
    # the first engine reports, gathered by organisation (app.py).
    detection = DetectionEngine(
        policies.current(), detectors=USER_DETECTORS, fold_repeats=False, activity_updates=True
    )
    organization = DetectionEngine(
        policies.current(), detectors=ORGANIZATION_DETECTORS, fold_repeats=False
    )
    if settings.kafka.create_topics:
        asyncio.run(ensure_topics(settings.kafka))
        names = DetectionTopics.of(settings.group_id, settings.kafka.topics.raw)
        asyncio.run(ensure_detection_topics(settings.kafka, names))
    app = build_app(
        settings,
        prices,
        telemetry,
        detection,
        policies,
        organization,
        state_interval=settings.state_interval_seconds,
    )
    lag = ConsumerLag(
        settings.kafka, telemetry.meter, {settings.group_id: [settings.kafka.topics.raw]}
    )
    app.timer(LAG_REFRESH_SECONDS, name="consumer_lag")(lag.refresh_or_clear)
    worker = faust.Worker(app, loglevel=log_level.upper(), quiet=True)
    worker.spinner = None  # a terminal spinner only garbles service logs
    # What start-up loaded (modules, the faust app, catalog, policy) lives as long as the
    # process: out of the collector's sight, its full collections walk only what the stream
    # made (about 1 µs an event less in process, loadtests.processor_cpu --detection).
    gc.collect()
    gc.freeze()
    worker.execute_from_commandline()
