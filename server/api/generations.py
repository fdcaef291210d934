"""GenerationService servicer: requests to domain commands, results to messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from genrpc.imagegen.v1 import generation_pb2, generation_pb2_grpc
from server.api import streams
from server.api.convert.enums import EVENT_TYPE_TO_PROTO, status_filter
from server.api.convert.resources import Resources
from server.api.convert.values import struct_to_dict
from server.api.principal import project_id
from server.domain.errors import ValidationErrors, invalid
from server.domain.fields import check_meta, flow_choice
from server.domain.generations import (
    UpdateGeneration,
    check_aspect_ratio,
    check_prompt,
    validate_create,
)
from server.services.generations import Generations
from server.services.watch import Watches, WatchEvent

Context = grpc.aio.ServicerContext[Any, Any]
UPDATABLE = frozenset({"prompt", "aspect_ratio", "flow_id", "meta"})


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    """Thin adapter from GenerationService RPCs to the Generations use cases."""

    def __init__(self, generations: Generations, watches: Watches, resources: Resources) -> None:
        self._generations = generations
        self._watches = watches
        self._resources = resources

    async def CreateGeneration(
        self, request: generation_pb2.CreateGenerationRequest, context: Context
    ) -> generation_pb2.Generation:
        command = validate_create(
            prompt=request.prompt,
            aspect_ratio=request.aspect_ratio,
            references=list(request.reference_images),
            flow_present=request.HasField("flow_id"),
            flow_id=request.flow_id,
            alias=request.alias,
            flow_alias=request.flow_alias,
            auto_enhance=request.auto_enhance if request.HasField("auto_enhance") else None,
            enhancement_template=request.enhancement_template,
            meta=struct_to_dict(request.meta),
            request_id=request.request_id,
            model=request.model,
            seed_present=request.HasField("seed"),
            seed=request.seed,
            negative_prompt=request.negative_prompt,
            output_format=request.output_format,
            timeout=(request.timeout.seconds, request.timeout.nanos)
            if request.HasField("timeout")
            else None,
            webhook=(request.webhook.url, list(request.webhook.events))
            if request.HasField("webhook")
            else None,
        )
        generation = await self._generations.create(project_id(), command)
        return self._resources.generation(generation)

    async def GetGeneration(
        self, request: generation_pb2.GetGenerationRequest, context: Context
    ) -> generation_pb2.Generation:
        generation = await self._generations.get(project_id(), request.id)
        return self._resources.generation(generation)

    async def ListGenerations(
        self, request: generation_pb2.ListGenerationsRequest, context: Context
    ) -> generation_pb2.ListGenerationsResponse:
        page = await self._generations.list(
            project_id(),
            flow_id=request.flow_id,
            status=status_filter(request.status),
            limit=request.limit,
            offset=request.offset,
            page_token=request.page_token,
        )
        return self._resources.generation_page(page)

    async def UpdateGeneration(
        self, request: generation_pb2.UpdateGenerationRequest, context: Context
    ) -> generation_pb2.Generation:
        command = update_command(request)
        generation = await self._generations.update(project_id(), request.id, command)
        return self._resources.generation(generation)

    async def RegenerateGeneration(
        self, request: generation_pb2.RegenerateGenerationRequest, context: Context
    ) -> generation_pb2.Generation:
        generation = await self._generations.regenerate(
            project_id(), request.id, request.request_id
        )
        return self._resources.generation(generation)

    async def CancelGeneration(
        self, request: generation_pb2.CancelGenerationRequest, context: Context
    ) -> generation_pb2.Generation:
        generation = await self._generations.cancel(project_id(), request.id)
        return self._resources.generation(generation)

    async def DeleteGeneration(
        self, request: generation_pb2.DeleteGenerationRequest, context: Context
    ) -> generation_pb2.DeleteGenerationResponse:
        deleted = await self._generations.delete(project_id(), request.id)
        return generation_pb2.DeleteGenerationResponse(
            id=deleted.id, image_deleted=deleted.image_deleted
        )

    def _event_message(self, event: WatchEvent) -> generation_pb2.GenerationEvent:
        """The event's message, built once and shared by every watcher it goes to."""
        message = event.encoded.get("grpc")
        if message is None:
            message = event.encoded["grpc"] = generation_pb2.GenerationEvent(
                type=EVENT_TYPE_TO_PROTO[event.type],
                generation=self._resources.generation(event.generation),
                revision=event.revision,
                cursor=event.cursor,
            )
        return message

    async def WatchGeneration(
        self, request: generation_pb2.WatchGenerationRequest, context: Context
    ) -> AsyncIterator[generation_pb2.GenerationEvent]:
        events = self._watches.generation(
            project_id(), request.id, request.since_revision, request.follow
        )
        async for event in events:
            yield self._event_message(event)

    async def WatchGenerations(
        self, request: generation_pb2.WatchGenerationsRequest, context: Context
    ) -> AsyncIterator[generation_pb2.GenerationEvent]:
        events = self._watches.project(
            project_id(),
            flow_id=request.flow_id,
            status=status_filter(request.status),
            since_cursor=request.since_cursor,
            started=streams.started,
        )
        async for event in events:
            yield self._event_message(event)


def update_command(request: generation_pb2.UpdateGenerationRequest) -> UpdateGeneration:
    """The fields to change: those in update_mask, or else those present (AIP-134)."""
    paths = set(request.update_mask.paths)
    unknown = paths - UPDATABLE
    if unknown:
        raise invalid(
            "update_mask",
            f"cannot update {', '.join(sorted(unknown))}; updatable: "
            + ", ".join(sorted(UPDATABLE)),
        )
    if not paths:
        paths = {
            name for name in ("prompt", "aspect_ratio", "flow_id", "meta") if request.HasField(name)
        }
    errors = ValidationErrors()
    prompt = check_prompt(errors, request.prompt) if "prompt" in paths else None
    ratio = (
        check_aspect_ratio(errors, request.aspect_ratio or "?") if "aspect_ratio" in paths else None
    )
    flow = flow_choice(errors, True, request.flow_id) if "flow_id" in paths else None
    meta = check_meta(errors, struct_to_dict(request.meta)) if "meta" in paths else None
    errors.raise_if_any()
    return UpdateGeneration(
        prompt=prompt, aspect_ratio=ratio, flow=flow, meta=meta, changed=frozenset(paths)
    )
