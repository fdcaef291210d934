"""Domain enums ↔ proto enums, and the list/watch filters built from them."""

from __future__ import annotations

from genrpc.imagegen.v1 import generation_pb2, image_pb2
from server.domain.errors import invalid
from server.domain.images import AliasScope, ImageSource
from server.domain.lifecycle import GenerationStatus

STATUS_TO_PROTO = {
    GenerationStatus.PENDING: generation_pb2.GENERATION_STATUS_PENDING,
    GenerationStatus.PROCESSING: generation_pb2.GENERATION_STATUS_PROCESSING,
    GenerationStatus.SUCCESS: generation_pb2.GENERATION_STATUS_SUCCESS,
    GenerationStatus.FAILED: generation_pb2.GENERATION_STATUS_FAILED,
    GenerationStatus.CANCELLED: generation_pb2.GENERATION_STATUS_CANCELLED,
}
STATUS_FROM_PROTO = {value: key for key, value in STATUS_TO_PROTO.items()}
SOURCE_TO_PROTO = {
    ImageSource.GENERATED: image_pb2.IMAGE_SOURCE_GENERATED,
    ImageSource.UPLOADED: image_pb2.IMAGE_SOURCE_UPLOADED,
}
SOURCE_FROM_PROTO = {value: key for key, value in SOURCE_TO_PROTO.items()}
SCOPE_TO_PROTO = {
    AliasScope.TECHNICAL: image_pb2.ALIAS_SCOPE_TECHNICAL,
    AliasScope.FLOW: image_pb2.ALIAS_SCOPE_FLOW,
    AliasScope.PROJECT: image_pb2.ALIAS_SCOPE_PROJECT,
}
EVENT_TYPE_TO_PROTO = {
    "snapshot": generation_pb2.GENERATION_EVENT_TYPE_SNAPSHOT,
    "created": generation_pb2.GENERATION_EVENT_TYPE_CREATED,
    "updated": generation_pb2.GENERATION_EVENT_TYPE_UPDATED,
    "deleted": generation_pb2.GENERATION_EVENT_TYPE_DELETED,
}


def status_filter(value: int) -> GenerationStatus | None:
    """A list/watch status filter: UNSPECIFIED means any; unknown numbers are rejected."""
    if value == generation_pb2.GENERATION_STATUS_UNSPECIFIED:
        return None
    try:
        return STATUS_FROM_PROTO[value]  # type: ignore[index]
    except KeyError:
        raise invalid("status", f"unknown status {value}") from None


def source_filter(value: int) -> ImageSource | None:
    """A list source filter: UNSPECIFIED means any; unknown numbers are rejected."""
    if value == image_pb2.IMAGE_SOURCE_UNSPECIFIED:
        return None
    try:
        return SOURCE_FROM_PROTO[value]  # type: ignore[index]
    except KeyError:
        raise invalid("source", f"unknown image source {value}") from None
