"""Creates that share a transaction (store/group_commit.py), on a real server and database:
a burst that arrives while the writer is held goes in one batch; a create in it that fails
fails alone, with nothing of it written; retries with one request_id get one generation;
a caller that leaves before its batch is never written."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from conftest import dev_key_metadata, make_settings, started_app
from expect import expect_error, until
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from genrpc.imagegen.v1 import flow_pb2, flow_pb2_grpc, generation_pb2_grpc
from genrpc.imagegen.v1 import generation_pb2 as g
from server.app import App
from server.domain.generations import EventType
from server.store.models import FlowRow, GenerationEventRow, GenerationRow, IdempotencyKeyRow

Md = Sequence[tuple[str, str]]


@asynccontextmanager
async def writer_held(app: App, project_id: str) -> AsyncIterator[None]:
    """Hold up the next create's transaction from outside the server, as another process
    would: on SQLite the database's write lock (BEGIN IMMEDIATE on another connection;
    the server waits it out asynchronously), on PostgreSQL the project's outbox lock."""
    url = app.settings.resolved_database_url
    if url.startswith("sqlite"):
        other = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute("SELECT pg_advisory_lock(hashtext($1))", project_id)
        yield
    finally:
        await connection.close()  # releases the lock


async def project_of(app: App, channel: grpc.aio.Channel, auth: Md) -> str:
    """The dev project's ID, after a first call that records its key's use (a write that
    would otherwise wait behind the held writer, before any create is made)."""
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    await stub.ListGenerations(g.ListGenerationsRequest(), metadata=auth)
    rows = await app.db.fetch(text("SELECT id FROM projects"))
    assert len(rows) == 1
    return str(rows[0][0])


async def count(app: App, column: object, *where: object) -> int:
    rows = await app.db.fetch(select(func.count(column)).where(*where))  # type: ignore[arg-type]
    return int(rows[0][0])


async def test_a_burst_shares_a_transaction_and_a_failing_create_fails_alone(
    app: App, channel: grpc.aio.Channel, auth: Md
) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    project_id = await project_of(app, channel, auth)
    missing = str(uuid.uuid4())
    good = [g.CreateGenerationRequest(prompt=f"a kite, number {n}") for n in range(6)]
    retried = g.CreateGenerationRequest(prompt="a retried kite", request_id="burst-retry-1")
    bad = [
        g.CreateGenerationRequest(prompt=f"a bad kite {n}", reference_images=[missing])
        for n in range(2)
    ]
    requests = [good[0], bad[0], *good[1:3], retried, retried, bad[1], *good[3:], retried]
    async with writer_held(app, project_id):
        first = asyncio.ensure_future(stub.CreateGeneration(good[0], metadata=auth))
        # The first create holds the writer (waiting for the lock); the rest queue behind it.
        await until(lambda: app.generations.creates.busy)
        rest = [
            asyncio.ensure_future(stub.CreateGeneration(request, metadata=auth))
            for request in requests[1:]
        ]
        await until(lambda: app.generations.creates.waiting == len(rest))
    outcomes = [await first, *await asyncio.gather(*rest, return_exceptions=True)]

    assert app.generations.creates.largest_batch == len(rest)
    assert app.generations.creates.rerun_alone == len(rest)  # the bad ones failed the batch
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == len(bad)
    for error in failed:
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    created = [o for o in outcomes if isinstance(o, g.Generation)]
    # By position, not by prompt: a replay answers the generation as it is by then, and
    # a worker may already have replaced its prompt with the enhanced one.
    replays = [o for o, request in zip(outcomes, requests, strict=True) if request is retried]
    assert len(replays) == 3 and all(isinstance(o, g.Generation) for o in replays)
    assert len({o.id for o in replays if isinstance(o, g.Generation)}) == 1
    ids = {o.id for o in created}
    assert len(ids) == len(good) + 1
    # Exactly what the successful creates wrote, and nothing of the failed ones.
    assert await count(app, GenerationRow.id) == len(ids)
    assert await count(app, FlowRow.id) == len(ids)
    created_events = GenerationEventRow.type == EventType.CREATED.value
    assert await count(app, GenerationEventRow.seq, created_events) == len(ids)
    assert await count(app, IdempotencyKeyRow.request_id) == 1
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    listed = await flows.ListFlows(flow_pb2.ListFlowsRequest(limit=100), metadata=auth)
    assert {f.id for f in listed.flows} == {o.flow_id for o in created}


