"""Runs the processor as a faust worker, with the catalog loaded and checked first."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import faust

from civicmeter.core.catalog_source import CatalogSource
from civicmeter.core.config import ProcessorSettings
from civicmeter.core.consumer_lag import LAG_REFRESH_SECONDS, ConsumerLag
from civicmeter.core.kafka import ensure_topics
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.telemetry import setup_telemetry
from civicmeter.processor.app import build_app
from civicmeter.processor.detection import DetectionEngine


def run(env: Mapping[str, str], log_level: str) -> None:
    settings = ProcessorSettings.from_env(env)
    # A bad catalog or policy file stops start-up, with the file, the entry and the reason.
    prices = CatalogSource(settings.prices_file)
    policies = PolicySource(settings.policy_file)
    # Every occurrence goes out: the sink folds them into one alert with a count.
    detection = DetectionEngine(policies.current(), fold_repeats=False)
    telemetry = setup_telemetry("processor", env)
    if settings.kafka.create_topics:
        asyncio.run(ensure_topics(settings.kafka))
    app = build_app(settings, prices, telemetry, detection, policies)
    lag = ConsumerLag(
        settings.kafka, telemetry.meter, {settings.group_id: [settings.kafka.topics.raw]}
    )
    app.timer(LAG_REFRESH_SECONDS, name="consumer_lag")(lag.refresh_or_clear)
    worker = faust.Worker(app, loglevel=log_level.upper(), quiet=True)
    worker.spinner = None  # a terminal spinner only garbles service logs
    worker.execute_from_commandline()
