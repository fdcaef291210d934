"""AdminService: projects and API keys, converted between protos and the tenancy use cases."""

from __future__ import annotations

from typing import Any

import grpc

from genrpc.imagegen.v1 import admin_pb2, admin_pb2_grpc
from server.api.convert.resources import api_key, project, project_page
from server.services.tenancy import Tenancy

Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Serves AdminService; the interceptor has already checked that the caller is an admin."""

    def __init__(self, tenancy: Tenancy) -> None:
        self._tenancy = tenancy

    async def CreateProject(
        self, request: admin_pb2.CreateProjectRequest, context: Context
    ) -> admin_pb2.Project:
        created = await self._tenancy.create_project(slug=request.slug, name=request.name)
        return project(created)

    async def ListProjects(
        self, request: admin_pb2.ListProjectsRequest, context: Context
    ) -> admin_pb2.ListProjectsResponse:
        page = await self._tenancy.list_projects(limit=request.limit, offset=request.offset)
        return project_page(page)

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: Context
    ) -> admin_pb2.CreateApiKeyResponse:
        issued = await self._tenancy.create_api_key(
            project_id=request.project_id,
            name=request.name,
            expire_days=request.expire_days,
        )
        return admin_pb2.CreateApiKeyResponse(api_key=issued.secret, key=api_key(issued.key))

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: Context
    ) -> admin_pb2.ListApiKeysResponse:
        found = await self._tenancy.list_api_keys(project_id=request.project_id)
        return admin_pb2.ListApiKeysResponse(keys=[api_key(key) for key in found])

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: Context
    ) -> admin_pb2.ApiKey:
        return api_key(await self._tenancy.revoke_api_key(key_id=request.id))
