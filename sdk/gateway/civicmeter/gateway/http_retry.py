"""Retrying HTTP requests: which answers deserve another try, and how long to wait before it.

The notifier's webhooks and the gateway SDK's emitter retry the same way, through tenacity:

    async for attempt in http_retrying(RetryPolicy(max_attempts=5), (aiohttp.ClientError,)):
        with attempt:
            async with session.post(url, json=payload) as response:
                raise_if_retryable(response)      # 429, 5xx: RetryableAnswer
                ...                               # 2xx: done; other 4xx: the caller's to refuse

The wait is exponential with jitter (so the retries of many clients do not stampede), except
after a 429 or 503 that carries Retry-After (RFC 9110 §10.2.3: delay-seconds or an HTTP-date):
then exactly what the server asked for, bounded by `max_retry_after` so that a server cannot
park a client for hours.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

# The statuses whose Retry-After asks the client to wait (RFC 9110 §15.6.4, RFC 6585 §4).
_RETRY_AFTER_STATUSES = frozenset({429, 503})


class RetryableAnswer(Exception):  # noqa: N818 (an answer, not an error of the caller's)
    """The server answered with a status worth another try (429 or 5xx)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after  # seconds the server asked to wait, if it said


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5  # the first wait; each next one doubles ...
    max_delay: float = 30.0  # ... up to this
    max_retry_after: float = 60.0  # the longest Retry-After honoured; longer ones are cut to it
    # Seconds in [0, 1): the jitter factor. Injected by tests that assert exact waits.
    jitter: Callable[[], float] = field(default=random.random, compare=False)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """The wait a Retry-After header asks for: delay-seconds or an HTTP-date (0 when that date
    has passed); None when the header is absent or malformed."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None  # HTTP-dates are GMT; a date without a zone is not one
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def raise_if_retryable(response: aiohttp.ClientResponse) -> None:
    """Raise RetryableAnswer for a 429 or a 5xx (with the Retry-After it carries, if any)."""
    status = response.status
    if status == 429 or status >= 500:
        retry_after = (
            retry_after_seconds(response.headers.get("Retry-After"))
            if status in _RETRY_AFTER_STATUSES
            else None
        )
        raise RetryableAnswer(status, retry_after)


class _Wait:
    """tenacity wait strategy: the server's Retry-After when it gave one, else backoff."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._backoff = wait_exponential(multiplier=policy.base_delay, max=policy.max_delay)

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, RetryableAnswer) and error.retry_after is not None:
            return min(error.retry_after, self._policy.max_retry_after)
        # Half jitter: between half and all of the exponential step, never a burst of zeros.
        return self._backoff(state) * (0.5 + 0.5 * self._policy.jitter())


def http_retrying(
    policy: RetryPolicy,
    transport_errors: tuple[type[BaseException], ...],
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """Attempts of one request: retried on RetryableAnswer and the given transport errors, up
    to `policy.max_attempts`; after the last, its error is raised as it was."""
    return AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=_Wait(policy),
        retry=retry_if_exception_type((RetryableAnswer, *transport_errors)),
        before_sleep=before_sleep,
        reraise=True,
    )


def next_wait(state: RetryCallState) -> float:
    """The wait tenacity chose before the next attempt (for logging in `before_sleep`)."""
    return state.next_action.sleep if state.next_action is not None else 0.0
