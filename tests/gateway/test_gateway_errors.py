"""gRPC status → HTTP status: the whole table, error details, Retry-After and rate-limit
headers, and what the gateway answers when the API is unreachable or unimplemented."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from rest import (  # noqa: F401  (fixtures, by function name)
    Event,
    app_fixture,
    app_overrides_fixture,
    base_url,
    client_fixture,
    failed,
    ok,
    sse,
    standalone_gateway,
)

from genrpc.imagegen.v1 import generation_pb2 as g
from server.app import App

# These APIs check no key, but the gateway refuses a call without one before calling.
ANY_KEY = {"X-API-Key": "any"}

TABLE = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


@pytest.fixture
async def failing_api() -> AsyncIterator[str]:
    """A real gRPC server whose GetGeneration fails with the code named by the request's id.

    The imagegen App cannot be made to answer DEADLINE_EXCEEDED or DATA_LOSS on demand;
    this server answers every code over the wire the way the App's interceptor does
    (rich status: ErrorInfo, BadRequest, RetryInfo). It registers nothing else, so every
    other method answers grpc's own UNIMPLEMENTED.
    """

    async def get_generation(
        request: g.GetGenerationRequest, context: grpc.aio.ServicerContext
    ) -> g.Generation:
        code = grpc.StatusCode[request.id]
        details = [
            _pack(
                error_details_pb2.ErrorInfo(
                    reason=f"{code.name}_REASON", domain="test", metadata={"id": request.id}
                )
            ),
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="reference_images[1]", description="is odd"
                        )
                    ]
                )
            ),
        ]
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            delay = duration_pb2.Duration(seconds=2, nanos=100_000_000)
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(
            code=code.value[0], message=f"{code.name} says no", details=details
        )
        await context.abort_with_status(rpc_status.to_status(status))
        raise AssertionError("abort_with_status returns only by raising")

    async def watch_generation(
        request: g.WatchGenerationRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[g.GenerationEvent]:
        # One event, then the stream fails: a watcher dropped for being too slow.
        yield g.GenerationEvent(
            type=g.GENERATION_EVENT_TYPE_SNAPSHOT,
            revision=1,
            generation=g.Generation(id=request.id, status=g.GENERATION_STATUS_PENDING),
        )
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "watcher too slow")

    handler = grpc.method_handlers_generic_handler(
        "imagegen.v1.GenerationService",
        {
            "GetGeneration": grpc.unary_unary_rpc_method_handler(
                get_generation,
                request_deserializer=g.GetGenerationRequest.FromString,
                response_serializer=g.Generation.SerializeToString,
            ),
            "WatchGeneration": grpc.unary_stream_rpc_method_handler(
                watch_generation,
                request_deserializer=g.WatchGenerationRequest.FromString,
                response_serializer=g.GenerationEvent.SerializeToString,
            ),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_every_grpc_code_has_its_http_status(failing_api: str) -> None:
    async with (
        standalone_gateway(failing_api) as url,
        httpx.AsyncClient(base_url=url, headers=ANY_KEY) as http,
    ):
        for name, status in TABLE.items():
            response = await http.get(f"/api/v1/generations/{name}")
            error = failed(response, status, f"{name}_REASON")
            assert error["status"] == name and error["message"] == f"{name} says no"
            assert error["details"]["fieldViolations"] == [
                {"field": "referenceImages[1]", "description": "is odd"}
            ]
            assert error["details"]["metadata"] == {"id": name}
            if name == "RESOURCE_EXHAUSTED":
                assert response.headers["retry-after"] == "3"  # 2.1 s, rounded up
                assert error["details"]["retryAfterSeconds"] == pytest.approx(2.1)
            else:
                assert "retry-after" not in response.headers
            if name == "UNAUTHENTICATED":
                assert response.headers["www-authenticate"].startswith("ApiKey")
        # A method the server does not have at all: grpc's own UNIMPLEMENTED, no details.
        error = failed(await http.get("/api/v1/flows"), 501, "UNIMPLEMENTED")
        assert error["status"] == "UNIMPLEMENTED" and "details" not in error
        failed(await http.get("/api/v1/generations:watch"), 501, "UNIMPLEMENTED")


async def test_a_stream_failing_midway_ends_with_an_error_event(failing_api: str) -> None:
    async with (
        standalone_gateway(failing_api) as url,
        httpx.AsyncClient(base_url=url, headers=ANY_KEY) as http,
        http.stream("GET", "/api/v1/generations/g1/events") as response,
    ):
        assert response.status_code == 200  # the first event came before the failure
        items = [item async for item in sse(response) if isinstance(item, Event)]
    assert [(e.id, e.event) for e in items] == [("1", "snapshot"), (None, "error")]
    assert (items[0].data["generation"]["id"], items[0].data["generation"]["status"]) == (
        "g1",
        "pending",
    )
    assert items[1].data == {
        "success": False,
        "error": {
            "code": "RESOURCE_EXHAUSTED",
            "message": "watcher too slow",
            "status": "RESOURCE_EXHAUSTED",
        },
    }


async def test_an_unreachable_api_is_503() -> None:
    with_nobody = "127.0.0.1:1"  # nothing listens on port 1
    async with (
        standalone_gateway(with_nobody) as url,
        httpx.AsyncClient(base_url=url, headers=ANY_KEY) as http,
    ):
        failed(await http.get("/api/v1/generations"), 503, "UNAVAILABLE")
        failed(await http.get("/api/v1/generations:watch"), 503, "UNAVAILABLE")
        failed(await http.get(f"/api/v1/images/{uuid.uuid4()}/content"), 503, "UNAVAILABLE")
        # A bad query is refused only once the key is known to be good: nobody can say.
        failed(await http.get("/api/v1/generations?limit=x"), 503, "UNAVAILABLE")
        # The gateway's own routes still answer.
        assert (await http.get("/openapi.json")).status_code == 200


async def test_gateway_shares_a_callers_channel(app: App) -> None:
    assert app.dev_api_key
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        async with (
            standalone_gateway(channel) as url,
            httpx.AsyncClient(base_url=url, headers={"X-API-Key": app.dev_api_key}) as http,
        ):
            ok(await http.post("/api/v1/generations", json={"prompt": "x"}), 201)
        # Stopping the gateway left the caller's channel open.
        assert channel.get_state() != grpc.ChannelConnectivity.SHUTDOWN


async def test_authentication_errors(app: App, client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=base_url(app)) as anonymous:
        response = await anonymous.get("/api/v1/generations")
        failed(response, 401, "API_KEY_MISSING")
        assert response.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
        bad = await anonymous.get("/api/v1/generations", headers={"X-API-Key": "nope"})
        assert failed(bad, 401)["status"] == "UNAUTHENTICATED"
    failed(await client.get("/api/v1/admin/projects"), 403, "ADMIN_KEY_REQUIRED")


@pytest.mark.parametrize(
    "app_overrides", [{"rate_limit_per_minute": 6, "rate_limit_burst": 2}], ids=["ratelimit"]
)
async def test_rate_limit_is_429_with_retry_after(client: httpx.AsyncClient) -> None:
    first = await client.get("/api/v1/generations")
    assert first.status_code == 200
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == (
        "2",
        "1",
    )
    assert (await client.get("/api/v1/generations")).headers["x-ratelimit-remaining"] == "0"
    limited = await client.get("/api/v1/generations")
    error = failed(limited, 429, "RATE_LIMITED")
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(limited.headers["retry-after"]) <= 10  # 6 a minute: one every 10 s
    assert limited.headers["x-ratelimit-remaining"] == "0"
    watch = await client.get("/api/v1/generations:watch")
    failed(watch, 429, "RATE_LIMITED")
