"""ImageService servicer: requests to domain commands, results to messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from genrpc.imagegen.v1 import image_pb2, image_pb2_grpc
from server.api.convert.enums import SCOPE_TO_PROTO, source_filter
from server.api.convert.resources import Resources
from server.api.convert.values import duration, struct_to_dict, timestamp
from server.api.principal import project_id
from server.domain.errors import ValidationErrors, invalid
from server.domain.fields import (
    check_alias,
    check_flow_alias,
    check_meta,
    check_request_id,
    flow_choice,
)
from server.domain.images import UPDATABLE_FIELDS, UpdateImage, UploadImage, check_focal_point
from server.services.images import Images

Context = grpc.aio.ServicerContext[Any, Any]


class ImageServicer(image_pb2_grpc.ImageServiceServicer):
    """Thin adapter from ImageService RPCs to the Images use cases."""

    def __init__(self, images: Images, resources: Resources) -> None:
        self._images = images
        self._resources = resources

    async def UploadImage(
        self, request: image_pb2.UploadImageRequest, context: Context
    ) -> image_pb2.Image:
        image = await self._images.upload(project_id(), upload_command(request))
        return self._resources.image(image)

    async def GetImage(
        self, request: image_pb2.GetImageRequest, context: Context
    ) -> image_pb2.Image:
        image = await self._images.get(project_id(), request.id_or_alias, request.flow_id)
        return self._resources.image(image)

    async def ListImages(
        self, request: image_pb2.ListImagesRequest, context: Context
    ) -> image_pb2.ListImagesResponse:
        page = await self._images.list(
            project_id(),
            flow_id=request.flow_id,
            source=source_filter(request.source),
            alias=request.alias,
            limit=request.limit,
            offset=request.offset,
            page_token=request.page_token,
        )
        return self._resources.image_page(page)

    async def ResolveAlias(
        self, request: image_pb2.ResolveAliasRequest, context: Context
    ) -> image_pb2.ResolveAliasResponse:
        resolved = await self._images.resolve_alias(project_id(), request.alias, request.flow_id)
        return image_pb2.ResolveAliasResponse(
            image=self._resources.image(resolved.image), scope=SCOPE_TO_PROTO[resolved.scope]
        )

    async def UpdateImage(
        self, request: image_pb2.UpdateImageRequest, context: Context
    ) -> image_pb2.Image:
        image = await self._images.update(
            project_id(), request.id_or_alias, update_command(request)
        )
        return self._resources.image(image)

    async def SetImageAlias(
        self, request: image_pb2.SetImageAliasRequest, context: Context
    ) -> image_pb2.Image:
        image = await self._images.set_alias(
            project_id(), request.id, request.alias, reassign=request.reassign
        )
        return self._resources.image(image)

    async def DeleteImage(
        self, request: image_pb2.DeleteImageRequest, context: Context
    ) -> image_pb2.DeleteImageResponse:
        deleted = await self._images.delete(project_id(), request.id)
        return image_pb2.DeleteImageResponse(id=deleted)

    async def ReadImageContent(
        self, request: image_pb2.ReadImageContentRequest, context: Context
    ) -> AsyncIterator[image_pb2.ImageChunk]:
        chunks = self._images.read_content(project_id(), request.id_or_alias, request.flow_id)
        async for chunk in chunks:
            yield image_pb2.ImageChunk(
                data=chunk.data,
                mime_type=chunk.mime_type or "",
                total_size=chunk.total_size or 0,
            )

    async def GetImageUrl(
        self, request: image_pb2.GetImageUrlRequest, context: Context
    ) -> image_pb2.GetImageUrlResponse:
        ttl = duration(request.ttl, "ttl") if request.HasField("ttl") else None
        signed = await self._images.presigned_url(project_id(), request.id_or_alias, ttl)
        return image_pb2.GetImageUrlResponse(
            url=self._resources.absolute(signed.url), expire_time=timestamp(signed.expire_time)
        )


def upload_command(request: image_pb2.UploadImageRequest) -> UploadImage:
    """Check the fields of an upload (the bytes themselves are checked by the service)."""
    errors = ValidationErrors()
    flow = flow_choice(errors, request.HasField("flow_id"), request.flow_id)
    alias = check_alias(errors, "alias", request.alias)
    flow_alias = check_flow_alias(errors, request.flow_alias, flow)
    meta = check_meta(errors, struct_to_dict(request.meta))
    request_id = check_request_id(errors, request.request_id)
    errors.raise_if_any()
    # "image/PNG; charset=binary" names the same type as "image/png".
    claimed = request.mime_type.split(";", 1)[0].strip().lower()
    return UploadImage(
        content=request.content,
        mime_type=claimed or None,
        alias=alias,
        flow=flow,
        flow_alias=flow_alias,
        meta=meta,
        request_id=request_id,
    )


def update_command(request: image_pb2.UpdateImageRequest) -> UpdateImage:
    """The fields to change: those in update_mask, or else those present (AIP-134).

    A field named in the mask but absent from the request is cleared.
    """
    paths = set(request.update_mask.paths)
    unknown = paths - UPDATABLE_FIELDS
    if unknown:
        raise invalid(
            "update_mask",
            f"cannot update {', '.join(sorted(unknown))}; updatable: "
            + ", ".join(sorted(UPDATABLE_FIELDS)),
        )
    if not paths:
        present = (
            ("focal_point", request.HasField("focal_point")),
            ("meta", request.HasField("meta")),
        )
        paths = {name for name, is_set in present if is_set}
    errors = ValidationErrors()
    focal: tuple[float, float] | None = None
    if "focal_point" in paths and request.HasField("focal_point"):
        focal = check_focal_point(errors, request.focal_point.x, request.focal_point.y)
    meta = check_meta(errors, struct_to_dict(request.meta)) if "meta" in paths else None
    errors.raise_if_any()
    return UpdateImage(focal_point=focal, meta=meta, changed=frozenset(paths))
