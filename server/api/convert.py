"""Shared proto <-> Python conversions (timestamps, structs) used by every servicer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for an aware datetime (None stays None, so the field stays unset)."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    """A Struct holding a JSON object."""
    message = struct_pb2.Struct()
    if value:
        message.update(value)
    return message


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    """A JSON object from a Struct."""
    result: dict[str, Any] = json_format.MessageToDict(message)
    return result


# --- imagegen resources ---

from genrpc.imagegen.v1 import generation_pb2, image_pb2  # noqa: E402
from server.domain.generations import Generation, GenerationStatus  # noqa: E402
from server.domain.images import Image, ImageSource  # noqa: E402

STATUS_TO_PROTO = {
    GenerationStatus.PENDING: generation_pb2.GENERATION_STATUS_PENDING,
    GenerationStatus.PROCESSING: generation_pb2.GENERATION_STATUS_PROCESSING,
    GenerationStatus.SUCCESS: generation_pb2.GENERATION_STATUS_SUCCESS,
    GenerationStatus.FAILED: generation_pb2.GENERATION_STATUS_FAILED,
}
STATUS_FROM_PROTO = {value: key for key, value in STATUS_TO_PROTO.items()}
SOURCE_TO_PROTO = {
    ImageSource.GENERATED: image_pb2.IMAGE_SOURCE_GENERATED,
    ImageSource.UPLOADED: image_pb2.IMAGE_SOURCE_UPLOADED,
}
SOURCE_FROM_PROTO = {value: key for key, value in SOURCE_TO_PROTO.items()}
EVENT_TYPE_TO_PROTO = {
    "snapshot": generation_pb2.GENERATION_EVENT_TYPE_SNAPSHOT,
    "created": generation_pb2.GENERATION_EVENT_TYPE_CREATED,
    "updated": generation_pb2.GENERATION_EVENT_TYPE_UPDATED,
    "deleted": generation_pb2.GENERATION_EVENT_TYPE_DELETED,
}


def status_filter(value: int) -> GenerationStatus | None:
    """A list/watch status filter: UNSPECIFIED means any; unknown numbers are rejected."""
    from server.domain.errors import invalid

    if value == generation_pb2.GENERATION_STATUS_UNSPECIFIED:
        return None
    try:
        return STATUS_FROM_PROTO[value]  # type: ignore[index]
    except KeyError:
        raise invalid("status", f"unknown status {value}") from None


class Resources:
    """Domain resources to messages; knows the public base URL that image URLs hang from."""

    def __init__(self, public_base_url: str) -> None:
        self.base_url = public_base_url.rstrip("/")

    def image_url(self, image_id: str) -> str:
        """The stable URL of an image's bytes (served by the HTTP side)."""
        return f"{self.base_url}/api/v1/images/{image_id}/content"

    def image(self, image: Image) -> image_pb2.Image:
        """An Image message."""
        message = image_pb2.Image(
            id=image.id,
            project_id=image.project_id,
            source=SOURCE_TO_PROTO[image.source],
            alias=image.alias or "",
            mime_type=image.mime_type,
            file_size=image.file_size,
            width=image.width,
            height=image.height,
            meta=struct(image.meta),
            url=self.image_url(image.id),
            create_time=timestamp(image.create_time),
            update_time=timestamp(image.update_time),
            etag=image.etag,
        )
        if image.flow_id:
            message.flow_id = image.flow_id
        if image.generation_id:
            message.generation_id = image.generation_id
        if image.focal_point:
            message.focal_point.x, message.focal_point.y = image.focal_point
        return message

    def generation(self, generation: Generation) -> generation_pb2.Generation:
        """A Generation message."""
        message = generation_pb2.Generation(
            id=generation.id,
            project_id=generation.project_id,
            prompt=generation.prompt,
            auto_enhance=generation.auto_enhance,
            enhancement_template=generation.enhancement_template,
            aspect_ratio=generation.aspect_ratio,
            status=STATUS_TO_PROTO[generation.status],
            reference_images=[
                generation_pb2.ReferenceImage(
                    image_id=ref.image_id, alias=ref.alias or "", url=self.image_url(ref.image_id)
                )
                for ref in generation.references
            ],
            meta=struct(generation.meta),
            processing_time_ms=generation.processing_time_ms or 0,
            attempt=generation.attempt,
            revision=generation.revision,
            create_time=timestamp(generation.create_time),
            update_time=timestamp(generation.update_time),
            start_time=timestamp(generation.start_time),
            complete_time=timestamp(generation.complete_time),
            alias=generation.alias or "",
            flow_alias=generation.flow_alias or "",
            requested_references=list(generation.requested_references),
        )
        if generation.flow_id:
            message.flow_id = generation.flow_id
        if generation.original_prompt is not None:
            message.original_prompt = generation.original_prompt
        if generation.output_image is not None:
            message.output_image.CopyFrom(self.image(generation.output_image))
        if generation.status is GenerationStatus.FAILED:
            message.error.code = generation.error_code or "GENERATION_FAILED"
            message.error.message = generation.error_message or ""
        return message


# --- flows ---

from genrpc.imagegen.v1 import flow_pb2  # noqa: E402
from server.domain.flows import Flow  # noqa: E402


def flow(value: Flow) -> flow_pb2.Flow:
    """A Flow message."""
    return flow_pb2.Flow(
        id=value.id,
        project_id=value.project_id,
        aliases=value.aliases,
        generation_count=value.generation_count,
        image_count=value.image_count,
        create_time=timestamp(value.create_time),
        update_time=timestamp(value.update_time),
    )
