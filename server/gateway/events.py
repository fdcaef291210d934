"""Server-Sent Events for the server-streaming watch RPCs, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from server.gateway import enums, keycheck
from server.gateway.descriptors import enum_type, of
from server.gateway.errors import GatewayError, invalid_fields
from server.gateway.rendering import render
from server.gateway.requests import INT_RANGES, from_query
from server.gateway.responses import RpcFailure, rpc_error
from server.gateway.routing import Binding
from server.gateway.state import Gateway
from server.gateway.upstream import (
    call_metadata,
    correlation_id,
    reply_headers,
    request_class,
)

# How long to wait for a stream's first event before answering 200: an error the API
# finds at once (unknown generation, bad key, bad cursor) still gets its own HTTP status,
# while a stream with nothing to say yet (the project stream) still answers promptly.
FIRST_EVENT_WINDOW = 0.5
# The window counts from the API's headers (sent once the call is authenticated, just
# before the request is checked), not from the request: on a busy server the wait for
# them alone could use the window up, and a bad cursor then answered 200 and an error
# event. Longer than that only if the API sends no headers at all.
HEADERS_WAIT = 5.0
HEARTBEAT = b": keep-alive\n\n"
RESUME_PREFIX = "since_"


class DisconnectingStream(StreamingResponse):
    """A streamed response that stops as soon as the client goes away.

    Whatever ASGI spec version the server speaks, the stream runs beside a listener for
    ``http.disconnect``: a client that disconnects cancels the stream (and so the gRPC
    call behind it) at once, not at the next write. ``on_close`` runs however the
    response ends, even if the stream never started (its generator's ``finally`` would
    not run then), so the gRPC call behind it is always cancelled.
    """

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        on_close: Callable[[], object],
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        super().__init__(content, headers=headers, media_type=media_type)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    # OSError: the client is gone; the listener sees the disconnect too.
                    with contextlib.suppress(OSError):
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            self.on_close()


class EventStreamResponse(DisconnectingStream):
    """A ``text/event-stream`` response."""

    media_type = "text/event-stream"


def resume_field(binding: Binding) -> FieldDescriptor | None:
    """The request field Last-Event-ID fills: ``since_revision`` or ``since_cursor``."""
    for field in binding.method.input_type.fields:
        if field.name.startswith(RESUME_PREFIX) and not field.is_repeated:
            return field
    return None


def id_field(binding: Binding) -> FieldDescriptor | None:
    """The event field written as each event's ``id:`` (``revision`` or ``cursor``)."""
    resume = resume_field(binding)
    if resume is None:
        return None
    return binding.method.output_type.fields_by_name.get(resume.name[len(RESUME_PREFIX) :])


def _resume(message: Message, field: FieldDescriptor, last_event_id: str) -> None:
    text = last_event_id.strip()
    if field.type in INT_RANGES:
        try:
            value: Any = int(text)
        except ValueError:
            raise invalid_fields(
                [("Last-Event-ID", "must be an event id from this stream (an integer)")],
                "request",
            ) from None
        if value < 0:
            raise invalid_fields([("Last-Event-ID", "must not be negative")], "request")
    else:
        value = text
    setattr(message, field.name, value)


def format_event(binding: Binding, event: Message) -> bytes:
    """One event: ``id:`` (revision or cursor), ``event:`` (its type), ``data:`` (its JSON)."""
    lines = []
    ident = id_field(binding)
    if ident is not None:
        lines.append(f"id: {getattr(event, ident.name)}")
    kind = of(event).fields_by_name.get("type")
    if kind is not None and kind.enum_type is not None:
        value = enum_type(kind).values_by_number.get(getattr(event, "type"))  # noqa: B009
        if value is not None:
            lines.append(f"event: {enums.short_name(value)}")
    data = json.dumps(render(event), ensure_ascii=False, separators=(",", ":"))
    lines.append(f"data: {data}")
    return ("\n".join(lines) + "\n\n").encode()


def format_error(failure: RpcFailure) -> bytes:
    """The last event of a stream the API ended with an error: ``event: error``."""
    data = json.dumps(failure.body(), ensure_ascii=False, separators=(",", ":"))
    return f"event: error\ndata: {data}\n\n".encode()


async def watch(gateway: Gateway, binding: Binding, request: Request) -> Response:
    """Open the stream; answer an HTTP error if it fails at once, else stream events."""
    cid = correlation_id(request)
    message = request_class(binding.method)()
    try:
        from_query(
            message,
            request.query_params.multi_items(),
            path=binding.path_fields(request.path_params),
        )
        last_event_id = request.headers.get("last-event-id")
        resume = resume_field(binding)
        if last_event_id is not None and last_event_id.strip() and resume is not None:
            _resume(message, resume, last_event_id)
    except GatewayError as error:
        return await keycheck.refuse(gateway, binding, request, error, cid)
    call = gateway.upstream.stream(binding.method)(
        message, metadata=call_metadata(request.headers, cid)
    )
    first = asyncio.ensure_future(call.read())
    try:
        initial = await asyncio.wait_for(call.initial_metadata(), HEADERS_WAIT)
    except (TimeoutError, grpc.aio.AioRpcError):
        initial = None
    await asyncio.wait({first}, timeout=FIRST_EVENT_WINDOW)
    failed = first.exception() if first.done() else None
    if isinstance(failed, grpc.aio.AioRpcError):
        return rpc_error(
            failed, reply_headers(cid, failed.initial_metadata(), failed.trailing_metadata())
        )
    headers = reply_headers(cid, initial)
    headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})

    def close() -> None:
        first.cancel()
        call.cancel()

    return EventStreamResponse(
        _pump(gateway, binding, call, first), on_close=close, headers=headers
    )


async def _pump(
    gateway: Gateway,
    binding: Binding,
    call: grpc.aio.UnaryStreamCall[Message, Message],
    first: asyncio.Future[Any],
) -> AsyncIterator[bytes]:
    """Events as they come, a heartbeat comment at each tick of the gateway's one heartbeat
    clock (no timer per stream), until the gRPC stream ends, fails (an ``error`` event)
    or the gateway shuts down; the gRPC call is cancelled however the loop is left
    (including the client disconnecting)."""
    closing = asyncio.ensure_future(gateway.closing.wait())
    pending = first
    try:
        while True:
            beat = gateway.next_beat()
            done, _ = await asyncio.wait(
                {pending, closing, beat}, return_when=asyncio.FIRST_COMPLETED
            )
            if pending in done:
                try:
                    item = pending.result()
                except grpc.aio.AioRpcError as error:
                    yield format_error(RpcFailure(error))
                    return
                if not isinstance(item, Message):
                    return  # EOF: the watch is over
                yield format_event(binding, item)
                pending = asyncio.ensure_future(call.read())
            elif closing in done:
                return
            else:
                yield HEARTBEAT
    finally:
        pending.cancel()
        closing.cancel()
        call.cancel()
