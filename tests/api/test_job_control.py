"""Cancel and deadlines: pending, processing (a slow generator), finished, another replica's
run, watchers, regenerate from CANCELLED, queue-time and run-time expiry — on both backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import dev_key_metadata, make_settings
from expect import expect_error, until_terminal
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import select

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.blobs.keys import generation_prefix
from server.store.models import GenerationRow

Stub = generation_pb2_grpc.GenerationServiceStub
Metadata = tuple[tuple[str, str], ...]


async def start(tmp_path: Path, storage: dict[str, Any], name: str, **overrides: Any) -> App:
    app = App(make_settings(tmp_path / name, **storage, **overrides))
    await app.start()
    return app


@pytest.fixture
async def slow(tmp_path: Path, storage: dict[str, Any]) -> AsyncIterator[App]:
    """One worker and a generator that takes 30 s per image (a slow hosted model)."""
    app = await start(tmp_path, storage, "slow", workers=1, generator_delay_seconds=30.0)
    try:
        yield app
    finally:
        await app.stop()


def key(app: App) -> Metadata:
    return dev_key_metadata(app)


async def until_status(
    stub: Stub, generation_id: str, md: Metadata, status: int, timeout: float = 30.0
) -> g.Generation:
    deadline = time.monotonic() + timeout
    while True:
        got = await stub.GetGeneration(g.GetGenerationRequest(id=generation_id), metadata=md)
        if got.status == status:
            return got
        assert time.monotonic() < deadline, f"still {got.status}, wanted {status}"
        await asyncio.sleep(0.02)


async def until_running(app: App, timeout: float = 10.0) -> None:
    """Until the engine counts one run in flight. Its claim commits before the run's task
    starts, so PROCESSING can be read a few loop turns before the run counts itself."""
    deadline = time.monotonic() + timeout
    while app.engine.in_flight != 1:
        assert time.monotonic() < deadline, f"{app.engine.in_flight} runs in flight, wanted 1"
        await asyncio.sleep(0.01)


async def until_idle(app: App, timeout: float) -> float:
    """Seconds until the engine has no run in flight (AssertionError after ``timeout``)."""
    started = time.monotonic()
    while app.engine.in_flight:
        assert time.monotonic() - started < timeout, "the run is still going"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def lease_of(app: App, generation_id: str) -> tuple[str | None, Any]:
    async with app.db.read() as session:
        row = await session.scalar(select(GenerationRow).where(GenerationRow.id == generation_id))
        assert row is not None
        return row.lease_token, row.lease_expire_time


async def objects_of(app: App, generation: g.Generation) -> list[str]:
    prefix = generation_prefix(generation.project_id, generation.id)
    return [info.key async for info in app.blobs.list(prefix)]


async def test_cancel_processing_abandons_the_run_and_watchers_see_it(slow: App) -> None:
    md = key(slow)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{slow.grpc_port}") as channel:
        stub = Stub(channel)
        created = await stub.CreateGeneration(
            g.CreateGenerationRequest(prompt="a slow fox"), metadata=md
        )
        await until_status(stub, created.id, md, g.GENERATION_STATUS_PROCESSING)
        await until_running(slow)
        watch = stub.WatchGeneration(
            g.WatchGenerationRequest(id=created.id, follow=True), metadata=md
        )
        first = await watch.read()
        assert first.generation.status == g.GENERATION_STATUS_PROCESSING

        cancelled = await stub.CancelGeneration(
            g.CancelGenerationRequest(id=created.id), metadata=md
        )
        assert cancelled.status == g.GENERATION_STATUS_CANCELLED
        assert cancelled.HasField("cancel_time") and not cancelled.HasField("output_image")

        # The generator call (30 s) is abandoned: the worker is idle within a second.
        assert await until_idle(slow, timeout=1.0) < 1.0
        seen = await asyncio.wait_for(watch.read(), 5)
        assert seen.generation.status == g.GENERATION_STATUS_CANCELLED
        watch.cancel()
        assert await lease_of(slow, created.id) == (None, None)
        assert await objects_of(slow, created) == []
        final = await stub.GetGeneration(g.GetGenerationRequest(id=created.id), metadata=md)
        assert final.status == g.GENERATION_STATUS_CANCELLED and not final.HasField("output_image")


async def test_cancel_pending_is_immediate_and_a_finished_one_is_refused(slow: App) -> None:
    md = key(slow)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{slow.grpc_port}") as channel:
        stub = Stub(channel)
        busy = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="busy"), metadata=md)
        await until_status(stub, busy.id, md, g.GENERATION_STATUS_PROCESSING)
        # The only worker is busy: this one waits in the queue.
        queued = await stub.CreateGeneration(
            g.CreateGenerationRequest(prompt="queued"), metadata=md
        )
        assert queued.status == g.GENERATION_STATUS_PENDING
        cancelled = await stub.CancelGeneration(
            g.CancelGenerationRequest(id=queued.id), metadata=md
        )
        assert cancelled.status == g.GENERATION_STATUS_CANCELLED
        assert cancelled.revision == queued.revision + 1 and cancelled.attempt == 0

        # Finished (cancelled) → FAILED_PRECONDITION, GENERATION_ALREADY_FINISHED.
        await expect_error(
            stub.CancelGeneration(g.CancelGenerationRequest(id=queued.id), metadata=md),
            grpc.StatusCode.FAILED_PRECONDITION,
            "GENERATION_ALREADY_FINISHED",
        )
        await expect_error(
            stub.CancelGeneration(g.CancelGenerationRequest(id="nope"), metadata=md),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        await expect_error(
            stub.CancelGeneration(
                g.CancelGenerationRequest(id="01900000-0000-7000-8000-000000000000"), metadata=md
            ),
            grpc.StatusCode.NOT_FOUND,
            "GENERATION_NOT_FOUND",
        )
        await stub.CancelGeneration(g.CancelGenerationRequest(id=busy.id), metadata=md)


async def test_cancel_a_succeeded_generation_is_refused_and_regenerate_from_cancelled_works(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    app = await start(tmp_path, storage, "quick", workers=1, generator_delay_seconds=1.0)
    md = key(app)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = Stub(channel)
            done = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="done"), metadata=md
            )
            done = await until_terminal(stub, done.id, md)
            assert done.status == g.GENERATION_STATUS_SUCCESS
            await expect_error(
                stub.CancelGeneration(g.CancelGenerationRequest(id=done.id), metadata=md),
                grpc.StatusCode.FAILED_PRECONDITION,
                "GENERATION_ALREADY_FINISHED",
            )
            other = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="again"), metadata=md
            )
            await stub.CancelGeneration(g.CancelGenerationRequest(id=other.id), metadata=md)
            rerun = await stub.RegenerateGeneration(
                g.RegenerateGenerationRequest(id=other.id), metadata=md
            )
            assert rerun.status == g.GENERATION_STATUS_PENDING and not rerun.HasField("cancel_time")
            finished = await until_terminal(stub, other.id, md)
            assert finished.status == g.GENERATION_STATUS_SUCCESS
            assert finished.HasField("output_image")
    finally:
        await app.stop()


async def test_cancel_reaches_a_run_on_another_replica(
    tmp_path: Path, storage: dict[str, Any], backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("replicas share a database on PostgreSQL")
    # A 30 s lease: only the cross-replica notification can stop the run within the bound.
    owner = await start(
        tmp_path, storage, "owner", workers=1, generator_delay_seconds=30.0, lease_seconds=30.0
    )
    other = await start(tmp_path, storage, "other", workers=0)
    try:
        md = key(owner)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{owner.grpc_port}") as to_owner,
            grpc.aio.insecure_channel(f"127.0.0.1:{other.grpc_port}") as to_other,
        ):
            created = await Stub(to_owner).CreateGeneration(
                g.CreateGenerationRequest(prompt="far away"), metadata=md
            )
            await until_status(Stub(to_owner), created.id, md, g.GENERATION_STATUS_PROCESSING)
            await until_running(owner)
            await Stub(to_other).CancelGeneration(
                g.CancelGenerationRequest(id=created.id), metadata=md
            )
            # The owner hears of it through PostgreSQL NOTIFY (bound: lease_seconds / 3 without).
            assert await until_idle(owner, timeout=3.0) < 3.0
            assert await lease_of(owner, created.id) == (None, None)
            assert await objects_of(owner, created) == []
    finally:
        await other.stop()
        await owner.stop()


async def test_queue_time_counts_toward_the_timeout(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    # No worker at all: the generation can only wait in the queue until it expires.
    app = await start(tmp_path, storage, "idle", workers=0)
    md = key(app)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = Stub(channel)
            created = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="never run", timeout=Duration(nanos=300_000_000)),
                metadata=md,
            )
            assert created.timeout.ToMilliseconds() == 300
            failed = await until_terminal(stub, created.id, md, timeout=10)
            assert failed.status == g.GENERATION_STATUS_FAILED
            assert failed.error.code == "DEADLINE_EXCEEDED"
            assert failed.attempt == 0  # it never started
    finally:
        await app.stop()


async def test_run_time_past_the_timeout_fails_and_abandons_the_run(slow: App) -> None:
    md = key(slow)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{slow.grpc_port}") as channel:
        stub = Stub(channel)
        created = await stub.CreateGeneration(
            g.CreateGenerationRequest(prompt="too slow", timeout=Duration(seconds=1)), metadata=md
        )
        await until_status(stub, created.id, md, g.GENERATION_STATUS_PROCESSING)
        failed = await until_terminal(stub, created.id, md, timeout=10)
        assert failed.status == g.GENERATION_STATUS_FAILED
        assert failed.error.code == "DEADLINE_EXCEEDED"
        assert failed.attempt == 1 and not failed.HasField("output_image")
        assert await until_idle(slow, timeout=2.0) < 2.0
        assert await lease_of(slow, created.id) == (None, None)
        assert await objects_of(slow, created) == []


@pytest.mark.parametrize(
    ("duration", "problem"),
    [
        (Duration(seconds=-1), "must be positive"),
        (Duration(seconds=0), "must be positive"),
        (Duration(seconds=1, nanos=-5), "is not a valid duration"),
        (Duration(nanos=1_000_000_000), "is not a valid duration"),
        (Duration(seconds=86_401), "must be at most 86400 seconds"),
        (Duration(seconds=315_576_000_001), "must be at most 86400 seconds"),
    ],
)
async def test_a_bad_timeout_is_invalid_argument(
    gens: Stub, auth: Metadata, duration: Duration, problem: str
) -> None:
    error = await expect_error(
        gens.CreateGeneration(
            g.CreateGenerationRequest(prompt="x", timeout=duration), metadata=auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_ERROR",
    )
    assert problem in (error.details() or "")
