"""Caller mistakes that once crashed a call are INVALID_ARGUMENT with a reason, never INTERNAL
or UNKNOWN: undecodable bytes, invalid UTF-8, NaN and infinite numbers, out-of-range
durations and cursors, malformed request ids."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from expect import details, expect_error
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc, image_pb2, image_pb2_grpc
from server.api.server import DEFAULT_MAX_METADATA_BYTES
from server.app import App

CREATE = "/imagegen.v1.GenerationService/CreateGeneration"
WATCH = "/imagegen.v1.GenerationService/WatchGenerations"


@pytest.fixture
def backend() -> str:
    """Input checks do not depend on the storage: SQLite only."""
    return "sqlite"


def _count(app: App, method: str, code: str) -> float:
    for family in text_string_to_metric_families(app.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "imagegen_rpc_requests_total" and sample.labels == {
                "method": method,
                "code": code,
            }:
                return sample.value
    return 0.0


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"\xff\xff\xff\xff", "Wire format was corrupt"),
        # Field 1 (prompt), length 2, bytes that are not UTF-8.
        (b"\x0a\x02\xff\xfe", "bad UTF-8"),
    ],
    ids=["corrupt", "utf8"],
)
async def test_undecodable_requests_are_invalid_argument(
    app: App, channel: grpc.aio.Channel, auth, raw: bytes, what: str
) -> None:
    create = channel.unary_unary(CREATE)
    before = _count(app, CREATE, "INVALID_ARGUMENT")
    call = create(raw, metadata=(*auth, ("x-request-id", "hostile-1")))
    error = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    assert what in (error.details() or "")
    assert ("x-request-id", "hostile-1") in tuple(await call.trailing_metadata())
    # Logged and counted like any other caller error (counted just after the status is
    # sent, which the caller may see first: wait, bounded, for the count to move).
    for _ in range(100):
        if _count(app, CREATE, "INVALID_ARGUMENT") != before:
            break
        await asyncio.sleep(0.05)
    assert _count(app, CREATE, "INVALID_ARGUMENT") == before + 1

    watch = channel.unary_stream(WATCH)
    stream = watch(raw, metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[0] == "MALFORMED_REQUEST"


async def test_undecodable_requests_still_need_a_key(channel: grpc.aio.Channel) -> None:
    create = channel.unary_unary(CREATE)
    await expect_error(create(b"\xff\xff"), grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")


async def test_undecodable_health_check_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    await expect_error(check(b"\x0a\x02\xff\xfe"), grpc.StatusCode.INVALID_ARGUMENT)
    ok = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    reply = await ok(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
async def test_non_finite_meta_is_invalid_argument(
    channel: grpc.aio.Channel, auth, number: float
) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    request = g.CreateGenerationRequest(prompt="a bell")
    request.meta.update({"nested": {"list": [1, number]}})
    error = await expect_error(
        stub.CreateGeneration(request, metadata=auth), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details(error)[1][0][0] == "meta"
    images = image_pb2_grpc.ImageServiceStub(channel)
    upload = image_pb2.UploadImageRequest(content=b"x")
    upload.meta.fields["n"].CopyFrom(struct_pb2.Value(number_value=number))
    error = await expect_error(
        images.UploadImage(upload, metadata=auth), grpc.StatusCode.INVALID_ARGUMENT
    )


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**62, 0), (-(2**62), 0), (315_576_000_001, 0), (1, 2_000_000_000), (1, -5)],
)
async def test_out_of_range_duration_is_invalid_argument(
    channel: grpc.aio.Channel, auth, seconds: int, nanos: int
) -> None:
    images = image_pb2_grpc.ImageServiceStub(channel)
    request = image_pb2.GetImageUrlRequest(id_or_alias="@missing")
    request.ttl.seconds = seconds
    request.ttl.nanos = nanos
    error = await expect_error(
        images.GetImageUrl(request, metadata=auth), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert [field for field, _ in details(error)[1]] == ["ttl"]


@pytest.mark.parametrize("cursor", [str(2**63), "9" * 40, "1" * 5000, "²", "-1", " 1"])
async def test_out_of_range_cursor_is_invalid_argument(
    channel: grpc.aio.Channel, auth, cursor: str
) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    stream = stub.WatchGenerations(g.WatchGenerationsRequest(since_cursor=cursor), metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[0] == "INVALID_CURSOR"


async def test_largest_cursor_is_accepted(channel: grpc.aio.Channel, auth) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    stream = stub.WatchGenerations(
        g.WatchGenerationsRequest(since_cursor=str(2**63 - 1)), metadata=auth, timeout=0.5
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    # Nothing comes after the last possible cursor: the stream just waits.
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_overlong_correlation_id_is_invalid_argument(channel: grpc.aio.Channel, auth) -> None:
    # (grpc itself refuses to send control characters or non-ASCII in metadata.)
    request_id = "x" * 129
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    call = stub.ListGenerations(
        g.ListGenerationsRequest(), metadata=(*auth, ("x-request-id", request_id))
    )
    error = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CORRELATION_ID")
    # The call got an id of its own instead, echoed for correlation.
    sent = dict(tuple(await call.trailing_metadata()))
    assert sent["x-request-id"] not in ("", request_id)
    assert error.details()


@pytest.mark.parametrize("size", [8 * 1024, 20_000, DEFAULT_MAX_METADATA_BYTES - 1024])
async def test_oversized_key_is_unauthenticated(channel: grpc.aio.Channel, size: int) -> None:
    # Past grpc's own 8 KiB default, yet within the server's bound: the API answers,
    # as REST's 401 does, rather than grpc's RESOURCE_EXHAUSTED.
    get = generation_pb2_grpc.GenerationServiceStub(channel).GetGeneration
    call = get(g.GetGenerationRequest(id="x"), metadata=(("x-api-key", "k" * size),))
    await expect_error(call, grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")


async def test_metadata_past_the_bound_is_resource_exhausted(channel: grpc.aio.Channel) -> None:
    get = generation_pb2_grpc.GenerationServiceStub(channel).GetGeneration
    call = get(
        g.GetGenerationRequest(id="x"),
        metadata=(("x-api-key", "k" * (DEFAULT_MAX_METADATA_BYTES + 1024)),),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value
    # grpc's own words, which name the cause.
    assert "metadata" in (caught.value.details() or "").lower()
