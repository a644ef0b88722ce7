"""A small client that AI gateways embed to send usage events to ingest over HTTP.

    async with UsageEmitter("http://ingest:8080") as emitter:
        await emitter.emit(event)          # buffered; sent in batches
    # leaving the block flushes what is buffered

Batches go as CloudEvents JSON (or protobuf with `binary=True`). Server errors and lost
connections are retried with exponential backoff (or after the Retry-After a 429 or 503 asks
for, up to `max_retry_after_seconds`), with the same event ids, so a retry can never
double-count; any other 4xx answer raises IngestRejectedError with the server's explanation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp
from tenacity import RetryCallState

from civicmeter.api.event_json import encode_batch
from civicmeter.api.ingest.v1 import ingest_service_pb2
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.gateway.http_retry import (
    RetryableAnswer,
    RetryPolicy,
    http_retrying,
    next_wait,
    raise_if_retryable,
)

log = logging.getLogger("civicmeter.emitter")


class IngestRejectedError(ValueError):
    """ingest refused the batch (HTTP 4xx); `detail` is its JSON answer."""

    def __init__(self, status: int, detail: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {detail.get('error', detail)}")
        self.status = status
        self.detail = detail


class UsageEmitter:
    def __init__(
        self,
        base_url: str,
        *,
        batch_size: int = 1000,
        binary: bool = False,
        max_attempts: int = 6,
        timeout_seconds: float = 30.0,
        token: str | None = None,  # the gateway key ingest authenticates (`civicmeter api-key`)
        max_retry_after_seconds: float = 60.0,
    ) -> None:
        self._url = base_url.rstrip("/") + "/v1/events"
        self._batch_size = batch_size
        self._binary = binary
        self._retry = RetryPolicy(
            max_attempts=max_attempts,
            base_delay=0.2,
            max_delay=10.0,
            max_retry_after=max_retry_after_seconds,
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._buffer: list[pb.UsageEvent] = []
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                await self.flush()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def emit(self, event: pb.UsageEvent) -> None:
        self._buffer.append(event)
        if len(self._buffer) >= self._batch_size:
            await self.flush()

    async def flush(self) -> None:
        while self._buffer:
            batch = self._buffer[: self._batch_size]
            await self.send(batch)
            del self._buffer[: len(batch)]

    async def send(self, events: Sequence[pb.UsageEvent]) -> int:
        """Send one batch now; return the number ingest accepted."""
        if self._binary:
            body = ingest_service_pb2.PublishEventsRequest(events=events).SerializeToString()
            content_type = "application/x-protobuf"
        else:
            body = encode_batch(list(events))
            content_type = "application/cloudevents-batch+json"
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        # Every attempt sends the same body, hence the same event ids: ingest counts them once.
        attempts = 0
        try:
            async for attempt in http_retrying(
                self._retry, (aiohttp.ClientConnectionError, TimeoutError), _log_retry
            ):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    async with self._session.post(
                        self._url, data=body, headers={"Content-Type": content_type, **self._auth}
                    ) as resp:
                        raise_if_retryable(resp)  # 429 and 5xx, after their Retry-After
                        if resp.status == 202:
                            accepted: int = (await resp.json())["accepted_count"]
                            return accepted
                        if 400 <= resp.status < 500:
                            raise IngestRejectedError(resp.status, await resp.json())
                        raise RetryableAnswer(resp.status, None)  # not an answer ingest gives
        except (RetryableAnswer, aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ConnectionError(
                f"ingest did not accept the batch after {attempts} attempts: {_problem(exc)}"
            ) from exc
        raise AssertionError("unreachable: tenacity either returns an attempt or raises")


def _problem(error: BaseException) -> str:
    return str(error) if isinstance(error, RetryableAnswer) else f"{type(error).__name__}: {error}"


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    problem = _problem(error) if error is not None else "no answer"
    log.warning(
        "ingest attempt %d failed (%s); retrying in %.1fs",
        state.attempt_number,
        problem,
        next_wait(state),
    )
