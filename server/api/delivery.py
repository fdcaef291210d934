"""DeliveryService servicer (internal, gateway-only): public and signed image bytes, live URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from genrpc.imagegen.v1 import delivery_pb2, delivery_pb2_grpc
from server.domain.delivery import DeliveryHead, DeliveryOptions
from server.domain.live import LiveRequest
from server.services.delivery import Delivery, Part
from server.services.live import Live

Context = grpc.aio.ServicerContext[Any, Any]


def options(message: delivery_pb2.DeliveryOptions) -> DeliveryOptions:
    """The conditional/HEAD options of a delivery request."""
    return DeliveryOptions(if_none_match=message.if_none_match, head_only=message.head_only)


def head(value: DeliveryHead) -> delivery_pb2.DeliveryHead:
    """A DeliveryHead message."""
    return delivery_pb2.DeliveryHead(
        image_id=value.image_id,
        mime_type=value.mime_type,
        size=value.size,
        etag=value.etag,
        not_modified=value.not_modified,
        cache_status=value.cache_status,
    )


async def chunks(parts: AsyncIterator[Part]) -> AsyncIterator[delivery_pb2.DeliveryChunk]:
    """Delivery parts as stream messages: the head, then the bytes."""
    async for part in parts:
        if isinstance(part, DeliveryHead):
            yield delivery_pb2.DeliveryChunk(head=head(part))
        else:
            yield delivery_pb2.DeliveryChunk(data=part)


class DeliveryServicer(delivery_pb2_grpc.DeliveryServiceServicer):
    """Thin adapter from DeliveryService RPCs to the Delivery and Live use cases."""

    def __init__(self, delivery: Delivery, live: Live) -> None:
        self._delivery = delivery
        self._live = live

    async def ReadPublicImage(
        self, request: delivery_pb2.ReadPublicImageRequest, context: Context
    ) -> AsyncIterator[delivery_pb2.DeliveryChunk]:
        parts = self._delivery.public_image(
            request.project_slug, request.image, options(request.options)
        )
        async for chunk in chunks(parts):
            yield chunk

    async def ReadSignedImage(
        self, request: delivery_pb2.ReadSignedImageRequest, context: Context
    ) -> AsyncIterator[delivery_pb2.DeliveryChunk]:
        parts = self._delivery.signed_image(
            request.image_id, request.expires, request.signature, options(request.options)
        )
        async for chunk in chunks(parts):
            yield chunk

    async def ReadLiveImage(
        self, request: delivery_pb2.ReadLiveImageRequest, context: Context
    ) -> AsyncIterator[delivery_pb2.DeliveryChunk]:
        wanted = LiveRequest(
            project_slug=request.project_slug,
            scope=request.scope,
            prompt=request.prompt,
            aspect_ratio=request.aspect_ratio,
            auto_enhance=request.auto_enhance,
            template=request.template,
            client_ip=request.client_ip,
        )
        async for chunk in chunks(self._live.serve(wanted, options(request.options))):
            yield chunk
