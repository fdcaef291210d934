"""Request messages from Pythonic keyword arguments, shared by the sync and asyncio clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, TypedDict

from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2
from google.protobuf.message import Message

from imagegen_client._genrpc.imagegen.v1 import (
    admin_pb2,
    flow_pb2,
    generation_pb2,
    image_pb2,
    live_pb2,
)

GenerationStatus = generation_pb2.GenerationStatus
ImageSource = image_pb2.ImageSource
TERMINAL_STATUSES = frozenset(
    {
        generation_pb2.GENERATION_STATUS_SUCCESS,
        generation_pb2.GENERATION_STATUS_FAILED,
        generation_pb2.GENERATION_STATUS_CANCELLED,
    }
)

# The values a caller may pass as a status: the enum, or its short name in any case.
StatusLike = int | str
SourceLike = int | str


def rpc_name(request: Message) -> str:
    """The RPC a request message belongs to, for log lines ("GetGeneration")."""
    return type(request).__name__.removesuffix("Request")


def new_request_id() -> str:
    """A fresh idempotency key, so that a create, regenerate or upload is safe to retry."""
    return uuid.uuid4().hex


def request_id_or_new(request_id: str | None) -> str:
    """``None`` gets a fresh key; ``""`` means "send none" (the call is then never retried)."""
    return new_request_id() if request_id is None else request_id


def status_value(status: StatusLike | None) -> GenerationStatus.ValueType:
    """A GenerationStatus from the enum, "success", "SUCCESS" or "GENERATION_STATUS_SUCCESS"."""
    if status is None or status == "":
        return generation_pb2.GENERATION_STATUS_UNSPECIFIED
    if isinstance(status, int):
        return GenerationStatus.ValueType(status)
    name = status.upper()
    if not name.startswith("GENERATION_STATUS_"):
        name = "GENERATION_STATUS_" + name
    return GenerationStatus.Value(name)


def status_name(status: int) -> str:
    """The short name of a status: PENDING, PROCESSING, SUCCESS, FAILED."""
    return GenerationStatus.Name(GenerationStatus.ValueType(status)).removeprefix(
        "GENERATION_STATUS_"
    )


def source_value(source: SourceLike | None) -> ImageSource.ValueType:
    """An ImageSource from the enum, "uploaded", "UPLOADED" or "IMAGE_SOURCE_UPLOADED"."""
    if source is None or source == "":
        return image_pb2.IMAGE_SOURCE_UNSPECIFIED
    if isinstance(source, int):
        return ImageSource.ValueType(source)
    name = source.upper()
    if not name.startswith("IMAGE_SOURCE_"):
        name = "IMAGE_SOURCE_" + name
    return ImageSource.Value(name)


def struct(meta: Mapping[str, Any]) -> struct_pb2.Struct:
    """A Struct holding a JSON object."""
    message = struct_pb2.Struct()
    message.update(dict(meta))
    return message


def is_terminal(generation: generation_pb2.Generation) -> bool:
    """Whether a generation has finished its current run (SUCCESS, FAILED or CANCELLED)."""
    return generation.status in TERMINAL_STATUSES


# --- GenerationService ---


class GenerationOptions(TypedDict, total=False):
    """The keyword arguments of ``create_generation`` after the prompt (for run and generate)."""

    aspect_ratio: str
    reference_images: Iterable[str]
    flow_id: str | None
    alias: str
    flow_alias: str
    auto_enhance: bool | None
    enhancement_template: str
    meta: Mapping[str, Any] | None
    request_id: str | None
    run_timeout: float | None
    webhook_url: str
    webhook_events: Iterable[str]
    model: str
    seed: int | None
    negative_prompt: str
    output_format: str


def create_generation(
    prompt: str,
    *,
    aspect_ratio: str = "",
    reference_images: Iterable[str] = (),
    flow_id: str | None = None,
    alias: str = "",
    flow_alias: str = "",
    auto_enhance: bool | None = None,
    enhancement_template: str = "",
    meta: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    model: str = "",
    seed: int | None = None,
    negative_prompt: str = "",
    output_format: str = "",
    run_timeout: float | None = None,
    webhook_url: str = "",
    webhook_events: Iterable[str] = (),
) -> generation_pb2.CreateGenerationRequest:
    """A CreateGenerationRequest; ``flow_id`` None mints a flow, "" means no flow.

    ``model`` is ``provider/model`` (empty: the server's default); ``seed`` None lets
    the server pick one per run. ``run_timeout``: seconds the generation may take,
    queue time included.
    """
    request = generation_pb2.CreateGenerationRequest(
        prompt=prompt,
        aspect_ratio=aspect_ratio,
        reference_images=list(reference_images),
        alias=alias,
        flow_alias=flow_alias,
        enhancement_template=enhancement_template,
        request_id=request_id_or_new(request_id),
        model=model,
        negative_prompt=negative_prompt,
        output_format=output_format,
    )
    if seed is not None:
        request.seed = seed
    if flow_id is not None:
        request.flow_id = flow_id
    if auto_enhance is not None:
        request.auto_enhance = auto_enhance
    if meta is not None:
        request.meta.CopyFrom(struct(meta))
    if run_timeout is not None:
        request.timeout.FromNanoseconds(round(run_timeout * 1e9))
    if webhook_url:
        request.webhook.url = webhook_url
        request.webhook.events.extend(webhook_events)
    return request


def list_generations(
    *,
    flow_id: str = "",
    status: StatusLike | None = None,
    limit: int = 0,
    offset: int = 0,
    page_token: str = "",
) -> generation_pb2.ListGenerationsRequest:
    """A ListGenerationsRequest."""
    return generation_pb2.ListGenerationsRequest(
        flow_id=flow_id,
        status=status_value(status),
        limit=limit,
        offset=offset,
        page_token=page_token,
    )


def update_generation(
    generation_id: str,
    *,
    prompt: str | None = None,
    aspect_ratio: str | None = None,
    flow_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> generation_pb2.UpdateGenerationRequest:
    """An UpdateGenerationRequest whose update_mask names exactly the arguments given."""
    request = generation_pb2.UpdateGenerationRequest(id=generation_id)
    paths: list[str] = []
    if prompt is not None:
        request.prompt = prompt
        paths.append("prompt")
    if aspect_ratio is not None:
        request.aspect_ratio = aspect_ratio
        paths.append("aspect_ratio")
    if flow_id is not None:
        request.flow_id = flow_id
        paths.append("flow_id")
    if meta is not None:
        request.meta.CopyFrom(struct(meta))
        paths.append("meta")
    request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
    return request


def regenerate_generation(
    generation_id: str, *, request_id: str | None = None
) -> generation_pb2.RegenerateGenerationRequest:
    """A RegenerateGenerationRequest with an idempotency key."""
    return generation_pb2.RegenerateGenerationRequest(
        id=generation_id, request_id=request_id_or_new(request_id)
    )


def watch_generations(
    *, flow_id: str = "", status: StatusLike | None = None, since_cursor: str = ""
) -> generation_pb2.WatchGenerationsRequest:
    """A WatchGenerationsRequest."""
    return generation_pb2.WatchGenerationsRequest(
        flow_id=flow_id, status=status_value(status), since_cursor=since_cursor
    )


# --- ImageService ---


def upload_image(
    content: bytes,
    *,
    mime_type: str = "",
    alias: str = "",
    flow_id: str | None = None,
    flow_alias: str = "",
    meta: Mapping[str, Any] | None = None,
    request_id: str | None = None,
) -> image_pb2.UploadImageRequest:
    """An UploadImageRequest; ``flow_id`` None mints a flow, "" means no flow."""
    request = image_pb2.UploadImageRequest(
        content=content,
        mime_type=mime_type,
        alias=alias,
        flow_alias=flow_alias,
        request_id=request_id_or_new(request_id),
    )
    if flow_id is not None:
        request.flow_id = flow_id
    if meta is not None:
        request.meta.CopyFrom(struct(meta))
    return request


def list_images(
    *,
    flow_id: str = "",
    source: SourceLike | None = None,
    alias: str = "",
    limit: int = 0,
    offset: int = 0,
    page_token: str = "",
) -> image_pb2.ListImagesRequest:
    """A ListImagesRequest."""
    return image_pb2.ListImagesRequest(
        flow_id=flow_id,
        source=source_value(source),
        alias=alias,
        limit=limit,
        offset=offset,
        page_token=page_token,
    )


def update_image(
    id_or_alias: str,
    *,
    focal_point: tuple[float, float] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> image_pb2.UpdateImageRequest:
    """An UpdateImageRequest whose update_mask names exactly the arguments given."""
    request = image_pb2.UpdateImageRequest(id_or_alias=id_or_alias)
    paths: list[str] = []
    if focal_point is not None:
        request.focal_point.x, request.focal_point.y = focal_point
        paths.append("focal_point")
    if meta is not None:
        request.meta.CopyFrom(struct(meta))
        paths.append("meta")
    request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
    return request


def get_image_url(
    id_or_alias: str, *, ttl: float | timedelta | None = None
) -> image_pb2.GetImageUrlRequest:
    """A GetImageUrlRequest; ``ttl`` in seconds or as a timedelta (None: the server's default)."""
    request = image_pb2.GetImageUrlRequest(id_or_alias=id_or_alias)
    if ttl is not None:
        seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
        request.ttl.CopyFrom(duration_pb2.Duration(seconds=int(seconds)))
    return request


# --- FlowService ---


def update_flow_aliases(
    flow_id: str, aliases: Mapping[str, str]
) -> flow_pb2.UpdateFlowAliasesRequest:
    """An UpdateFlowAliasesRequest (the aliases are merged into the flow's map)."""
    return flow_pb2.UpdateFlowAliasesRequest(id=flow_id, aliases=dict(aliases))


# --- AdminService ---


def create_api_key(
    *, project_id: str = "", name: str = "", expire_days: int = 0
) -> admin_pb2.CreateApiKeyRequest:
    """A CreateApiKeyRequest; an empty ``project_id`` asks for an admin key."""
    return admin_pb2.CreateApiKeyRequest(project_id=project_id, name=name, expire_days=expire_days)


def set_scope_limits(
    request: live_pb2.CreateLiveScopeRequest | live_pb2.UpdateLiveScopeRequest,
    allow_new_generations: bool | None,
    new_generations_limit: int | None,
) -> None:
    """Set the live-scope fields given (None: left unset, so the server's default or the
    current value stays)."""
    if allow_new_generations is not None:
        request.allow_new_generations = allow_new_generations
    if new_generations_limit is not None:
        request.new_generations_limit = new_generations_limit
