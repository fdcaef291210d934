"""Assertions about RPC outcomes: status codes, ErrorInfo reasons, field violations, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from genrpc.imagegen.v1 import generation_pb2, generation_pb2_grpc

Metadata = Sequence[tuple[str, str]]
TERMINAL = (
    generation_pb2.GENERATION_STATUS_SUCCESS,
    generation_pb2.GENERATION_STATUS_FAILED,
    generation_pb2.GENERATION_STATUS_CANCELLED,
)


def details(error: grpc.aio.AioRpcError) -> tuple[str, list[tuple[str, str]]]:
    """The ErrorInfo reason and the BadRequest (field, description) pairs of an error."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason = ""
    violations: list[tuple[str, str]] = []
    if status is None:
        return reason, violations
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
    return reason, violations


async def expect_error(
    call: Awaitable[Any], code: grpc.StatusCode, reason: str | None = None
) -> grpc.aio.AioRpcError:
    """Await ``call``, assert it fails with ``code`` (and ``reason``), return the error."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, (error.code(), error.details())
        if reason is not None:
            assert details(error)[0] == reason, (details(error), error.details())
        return error
    raise AssertionError(f"expected {code.name}, but the call succeeded")


async def until_terminal(
    stub: generation_pb2_grpc.GenerationServiceStub,
    generation_id: str,
    metadata: Metadata,
    timeout: float = 30.0,
) -> generation_pb2.Generation:
    """Poll GetGeneration until SUCCESS or FAILED (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        generation = await stub.GetGeneration(
            generation_pb2.GetGenerationRequest(id=generation_id), metadata=metadata
        )
        if generation.status in TERMINAL:
            return generation
        if time.monotonic() > deadline:
            raise AssertionError(f"generation {generation_id} still {generation.status}")
        await asyncio.sleep(0.05)


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``condition()`` holds (checked every few milliseconds, bounded by
    ``timeout``): for a state the test cannot await directly, such as a queue's length."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.001)
