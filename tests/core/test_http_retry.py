"""Retry-After parsing and the wait chosen before each retry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from civicmeter.gateway.http_retry import (
    RetryableAnswer,
    RetryPolicy,
    http_retrying,
    retry_after_seconds,
)

NOW = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=42), usegmt=True), 42.0),
        ("Mon, 02 Mar 2026 09:01:30 GMT", 90.0),
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),  # already past
    ],
)
def test_retry_after_reads_delay_seconds_and_http_dates(header: str, seconds: float) -> None:
    assert retry_after_seconds(header, NOW) == seconds


@pytest.mark.parametrize(
    "header", [None, "", "-5", "1.5", "soon", "٣", "Mon, 02 Mar 2026 09:01:30", "Mon, 99 Foo"]
)
def test_a_malformed_or_missing_retry_after_is_none(header: str | None) -> None:
    assert retry_after_seconds(header, NOW) is None


async def waits(policy: RetryPolicy, errors: list[Exception]) -> list[float]:
    """The waits tenacity sleeps between attempts that fail with `errors` in turn."""
    slept: list[float] = []
    retrying = http_retrying(policy, (ConnectionError,))

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    retrying.sleep = sleep  # type: ignore[assignment]
    failures = iter(errors)
    with pytest.raises(type(errors[-1])):
        async for attempt in retrying:
            with attempt:
                raise next(failures)
    return slept


async def test_retry_after_is_waited_exactly_and_bounded_and_backoff_fills_the_rest() -> None:
    policy = RetryPolicy(
        max_attempts=5, base_delay=0.5, max_delay=3.0, max_retry_after=10.0, jitter=lambda: 1.0
    )
    slept = await waits(
        policy,
        [
            RetryableAnswer(503, 7.0),  # what the server asked for
            RetryableAnswer(429, 3600.0),  # cut to max_retry_after
            ConnectionError("reset"),  # backoff: 0.5 * 2 ** 2
            RetryableAnswer(500, None),  # backoff capped at max_delay
            RetryableAnswer(503, 1.0),  # the last attempt: no wait after it
        ],
    )
    assert slept == [7.0, 10.0, 2.0, 3.0]


async def test_backoff_jitter_keeps_at_least_half_of_each_step() -> None:
    low = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=100.0, jitter=lambda: 0.0)
    assert await waits(low, [ConnectionError()] * 4) == [0.5, 1.0, 2.0]


async def test_errors_that_are_not_retryable_are_raised_at_once() -> None:
    slept = []
    retrying = http_retrying(RetryPolicy(max_attempts=5), (ConnectionError,))

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    retrying.sleep = sleep  # type: ignore[assignment]
    with pytest.raises(PermissionError):
        async for attempt in retrying:
            with attempt:
                raise PermissionError("refused")
    assert slept == []
