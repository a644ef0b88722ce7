"""ingest: the HTTP and gRPC fronts over one Kafka publisher."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from civicmeter.core.access.auth import load_api_keys
from civicmeter.core.access.rate_limit import RateLimiter
from civicmeter.core.config import IngestSettings
from civicmeter.core.kafka import ensure_topics
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.ingest.auth import GatewayAccess, server_tls
from civicmeter.ingest.grpc_api import build_grpc_server
from civicmeter.ingest.http_api import build_http_app
from civicmeter.ingest.otlp import AttributeMapping, OtlpReceiver
from civicmeter.ingest.publisher import Publisher

log = logging.getLogger("civicmeter.ingest")


def gateway_access(settings: IngestSettings, telemetry: Telemetry) -> GatewayAccess:
    """Gateway authentication from the key file (none: open, for development)."""
    keys = load_api_keys(settings.keys_file) if settings.keys_file else None
    rate = settings.refused_rate_per_peer
    return GatewayAccess(keys, telemetry.meter, RateLimiter(rate, 2 * rate) if rate > 0 else None)


async def serve(
    settings: IngestSettings,
    telemetry: Telemetry,
    stop: asyncio.Event,
    attributes: AttributeMapping | None = None,  # OTLP span attributes to fields (otlp.py)
) -> None:
    if settings.kafka.create_topics:
        await ensure_topics(settings.kafka)
    access = gateway_access(settings, telemetry)
    tls = server_tls(settings.tls)
    otlp = OtlpReceiver(attributes or AttributeMapping(), telemetry.meter, settings.time_window)
    publisher = Publisher(settings, telemetry)
    await publisher.start()
    runner = web.AppRunner(build_http_app(publisher, access, otlp), access_log=None)
    await runner.setup()
    grpc_server = build_grpc_server(
        publisher,
        f"{settings.http_host}:{settings.grpc_port}",
        access,
        tls.grpc if tls else None,
        otlp,
    )
    try:
        await web.TCPSite(
            runner, settings.http_host, settings.http_port, ssl_context=tls.http if tls else None
        ).start()
        await grpc_server.start()
        log.info(
            "ingest listening: HTTP %s:%d, gRPC %s:%d",
            settings.http_host,
            settings.http_port,
            settings.http_host,
            settings.grpc_port,
        )
        await stop.wait()
    finally:
        await grpc_server.stop()
        await runner.cleanup()
        await publisher.stop()
