"""Streams are admitted apart from unary calls (spec §10): limits per key and per process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import make_settings
from expect import details, expect_error
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genrpc.imagegen.v1 import admin_pb2, admin_pb2_grpc, generation_pb2_grpc
from genrpc.imagegen.v1 import generation_pb2 as g
from server.app import App
from server.services.tenancy import bootstrap_admin

Md = tuple[tuple[str, str], ...]


@pytest.fixture
async def limited(tmp_path: Path, storage: dict[str, Any]) -> AsyncIterator[App]:
    """An App allowing 3 streams per key, 5 in all, and only 2 unary calls at once."""
    app = App(
        make_settings(
            tmp_path / "data",
            max_streams_per_key=3,
            max_open_streams=5,
            max_concurrent_rpcs=2,
            **storage,
        )
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def second_tenant(app: App, channel: grpc.aio.Channel) -> Md:
    admin = (("x-api-key", await bootstrap_admin(app.sessions)),)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    project = await stub.CreateProject(
        admin_pb2.CreateProjectRequest(slug="tenant-b", name="B"), metadata=admin
    )
    issued = await stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(project_id=project.id, name="b"), metadata=admin
    )
    return (("x-api-key", issued.api_key),)


async def open_follow(
    stub: generation_pb2_grpc.GenerationServiceStub, generation_id: str, md: Md
) -> grpc.aio.UnaryStreamCall[Any, Any]:
    """A follow stream that has been admitted (its snapshot arrived)."""
    call = stub.WatchGeneration(
        g.WatchGenerationRequest(id=generation_id, follow=True), metadata=md
    )
    first = await call.read()
    assert first.type == g.GENERATION_EVENT_TYPE_SNAPSHOT
    return call


async def test_a_tenant_at_its_stream_limit_cannot_starve_others(limited: App) -> None:
    a: Md = (("x-api-key", limited.dev_api_key or ""),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        b = await second_tenant(limited, channel)
        mine = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a"), metadata=a)
        theirs = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="b"), metadata=b)
        # Tenant A holds 3 streams: more than the 2 unary slots, all of its stream quota.
        streams = [await open_follow(stub, mine.id, a) for _ in range(3)]
        try:
            error = await expect_error(
                open_follow(stub, mine.id, a),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "TOO_MANY_STREAMS",
            )
            assert "3" in (error.details() or "")
            # Tenant B's calls, tenant A's own unary calls and the health check still answer.
            for _ in range(5):
                got = await stub.GetGeneration(g.GetGenerationRequest(id=theirs.id), metadata=b)
                assert got.id == theirs.id
                assert (
                    await stub.GetGeneration(g.GetGenerationRequest(id=mine.id), metadata=a)
                ).id == mine.id
                health = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest()
                )
                assert health.status == health_pb2.HealthCheckResponse.SERVING
            # Tenant B may still open streams of its own.
            other = await open_follow(stub, theirs.id, b)
            other.cancel()
        finally:
            for call in streams:
                call.cancel()
        # Closed streams give their slots back.
        for _ in range(100):
            if limited.admission.streams_of(a[0][1]) == 0 and limited.admission.streams == 0:
                break
            await asyncio.sleep(0.05)
        again = await open_follow(stub, mine.id, a)
        again.cancel()


async def test_the_process_stream_limit_counts_every_key(limited: App) -> None:
    a: Md = (("x-api-key", limited.dev_api_key or ""),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        b = await second_tenant(limited, channel)
        mine = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a"), metadata=a)
        theirs = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="b"), metadata=b)
        streams = [await open_follow(stub, mine.id, a) for _ in range(3)]
        streams += [await open_follow(stub, theirs.id, b) for _ in range(2)]
        try:
            error = await expect_error(
                open_follow(stub, theirs.id, b), grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            assert details(error)[0] == "TOO_MANY_STREAMS"
            assert limited.admission.streams == 5
            # Unary calls are not streams: they still go through.
            got = await stub.GetGeneration(g.GetGenerationRequest(id=theirs.id), metadata=b)
            assert got.id == theirs.id
        finally:
            for call in streams:
                call.cancel()


async def test_the_project_stream_counts_as_a_stream(limited: App) -> None:
    a: Md = (("x-api-key", limited.dev_api_key or ""),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a"), metadata=a)
        project_streams = [
            stub.WatchGenerations(g.WatchGenerationsRequest(), metadata=a) for _ in range(3)
        ]
        try:
            for call in project_streams:
                await call.initial_metadata()  # sent once the call is admitted
            for _ in range(100):
                if limited.admission.streams == 3:
                    break
                await asyncio.sleep(0.05)
            assert limited.admission.streams == 3
            await expect_error(
                open_follow(stub, created.id, a),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "TOO_MANY_STREAMS",
            )
        finally:
            for call in project_streams:
                call.cancel()
