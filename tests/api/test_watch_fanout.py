"""The watch fan-out: one read per change per process, bounded queues, retention, replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import dev_key_metadata, make_settings, started_app
from expect import until_terminal
from sqlalchemy import delete, event

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.domain.errors import DomainError, Status
from server.store.models import GenerationEventRow

Md = tuple[tuple[str, str], ...]
P, R, S = (
    g.GENERATION_STATUS_PENDING,
    g.GENERATION_STATUS_PROCESSING,
    g.GENERATION_STATUS_SUCCESS,
)


@contextmanager
def outbox_reads(app: App) -> Iterator[list[str]]:
    """Every SQL statement that reads the outbox, while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "generation_events" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    engine = app.db.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until true (bounded generously: the machine is shared)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def test_a_change_is_read_once_for_all_watchers(app: App, auth: Md) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a"), metadata=auth)
        await until_terminal(stub, created.id, auth)
        followers = [
            stub.WatchGeneration(
                g.WatchGenerationRequest(id=created.id, follow=True), metadata=auth
            )
            for _ in range(40)
        ]
        dashboards = [
            stub.WatchGenerations(g.WatchGenerationsRequest(), metadata=auth) for _ in range(10)
        ]
        try:
            for call in followers:
                assert (await call.read()).generation.status == S
            await wait_for(lambda: app.hub.subscriber_count == 50)
            with outbox_reads(app) as reads:
                await stub.RegenerateGeneration(
                    g.RegenerateGenerationRequest(id=created.id), metadata=auth
                )
                for call in followers:
                    assert [(await call.read()).generation.status for _ in range(3)] == [P, R, S]
                for call in dashboards:
                    assert [(await call.read()).generation.status for _ in range(3)] == [P, R, S]
            # Three changes, fifty watchers: a handful of reads, not one per watcher.
            assert len(reads) <= 3 * 3, reads
        finally:
            for call in [*followers, *dashboards]:
                call.cancel()


async def test_a_process_reads_its_own_change_once_though_told_twice(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    # On PostgreSQL a process hears each change it commits twice: from its hub, and as
    # the NOTIFY every replica gets (often first). Both say the revision: one read each.
    async with started_app(
        make_settings(tmp_path / "data", watch_poll_seconds=0, **storage)
    ) as app:
        auth = dev_key_metadata(app)
        if app.listener is not None:
            await asyncio.wait_for(app.listener.connected.wait(), 30)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            made = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a"), metadata=auth)
            await until_terminal(stub, made.id, auth)
            follower = stub.WatchGeneration(
                g.WatchGenerationRequest(id=made.id, follow=True), metadata=auth
            )
            try:
                assert (await follower.read()).generation.status == S
                with outbox_reads(app) as reads:
                    for _ in range(3):
                        await stub.RegenerateGeneration(
                            g.RegenerateGenerationRequest(id=made.id), metadata=auth
                        )
                        statuses = [(await follower.read()).generation.status for _ in range(3)]
                        assert statuses == [P, R, S]
                    await asyncio.sleep(0.5)  # room for the last NOTIFYs to arrive
                # Nine changes: at most one read each (fewer when reads coalesce).
                assert len(reads) <= 9, reads
            finally:
                follower.cancel()


async def test_idle_watchers_do_not_query(tmp_path: Path) -> None:
    async with started_app(make_settings(tmp_path / "data", watch_poll_seconds=0.05)) as app:
        auth = (("x-api-key", app.dev_api_key or ""),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            created = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="a"), metadata=auth
            )
            await until_terminal(stub, created.id, auth)
            calls = [
                stub.WatchGeneration(
                    g.WatchGenerationRequest(id=created.id, follow=True), metadata=auth
                )
                for _ in range(30)
            ]
            try:
                for call in calls:
                    await call.read()
                loop = asyncio.get_running_loop()
                with outbox_reads(app) as reads:
                    started = loop.time()
                    await asyncio.sleep(0.5)
                    elapsed = loop.time() - started
                # At most the poller's one query per tick, however many watchers there are.
                assert len(reads) <= elapsed / 0.05 + 2
                assert all("max(" in statement.lower() for statement in reads), reads
            finally:
                for call in calls:
                    call.cancel()


async def test_a_watcher_behind_retention_gets_a_snapshot(app: App, auth: Md) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a"), metadata=auth)
        done = await until_terminal(stub, created.id, auth)
        assert done.revision == 3
        # Retention pruned revisions 1 and 2 of the outbox.
        async with app.db.write() as session, session.begin():
            await session.execute(
                delete(GenerationEventRow).where(
                    GenerationEventRow.generation_id == created.id,
                    GenerationEventRow.revision < 3,
                )
            )
        request = g.WatchGenerationRequest(id=created.id, since_revision=1)
        events = [e async for e in stub.WatchGeneration(request, metadata=auth)]
        assert [(e.type, e.revision, e.generation.status) for e in events] == [
            (g.GENERATION_EVENT_TYPE_SNAPSHOT, 3, S)
        ]
        # Then it goes on: a follower resuming the same way sees the next run in full.
        follow = stub.WatchGeneration(
            g.WatchGenerationRequest(id=created.id, since_revision=1, follow=True), metadata=auth
        )
        try:
            assert (await follow.read()).type == g.GENERATION_EVENT_TYPE_SNAPSHOT
            await stub.RegenerateGeneration(
                g.RegenerateGenerationRequest(id=created.id), metadata=auth
            )
            after = [await follow.read() for _ in range(3)]
            assert [(e.revision, e.generation.status) for e in after] == [(4, P), (5, R), (6, S)]
        finally:
            follow.cancel()