async def test_retries_in_one_batch_get_the_generation_an_earlier_create_of_it_made(
    app: App, channel: grpc.aio.Channel, auth: Md
) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    project_id = await project_of(app, channel, auth)
    retried = g.CreateGenerationRequest(prompt="a retried kite", request_id="in-batch-1")
    requests = [g.CreateGenerationRequest(prompt="first"), retried, retried, retried]
    async with writer_held(app, project_id):
        first = asyncio.ensure_future(stub.CreateGeneration(requests[0], metadata=auth))
        await until(lambda: app.generations.creates.busy)
        rest = [
            asyncio.ensure_future(stub.CreateGeneration(request, metadata=auth))
            for request in requests[1:]
        ]
        await until(lambda: app.generations.creates.waiting == len(rest))
    await first
    replies = await asyncio.gather(*rest)
    # One transaction for the three, the later two reading what the first inserted.
    assert app.generations.creates.largest_batch == 3
    assert app.generations.creates.rerun_alone == 0
    assert len({reply.id for reply in replies}) == 1
    assert await count(app, GenerationRow.id) == 2


async def test_a_reused_request_id_in_one_batch_is_refused_for_the_other_request(
    app: App, channel: grpc.aio.Channel, auth: Md
) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    project_id = await project_of(app, channel, auth)
    one = g.CreateGenerationRequest(prompt="a kite", request_id="shared-1")
    two = g.CreateGenerationRequest(prompt="another kite", request_id="shared-1")
    async with writer_held(app, project_id):
        first = asyncio.ensure_future(stub.CreateGeneration(one, metadata=auth))
        await until(lambda: app.generations.creates.busy)
        second = asyncio.ensure_future(stub.CreateGeneration(two, metadata=auth))
        third = asyncio.ensure_future(stub.CreateGeneration(one, metadata=auth))
        await until(lambda: app.generations.creates.waiting == 2)
    created = await first
    await expect_error(second, grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_ID_REUSED")
    assert (await third).id == created.id
    assert await count(app, GenerationRow.id) == 1


async def test_a_caller_gone_before_its_batch_is_never_written(
    app: App, channel: grpc.aio.Channel, auth: Md
) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    project_id = await project_of(app, channel, auth)
    async with writer_held(app, project_id):
        first = asyncio.ensure_future(
            stub.CreateGeneration(g.CreateGenerationRequest(prompt="kept"), metadata=auth)
        )
        await until(lambda: app.generations.creates.busy)
        leaving = stub.CreateGeneration(
            g.CreateGenerationRequest(prompt="abandoned"), metadata=auth
        )
        await until(lambda: app.generations.creates.waiting == 1)
        leaving.cancel()
        await until(lambda: app.generations.creates.waiting == 0)
    assert (await first).prompt == "kept"
    with pytest.raises(asyncio.CancelledError):
        await leaving
    prompts = await app.db.fetch(select(GenerationRow.input_prompt))
    assert [row[0] for row in prompts] == ["kept"]


async def test_creates_arriving_close_together_wait_for_each_other(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    # A wait long enough that a burst sent at once arrives inside it on any machine.
    async with started_app(
        make_settings(tmp_path / "data", create_batch_wait_ms=1000, **storage)
    ) as app:
        auth = dev_key_metadata(app)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            alone = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="after a quiet spell"), metadata=auth
            )
            assert app.generations.creates.largest_batch == 0  # written at once
            burst = await asyncio.gather(
                *(
                    stub.CreateGeneration(
                        g.CreateGenerationRequest(prompt=f"in a burst {n}"), metadata=auth
                    )
                    for n in range(5)
                )
            )
        assert app.generations.creates.largest_batch == 5
        assert app.generations.creates.rerun_alone == 0
        ids = {alone.id, *(reply.id for reply in burst)}
        assert len(ids) == 6
        assert await count(app, GenerationRow.id) == 6
        created_events = GenerationEventRow.type == EventType.CREATED.value
        assert await count(app, GenerationEventRow.seq, created_events) == 6
