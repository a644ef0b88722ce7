"""Webhook posts against a receiver on loopback that asks the notifier to wait (Retry-After)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from civicmeter.gateway.http_retry import RetryPolicy
from civicmeter.notifier.webhook import post_with_retries
from tests.scripted_http import ScriptedServer, retry_after, retry_after_date, scripted_server


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, ScriptedServer]]:
    async with scripted_server("/hook", lambda _: web.Response(text="ok")) as served:
        yield served


# Backoff alone would retry within 10 ms: any longer wait is the server's Retry-After.
FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.01, max_retry_after=5.0)


async def test_a_429_and_a_503_are_retried_after_the_wait_they_ask_for(
    receiver: tuple[str, ScriptedServer],
) -> None:
    url, hook = receiver
    hook.script = [(429, retry_after("1")), (503, retry_after_date(2))]
    async with aiohttp.ClientSession() as session:
        result = await post_with_retries(session, url, {"text": "alert"}, policy=FAST)
    assert (result.delivered, result.attempts) == (True, 3)
    first, second = hook.gaps()
    assert 1.0 <= first < 1.5
    # An HTTP-date has whole seconds: the wait ends at that second, 1-2 s after the answer.
    assert 1.0 <= second < 2.5
    assert [json.loads(body) for body in hook.bodies] == [{"text": "alert"}] * 3


async def test_a_retry_after_beyond_the_bound_is_cut_to_it(
    receiver: tuple[str, ScriptedServer],
) -> None:
    url, hook = receiver
    hook.script = [(503, retry_after("86400"))]
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01, max_retry_after=0.5)
    async with aiohttp.ClientSession() as session:
        result = await post_with_retries(session, url, {"text": "alert"}, policy=policy)
    assert (result.delivered, result.attempts) == (True, 2)
    assert 0.5 <= hook.gaps()[0] < 1.0


async def test_a_server_that_keeps_failing_is_given_up_after_max_attempts(
    receiver: tuple[str, ScriptedServer],
) -> None:
    url, hook = receiver
    hook.script = [(503, retry_after("0"))] * 10
    async with aiohttp.ClientSession() as session:
        result = await post_with_retries(session, url, {"text": "alert"}, policy=FAST)
    assert (result.delivered, result.attempts, result.reason) == (False, 4, "HTTP 503")
    assert len(hook.arrivals) == 4


async def test_other_client_errors_are_not_retried(receiver: tuple[str, ScriptedServer]) -> None:
    url, hook = receiver
    hook.script = [(404, retry_after("0"))]
    async with aiohttp.ClientSession() as session:
        result = await post_with_retries(session, url, {"text": "alert"}, policy=FAST)
    assert (result.delivered, result.attempts, result.reason) == (False, 1, "HTTP 404")
    assert len(hook.arrivals) == 1


async def test_a_refused_connection_is_retried_then_reported() -> None:
    async with aiohttp.ClientSession() as session:
        # Port 9 (discard) on loopback: nothing listens, the connection is refused.
        result = await post_with_retries(
            session, "http://127.0.0.1:9/hook", {"text": "alert"}, policy=FAST
        )
    assert (result.delivered, result.attempts) == (False, 4)
    assert result.reason.startswith("ClientConnectorError")
    assert (result.outcome, result.status) == ("failed", None)


async def test_a_dead_webhook_is_a_failure_and_a_4xx_a_rejection(
    receiver: tuple[str, ScriptedServer],
) -> None:
    url, hook = receiver
    hook.script = [(404, retry_after("0"))]
    async with aiohttp.ClientSession() as session:
        rejected = await post_with_retries(session, url, {"text": "alert"}, policy=FAST)
        hook.script = [(503, retry_after("0"))] * 4
        given_up = await post_with_retries(session, url, {"text": "alert"}, policy=FAST)
        hook.script = [(429, retry_after("0"))] * 4
        throttled = await post_with_retries(session, url, {"text": "alert"}, policy=FAST)
    assert (rejected.outcome, rejected.attempts) == ("rejected", 1)
    assert (given_up.outcome, given_up.attempts) == ("failed", 4)
    assert throttled.outcome == "failed"  # still asked to wait when the attempts ran out
