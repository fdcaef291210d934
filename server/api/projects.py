"""ProjectService servicer: the caller's project, its webhook secret and webhook deliveries."""

from __future__ import annotations

from typing import Any

import grpc

from genrpc.imagegen.v1 import admin_pb2, project_pb2, project_pb2_grpc
from server.api.convert.resources import project, webhook_delivery
from server.api.principal import project_id
from server.services.tenancy import Tenancy
from server.services.webhooks import Deliveries

Context = grpc.aio.ServicerContext[Any, Any]


class ProjectServicer(project_pb2_grpc.ProjectServiceServicer):
    """Thin adapter from ProjectService RPCs to the tenancy and webhook use cases."""

    def __init__(self, tenancy: Tenancy, deliveries: Deliveries) -> None:
        self._tenancy = tenancy
        self._deliveries = deliveries

    async def GetProject(
        self, request: project_pb2.GetProjectRequest, context: Context
    ) -> admin_pb2.Project:
        return project(await self._tenancy.get_project(project_id()))

    async def GetWebhookSecret(
        self, request: project_pb2.GetWebhookSecretRequest, context: Context
    ) -> project_pb2.WebhookSecret:
        return project_pb2.WebhookSecret(secret=await self._tenancy.webhook_secret(project_id()))

    async def RotateWebhookSecret(
        self, request: project_pb2.RotateWebhookSecretRequest, context: Context
    ) -> project_pb2.WebhookSecret:
        secret = await self._tenancy.rotate_webhook_secret(project_id())
        return project_pb2.WebhookSecret(secret=secret)

    async def ListWebhookDeliveries(
        self, request: project_pb2.ListWebhookDeliveriesRequest, context: Context
    ) -> project_pb2.ListWebhookDeliveriesResponse:
        page = await self._deliveries.list(
            project_id(),
            generation_id=request.generation_id,
            limit=request.limit,
            offset=request.offset,
        )
        return project_pb2.ListWebhookDeliveriesResponse(
            deliveries=[webhook_delivery(d) for d in page.items],
            total=page.total,
            has_more=page.has_more,
        )
