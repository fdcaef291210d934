"""Shutdown takes SHUTDOWN_GRACE_SECONDS in all, not once per part: open streams end at once
with UNAVAILABLE SERVER_DRAINING, and running jobs and RPCs share one deadline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import dev_key_metadata, make_settings
from expect import details

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App

GRACE = 4.0


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_open_streams_and_running_jobs_share_one_grace(tmp_path: Path, backend: str) -> None:
    # A generation that cannot finish within the grace holds the engine for all of it;
    # an open follow watch once held the gRPC server for a second grace after that.
    app = App(
        make_settings(
            tmp_path / "data",
            http_enabled=True,
            http_port=0,
            shutdown_grace_seconds=GRACE,
            generator_delay_seconds=60.0,
        )
    )
    await app.start()
    auth = dev_key_metadata(app)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="slow"), metadata=auth)
    watch = stub.WatchGeneration(
        g.WatchGenerationRequest(id=created.id, follow=True), metadata=auth
    )
    first = await watch.read()
    assert first.generation.id == created.id
    http = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.http_port}", headers={"X-API-Key": app.dev_api_key}
    )
    first_event = asyncio.Event()

    async def follow_sse() -> None:
        async with http.stream("GET", f"/api/v1/generations/{created.id}/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    first_event.set()

    sse = asyncio.create_task(follow_sse())
    await asyncio.wait_for(first_event.wait(), timeout=30)

    started = time.monotonic()
    await app.stop()
    elapsed = time.monotonic() - started

    # The gRPC watch ended with a status that says why (clients reconnect elsewhere).
    async def read_to_the_end() -> None:
        while await watch.read() is not grpc.aio.EOF:
            pass

    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await read_to_the_end()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details(ended.value)[0] == "SERVER_DRAINING"
    # The event stream over HTTP ended too.
    await asyncio.wait_for(sse, timeout=30)
    # One grace in all (two graces, 8 s, before): generous slack for a loaded machine.
    assert elapsed < GRACE * 1.75, elapsed
    await http.aclose()
    await channel.close()
