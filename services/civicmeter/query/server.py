"""The query server: every query servicer on one grpc.aio server, behind the access
interceptor, with health checking and reflection."""

from __future__ import annotations

import asyncio
import logging

import grpc

from civicmeter.api.alert.v1 import alert_service_pb2_grpc as alert_grpc
from civicmeter.api.budget.v1 import budget_service_pb2_grpc as budget_grpc
from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.seat.v1 import seat_service_pb2_grpc as seat_grpc
from civicmeter.core.access.auth import load_api_keys
from civicmeter.core.config import ConfigError, QuerySettings
from civicmeter.core.grpc_server import GrpcServer, new_server
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.pricing.catalog_source import CatalogSource
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.migrations import migrate
from civicmeter.query import page_token
from civicmeter.query.access import AccessInterceptor, AuditLog, RateLimiter
from civicmeter.query.alert_service import SERVICE_NAME as ALERT_SERVICE_NAME
from civicmeter.query.alert_service import AlertService
from civicmeter.query.budget_service import SERVICE_NAME as BUDGET_SERVICE_NAME
from civicmeter.query.budget_service import BudgetService
from civicmeter.query.decision_service import SERVICE_NAME as DECISION_SERVICE_NAME
from civicmeter.query.decision_service import DecisionService
from civicmeter.query.seat_service import SERVICE_NAME as SEAT_SERVICE_NAME
from civicmeter.query.seat_service import SeatService
from civicmeter.query.usage_api import SERVICE_NAME as QUERY_SERVICE_NAME
from civicmeter.query.usage_api import QueryService

log = logging.getLogger("civicmeter.query")


def server_credentials(settings: QuerySettings) -> grpc.ServerCredentials | None:
    """TLS from the certificate and key; mutual TLS when a client CA is given too."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        if settings.tls_client_ca_file is not None:
            raise ConfigError(
                "CIVICMETER_QUERY_TLS_CLIENT_CA needs CIVICMETER_QUERY_TLS_CERT "
                "and CIVICMETER_QUERY_TLS_KEY"
            )
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ConfigError("CIVICMETER_QUERY_TLS_CERT and CIVICMETER_QUERY_TLS_KEY go together")
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def build_server(
    settings: QuerySettings, storage: Storage, audit: AuditLog | None = None
) -> GrpcServer:
    keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else None
    limiter = (
        RateLimiter(settings.rate_per_key, 2 * settings.rate_per_key)
        if settings.rate_per_key > 0
        else None
    )
    tokens = (
        page_token.PageTokens(settings.page_token_keys)
        if settings.page_token_keys
        else page_token.process_tokens()
    )
    prices = CatalogSource(settings.prices_file) if settings.prices_file else None
    grpc_server = new_server(
        [
            QUERY_SERVICE_NAME,
            ALERT_SERVICE_NAME,
            BUDGET_SERVICE_NAME,
            SEAT_SERVICE_NAME,
            DECISION_SERVICE_NAME,
        ],
        reflection_enabled=settings.reflection,
        interceptors=[AccessInterceptor(keys, audit, limiter)],
    )
    query_grpc.add_QueryServiceServicer_to_server(
        QueryService(storage, settings.cache_seconds, tokens, prices), grpc_server.server
    )
    alert_grpc.add_AlertServiceServicer_to_server(
        AlertService(storage, tokens=tokens), grpc_server.server
    )
    policies = PolicySource(settings.policy_file)
    budgets = BudgetService(storage, policies.current, tokens=tokens)
    budget_grpc.add_BudgetServiceServicer_to_server(budgets, grpc_server.server)
    decision_grpc.add_DecisionServiceServicer_to_server(
        DecisionService(storage, policies.current, audit=audit), grpc_server.server
    )
    seat_grpc.add_SeatServiceServicer_to_server(
        SeatService(storage, tokens=tokens), grpc_server.server
    )
    address = f"{settings.host}:{settings.grpc_port}"
    credentials = server_credentials(settings)
    if credentials is None:
        grpc_server.server.add_insecure_port(address)
    else:
        grpc_server.server.add_secure_port(address, credentials)
    return grpc_server


async def serve(settings: QuerySettings, storage: Storage, stop: asyncio.Event) -> None:
    await storage.run(migrate)
    audit = AuditLog(storage)
    grpc_server = build_server(settings, storage, audit)
    await grpc_server.start()
    log.info("query serving gRPC on %s:%d", settings.host, settings.grpc_port)
    try:
        await audit.run(stop)
    finally:
        await grpc_server.stop()
        await audit.flush()
