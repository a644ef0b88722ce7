"""rpc.server.call.duration on every server new_server builds: unary and streaming calls, by
status name, whether the handler returns, aborts or fails."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from civicmeter.core.grpc_server import new_server
from tests.telemetry.memory import Recorded

SERVICE = "test.v1.Echo"


async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    if request == b"abort":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
    if request == b"fail":
        raise RuntimeError("a bug")
    return request


async def repeat(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for _ in range(3):
        yield request
    if request == b"abort":
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "enough")


async def test_every_call_is_timed_with_its_status(global_telemetry: Recorded) -> None:
    server = new_server([SERVICE])
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Repeat": grpc.unary_stream_rpc_method_handler(repeat),
    }
    server.server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),)
    )
    port = server.server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary(f"/{SERVICE}/Echo")
            stream = channel.unary_stream(f"/{SERVICE}/Repeat")
            assert await unary(b"hi") == b"hi"
            for request, code in ((b"abort", "PERMISSION_DENIED"), (b"fail", "UNKNOWN")):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await unary(request)
                assert info.value.code().name == code
            assert [r async for r in stream(b"x")] == [b"x"] * 3
            with pytest.raises(grpc.aio.AioRpcError):
                _ = [r async for r in stream(b"abort")]
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await server.stop(0)

    calls = {
        (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p.count
        for p in global_telemetry.points("rpc.server.call.duration")
        if str(p.attributes["rpc.method"]).startswith(("/test.", "/grpc.health"))
    }
    assert calls == {
        (f"/{SERVICE}/Echo", "OK"): 1,
        (f"/{SERVICE}/Echo", "PERMISSION_DENIED"): 1,
        (f"/{SERVICE}/Echo", "UNKNOWN"): 1,
        (f"/{SERVICE}/Repeat", "OK"): 1,
        (f"/{SERVICE}/Repeat", "RESOURCE_EXHAUSTED"): 1,
        ("/grpc.health.v1.Health/Check", "OK"): 1,
    }
    # Health checks are timed, not traced; the service's calls are traced.
    traced = {s.name for s in global_telemetry.exporter.get_finished_spans()}
    assert f"/{SERVICE}/Echo" in traced
    assert "/grpc.health.v1.Health/Check" not in traced
