"""civicmeter.query.v1.QueryService over grpc.aio, with health checking and reflection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from civicmeter.api.alert.v1 import alert_service_pb2_grpc as alert_grpc
from civicmeter.api.budget.v1 import budget_service_pb2_grpc as budget_grpc
from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.api.money import to_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.seat.v1 import seat_service_pb2_grpc as seat_grpc
from civicmeter.core.auth import load_api_keys
from civicmeter.core.catalog_source import CatalogSource
from civicmeter.core.config import ConfigError, QuerySettings
from civicmeter.core.grpc_server import GrpcServer, new_server
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.storage import Storage, migrate
from civicmeter.query import page_token
from civicmeter.query.access import (
    AccessInterceptor,
    AuditLog,
    RateLimiter,
    TenantError,
    abort_if_foreign,
    tenant_scope,
)
from civicmeter.query.alert_service import SERVICE_NAME as ALERT_SERVICE_NAME
from civicmeter.query.alert_service import AlertService
from civicmeter.query.arguments import time_range
from civicmeter.query.budget_service import SERVICE_NAME as BUDGET_SERVICE_NAME
from civicmeter.query.budget_service import BudgetService
from civicmeter.query.cache import AnswerCache
from civicmeter.query.cost import CostPage, CostQuery, cost_breakdown
from civicmeter.query.deadline import read_within_deadline
from civicmeter.query.decision_service import SERVICE_NAME as DECISION_SERVICE_NAME
from civicmeter.query.decision_service import DecisionService
from civicmeter.query.seat_service import SERVICE_NAME as SEAT_SERVICE_NAME
from civicmeter.query.seat_service import SeatService
from civicmeter.query.usage_api import UsageApi

log = logging.getLogger("civicmeter.query")
SERVICE_NAME = query_pb.DESCRIPTOR.services_by_name["QueryService"].full_name
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Bound on a background refresh of a cached answer, which no caller's deadline bounds.
REFRESH_SECONDS = 30.0
_DIMENSIONS = {
    query_pb.COST_DIMENSION_ORGANIZATION: "organization",
    query_pb.COST_DIMENSION_DEPARTMENT: "department",
    query_pb.COST_DIMENSION_USER: "user",
    query_pb.COST_DIMENSION_SERVICE: "service",
}


class QueryService(query_grpc.QueryServiceServicer):
    def __init__(
        self,
        storage: Storage,
        cache_seconds: float = 0.0,
        tokens: page_token.PageTokens | None = None,
        prices: CatalogSource | None = None,
    ) -> None:
        self._storage = storage
        self._tokens = tokens or page_token.process_tokens()
        # Whole answers, keyed by the caller's tenant scope and the request as sent.
        self._cache: AnswerCache[tuple[str | None, bytes], query_pb.GetCostBreakdownResponse] = (
            AnswerCache(cache_seconds)
        )
        self._usage = UsageApi(storage, self._tokens, prices)

    async def QueryUsage(  # noqa: N802 (gRPC method name)
        self, request: query_pb.QueryUsageRequest, context: grpc.aio.ServicerContext
    ) -> query_pb.QueryUsageResponse:
        return await self._usage.query_usage(request, context)

    async def GetCostSummary(  # noqa: N802 (gRPC method name)
        self, request: query_pb.GetCostSummaryRequest, context: grpc.aio.ServicerContext
    ) -> query_pb.GetCostSummaryResponse:
        return await self._usage.cost_summary(request, context)

    def ExportUsage(  # noqa: N802 (gRPC method name)
        self, request: query_pb.ExportUsageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[query_pb.ExportUsageResponse]:
        return self._usage.export_usage(request, context)

    async def GetCostBreakdown(  # noqa: N802 (gRPC method name)
        self, request: query_pb.GetCostBreakdownRequest, context: grpc.aio.ServicerContext
    ) -> query_pb.GetCostBreakdownResponse:
        # A question asked again is answered before any parsing. The key holds the caller's
        # tenant scope, so one organisation's answer never reaches another; a request only
        # gets into the cache once it passed every check below.
        try:
            key = (tenant_scope(request.organization_id), request.SerializeToString())
        except TenantError:
            pass  # refused below, after the argument checks, as any foreign request is
        else:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        start, end = time_range(
            request.start_time if request.HasField("start_time") else None,
            request.end_time if request.HasField("end_time") else None,
        )
        dimension = _DIMENSIONS.get(request.group_by)
        if dimension is None:
            await context.abort(
                invalid, "group_by: must be a CostDimension other than COST_DIMENSION_UNSPECIFIED"
            )
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            await context.abort(invalid, f"page_size: must be between 0 and {MAX_PAGE_SIZE}")
        organization = await abort_if_foreign(context, request.organization_id)
        fingerprint = page_token.fingerprint(start, end, dimension, organization)
        after = None
        if request.page_token:
            try:
                [position] = self._tokens.decode(request.page_token, fingerprint, (str,))
            except page_token.PageTokenError as exc:
                await context.abort(invalid, f"page_token: {exc}")
            after = str(position)
        query = CostQuery(
            start=start,
            end=end,
            dimension=str(dimension),
            organization_id=organization,
            after_key=after,
            limit=request.page_size or DEFAULT_PAGE_SIZE,
        )
        return await self._cache.get_or_compute(
            (organization, request.SerializeToString()),
            lambda: self._answer_within(query, fingerprint, context),
            lambda: self._answer(query, fingerprint, REFRESH_SECONDS),
        )

    async def _answer(
        self, query: CostQuery, fingerprint: str, max_seconds: float | None
    ) -> query_pb.GetCostBreakdownResponse:
        page = await self._storage.run(lambda c: cost_breakdown(c, query, max_seconds))
        return self._response(page, fingerprint)

    async def _answer_within(
        self, query: CostQuery, fingerprint: str, context: grpc.aio.ServicerContext
    ) -> query_pb.GetCostBreakdownResponse:
        """The answer within the call's deadline (DEADLINE_EXCEEDED past it)."""
        page = await read_within_deadline(
            self._storage, context, lambda c, seconds: cost_breakdown(c, query, seconds)
        )
        return self._response(page, fingerprint)

    def _response(self, page: CostPage, fingerprint: str) -> query_pb.GetCostBreakdownResponse:
        response = query_pb.GetCostBreakdownResponse(total_cost=to_money(page.total))
        for row in page.rows:
            response.lines.add(key=row.key, cost=to_money(row.cost), event_count=row.events)
        if page.has_more:
            response.next_page_token = self._tokens.encode([page.rows[-1].key], fingerprint)
        return response


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
            SERVICE_NAME,
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
