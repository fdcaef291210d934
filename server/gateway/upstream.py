"""The gRPC side of the gateway: one channel, generic method callables, and metadata ↔ headers."""

from __future__ import annotations

from collections.abc import Iterable
from random import getrandbits
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from starlette.datastructures import Headers
from starlette.requests import Request

from server.gateway.headers import valid_correlation_id

Metadata = tuple[tuple[str, str], ...]
UnaryCall = grpc.aio.UnaryUnaryMultiCallable[Message, Message]
StreamCall = grpc.aio.UnaryStreamMultiCallable[Message, Message]

# An upload is 5 MiB of bytes plus its fields (the server accepts 6 MiB messages too).
MAX_MESSAGE_BYTES = 6 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Watch streams may sit idle for minutes: keep the connection known to be alive.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)
# Request headers passed to the API as call metadata (HTTP header → metadata key).
FORWARDED_HEADERS = {"x-api-key": "x-api-key"}
# Response metadata the API sends that HTTP clients see as headers.
# The correlation id of a call travels in this header (its wire name predates ours).
CORRELATION_HEADER = "x-request-id"
RETURNED_METADATA = (CORRELATION_HEADER, "x-ratelimit-limit", "x-ratelimit-remaining")


def full_method(method: MethodDescriptor) -> str:
    """``/imagegen.v1.GenerationService/GetGeneration``."""
    return f"/{method.containing_service.full_name}/{method.name}"


def request_class(method: MethodDescriptor) -> type[Message]:
    """The generated class of a method's request."""
    return message_factory.GetMessageClass(method.input_type)


def response_class(method: MethodDescriptor) -> type[Message]:
    """The generated class of a method's response."""
    return message_factory.GetMessageClass(method.output_type)


class Upstream:
    """The channel to the gRPC API (opened on first use when given a target, never shared
    with a caller's channel on close) and a cache of its method callables."""

    def __init__(self, target: str | grpc.aio.Channel) -> None:
        self._target = target if isinstance(target, str) else None
        self._channel: grpc.aio.Channel | None = None if isinstance(target, str) else target
        self._unary: dict[MethodDescriptor, UnaryCall] = {}
        self._stream: dict[str, StreamCall] = {}

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel, created on the running loop the first time it is needed."""
        if self._channel is None:
            assert self._target is not None
            self._channel = grpc.aio.insecure_channel(self._target, options=CHANNEL_OPTIONS)
        return self._channel

    def unary(self, method: MethodDescriptor) -> UnaryCall:
        """A callable for a unary RPC."""
        # Keyed by the descriptor itself: no method path is formatted for a known method.
        call = self._unary.get(method)
        if call is None:
            call = self._unary[method] = self.channel.unary_unary(
                full_method(method),
                request_serializer=_serialize,
                response_deserializer=response_class(method).FromString,
            )
        return call

    def stream(self, method: MethodDescriptor) -> StreamCall:
        """A callable for a server-streaming RPC."""
        name = full_method(method)
        if name not in self._stream:
            self._stream[name] = self.channel.unary_stream(
                name,
                request_serializer=_serialize,
                response_deserializer=response_class(method).FromString,
            )
        return self._stream[name]

    async def close(self) -> None:
        """Close the channel if the gateway opened it (a caller's channel stays open)."""
        if self._target is not None and self._channel is not None:
            channel, self._channel = self._channel, None
            self._unary.clear()
            self._stream.clear()
            await channel.close(None)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def correlation_id(request: Request) -> str:
    """The correlation id of an HTTP request: the caller's X-Request-Id, or a new one (so
    gateway-made errors have one too); the same for every use within one request.

    Not to be confused with a request's ``request_id`` field, the idempotency key.
    """
    known: str | None = getattr(request.state, "correlation_id", None)
    if known is None:
        given = request.headers.get(CORRELATION_HEADER, "").strip()
        # A malformed one is refused (headers.refusal); its answer carries a fresh id.
        # 32 hex digits like the API's own ids (server/api/interceptors.py): a correlation
        # id only has to be unique, and uuid4 cost a getrandom call and a UUID per request.
        known = given if valid_correlation_id(given) else f"{getrandbits(128):032x}"
        request.state.correlation_id = known
    return known


def call_metadata(headers: Headers, cid: str) -> Metadata:
    """The metadata of a call made for an HTTP request: API key and correlation id."""
    metadata = [(CORRELATION_HEADER, cid)]
    for header, key in FORWARDED_HEADERS.items():
        value = headers.get(header)
        if value is not None:
            metadata.append((key, value.strip()))
    return tuple(metadata)


def reply_headers(cid: str, *metadata: Iterable[Any] | None) -> dict[str, str]:
    """Response headers from the API's metadata: X-Request-Id and X-RateLimit-*."""
    headers = {CORRELATION_HEADER: cid}
    for pairs in metadata:
        for key, value in pairs or ():
            if key in RETURNED_METADATA and isinstance(value, str):
                headers[key] = value
    return headers
