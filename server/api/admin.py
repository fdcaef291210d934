"""AdminService: projects and API keys, converted between protos and the tenancy use cases."""

from __future__ import annotations

from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from genrpc.imagegen.v1 import admin_pb2, admin_pb2_grpc
from server.api.convert import timestamp
from server.domain.tenancy import ApiKey, Project
from server.services import tenancy

Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Serves AdminService; the interceptor has already checked that the caller is an admin."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def CreateProject(
        self, request: admin_pb2.CreateProjectRequest, context: Context
    ) -> admin_pb2.Project:
        project = await tenancy.create_project(self._sessions, slug=request.slug, name=request.name)
        return project_proto(project)

    async def ListProjects(
        self, request: admin_pb2.ListProjectsRequest, context: Context
    ) -> admin_pb2.ListProjectsResponse:
        page = await tenancy.list_projects(
            self._sessions, limit=request.limit, offset=request.offset
        )
        return admin_pb2.ListProjectsResponse(
            projects=[project_proto(project) for project in page.projects],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
            has_more=page.has_more,
        )

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: Context
    ) -> admin_pb2.CreateApiKeyResponse:
        issued = await tenancy.create_api_key(
            self._sessions,
            project_id=request.project_id,
            name=request.name,
            expire_days=request.expire_days,
        )
        return admin_pb2.CreateApiKeyResponse(api_key=issued.secret, key=api_key_proto(issued.key))

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: Context
    ) -> admin_pb2.ListApiKeysResponse:
        found = await tenancy.list_api_keys(self._sessions, project_id=request.project_id)
        return admin_pb2.ListApiKeysResponse(keys=[api_key_proto(key) for key in found])

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: Context
    ) -> admin_pb2.ApiKey:
        key = await tenancy.revoke_api_key(self._sessions, key_id=request.id)
        return api_key_proto(key)


def project_proto(project: Project) -> admin_pb2.Project:
    """The wire form of a project."""
    return admin_pb2.Project(
        id=project.id,
        slug=project.slug,
        name=project.name,
        create_time=timestamp(project.create_time),
    )


def api_key_proto(key: ApiKey) -> admin_pb2.ApiKey:
    """The wire form of a key's description (it has no field for the secret)."""
    return admin_pb2.ApiKey(
        id=key.id,
        project_id=key.project_id or "",
        name=key.name,
        prefix=key.prefix,
        admin=key.admin,
        create_time=timestamp(key.create_time),
        expire_time=timestamp(key.expire_time),
        revoke_time=timestamp(key.revoke_time),
        last_used_time=timestamp(key.last_used_time),
    )
