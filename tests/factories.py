"""Builders of valid usage events for tests; each test changes only what it is about."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.pricing import PriceCatalog, parse_catalog
from civicmeter.gateway.identity import pseudonymise_user

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
_ids = itertools.count()

CATALOG_DOC: dict[str, Any] = {
    "currency": "KRW",
    "versions": [
        {
            "version": "v1",
            "effective_from": "2026-01-01T00:00:00+09:00",
            "prices": [
                {
                    "provider": "openai",
                    "service": "openai-api",
                    "model": "gpt-4o",
                    "unit": "input_tokens",
                    "price": "0.0034",
                },
                {
                    "provider": "openai",
                    "service": "openai-api",
                    "model": "gpt-4o",
                    "unit": "output_tokens",
                    "price": "0.0136",
                },
                {
                    "provider": "openai",
                    "service": "chatgpt",
                    "unit": "seat_months",
                    "price": "29000",
                },
                {"provider": "openai", "service": "chatgpt", "unit": "input_tokens", "price": "0"},
                {"provider": "openai", "service": "chatgpt", "unit": "output_tokens", "price": "0"},
            ],
        },
        {
            "version": "v2",
            "effective_from": "2026-11-01T00:00:00+09:00",
            "based_on": "v1",
            "prices": [
                {
                    "provider": "openai",
                    "service": "openai-api",
                    "model": "gpt-4o",
                    "unit": "input_tokens",
                    "price": "0.0036",
                },
            ],
        },
    ],
}


def catalog() -> PriceCatalog:
    return parse_catalog(CATALOG_DOC, "test-catalog")


# A catalog file in vendor currencies, with an inline FX table and a contract; tests name its
# lines, so a change here moves the line numbers they expect.
PRICES_YAML = """\
currency: KRW
fx:
  rates:
    USD:
      - {effective_from: 2025-01-01, krw_per_unit: "1391.25"}
      - {effective_from: 2025-02-01, krw_per_unit: "1450.00"}
versions:
  - version: "v1"
    effective_from: "2025-01-01T00:00:00+09:00"
    currency: USD
    prices:
      - {provider: openai, service: openai-api, model: gpt-4o, unit: input_tokens, price: "2.50", per: 1000000}
      - {provider: openai, service: openai-api, model: gpt-4o, unit: output_tokens, price: "10.00", per: 1000000}
      - {provider: openai, service: openai-api, model: whisper-1, unit: audio_seconds, price: "0.006", per: 60}
      - {provider: openai, service: chatgpt, unit: seat_months, price: "29000", currency: KRW}
      - {provider: openai, service: chatgpt, model: team, unit: seat_months, price: "33.00"}
  - version: "v2"
    effective_from: "2025-02-01T00:00:00+09:00"
    based_on: "v1"
    prices:
      - {provider: openai, service: openai-api, model: "*", unit: requests, price: "5", currency: KRW}
contracts:
  - contract: seoul-2025
    organization: seoul
    effective_from: "2025-03-01T00:00:00+09:00"
    effective_until: "2025-04-01T00:00:00+09:00"
    currency: USD
    prices:
      - {provider: openai, service: openai-api, model: gpt-4o, unit: input_tokens, price: "2.00", per: 1000000}
      - {provider: openai, service: chatgpt, model: team, unit: seat_months, price: "27.50"}
"""  # noqa: E501


def event(**changes: Any) -> pb.UsageEvent:
    """A valid API call by a Seoul user, one hour before NOW; keyword args override fields."""
    usage = changes.pop("usage", pb.Usage(input_tokens=1000, output_tokens=200))
    when = changes.pop("event_time", NOW - timedelta(hours=1))
    message = pb.UsageEvent(
        event_id=changes.pop("event_id", f"evt-{next(_ids)}"),
        gateway_id="gw-seoul-1",
        organization_id="seoul",
        department_id="digital-policy",
        user_id="u_0123456789abcdef0123456789abcdef",
        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL,
        provider_name="openai",
        service_id="openai-api",
        request_model="gpt-4o",
        operation_name="chat",
        usage=usage,
    )
    for name, value in changes.items():
        setattr(message, name, value)
    message.event_time.FromDatetime(when)
    return message


def seoul_months_around(t: datetime, months: int = 2) -> tuple[datetime, datetime]:
    """Asia/Seoul month starts `months` before and after the month of `t`."""
    from zoneinfo import ZoneInfo

    seoul = ZoneInfo("Asia/Seoul")
    local = t.astimezone(seoul)
    index = local.year * 12 + local.month - 1

    def month_start(i: int) -> datetime:
        return datetime(i // 12, i % 12 + 1, 1, tzinfo=seoul)

    return month_start(index - months), month_start(index + months)


def user_id(name: str) -> str:
    """The pseudonymous id the gateway SDK gives `name` (the only form events may carry)."""
    return pseudonymise_user(b"tests-hmac-key-0123456789", name)
