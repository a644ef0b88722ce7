"""The processor with a detector-state interval of the caller's choosing, for the tests of when
state is written and offsets committed: python -m tests.processor.state_worker SECONDS."""

from __future__ import annotations

import os
import sys

from civicmeter.core.config import ProcessorSettings
from civicmeter.core.telemetry.setup import setup_telemetry
from civicmeter.processor.worker import run

if __name__ == "__main__":
    settings = ProcessorSettings.from_env(os.environ)
    run(
        settings,
        setup_telemetry("processor", os.environ),
        "warning",
        state_interval=float(sys.argv[1]),
    )
