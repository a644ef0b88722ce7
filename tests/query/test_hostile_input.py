"""Hostile input against the real query server (build_server: the interceptor, every servicer,
signed page tokens) on the embedded ClickHouse engine.

Each case sends one request a hostile or careless client could send and expects a precise
status whose message names the field and carries no SQL, exception class or file path; after
each, the server still answers an ordinary question.
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from civicmeter.api.alert.v1 import alert_pb2, alert_service_pb2
from civicmeter.api.budget.v1 import budget_service_pb2 as budget_pb
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.seat.v1 import seat_service_pb2 as seat_pb
from civicmeter.query import page_token
from tests.factories import NOW
from tests.query.live_server import (
    ADMIN,
    ALERTS,
    BUDGETS,
    OLD_TOKEN_KEY,
    QUERY,
    SEATS,
    SEOUL,
    TOKEN_KEY,
    Server,
    breakdown,
    now_ms,
    ranged,
    with_seconds,
)

# What no message a client receives may carry.
LEAKS = re.compile(
    r"SELECT|FROM |DB::|Code: \d|Exception|Error\b|Traceback|<class|\.py\b|/usr/|/tmp/|/etc/"
)


def usage(**fields: object) -> query_pb.QueryUsageRequest:
    request = query_pb.QueryUsageRequest(**fields)  # type: ignore[arg-type]
    ranged(request, NOW - timedelta(days=1), NOW + timedelta(days=1))
    return request


def summary(**fields: object) -> query_pb.GetCostSummaryRequest:
    request = query_pb.GetCostSummaryRequest(**fields)  # type: ignore[arg-type]
    ranged(request, NOW - timedelta(days=40), NOW + timedelta(days=40))
    return request


def export(**fields: object) -> query_pb.ExportUsageRequest:
    request = query_pb.ExportUsageRequest(**fields)  # type: ignore[arg-type]
    ranged(request, NOW - timedelta(days=1), NOW + timedelta(days=1))
    return request


def seats_on(seconds: int) -> seat_pb.ListSeatsRequest:
    request = seat_pb.ListSeatsRequest()
    request.as_of_time.seconds = seconds
    return request


def month(year: int, number: int) -> seat_pb.GetSeatSummaryRequest:
    request = seat_pb.GetSeatSummaryRequest(group_by=seat_pb.SEAT_DIMENSION_SERVICE)
    request.month.year, request.month.month = year, number
    return request


def budgets_on(seconds: int) -> budget_pb.ListBudgetStatusesRequest:
    request = budget_pb.ListBudgetStatusesRequest()
    request.as_of_time.seconds = seconds
    return request


YEAR_1 = -62_135_596_800  # 0001-01-01T00:00:00Z
YEAR_9999 = 253_402_300_799  # 9999-12-31T23:59:59Z
BIG_ORG = "o" * 100_000
UNDEFINED_STATE = alert_pb2.AlertState.ValueType(99)
UNDEFINED_SEVERITY = alert_pb2.Severity.ValueType(-1)


def user_filter(count: int, chars: int = 250) -> list[query_pb.DimensionFilter]:
    values = [f"u_{i:0>{chars - 2}}" for i in range(count)]
    return [query_pb.DimensionFilter(dimension=query_pb.DIMENSION_USER, values=values)]


@dataclass(frozen=True)
class Case:
    method: str
    request: Callable[[], Message | bytes]
    field: str  # the field the message must start with (or its repeated item's path)
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    token: str = ADMIN


CASES: dict[str, Case] = {
    # Timestamps the protobuf type allows or not, and times past what the engine holds.
    "breakdown start beyond year 9999": Case(
        QUERY + "GetCostBreakdown", lambda: with_seconds(breakdown(), "start_time", 10**12),
        "start_time"),
    "usage end with negative nanos": Case(
        QUERY + "QueryUsage", lambda: with_seconds(usage(), "end_time", 1_790_000_000, -1),
        "end_time"),
    "usage end with nanos of a whole second": Case(
        QUERY + "QueryUsage", lambda: with_seconds(usage(), "end_time", 1_790_000_000, 10**9),
        "end_time"),
    "summary ending 9999-12-31T23:59:59Z": Case(
        QUERY + "GetCostSummary", lambda: with_seconds(summary(), "end_time", YEAR_9999),
        "end_time"),
    "export starting in year 1": Case(
        QUERY + "ExportUsage", lambda: with_seconds(export(), "start_time", YEAR_1),
        "start_time"),
    "breakdown over 100 years": Case(
        QUERY + "GetCostBreakdown",
        lambda: ranged(breakdown(), datetime(2000, 1, 1, tzinfo=UTC),
                        datetime(2099, 12, 1, tzinfo=UTC)), "end_time"),
    "budgets as of year 1": Case(BUDGETS + "ListBudgetStatuses", lambda: budgets_on(YEAR_1),
                                 "as_of_time"),
    "budgets as of 9999": Case(BUDGETS + "ListBudgetStatuses", lambda: budgets_on(YEAR_9999),
                               "as_of_time"),
    "seats as of year 1": Case(SEATS + "ListSeats", lambda: seats_on(YEAR_1), "as_of_time"),
    "seats as of 9999": Case(SEATS + "ListSeats", lambda: seats_on(YEAR_9999), "as_of_time"),
    "seat month 0001-01": Case(SEATS + "GetSeatSummary", lambda: month(1, 1), "month"),
    "seat month 9999-12": Case(SEATS + "GetSeatSummary", lambda: month(9999, 12), "month"),
    "seat month 13": Case(SEATS + "GetSeatSummary", lambda: month(2026, 13), "month"),
    # Time zones: over-long (ZoneInfo's error carries a path) and one only Python knows.
    "usage time zone of 5,000 characters": Case(
        QUERY + "QueryUsage", lambda: usage(time_zone="Asia/" + "x" * 5000), "time_zone"),
    "summary time zone right/UTC": Case(
        QUERY + "GetCostSummary", lambda: summary(time_zone="right/UTC"), "time_zone"),
    "export time zone right/UTC": Case(
        QUERY + "ExportUsage", lambda: export(time_zone="right/UTC"), "time_zone"),
    "usage time zone not a zone": Case(
        QUERY + "QueryUsage", lambda: usage(time_zone="Mars/Olympus_Mons"), "time_zone"),
    # Sizes that would grow a statement past ClickHouse's max_query_size.
    "filter values over 256 KiB": Case(
        QUERY + "QueryUsage", lambda: usage(filters=user_filter(1100)), "filters[0].values"),
    "filter values over 32 KiB in all": Case(
        QUERY + "QueryUsage", lambda: usage(filters=user_filter(200)), "filters[0].values"),
    "one filter value of 300 KB": Case(
        QUERY + "QueryUsage",
        lambda: usage(filters=[query_pb.DimensionFilter(
            dimension=query_pb.DIMENSION_USER, values=["u" * 300_000])]),
        "filters[0].values[0]"),
    "alert types over 256 KiB": Case(
        ALERTS + "ListAlerts", lambda: alert_service_pb2.ListAlertsRequest(
            filter=alert_service_pb2.AlertFilter(alert_types=["t" * 255] * 1100)),
        "filter.alert_types"),
    "dedup key of 1 MB": Case(
        ALERTS + "AcknowledgeAlert", lambda: alert_service_pb2.AcknowledgeAlertRequest(
            organization_id="seoul", dedup_key="k" * 1_000_000), "dedup_key"),
    "organisation id of 100 KB (breakdown)": Case(
        QUERY + "GetCostBreakdown", lambda: breakdown(organization_id=BIG_ORG),
        "organization_id"),
    "organisation id of 100 KB (alerts)": Case(
        ALERTS + "ListAlerts", lambda: alert_service_pb2.ListAlertsRequest(
            filter=alert_service_pb2.AlertFilter(organization_id=BIG_ORG)),
        "filter.organization_id"),
    "organisation id of 100 KB (watch)": Case(
        ALERTS + "WatchAlerts", lambda: alert_service_pb2.WatchAlertsRequest(
            filter=alert_service_pb2.AlertFilter(organization_id=BIG_ORG)),
        "filter.organization_id"),
    "organisation id of 100 KB (seats)": Case(
        SEATS + "ListSeats", lambda: seat_pb.ListSeatsRequest(organization_id=BIG_ORG),
        "organization_id"),
    "organisation id of 100 KB (budgets)": Case(
        BUDGETS + "ListBudgetStatuses",
        lambda: budget_pb.ListBudgetStatusesRequest(organization_id=BIG_ORG), "organization_id"),
    "organisation id of 100 KB, scoped key": Case(
        ALERTS + "AcknowledgeAlert", lambda: alert_service_pb2.AcknowledgeAlertRequest(
            organization_id=BIG_ORG, dedup_key="k0"), "organization_id", token=SEOUL),
    # Enums are open in proto3: numbers they do not define.
    "alert state 99": Case(
        ALERTS + "ListAlerts", lambda: alert_service_pb2.ListAlertsRequest(state=UNDEFINED_STATE),
        "state"),
    "minimum severity -1": Case(
        ALERTS + "WatchAlerts", lambda: alert_service_pb2.WatchAlertsRequest(
            filter=alert_service_pb2.AlertFilter(min_severity=UNDEFINED_SEVERITY)),
        "filter.min_severity"),
    # Truth rather than a bad argument: no such alert; another organisation's alert.
    "acknowledging an alert that does not exist": Case(
        ALERTS + "AcknowledgeAlert", lambda: alert_service_pb2.AcknowledgeAlertRequest(
            organization_id="seoul", dedup_key="k" * 1000), "dedup_key",
        grpc.StatusCode.NOT_FOUND, SEOUL),
    "acknowledging another organisation's alert": Case(
        ALERTS + "AcknowledgeAlert", lambda: alert_service_pb2.AcknowledgeAlertRequest(
            organization_id="busan", dedup_key="k0"), "organization_id",
        grpc.StatusCode.PERMISSION_DENIED, SEOUL),
}  # fmt: skip
# Bytes that are no message at all, for every RPC: before and after authentication.
for _method in (
    *(QUERY + m for m in ("GetCostBreakdown", "QueryUsage", "GetCostSummary", "ExportUsage")),
    *(ALERTS + m for m in ("ListAlerts", "AcknowledgeAlert", "WatchAlerts")),
    SEATS + "ListSeats", SEATS + "GetSeatSummary", BUDGETS + "ListBudgetStatuses",
):  # fmt: skip
    CASES[f"undecodable {_method.rsplit('/', 1)[1]}"] = Case(
        _method, lambda: b"\xff\xff\xff\xff", "request"
    )


@pytest.mark.parametrize("name", CASES)
async def test_hostile_input_gets_a_precise_answer(server: Server, name: str) -> None:
    case = CASES[name]
    refused = await server.refusal(case.method, case.request(), case.token)
    details = refused.details() or ""
    assert refused.code() == case.code, (name, refused.code(), details[:300])
    assert re.match(rf"{re.escape(case.field)}(\[\d+\])?: ", details), details[:300]
    assert not LEAKS.search(details), details
    assert len(details) < 300, len(details)  # client values are echoed bounded, if at all
    await server.healthy()


# Page tokens: forged positions, the old unkeyed format, other keys.
def _unsigned(position: list[object], fingerprint: str) -> str:
    raw = json.dumps({"p": position, "f": fingerprint}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _alien(position: list[object], fingerprint: str) -> str:
    signer = page_token.PageTokens(["a-key-the-server-never-had-0123456789"])
    return signer.encode([p if isinstance(p, int) else str(p) for p in position], fingerprint)


TOKENS: dict[str, tuple[str, Callable[[str], Message], str]] = {
    "alerts at position 10^30": (
        ALERTS + "ListAlerts",
        lambda t: alert_service_pb2.ListAlertsRequest(page_token=t), "page_token"),
    "watch cursor at position 10^30": (
        ALERTS + "WatchAlerts", lambda t: alert_service_pb2.WatchAlertsRequest(cursor=t),
        "cursor"),
    "seats on day 10^10": (
        SEATS + "ListSeats", lambda t: seat_pb.ListSeatsRequest(page_token=t), "page_token"),
    "budgets as of next year": (
        BUDGETS + "ListBudgetStatuses",
        lambda t: budget_pb.ListBudgetStatusesRequest(page_token=t), "page_token"),
    "breakdown after a crafted key": (
        QUERY + "GetCostBreakdown", lambda t: breakdown(page_token=t), "page_token"),
    "usage after a crafted key": (
        QUERY + "QueryUsage", lambda t: usage(page_token=t), "page_token"),
}  # fmt: skip
FORGED_POSITIONS: dict[str, list[object]] = {
    "alerts at position 10^30": [10**30, "k"],
    "watch cursor at position 10^30": [10**30, "k"],
    "seats on day 10^10": [10**10, "seoul", "seat-0"],
    "budgets as of next year": [now_ms() + 366 * 86_400_000, "seoul", 1, ""],
    "breakdown after a crafted key": ["' OR 1=1 --"],
    "usage after a crafted key": [0],
}


@pytest.mark.parametrize("forgery", ["unsigned", "another key", "not a token", "oversized"])
@pytest.mark.parametrize("name", TOKENS)
async def test_forged_page_tokens_are_refused(server: Server, name: str, forgery: str) -> None:
    method, request, field = TOKENS[name]
    position = FORGED_POSITIONS[name]
    fingerprint = "any"  # a forger may reproduce the fingerprint; the signature still fails
    forged: dict[str, Callable[[], str]] = {
        "unsigned": lambda: _unsigned(position, fingerprint),
        "another key": lambda: _alien(position, fingerprint),
        "not a token": lambda: "x",
        "oversized": lambda: "x" * 5000,
    }
    token = forged[forgery]()
    refused = await server.refusal(method, request(token))
    details = refused.details() or ""
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(field + ":") and not LEAKS.search(details), details
    await server.healthy()


async def test_tokens_of_a_previous_key_still_page_and_new_ones_use_the_current_key(
    server: Server,
) -> None:
    first = alert_service_pb2.ListAlertsResponse.FromString(
        (
            await server.call(
                ALERTS + "ListAlerts", alert_service_pb2.ListAlertsRequest(page_size=1)
            )
        )[0]
    )
    assert first.next_page_token
    current = page_token.PageTokens([TOKEN_KEY])
    old = page_token.PageTokens([OLD_TOKEN_KEY])
    # The server signs with the current key alone.
    body = first.next_page_token
    with pytest.raises(page_token.PageTokenError, match="not a token"):
        old.decode(body, "", (int, str))
    with pytest.raises(page_token.PageTokenError, match="belong to this request"):
        current.decode(body, "another request's fingerprint", (int, str))
    # Re-signed with the old key (a token handed out before a rotation: same position, same
    # request), it pages on.
    payload = json.loads(base64.urlsafe_b64decode(body.split(".")[0] + "=="))
    resigned = old.encode(payload["p"], payload["f"])
    second = alert_service_pb2.ListAlertsResponse.FromString(
        (
            await server.call(
                ALERTS + "ListAlerts",
                alert_service_pb2.ListAlertsRequest(page_size=1, page_token=resigned),
            )
        )[0]
    )
    assert [a.dedup_key for a in second.alerts] != [a.dedup_key for a in first.alerts]
    assert len(second.alerts) == 1


async def test_a_storage_failure_is_internal_with_a_generic_message(server: Server) -> None:
    # A failure nothing validates against: the rollup the breakdown reads is gone.
    server.clickhouse.command("RENAME TABLE usage_rollup_1h TO usage_rollup_1h_away")
    try:
        refused = await server.refusal(QUERY + "GetCostBreakdown", breakdown())
    finally:
        server.clickhouse.command("RENAME TABLE usage_rollup_1h_away TO usage_rollup_1h")
    details = refused.details() or ""
    assert refused.code() == grpc.StatusCode.INTERNAL
    assert details.startswith("internal error (incident ") and not LEAKS.search(details), details
    assert "usage_rollup" not in details
    await server.healthy()


async def test_the_acknowledging_actor_is_the_callers_key(server: Server) -> None:
    answer = alert_service_pb2.AcknowledgeAlertResponse.FromString(
        (
            await server.call(
                ALERTS + "AcknowledgeAlert",
                alert_service_pb2.AcknowledgeAlertRequest(
                    organization_id="seoul", dedup_key="k1", actor="somebody else entirely"
                ),
                token=SEOUL,
            )
        )[0]
    )
    assert answer.alert.state == alert_pb2.ALERT_STATE_ACKNOWLEDGED
    assert answer.alert.state_changed_by == "seoul-security"


# Random requests: every field of every RPC's message set or not, to values ordinary, odd or out
# of bounds. Whatever they ask, no answer is UNKNOWN or INTERNAL, nor leaks.
REQUESTS: dict[str, type[Message]] = {
    QUERY + "GetCostBreakdown": query_pb.GetCostBreakdownRequest,
    QUERY + "QueryUsage": query_pb.QueryUsageRequest,
    QUERY + "GetCostSummary": query_pb.GetCostSummaryRequest,
    QUERY + "ExportUsage": query_pb.ExportUsageRequest,
    ALERTS + "ListAlerts": alert_service_pb2.ListAlertsRequest,
    ALERTS + "AcknowledgeAlert": alert_service_pb2.AcknowledgeAlertRequest,
    SEATS + "ListSeats": seat_pb.ListSeatsRequest,
    SEATS + "GetSeatSummary": seat_pb.GetSeatSummaryRequest,
    BUDGETS + "ListBudgetStatuses": budget_pb.ListBudgetStatusesRequest,
}
STRINGS = ["", "seoul", "k0", "Asia/Seoul", "Asia/Kathmandu", "America/St_Johns", "Etc/GMT+12",
           "'", "\\", "%(org)s", "{x}", "\x00", "é" * 100]  # fmt: skip
SECONDS = [0, 946_684_800, 1_700_000_000, 1_790_000_000, 4_102_444_800, 4_102_444_801]
NUMBERS = [0, 0, 1, 7, 1000, 1001, -1, 2**31 - 1]


def random_message(message: Message, rng: random.Random) -> Message:
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.2:
            continue
        for _ in range(rng.choice([1, 2, 5]) if field.is_repeated else 1):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                inner = getattr(message, field.name)
                inner = inner.add() if field.is_repeated else inner
                kind = field.message_type.full_name if field.message_type else ""
                if kind == "google.protobuf.Timestamp":
                    inner.seconds = rng.choice([*SECONDS, rng.randint(SECONDS[1], SECONDS[-1])])
                    inner.nanos = rng.choice([0, 0, 500, 999_999_999])
                elif kind == "google.type.Date":
                    inner.year = rng.choice([0, 2000, 2026, 2099, 2100])
                    inner.month, inner.day = rng.randint(0, 12), rng.randint(0, 31)
                else:
                    random_message(inner, rng)
                continue
            if field.type == FieldDescriptor.TYPE_STRING:
                value: object = rng.choice(STRINGS)
            elif field.type == FieldDescriptor.TYPE_ENUM:
                numbers = field.enum_type.values_by_number if field.enum_type else {0: None}
                value = rng.choice(list(numbers))
            elif field.type == FieldDescriptor.TYPE_BOOL:
                value = rng.random() < 0.5
            else:
                value = rng.choice(NUMBERS)
            if field.is_repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)
    return message


async def test_random_requests_never_get_unknown_or_internal(server: Server) -> None:
    rng = random.Random(11)
    seen: Counter[str] = Counter()
    for _ in range(400):
        method = rng.choice(list(REQUESTS))
        request = random_message(REQUESTS[method](), rng)
        try:
            await server.call(method, request)
            seen["OK"] += 1
        except grpc.aio.AioRpcError as refused:
            details = refused.details() or ""
            seen[refused.code().name] += 1
            assert refused.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (
                method, str(request)[:500], details)  # fmt: skip
            assert not LEAKS.search(details), details
    assert seen["OK"] and seen["INVALID_ARGUMENT"], seen  # both paths were explored
    await server.healthy()
