"""The public routes: /cdn/{project_slug}/img/…, /cdn/{project_slug}/live/…, /signed/img/….

They carry no API key. The gateway reaches the data through the internal
DeliveryService, authenticated by the gateway token it shares with the server;
the server resolves the project by slug and answers the same NOT_FOUND for an
unknown project, image, alias or scope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import structlog
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from genrpc.imagegen.v1 import delivery_pb2
from server.gateway.clientip import Network, client_ip
from server.gateway.events import DisconnectingStream
from server.gateway.responses import error_body, rpc_error
from server.gateway.state import Gateway
from server.gateway.upstream import CORRELATION_HEADER, correlation_id

log = structlog.get_logger("imagegen.gateway")

DELIVERY = delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"]
GATEWAY_TOKEN_HEADER = "x-gateway-token"
# An image keeps its URL for life while a regeneration changes its content, so any
# cache (browser, CDN) may keep a copy ("public") but must revalidate it before each
# use ("no-cache"); the strong ETag makes that revalidation a bodiless 304 while the
# content is unchanged. A max-age would keep showing the old picture for that long
# after a regeneration.
PUBLIC_CACHE_CONTROL = "public, no-cache"
# A signed URL is a capability handed to one client: shared caches must not keep it.
SIGNED_CACHE_CONTROL = "private, no-cache"
TRUE_WORDS = frozenset({"true", "1", "yes"})
# A signed URL's expiry (Unix seconds) travels as an int64.
EXPIRES_MAX = 2**63 - 1
FALSE_WORDS = frozenset({"false", "0", "no", ""})


def routes(gateway: Gateway, token: str, proxies: Sequence[Network]) -> list[BaseRoute]:
    """The public routes (GET and HEAD)."""

    async def image(request: Request) -> Response:
        wanted = delivery_pb2.ReadPublicImageRequest(
            project_slug=request.path_params["project_slug"],
            image=request.path_params["image"],
            options=_options(request),
        )
        return await _deliver(
            gateway, token, "ReadPublicImage", wanted, request, PUBLIC_CACHE_CONTROL
        )

    async def signed(request: Request) -> Response:
        try:
            expires = int(request.query_params.get("expires", ""))
        except ValueError:
            expires = -1
        if not 0 <= expires <= EXPIRES_MAX:  # nothing the server signs; and int64 at most
            return _refused(request, 403, "SIGNATURE_INVALID", "the signed URL is malformed")
        wanted = delivery_pb2.ReadSignedImageRequest(
            image_id=request.path_params["image_id"],
            expires=expires,
            signature=request.query_params.get("signature", ""),
            options=_options(request),
        )
        return await _deliver(
            gateway, token, "ReadSignedImage", wanted, request, SIGNED_CACHE_CONTROL
        )

    async def live(request: Request) -> Response:
        query = request.query_params
        enhance = query.get("autoEnhance", "").strip().lower()
        if enhance not in TRUE_WORDS | FALSE_WORDS:
            return _refused(request, 400, "INVALID_ARGUMENT", "autoEnhance must be true or false")
        peer = request.client.host if request.client else ""
        wanted = delivery_pb2.ReadLiveImageRequest(
            project_slug=request.path_params["project_slug"],
            scope=request.path_params["scope"],
            prompt=query.get("prompt", ""),
            aspect_ratio=query.get("aspectRatio", ""),
            auto_enhance=enhance in TRUE_WORDS,
            template=query.get("template", ""),
            client_ip=client_ip(peer, request.headers.get("x-forwarded-for"), proxies),
            options=_options(request),
        )
        return await _deliver(
            gateway, token, "ReadLiveImage", wanted, request, PUBLIC_CACHE_CONTROL
        )

    methods = ["GET", "HEAD"]
    return [
        Route("/cdn/{project_slug}/img/{image}", image, methods=methods),
        Route("/cdn/{project_slug}/live/{scope}", live, methods=methods),
        Route("/signed/img/{image_id}", signed, methods=methods),
    ]


def _options(request: Request) -> delivery_pb2.DeliveryOptions:
    return delivery_pb2.DeliveryOptions(
        if_none_match=request.headers.get("if-none-match", ""),
        head_only=request.method == "HEAD",
    )


def _refused(request: Request, status: int, code: str, message: str) -> Response:
    return JSONResponse(
        error_body(code, message),
        status_code=status,
        headers={CORRELATION_HEADER: correlation_id(request)},
    )


async def _deliver(
    gateway: Gateway,
    token: str,
    method: str,
    wanted: Message,
    request: Request,
    cache_control: str,
) -> Response:
    cid = correlation_id(request)
    metadata = ((CORRELATION_HEADER, cid), (GATEWAY_TOKEN_HEADER, token))
    stream = gateway.upstream.stream(DELIVERY.methods_by_name[method])(wanted, metadata=metadata)
    try:
        first = await stream.read()
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            # The same bytes whatever was unknown: the project, the image or the alias.
            return JSONResponse(
                error_body("NOT_FOUND", "not found"),
                status_code=404,
                headers={CORRELATION_HEADER: cid, "cache-control": "no-store"},
            )
        if error.code() == grpc.StatusCode.UNAUTHENTICATED:
            # The server refused the gateway's token, not the caller: a deployment error.
            log.error("gateway_token_rejected", correlation_id=cid)
            return JSONResponse(
                error_body(
                    "GATEWAY_TOKEN_REJECTED",
                    "the gateway is not configured with the server's GATEWAY_TOKEN",
                ),
                status_code=502,
                headers={CORRELATION_HEADER: cid, "cache-control": "no-store"},
            )
        return rpc_error(error, {CORRELATION_HEADER: cid, "cache-control": "no-store"})
    if not isinstance(first, delivery_pb2.DeliveryChunk) or not first.HasField("head"):
        stream.cancel()
        return _refused(request, 502, "EMPTY_CONTENT", "the API sent no image for this URL")
    head = first.head
    headers = {
        CORRELATION_HEADER: cid,
        "etag": f'"{head.etag}"',
        "cache-control": cache_control,
        "x-image-id": head.image_id,
        # Never let a browser second-guess the type of bytes a stranger's prompt produced.
        "x-content-type-options": "nosniff",
    }
    if head.cache_status:
        headers["x-cache-status"] = head.cache_status
    if head.not_modified:
        stream.cancel()
        return Response(status_code=304, headers=headers)
    headers["content-length"] = str(head.size)
    if request.method == "HEAD":
        stream.cancel()
        return Response(status_code=200, headers=headers, media_type=head.mime_type)
    return DisconnectingStream(
        _bytes(stream), on_close=stream.cancel, headers=headers, media_type=head.mime_type
    )


async def _bytes(stream: grpc.aio.UnaryStreamCall[Message, Message]) -> AsyncIterator[bytes]:
    try:
        while True:
            chunk = await stream.read()
            if not isinstance(chunk, delivery_pb2.DeliveryChunk):
                return
            yield chunk.data
    finally:
        stream.cancel()
