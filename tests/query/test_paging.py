"""Page sizes and page tokens (query/paging.py) on every listing RPC of the real query server:
the same bounds, the same default and the same refusals, whichever servicer answers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import grpc
import pytest
from google.protobuf.message import Message

from civicmeter.api.alert.v1 import alert_service_pb2
from civicmeter.api.budget.v1 import budget_service_pb2 as budget_pb
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.seat.v1 import seat_service_pb2 as seat_pb
from civicmeter.query.page_token import PageTokens
from civicmeter.query.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from tests.factories import NOW
from tests.query.live_server import ALERTS, BUDGETS, QUERY, SEATS, TOKEN_KEY, Server, breakdown


def usage() -> query_pb.QueryUsageRequest:
    request = query_pb.QueryUsageRequest(group_by=[query_pb.DIMENSION_ORGANIZATION])
    request.start_time.FromDatetime(NOW - timedelta(days=1))
    request.end_time.FromDatetime(NOW + timedelta(days=1))
    return request


def seat_summary() -> seat_pb.GetSeatSummaryRequest:
    request = seat_pb.GetSeatSummaryRequest(group_by=seat_pb.SEAT_DIMENSION_SERVICE)
    request.month.year, request.month.month = NOW.year, NOW.month
    return request


LISTINGS: dict[str, Callable[[], Message]] = {
    QUERY + "GetCostBreakdown": breakdown,
    QUERY + "QueryUsage": usage,
    ALERTS + "ListAlerts": alert_service_pb2.ListAlertsRequest,
    BUDGETS + "ListBudgetStatuses": budget_pb.ListBudgetStatusesRequest,
    SEATS + "ListSeats": seat_pb.ListSeatsRequest,
    SEATS + "GetSeatSummary": seat_summary,
}
listings = pytest.mark.parametrize("method", sorted(LISTINGS))


def asking(method: str, **fields: object) -> Message:
    request = LISTINGS[method]()
    for name, value in fields.items():
        setattr(request, name, value)
    return request


@listings
@pytest.mark.parametrize("size", [-1, MAX_PAGE_SIZE + 1, -(2**31)])
async def test_a_page_size_out_of_bounds_is_refused_by_name(
    server: Server, method: str, size: int
) -> None:
    refused = await server.refusal(method, asking(method, page_size=size))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == f"page_size: must be between 0 and {MAX_PAGE_SIZE}"


@listings
@pytest.mark.parametrize("size", [0, 1, MAX_PAGE_SIZE])
async def test_page_sizes_within_bounds_are_answered(
    server: Server, method: str, size: int
) -> None:
    [answer] = await server.call(method, asking(method, page_size=size))
    assert isinstance(answer, bytes)


FOREIGN = "is not a token this server issued"
ELSEWHERE = "does not belong to this request"


@listings
@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("not-a-token", FOREIGN),
        (PageTokens([TOKEN_KEY]).encode(["seoul"], "another request"), ELSEWHERE),
        (PageTokens(["k" * 40]).encode(["seoul"], "another request"), FOREIGN),  # another key
    ],
)
async def test_a_token_not_signed_for_the_request_is_refused_by_name(
    server: Server, method: str, token: str, reason: str
) -> None:
    refused = await server.refusal(method, asking(method, page_token=token))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == f"page_token: {reason}"


async def test_a_token_of_one_listing_does_not_page_another(server: Server) -> None:
    [first] = await server.call(ALERTS + "ListAlerts", asking(ALERTS + "ListAlerts", page_size=1))
    token = alert_service_pb2.ListAlertsResponse.FromString(first).next_page_token
    assert token
    for method in sorted(set(LISTINGS) - {ALERTS + "ListAlerts"}):
        refused = await server.refusal(method, asking(method, page_token=token))
        assert refused.details() == "page_token: does not belong to this request", method


async def test_an_unset_page_size_is_the_default_and_pages_follow_their_token(
    server: Server,
) -> None:
    """The live server holds three alerts: the default page holds them all, pages of one
    continue through the tokens to the same three."""
    assert DEFAULT_PAGE_SIZE >= 3
    method, response = ALERTS + "ListAlerts", alert_service_pb2.ListAlertsResponse
    [whole] = await server.call(method, asking(method))
    everything = response.FromString(whole)
    assert len(everything.alerts) == 3 and not everything.next_page_token
    keys, token = [], ""
    for _ in range(3):
        [raw] = await server.call(method, asking(method, page_size=1, page_token=token))
        page = response.FromString(raw)
        keys += [alert.dedup_key for alert in page.alerts]
        token = page.next_page_token
    assert keys == [alert.dedup_key for alert in everything.alerts]
    assert not token


async def test_a_watch_cursor_not_signed_here_is_refused_by_its_own_name(server: Server) -> None:
    refused = await server.refusal(
        ALERTS + "WatchAlerts", alert_service_pb2.WatchAlertsRequest(cursor="not-a-token")
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "cursor: is not a token this server issued"
