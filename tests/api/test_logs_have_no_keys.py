"""Every log line of a run full of good and bad keys, searched for any trace of a secret."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import structlog
from conftest import make_settings
from sqlalchemy import update

from genrpc.imagegen.v1 import admin_pb2, admin_pb2_grpc, generation_pb2, generation_pb2_grpc
from server.app import App
from server.domain import keys
from server.logs import configure_logging
from server.services.tenancy import bootstrap_admin
from server.store.models import ApiKeyRow


@pytest.fixture(
    params=[
        "info",
        pytest.param("debug"),
    ]
)
def captured_logs(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """Route every structlog and stdlib log line at the given level into a buffer; then restore."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging(request.param, "json", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.configure(**saved_structlog)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


async def test_no_secret_reaches_the_logs(tmp_path: Path, captured_logs: io.StringIO) -> None:
    app = App(make_settings(tmp_path / "data", rate_limit_per_minute=20))
    await app.start()  # creates the dev project and logs about it
    secrets_seen: list[str] = []
    codes: list[grpc.StatusCode] = []
    try:
        assert app.dev_api_key
        admin_key = await bootstrap_admin(app.sessions)
        secrets_seen += [app.dev_api_key, admin_key]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            generations = generation_pb2_grpc.GenerationServiceStub(channel)

            async def call_admin(secret: str | None) -> None:
                metadata = (("x-api-key", secret),) if secret is not None else ()
                try:
                    await admin.ListProjects(admin_pb2.ListProjectsRequest(), metadata=metadata)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())

            async def call_project(secret: str) -> None:
                try:
                    await generations.GetGeneration(
                        generation_pb2.GetGenerationRequest(id=str(uuid.uuid4())),
                        metadata=(("x-api-key", secret),),
                    )
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())

            md = (("x-api-key", admin_key),)
            project = await admin.CreateProject(
                admin_pb2.CreateProjectRequest(slug="logged"), metadata=md
            )
            project_key = await admin.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(project_id=project.id, name="p"), metadata=md
            )
            other_admin = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(), metadata=md)
            doomed = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(), metadata=md)
            stale = await admin.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(expire_days=1), metadata=md
            )
            await admin.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=md)
            await admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=doomed.key.id), metadata=md)
            # Expired for real: the stored expiry is moved into the past.
            async with app.sessions.begin() as session:
                await session.execute(
                    update(ApiKeyRow)
                    .where(ApiKeyRow.id == stale.key.id)
                    .values(expire_time=datetime.now(UTC) - timedelta(minutes=1))
                )
            unknown = keys.mint_key(admin=True).secret
            malformed = "igk_" + "this-is-not-a-key-but-a-secret-all-the-same"
            secrets_seen += [
                project_key.api_key,
                other_admin.api_key,
                doomed.api_key,
                stale.api_key,
                unknown,
                malformed,
            ]

            await call_admin(other_admin.api_key)  # good
            await call_admin(None)  # missing
            await call_admin(malformed)
            await call_admin(unknown)
            await call_admin(doomed.api_key)  # revoked
            await call_admin(stale.api_key)  # expired
            await call_admin(project_key.api_key)  # wrong kind
            await call_project(admin_key)  # wrong kind
            await call_project(project_key.api_key)  # good (auth passes)
            for _ in range(21):  # over the limit of 20 a minute
                await call_project(project_key.api_key)
    finally:
        await app.stop()

    text = captured_logs.getvalue()
    lines = text.splitlines()
    # The capture works: every RPC left its line, failed ones included.
    rpc_lines = [json.loads(line) for line in lines if '"event": "rpc"' in line]
    assert len(rpc_lines) >= 7 + len(codes)
    logged_codes = {line["code"] for line in rpc_lines}
    assert {"UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"} <= logged_codes
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert any('"event": "dev_project_created"' in line for line in lines)

    for secret in secrets_seen:
        body = secret.removeprefix("igk_admin_").removeprefix("igk_")
        assert secret not in text
        assert body not in text
        assert keys.hash_secret(secret) not in text
