"""Image bytes at the image's URL: ReadImageContent streamed, with ETag revalidation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response

from genrpc.imagegen.v1 import image_pb2
from server.gateway import keycheck
from server.gateway.errors import GatewayError
from server.gateway.events import DisconnectingStream
from server.gateway.requests import from_query
from server.gateway.responses import gateway_error, rpc_error, unary_reply
from server.gateway.routing import Binding
from server.gateway.state import Gateway
from server.gateway.upstream import (
    Metadata,
    call_metadata,
    correlation_id,
    reply_headers,
)

IMAGES = image_pb2.DESCRIPTOR.services_by_name["ImageService"]
GET_IMAGE = IMAGES.methods_by_name["GetImage"]
# An image keeps its URL for life while its content changes on every regeneration, so a
# cached copy must never be used without asking: "no-cache" makes every use revalidate
# ("private": the bytes are behind an API key), and the strong ETag (the image's content
# etag from GetImage) makes that revalidation a 304 with no body while the content is
# unchanged. A max-age would serve the old picture for that long after a regeneration.
#
# The ETag is read with GetImage before the bytes are streamed. If a regeneration commits
# in between, the new bytes go out under the old tag; the next revalidation sends that old
# tag, which no longer matches, and gets the new bytes with the new tag: the mislabel costs
# one extra download and never keeps a stale picture.
CACHE_CONTROL = "private, no-cache"


def serves_content(binding: Binding) -> bool:
    """Whether ``binding`` streams raw bytes rather than JSON events (ReadImageContent)."""
    return binding.method.full_name == IMAGES.methods_by_name["ReadImageContent"].full_name


def strong_etag(etag: str) -> str:
    """The ETag header value of an image etag."""
    return f'"{etag}"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names ``etag`` (weak comparison, as RFC 9110 asks here) or is ``*``."""
    if not if_none_match:
        return False
    wanted = strong_etag(etag)
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


async def content(gateway: Gateway, binding: Binding, request: Request) -> Response:
    """GET (or HEAD) the image's bytes: 304 when If-None-Match matches, else the stream."""
    cid = correlation_id(request)
    wanted = image_pb2.ReadImageContentRequest()
    try:
        from_query(
            wanted,
            request.query_params.multi_items(),
            path=binding.path_fields(request.path_params),
        )
    except GatewayError as error:
        return await keycheck.refuse(gateway, binding, request, error, cid)
    metadata = call_metadata(request.headers, cid)
    lookup = image_pb2.GetImageRequest(id_or_alias=wanted.id_or_alias, flow_id=wanted.flow_id)
    call = gateway.upstream.unary(GET_IMAGE)(lookup, metadata=metadata)
    answered = await unary_reply(call, cid)
    if isinstance(answered, Response):
        return answered
    image, headers = answered
    assert isinstance(image, image_pb2.Image)
    headers.update(
        {
            "etag": strong_etag(image.etag),
            "cache-control": CACHE_CONTROL,
            # The same URL answers differently (or not at all) for another project's key.
            "vary": "X-API-Key",
        }
    )
    if not_modified(request.headers.get("if-none-match"), image.etag):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["content-length"] = str(image.file_size)
        return Response(status_code=200, headers=headers, media_type=image.mime_type)
    # By ID from here on: an alias moved in between must not mix two images' bytes.
    return await _stream(gateway, binding, image, metadata, headers, cid)


async def _stream(
    gateway: Gateway,
    binding: Binding,
    image: image_pb2.Image,
    metadata: Metadata,
    headers: dict[str, str],
    cid: str,
) -> Response:
    stream = gateway.upstream.stream(binding.method)(
        image_pb2.ReadImageContentRequest(id_or_alias=image.id), metadata=metadata
    )
    try:
        first = await stream.read()
    except grpc.aio.AioRpcError as error:
        return rpc_error(error, reply_headers(cid, error.trailing_metadata()))
    if not isinstance(first, image_pb2.ImageChunk):
        stream.cancel()
        return gateway_error(
            GatewayError(502, "EMPTY_CONTENT", "the API sent no bytes for this image"), headers
        )
    headers["content-length"] = str(first.total_size or image.file_size)
    return DisconnectingStream(
        _chunks(stream, first),
        on_close=stream.cancel,
        headers=headers,
        media_type=first.mime_type or image.mime_type,
    )


async def _chunks(
    stream: grpc.aio.UnaryStreamCall[Message, Message], first: image_pb2.ImageChunk
) -> AsyncIterator[bytes]:
    try:
        yield first.data
        while True:
            chunk = await stream.read()
            if not isinstance(chunk, image_pb2.ImageChunk):
                return
            yield chunk.data
    finally:
        stream.cancel()
