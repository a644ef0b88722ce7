"""Gateway access (ingest/auth.py) without a server: which credential admits a call, which
event of a batch a key may not report and how the refusal names it, how refusals of one
address are limited and counted, and how a gRPC peer becomes the address HTTP would name."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from civicmeter.core.access.auth import Principal, hash_token, new_token, parse_api_keys
from civicmeter.core.access.rate_limit import RateLimiter
from civicmeter.ingest.auth import (
    PERMISSION_DENIED,
    RATE_LIMITED,
    UNAUTHENTICATED,
    GatewayAccess,
    Refusal,
    _grpc_peer_address,
)
from tests.factories import event
from tests.ingest.test_auth import refused_calls

SEOUL = new_token()  # seoul, as gateway gw-seoul-1 only
METRO = new_token()  # seoul and busan, any gateway
FINANCE = new_token()  # a query key
RELAY = new_token()  # every organisation
KEYS = parse_api_keys({"keys": [
    {"id": "gw-seoul", "role": "gateway", "organization_id": "seoul",
     "gateway_ids": ["gw-seoul-1"], "sha256": hash_token(SEOUL)},
    {"id": "gw-metro", "role": "gateway", "organization_ids": ["seoul", "busan"],
     "sha256": hash_token(METRO)},
    {"id": "seoul-finance", "role": "finance-reader", "organization_id": "seoul",
     "sha256": hash_token(FINANCE)},
    {"id": "relay", "role": "gateway", "organization_id": "*", "sha256": hash_token(RELAY)},
]})  # fmt: skip


class Counted:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meter = MeterProvider(metric_readers=[self.reader]).get_meter("test")

    def refused(self) -> dict[tuple[str, str], int]:
        return refused_calls(self.reader)


@pytest.fixture
def counted() -> Iterator[Counted]:
    yield Counted()


def admitted(access: GatewayAccess, token: str = "", certificate: str = "") -> Principal:
    outcome = access.authenticate(token, certificate, "10.0.0.7", "http")
    assert isinstance(outcome, Principal), outcome
    return outcome


def test_a_gateway_token_or_its_certificate_admits_the_call(counted: Counted) -> None:
    access = GatewayAccess(KEYS, counted.meter)
    assert admitted(access, SEOUL).key_id == "gw-seoul"
    assert admitted(access, certificate="gw-metro").key_id == "gw-metro"
    assert admitted(access, METRO, certificate="gw-seoul").key_id == "gw-metro"  # token first
    assert counted.refused() == {}


@pytest.mark.parametrize(
    ("token", "certificate", "reason", "message"),
    [
        ("", "", UNAUTHENTICATED, "authorization: a valid `Bearer <gateway key>` or client "
                                  "certificate is required"),
        (new_token(), "", UNAUTHENTICATED, "authorization: a valid"),
        ("", "no-such-key", UNAUTHENTICATED, "authorization: a valid"),
        (FINANCE, "", PERMISSION_DENIED, "authorization: key 'seoul-finance' is not a gateway key"),
        ("", "seoul-finance", PERMISSION_DENIED, "authorization: key 'seoul-finance' is not a"),
    ],
)  # fmt: skip
def test_a_call_without_a_gateway_key_is_refused_and_counted(
    counted: Counted, token: str, certificate: str, reason: str, message: str
) -> None:
    access = GatewayAccess(KEYS, counted.meter)
    outcome = access.authenticate(token, certificate, "10.0.0.7", "grpc")
    assert isinstance(outcome, Refusal)
    assert outcome.reason == reason and outcome.message.startswith(message)
    assert counted.refused() == {(reason, "grpc"): 1}


def test_refusals_answer_in_each_protocols_terms() -> None:
    unauthenticated = Refusal(UNAUTHENTICATED, "authorization: no")
    response = unauthenticated.http_response()
    assert (response.status, response.headers["WWW-Authenticate"]) == (401, "Bearer")
    assert unauthenticated.grpc_code == grpc.StatusCode.UNAUTHENTICATED
    denied = Refusal(PERMISSION_DENIED, "events[0].organization_id: no")
    forbidden = denied.http_response()
    assert forbidden.status == 403 and "WWW-Authenticate" not in forbidden.headers
    assert denied.grpc_code == grpc.StatusCode.PERMISSION_DENIED
    limited = Refusal(RATE_LIMITED, "too many", retry_after_seconds=2.2)
    assert limited.http_response().status == 429
    assert limited.http_response().headers["Retry-After"] == "3"  # whole seconds, rounded up
    assert Refusal(RATE_LIMITED, "too many", 0.01).http_response().headers["Retry-After"] == "1"
    assert limited.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_batch_is_refused_at_the_first_event_the_key_may_not_report(counted: Counted) -> None:
    access = GatewayAccess(KEYS, counted.meter)
    seoul, metro = admitted(access, SEOUL), admitted(access, METRO)
    own = event(organization_id="seoul", gateway_id="gw-seoul-1")
    batch = [own, own, event(organization_id="busan"), event(organization_id="jeju")]
    refusal = access.check_events(seoul, batch, "10.0.0.7", "http")
    assert refusal == Refusal(
        PERMISSION_DENIED,
        "events[2].organization_id: key 'gw-seoul' may not report usage for organisation 'busan'",
    )
    other_gateway = [own, event(organization_id="seoul", gateway_id="gw-seoul-2")]
    refusal = access.check_events(seoul, other_gateway, "10.0.0.7", "http")
    assert refusal is not None and refusal.message.startswith("events[1].gateway_id: key")
    assert refusal.message.endswith("may not report usage as gateway 'gw-seoul-2'")
    assert access.check_events(metro, batch[:3], "10.0.0.7", "http") is None
    refusal = access.check_events(metro, batch, "10.0.0.7", "http")
    assert refusal is not None and refusal.message.startswith("events[3].organization_id")
    assert counted.refused() == {(PERMISSION_DENIED, "http"): 3}


def test_the_refusal_names_the_field_as_the_caller_sent_it_and_cuts_long_values(
    counted: Counted,
) -> None:
    access = GatewayAccess(KEYS, counted.meter)
    long_org = "o" * 100
    refusal = access.check_events(
        admitted(access, SEOUL),
        [event(organization_id=long_org)],
        "10.0.0.7",
        "http",
        name={"organization_id": "source"}.get,  # type: ignore[arg-type]
    )
    assert refusal is not None
    assert refusal.message == (
        f"events[0].source: key 'gw-seoul' may not report usage for organisation {'o' * 64!r}"
    )


def test_a_relay_key_and_open_ingest_report_for_everyone(counted: Counted) -> None:
    batch = [event(organization_id="seoul"), event(organization_id="busan", gateway_id="x")]
    access = GatewayAccess(KEYS, counted.meter)
    assert access.check_events(admitted(access, RELAY), batch, "10.0.0.7", "http") is None
    open_ingest = GatewayAccess(None, counted.meter)
    anyone = admitted(open_ingest, "anything")
    assert anyone.key_id == "open-ingest"
    assert open_ingest.check_events(anyone, batch, "10.0.0.7", "http") is None


def test_only_refusals_spend_an_addresss_allowance(counted: Counted) -> None:
    access = GatewayAccess(KEYS, counted.meter, RateLimiter(rate=0.001, burst=2))
    shared = "192.0.2.10"
    for _ in range(5):  # honest calls from the address are never limited
        assert isinstance(access.authenticate(SEOUL, "", shared, "http"), Principal)
    first, second, third = (access.authenticate("", "", shared, "http") for _ in range(3))
    assert isinstance(first, Refusal) and first.reason == UNAUTHENTICATED
    assert isinstance(second, Refusal) and second.reason == UNAUTHENTICATED
    assert isinstance(third, Refusal) and third.reason == RATE_LIMITED
    assert third.message.startswith("too many refused calls from this address; retry in ")
    assert third.retry_after_seconds > 100
    assert isinstance(access.authenticate(SEOUL, "", shared, "http"), Principal)
    other = access.authenticate("", "", "192.0.2.11", "grpc")  # another address: its own
    assert isinstance(other, Refusal) and other.reason == UNAUTHENTICATED
    assert counted.refused() == {
        (UNAUTHENTICATED, "http"): 2,
        (RATE_LIMITED, "http"): 1,
        (UNAUTHENTICATED, "grpc"): 1,
    }


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv6:[::1]:5", "::1"),
        ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
        ("unix:/run/civicmeter.sock", "unix:/run/civicmeter.sock"),
        ("", ""),
    ],
)
def test_a_grpc_peer_is_the_address_http_would_name(peer: str, address: str) -> None:
    assert _grpc_peer_address(peer) == address