@pytest.fixture
async def small_queues(tmp_path: Path, storage: dict[str, Any]) -> AsyncIterator[App]:
    async with started_app(
        make_settings(tmp_path / "data", watch_queue_events=3, workers=0, **storage)
    ) as app:
        yield app


async def test_a_slow_watcher_is_ended_and_resumes_without_a_gap(small_queues: App) -> None:
    app = small_queues
    auth = (("x-api-key", app.dev_api_key or ""),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a"), metadata=auth)
        project_id = created.project_id
        # A watcher that takes its first event, then stops reading (its queue holds 3).
        stream = app.watches.generation(project_id, created.id, 0, follow=True)
        first = await anext(stream)
        assert first.revision == 1
        for i in range(6):
            await stub.UpdateGeneration(
                g.UpdateGenerationRequest(id=created.id, prompt=f"take {i}"), metadata=auth
            )
        # The fan-out has read them all (and found the queue too short).
        await wait_for(lambda: app.watches.fanout.known_revision(created.id) == 7)
        with pytest.raises(DomainError) as ended:
            async for _event in stream:
                pass
        assert ended.value.status is Status.ABORTED
        assert ended.value.reason == "WATCH_TOO_SLOW"
        resume_from = int(ended.value.metadata["resume_from"])
        assert resume_from == 1
        await stream.aclose()
        # Reopening from what it saw brings exactly the rest.
        resumed = app.watches.generation(project_id, created.id, resume_from, follow=False)
        revisions = [(await anext(resumed)).revision for _ in range(6)]
        assert revisions == [2, 3, 4, 5, 6, 7]
        await resumed.aclose()


async def test_project_watchers_filter_in_memory(app: App, auth: Md) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        successes = stub.WatchGenerations(g.WatchGenerationsRequest(status=S), metadata=auth)
        everything = stub.WatchGenerations(g.WatchGenerationsRequest(), metadata=auth)
        try:
            # Started: a watch "from now on" sends its headers once it has its starting point.
            await successes.initial_metadata()
            await everything.initial_metadata()
            created = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="a"), metadata=auth
            )
            assert [(await everything.read()).generation.status for _ in range(3)] == [P, R, S]
            only = await successes.read()
            assert (only.generation.id, only.generation.status) == (created.id, S)
        finally:
            successes.cancel()
            everything.cancel()


async def _two_replicas(
    tmp_path: Path, storage: dict[str, Any], watcher: dict[str, Any]
) -> tuple[App, App]:
    """Replica A only watches (no workers, ``watcher`` settings); replica B does the work."""
    a = App(make_settings(tmp_path / "a", workers=0, **storage, **watcher))
    await a.start()
    b = App(make_settings(tmp_path / "b", workers=1, dev_project=False, **storage))
    await b.start()
    return a, b


async def _watch_across(a: App, b: App) -> None:
    """A watcher on A sees every state of work done on B, by generation and by project."""
    auth = (("x-api-key", a.dev_api_key or ""),)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{a.grpc_port}") as on_a,
        grpc.aio.insecure_channel(f"127.0.0.1:{b.grpc_port}") as on_b,
    ):
        watch_a = generation_pb2_grpc.GenerationServiceStub(on_a)
        work_b = generation_pb2_grpc.GenerationServiceStub(on_b)
        dashboard = watch_a.WatchGenerations(g.WatchGenerationsRequest(), metadata=auth)
        try:
            # Started (its headers): a create committed before the watch's starting point
            # would be part of "before now", and its PENDING never sent (CI saw it once).
            await dashboard.initial_metadata()
            created = await work_b.CreateGeneration(
                g.CreateGenerationRequest(prompt="across"), metadata=auth
            )
            request = g.WatchGenerationRequest(id=created.id, since_revision=created.revision)
            events = await asyncio.wait_for(
                _collect(watch_a.WatchGeneration(request, metadata=auth)), 60
            )
            assert [(e.revision, e.generation.status) for e in events] == [(2, R), (3, S)]
            seen = [await asyncio.wait_for(dashboard.read(), 60) for _ in range(3)]
            assert [(e.generation.id, e.generation.status) for e in seen] == [
                (created.id, P),
                (created.id, R),
                (created.id, S),
            ]
        finally:
            dashboard.cancel()


async def _collect(stream: Any) -> list[g.GenerationEvent]:
    return [e async for e in stream]


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_replicas_deliver_by_notify_alone(tmp_path: Path, storage: dict[str, Any]) -> None:
    a, b = await _two_replicas(tmp_path, storage, {"watch_poll_seconds": 0})
    try:
        assert a.listener is not None
        await asyncio.wait_for(a.listener.connected.wait(), 30)
        await _watch_across(a, b)
        assert a.watches.fanout.wakeups["notified"] > 0
        assert a.watches.fanout.wakeups["polled"] == 0
    finally:
        await b.stop()
        await a.stop()


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_replicas_deliver_by_polling_alone(tmp_path: Path, storage: dict[str, Any]) -> None:
    a, b = await _two_replicas(
        tmp_path, storage, {"watch_listen_notify": False, "watch_poll_seconds": 0.05}
    )
    try:
        assert a.listener is None
        await _watch_across(a, b)
        assert a.watches.fanout.wakeups["polled"] > 0
        assert a.watches.fanout.wakeups["notified"] == 0
    finally:
        await b.stop()
        await a.stop()
