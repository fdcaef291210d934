"""WatchGenerations "from now on" sends its headers once it has its starting point: a
client that waits for them and then acts sees every change it causes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App

Md = tuple[tuple[str, str], ...]
# The project channel's first read, made this much slower (a busy database).
READ_DELAY_SECONDS = 0.5


async def test_a_change_made_after_the_headers_is_delivered(
    app: App, channel: grpc.aio.Channel, auth: Md, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: Any = app.watches.fanout._reader
    head = reads.project_head

    async def slow_head(project_id: str) -> int:
        await asyncio.sleep(READ_DELAY_SECONDS)
        return int(await head(project_id))

    monkeypatch.setattr(reads, "project_head", slow_head)
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    watch = stub.WatchGenerations(g.WatchGenerationsRequest(), metadata=auth, timeout=30)
    try:
        asked = time.monotonic()
        headers = dict(await watch.initial_metadata())
        # Not before the start point was read (they used to come right after auth).
        assert time.monotonic() - asked >= READ_DELAY_SECONDS * 0.9
        assert headers.get("x-request-id")
        created = await stub.CreateGeneration(
            g.CreateGenerationRequest(prompt="a moth"), metadata=auth
        )
        event = await asyncio.wait_for(watch.read(), 10)
        assert event.generation.id == created.id
        assert event.generation.status == g.GENERATION_STATUS_PENDING
    finally:
        watch.cancel()


async def test_a_watch_refused_before_it_starts_still_carries_its_headers(
    channel: grpc.aio.Channel, auth: Md
) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    watch = stub.WatchGenerations(
        g.WatchGenerationsRequest(since_cursor="not-a-cursor"), metadata=auth, timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await watch.read()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    metadata = dict(refused.value.initial_metadata() or ()) | dict(
        refused.value.trailing_metadata() or ()
    )
    assert metadata.get("x-request-id")
