"""WatchGeneration / WatchGenerations (spec §2.9): snapshot first, every change in order, resume."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import make_settings
from expect import expect_error, until_terminal

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App

Md = Sequence[tuple[str, str]]
P, R, S, F = (
    g.GENERATION_STATUS_PENDING,
    g.GENERATION_STATUS_PROCESSING,
    g.GENERATION_STATUS_SUCCESS,
    g.GENERATION_STATUS_FAILED,
)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> generation_pb2_grpc.GenerationServiceStub:
    return generation_pb2_grpc.GenerationServiceStub(channel)


async def collect(stream) -> list[g.GenerationEvent]:
    return [event async for event in stream]


async def test_watch_from_creation_sees_every_state_then_ends(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="owl"), metadata=auth)
    events = await collect(
        stub.WatchGeneration(g.WatchGenerationRequest(id=created.id), metadata=auth)
    )
    assert events[0].type == g.GENERATION_EVENT_TYPE_SNAPSHOT
    statuses = [e.generation.status for e in events]
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))  # strictly increasing: no gaps reordered, no dups
    assert statuses[-1] == S
    assert revisions[-1] - revisions[0] == len(revisions) - 1  # no gaps after the snapshot
    assert all(e.revision == e.generation.revision for e in events)


async def test_watch_since_revision_replays_every_change(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="owl"), metadata=auth)
    await until_terminal(stub, created.id, auth)
    events = await collect(
        stub.WatchGeneration(
            g.WatchGenerationRequest(id=created.id, since_revision=1), metadata=auth
        )
    )
    assert [e.generation.status for e in events] == [R, S]
    assert [e.revision for e in events] == [2, 3]
    assert all(e.type == g.GENERATION_EVENT_TYPE_UPDATED for e in events)
    # A watcher that saw everything gets nothing and the stream ends at once.
    assert (
        await collect(
            stub.WatchGeneration(
                g.WatchGenerationRequest(id=created.id, since_revision=3), metadata=auth
            )
        )
        == []
    )
    await expect_error(
        collect(
            stub.WatchGeneration(
                g.WatchGenerationRequest(id=created.id, since_revision=-1), metadata=auth
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_follow_stays_open_across_regeneration_and_delete_ends_it(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="owl"), metadata=auth)
    await until_terminal(stub, created.id, auth)
    seen: list[g.GenerationEvent] = []

    async def follow() -> None:
        request = g.WatchGenerationRequest(id=created.id, follow=True)
        async for event in stub.WatchGeneration(request, metadata=auth):
            seen.append(event)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    await stub.RegenerateGeneration(g.RegenerateGenerationRequest(id=created.id), metadata=auth)
    await until_terminal(stub, created.id, auth)
    await asyncio.sleep(0.2)
    await stub.DeleteGeneration(g.DeleteGenerationRequest(id=created.id), metadata=auth)
    await asyncio.wait_for(task, 10)
    statuses = [e.generation.status for e in seen]
    assert statuses[:1] == [S]
    assert statuses[1:4] == [P, R, S]
    assert seen[-1].type == g.GENERATION_EVENT_TYPE_DELETED


async def test_watch_generations_streams_the_project_and_resumes_by_cursor(stub, auth: Md) -> None:
    flow = str(uuid.uuid4())
    seen: list[g.GenerationEvent] = []

    async def watch_all() -> None:
        request = g.WatchGenerationsRequest(flow_id=flow)
        async for event in stub.WatchGenerations(request, metadata=auth):
            seen.append(event)

    task = asyncio.create_task(watch_all())
    await asyncio.sleep(0.3)
    created = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a", flow_id=flow), metadata=auth
    )
    other = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="b"), metadata=auth)
    await until_terminal(stub, created.id, auth)
    await until_terminal(stub, other.id, auth)
    await asyncio.sleep(0.3)
    task.cancel()
    assert {e.generation.id for e in seen} == {created.id}  # the flow filter holds
    assert [e.generation.status for e in seen] == [P, R, S]
    cursors = [int(e.cursor) for e in seen]
    assert cursors == sorted(cursors)
    # Resume after the first event: the rest, exactly.
    resumed: list[g.GenerationEvent] = []
    request = g.WatchGenerationsRequest(flow_id=flow, since_cursor=seen[0].cursor)
    stream = stub.WatchGenerations(request, metadata=auth)
    async for event in stream:
        resumed.append(event)
        if len(resumed) == 2:
            stream.cancel()
            break
    assert [e.revision for e in resumed] == [e.revision for e in seen[1:]]
    await expect_error(
        collect(
            stub.WatchGenerations(g.WatchGenerationsRequest(since_cursor="abc"), metadata=auth)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_CURSOR",
    )


async def test_watch_generations_status_filter(stub, auth: Md) -> None:
    seen: list[g.GenerationEvent] = []

    async def watch_success() -> None:
        request = g.WatchGenerationsRequest(status=S)
        async for event in stub.WatchGenerations(request, metadata=auth):
            seen.append(event)

    task = asyncio.create_task(watch_success())
    await asyncio.sleep(0.3)
    created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a"), metadata=auth)
    await until_terminal(stub, created.id, auth)
    await asyncio.sleep(0.3)
    task.cancel()
    assert [(e.generation.id, e.generation.status) for e in seen] == [(created.id, S)]


async def test_watchers_leave_no_subscriptions_behind(stub, auth: Md, app: App) -> None:
    created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a"), metadata=auth)
    await collect(stub.WatchGeneration(g.WatchGenerationRequest(id=created.id), metadata=auth))
    stream = stub.WatchGeneration(
        g.WatchGenerationRequest(id=created.id, follow=True), metadata=auth
    )
    await stream.read()
    assert app.hub.subscriber_count == 1
    stream.cancel()
    for _ in range(50):
        if app.hub.subscriber_count == 0:
            break
        await asyncio.sleep(0.05)
    assert app.hub.subscriber_count == 0


async def test_200_creates_with_100_watchers(tmp_path: Path, storage: dict[str, Any]) -> None:
    """Every watcher sees PENDING → PROCESSING → SUCCESS in order; each generation succeeds once.

    On both backends (``storage``)."""
    app = App(
        make_settings(
            tmp_path / "data",
            workers=4,
            # The events are the subject, not the pixels: 200 full-size PNGs would cost
            # ~14 s of a 2-core machine's CPU.
            generator_max_side=64,
            **storage,
        )
    )
    await app.start()
    try:
        md = (("x-api-key", app.dev_api_key or ""),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)

            async def create(i: int) -> g.Generation:
                request = g.CreateGenerationRequest(
                    prompt=f"scene number {i}", aspect_ratio="1:1", auto_enhance=i % 2 == 0
                )
                return await stub.CreateGeneration(request, metadata=md)

            first = await asyncio.gather(*(create(i) for i in range(100)))

            async def watch(created: g.Generation) -> list[g.GenerationEvent]:
                # The client's pattern: the create response is revision 1 (PENDING);
                # watch everything after it.
                request = g.WatchGenerationRequest(id=created.id, since_revision=created.revision)
                return [e async for e in stub.WatchGeneration(request, metadata=md)]

            watchers = [asyncio.create_task(watch(x)) for x in first]
            rest = await asyncio.gather(*(create(i) for i in range(100, 200)))
            results = await asyncio.wait_for(asyncio.gather(*watchers), 240)
            for created, events in zip(first, results, strict=True):
                statuses = [created.status] + [e.generation.status for e in events]
                revisions = [created.revision] + [e.revision for e in events]
                assert statuses == [P, R, S], statuses
                assert revisions == [1, 2, 3]
            for created in [*first, *rest]:
                done = await until_terminal(stub, created.id, md, timeout=240)
                assert done.status == S
                assert done.attempt == 1  # ran exactly once
        stored = [info.key async for info in app.blobs.list("")]
        assert len(stored) == 200
        from sqlalchemy import func, select

        from server.store.models import GenerationEventRow

        async with app.db.read() as session:
            per_generation = (
                await session.execute(
                    select(GenerationEventRow.generation_id, func.count())
                    .where(GenerationEventRow.status == "success")
                    .group_by(GenerationEventRow.generation_id)
                )
            ).all()
        assert len(per_generation) == 200
        assert {count for _, count in per_generation} == {1}
    finally:
        await app.stop()
