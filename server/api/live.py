"""LiveService servicer: live scope requests to the Live use cases, results to messages."""

from __future__ import annotations

from typing import Any

import grpc

from genrpc.imagegen.v1 import live_pb2, live_pb2_grpc
from server.api.convert.resources import Resources
from server.api.convert.values import struct, struct_to_dict, timestamp
from server.api.principal import project_id
from server.domain.errors import ValidationErrors, invalid
from server.domain.fields import check_meta
from server.domain.live import (
    DEFAULT_GENERATIONS_LIMIT,
    LiveScope,
    LiveScopeChanges,
    check_generations_limit,
    check_scope_slug,
)
from server.services.live import Live

Context = grpc.aio.ServicerContext[Any, Any]
UPDATABLE = frozenset({"allow_new_generations", "new_generations_limit", "meta"})


def scope_message(scope: LiveScope) -> live_pb2.LiveScope:
    """A LiveScope message."""
    message = live_pb2.LiveScope(
        id=scope.id,
        slug=scope.slug,
        allow_new_generations=scope.allow_new_generations,
        new_generations_limit=scope.new_generations_limit,
        current_generations=scope.current_generations,
        meta=struct(scope.meta),
        create_time=timestamp(scope.create_time),
        last_generated_time=timestamp(scope.last_generated_time),
    )
    return message


class LiveServicer(live_pb2_grpc.LiveServiceServicer):
    """Thin adapter from LiveService RPCs to the Live use cases."""

    def __init__(self, live: Live, resources: Resources) -> None:
        self._live = live
        self._resources = resources

    async def CreateLiveScope(
        self, request: live_pb2.CreateLiveScopeRequest, context: Context
    ) -> live_pb2.LiveScope:
        errors = ValidationErrors()
        slug = check_scope_slug(errors, request.slug)
        limit = check_generations_limit(
            errors,
            request.new_generations_limit
            if request.HasField("new_generations_limit")
            else DEFAULT_GENERATIONS_LIMIT,
        )
        meta = check_meta(errors, struct_to_dict(request.meta))
        errors.raise_if_any()
        allow = request.allow_new_generations if request.HasField("allow_new_generations") else True
        scope = await self._live.create_scope(project_id(), slug, allow, limit, meta)
        return scope_message(scope)

    async def ListLiveScopes(
        self, request: live_pb2.ListLiveScopesRequest, context: Context
    ) -> live_pb2.ListLiveScopesResponse:
        page = await self._live.list_scopes(
            project_id(), request.slug, request.limit, request.offset
        )
        return live_pb2.ListLiveScopesResponse(
            scopes=[scope_message(s) for s in page.scopes],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
            has_more=page.has_more,
        )

    async def GetLiveScope(
        self, request: live_pb2.GetLiveScopeRequest, context: Context
    ) -> live_pb2.LiveScope:
        return scope_message(await self._live.get_scope(project_id(), request.slug))

    async def UpdateLiveScope(
        self, request: live_pb2.UpdateLiveScopeRequest, context: Context
    ) -> live_pb2.LiveScope:
        paths = set(request.update_mask.paths)
        unknown = paths - UPDATABLE
        if unknown:
            raise invalid(
                "update_mask",
                f"cannot update {', '.join(sorted(unknown))}; updatable: "
                + ", ".join(sorted(UPDATABLE)),
            )
        if not paths:
            present = (
                ("allow_new_generations", request.HasField("allow_new_generations")),
                ("new_generations_limit", request.HasField("new_generations_limit")),
                ("meta", request.HasField("meta")),
            )
            paths = {name for name, is_set in present if is_set}
        errors = ValidationErrors()
        limit = (
            check_generations_limit(errors, request.new_generations_limit)
            if "new_generations_limit" in paths
            else None
        )
        meta = check_meta(errors, struct_to_dict(request.meta)) if "meta" in paths else None
        errors.raise_if_any()
        changes = LiveScopeChanges(
            allow_new_generations=(
                request.allow_new_generations if "allow_new_generations" in paths else None
            ),
            new_generations_limit=limit,
            meta=meta,
        )
        return scope_message(await self._live.update_scope(project_id(), request.slug, changes))

    async def RegenerateLiveScope(
        self, request: live_pb2.RegenerateLiveScopeRequest, context: Context
    ) -> live_pb2.RegenerateLiveScopeResponse:
        generations = await self._live.regenerate(project_id(), request.slug, request.image_id)
        return live_pb2.RegenerateLiveScopeResponse(
            generations=[self._resources.generation(g) for g in generations]
        )

    async def DeleteLiveScope(
        self, request: live_pb2.DeleteLiveScopeRequest, context: Context
    ) -> live_pb2.DeleteLiveScopeResponse:
        deleted = await self._live.delete_scope(project_id(), request.slug)
        return live_pb2.DeleteLiveScopeResponse(
            slug=deleted.slug,
            deleted_generations=deleted.deleted_generations,
            kept_images=deleted.kept_images,
        )
