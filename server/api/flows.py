"""FlowService servicer: requests to use-case calls, results to messages."""

from __future__ import annotations

from typing import Any

import grpc

from genrpc.imagegen.v1 import flow_pb2, flow_pb2_grpc, generation_pb2, image_pb2
from server.api.convert.resources import Resources, flow, flow_page
from server.api.principal import project_id
from server.services.flows import Flows

Context = grpc.aio.ServicerContext[Any, Any]


class FlowServicer(flow_pb2_grpc.FlowServiceServicer):
    """Thin adapter from FlowService RPCs to the Flows use cases."""

    def __init__(self, flows: Flows, resources: Resources) -> None:
        self._flows = flows
        self._resources = resources

    async def ListFlows(
        self, request: flow_pb2.ListFlowsRequest, context: Context
    ) -> flow_pb2.ListFlowsResponse:
        page = await self._flows.list(
            project_id(), limit=request.limit, offset=request.offset, page_token=request.page_token
        )
        return flow_page(page)

    async def GetFlow(self, request: flow_pb2.GetFlowRequest, context: Context) -> flow_pb2.Flow:
        return flow(await self._flows.get(project_id(), request.id))

    async def ListFlowGenerations(
        self, request: flow_pb2.ListFlowGenerationsRequest, context: Context
    ) -> generation_pb2.ListGenerationsResponse:
        page = await self._flows.list_generations(
            project_id(), request.id, limit=request.limit, offset=request.offset
        )
        return self._resources.generation_page(page)

    async def ListFlowImages(
        self, request: flow_pb2.ListFlowImagesRequest, context: Context
    ) -> image_pb2.ListImagesResponse:
        page = await self._flows.list_images(
            project_id(), request.id, limit=request.limit, offset=request.offset
        )
        return self._resources.image_page(page)

    async def UpdateFlowAliases(
        self, request: flow_pb2.UpdateFlowAliasesRequest, context: Context
    ) -> flow_pb2.Flow:
        updated = await self._flows.update_aliases(project_id(), request.id, dict(request.aliases))
        return flow(updated)

    async def DeleteFlowAlias(
        self, request: flow_pb2.DeleteFlowAliasRequest, context: Context
    ) -> flow_pb2.Flow:
        return flow(await self._flows.delete_alias(project_id(), request.id, request.alias))

    async def RegenerateFlow(
        self, request: flow_pb2.RegenerateFlowRequest, context: Context
    ) -> generation_pb2.Generation:
        generation = await self._flows.regenerate(project_id(), request.id)
        return self._resources.generation(generation)

    async def DeleteFlow(
        self, request: flow_pb2.DeleteFlowRequest, context: Context
    ) -> flow_pb2.DeleteFlowResponse:
        deleted = await self._flows.delete(project_id(), request.id)
        return flow_pb2.DeleteFlowResponse(
            id=deleted.id,
            generations_deleted=deleted.generations_deleted,
            images_deleted=deleted.images_deleted,
        )
