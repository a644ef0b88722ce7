"""Process plumbing shared by the services: logging, signals, orderly shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from civicmeter.core.telemetry.setup import shutdown_telemetry

ServiceMain = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def configure_logging(level: str = "INFO") -> None:
    """Plain, structured-enough lines on stderr. Event contents are never logged."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def run_until_signalled(*services: ServiceMain) -> None:
    """Run the services in one event loop until SIGINT/SIGTERM, then let each finish."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(service(stop)) for service in services]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()  # one service failing (or all ending) stops the rest
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    try:
        asyncio.run(main())
    finally:
        shutdown_telemetry()  # export the spans and metrics still buffered
