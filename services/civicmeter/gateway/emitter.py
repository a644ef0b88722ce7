"""A small client that AI gateways embed to send usage events to ingest over HTTP.

    async with UsageEmitter("http://ingest:8080") as emitter:
        await emitter.emit(event)          # buffered; sent in batches
    # leaving the block flushes what is buffered

Batches go as CloudEvents JSON (or protobuf with `binary=True`). Server errors and lost
connections are retried with exponential backoff, with the same event ids, so a retry can
never double-count; a 4xx answer raises IngestRejectedError with the server's explanation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp

from civicmeter.core.event_json import encode_batch
from civicmeter.ingest.v1 import ingest_service_pb2
from civicmeter.usage.v1 import usage_event_pb2 as pb

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
    ) -> None:
        self._url = base_url.rstrip("/") + "/v1/events"
        self._batch_size = batch_size
        self._binary = binary
        self._max_attempts = max_attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
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
        delay = 0.2
        for attempt in range(1, self._max_attempts + 1):
            try:
                async with self._session.post(
                    self._url, data=body, headers={"Content-Type": content_type}
                ) as resp:
                    if resp.status == 202:
                        accepted: int = (await resp.json())["accepted_count"]
                        return accepted
                    if 400 <= resp.status < 500:
                        raise IngestRejectedError(resp.status, await resp.json())
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt == self._max_attempts:
                raise ConnectionError(
                    f"ingest did not accept the batch after {attempt} attempts: {problem}"
                )
            log.warning("ingest attempt %d failed (%s); retrying in %.1fs", attempt, problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")
