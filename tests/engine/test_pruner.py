"""Retention: old outbox events and request_ids are pruned; resuming stays correct (a watcher
behind the retention gets the latest state of each generation and goes on)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from expect import until_terminal
from sqlalchemy import func, select

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.store.models import GenerationEventRow, IdempotencyKeyRow

LATER = datetime.now(UTC) + timedelta(days=30)


async def _count(app: App, column: object) -> int:
    async with app.db.read() as session:
        return int(await session.scalar(select(func.count(column))) or 0)  # type: ignore[arg-type]


async def test_old_events_and_request_ids_are_pruned(
    app: App, gens: generation_pb2_grpc.GenerationServiceStub, auth
) -> None:
    first = await gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="a bell", request_id="retry-me"), metadata=auth
    )
    second = await gens.CreateGeneration(g.CreateGenerationRequest(prompt="a bowl"), metadata=auth)
    done = [await until_terminal(gens, item.id, auth) for item in (first, second)]
    events_before = await _count(app, GenerationEventRow.seq)
    assert events_before > 2  # created, claimed, finished for each

    # Nothing is old yet.
    assert await app.pruner.prune() == (0, 0, 0)
    events, request_ids, deliveries = await app.pruner.prune(now=LATER)
    assert (events, request_ids, deliveries) == (events_before - 2, 1, 0)
    assert await _count(app, GenerationEventRow.seq) == 2
    assert await _count(app, IdempotencyKeyRow.request_id) == 0

    # A watcher resuming from a pruned revision gets a snapshot of the present.
    watch = gens.WatchGeneration(
        g.WatchGenerationRequest(id=first.id, since_revision=1), metadata=auth
    )
    events_seen = [event async for event in watch]
    assert [e.type for e in events_seen] == [g.GENERATION_EVENT_TYPE_SNAPSHOT]
    assert events_seen[0].generation.revision == done[0].revision
    assert events_seen[0].generation.status == g.GENERATION_STATUS_SUCCESS

    # A project watcher behind the retention gets every generation's latest state.
    project = gens.WatchGenerations(
        g.WatchGenerationsRequest(since_cursor="1"), metadata=auth, timeout=5
    )
    latest: dict[str, tuple[int, int]] = {}
    async for event in project:
        latest[event.generation.id] = (event.type, event.generation.revision)
        if len(latest) == 2:
            project.cancel()
            break
    assert latest == {item.id: (g.GENERATION_EVENT_TYPE_SNAPSHOT, item.revision) for item in done}

    # The request_id is forgotten: the same key now makes a new generation.
    again = await gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="a bell", request_id="retry-me"), metadata=auth
    )
    assert again.id != first.id


async def _next(stream: Any) -> g.GenerationEvent:
    """The stream's next event (bounded: a missing event fails the test, not hangs it)."""
    event = await asyncio.wait_for(stream.read(), 30)
    assert event is not grpc.aio.EOF, "the stream ended"
    return event  # type: ignore[no-any-return]


async def test_project_watcher_behind_retention_gets_a_snapshot_then_goes_on(
    app: App, gens: generation_pb2_grpc.GenerationServiceStub, auth
) -> None:
    # Seen by the watcher: the first generation, to its end. Its cursor is saved.
    first = await gens.CreateGeneration(g.CreateGenerationRequest(prompt="a kite"), metadata=auth)
    first_done = await until_terminal(gens, first.id, auth)
    history = gens.WatchGenerations(g.WatchGenerationsRequest(since_cursor="0"), metadata=auth)
    seen = [await _next(history) for _ in range(first_done.revision)]
    history.cancel()
    assert seen[0].type == g.GENERATION_EVENT_TYPE_CREATED
    saved = seen[-1].cursor

    # Missed while away: a second generation ran, the first was deleted; retention then
    # removed the rows of the second's run (its latest stays).
    second = await gens.CreateGeneration(g.CreateGenerationRequest(prompt="a cup"), metadata=auth)
    second_done = await until_terminal(gens, second.id, auth)
    await gens.DeleteGeneration(g.DeleteGenerationRequest(id=first.id), metadata=auth)
    pruned = (await app.pruner.prune(now=LATER)).events
    assert pruned > 0

    # Resuming from the saved cursor: the present, explicitly, not what rows are left.
    resumed = gens.WatchGenerations(g.WatchGenerationsRequest(since_cursor=saved), metadata=auth)
    present = [await _next(resumed), await _next(resumed)]
    assert [(e.type, e.generation.id) for e in present] == [
        (g.GENERATION_EVENT_TYPE_SNAPSHOT, second.id),
        (g.GENERATION_EVENT_TYPE_DELETED, first.id),
    ]
    assert present[0].generation.revision == second_done.revision
    assert present[0].generation.status == g.GENERATION_STATUS_SUCCESS
    assert int(present[0].cursor) < int(present[1].cursor)

    # ... and goes on live, with ordinary events.
    third = await gens.CreateGeneration(g.CreateGenerationRequest(prompt="a fern"), metadata=auth)
    live = await _next(resumed)
    resumed.cancel()
    assert (live.type, live.generation.id) == (g.GENERATION_EVENT_TYPE_CREATED, third.id)

    # A cursor past the horizon resumes without a snapshot: nothing was lost after it.
    after = gens.WatchGenerations(
        g.WatchGenerationsRequest(since_cursor=present[1].cursor), metadata=auth
    )
    again = await _next(after)
    after.cancel()
    assert (again.type, again.generation.id) == (g.GENERATION_EVENT_TYPE_CREATED, third.id)
    await until_terminal(gens, third.id, auth)


async def test_pruning_runs_in_the_background(tmp_path) -> None:
    from conftest import dev_key_metadata, make_settings

    app = App(
        make_settings(
            tmp_path / "data",
            event_retention_seconds=0.001,
            request_id_retention_seconds=0.001,
            prune_interval_seconds=0.05,
        )
    )
    await app.start()
    try:
        auth = dev_key_metadata(app)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            gens = generation_pb2_grpc.GenerationServiceStub(channel)
            created = await gens.CreateGeneration(
                g.CreateGenerationRequest(prompt="a bell", request_id="k1"), metadata=auth
            )
            await until_terminal(gens, created.id, auth)
            for _ in range(600):
                if await _count(app, GenerationEventRow.seq) == 1 and not await _count(
                    app, IdempotencyKeyRow.request_id
                ):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the background pruner never pruned")
            # The one event left is the latest: the generation is still watchable.
            got = await gens.GetGeneration(g.GetGenerationRequest(id=created.id), metadata=auth)
            watch = gens.WatchGeneration(g.WatchGenerationRequest(id=created.id), metadata=auth)
            assert [e.generation.revision async for e in watch] == [got.revision]
    finally:
        await app.stop()
