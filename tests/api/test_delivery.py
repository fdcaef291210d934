"""The internal DeliveryService: only the gateway (with its token) may call it; keys may not."""

from __future__ import annotations

import io

import grpc
import pytest
from conftest import Metadata
from PIL import Image as PILImage

from genrpc.imagegen.v1 import delivery_pb2, delivery_pb2_grpc, image_pb2, image_pb2_grpc
from server.app import App


def png() -> bytes:
    """A small PNG (the same bytes on every call: the encoder is deterministic)."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 6), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_keys_cannot_call_the_delivery_service(
    app: App, channel: grpc.aio.Channel, auth: Metadata
) -> None:
    images = image_pb2_grpc.ImageServiceStub(channel)
    image = await images.UploadImage(image_pb2.UploadImageRequest(content=png()), metadata=auth)
    delivery = delivery_pb2_grpc.DeliveryServiceStub(channel)
    request = delivery_pb2.ReadPublicImageRequest(project_slug="default", image=image.id)
    for metadata in (auth, (("x-gateway-token", "not-the-token"),), ()):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in delivery.ReadPublicImage(request, metadata=metadata):
                pass
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    token = (("x-gateway-token", app.gateway_token),)
    chunks = [chunk async for chunk in delivery.ReadPublicImage(request, metadata=token)]
    assert chunks[0].head.image_id == image.id and chunks[0].head.etag == image.etag
    assert b"".join(c.data for c in chunks[1:]) == png()
    # Conditional and HEAD reads send the head alone.
    request.options.if_none_match = f'"{image.etag}"'
    only = [chunk async for chunk in delivery.ReadPublicImage(request, metadata=token)]
    assert len(only) == 1 and only[0].head.not_modified
