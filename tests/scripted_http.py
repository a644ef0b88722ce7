"""An HTTP server on loopback that answers its scripted failures in turn, then succeeds.

It records when each request arrived and what it carried, so that tests can assert the waits
a client kept between attempts and what it resent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from aiohttp import web

# A scripted answer: its status and headers, the headers made when it is sent (an HTTP-date in
# Retry-After is relative to then).
Answer = tuple[int, Callable[[], dict[str, str]]]


class ScriptedServer:
    def __init__(self, success: Callable[[bytes], web.Response]) -> None:
        self.success = success
        self.script: list[Answer] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        body = await request.read()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if self.script:
            status, headers = self.script.pop(0)
            return web.Response(status=status, headers=headers())
        return self.success(body)

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests."""
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]


def retry_after(value: str) -> Callable[[], dict[str, str]]:
    return lambda: {"Retry-After": value}


def retry_after_date(seconds: int) -> Callable[[], dict[str, str]]:
    """Retry-After as an HTTP-date `seconds` after the answer (truncated to the second)."""
    return lambda: {
        "Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)
    }


@asynccontextmanager
async def scripted_server(
    path: str, success: Callable[[bytes], web.Response]
) -> AsyncIterator[tuple[str, ScriptedServer]]:
    """(URL of `path` on loopback, the server) while the block runs."""
    server = ScriptedServer(success)
    app = web.Application()
    app.router.add_post(path, server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}{path}", server
    finally:
        await runner.cleanup()
