"""The engine: failures and retries, lease expiry after a dead worker, hand-back on shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from conftest import make_settings
from expect import until_terminal
from sqlalchemy import event, update

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.store.models import GenerationRow


async def started(tmp_path: Path, **overrides: object) -> App:
    app = App(make_settings(tmp_path / "data", **overrides))
    await app.start()
    return app


def stub_for(app: App, channel: grpc.aio.Channel) -> generation_pb2_grpc.GenerationServiceStub:
    return generation_pb2_grpc.GenerationServiceStub(channel)


async def create_and_wait(app: App, prompt: str = "a lantern", timeout: float = 30):
    md = (("x-api-key", app.dev_api_key or ""),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt=prompt), metadata=md)
        return await until_terminal(stub, created.id, md, timeout)


async def test_permanent_generator_error_fails_with_code_and_message(tmp_path: Path) -> None:
    app = await started(tmp_path, generator_fail_mode="always")
    try:
        done = await create_and_wait(app)
        assert done.status == g.GENERATION_STATUS_FAILED
        assert done.error.code == "GENERATOR_ERROR"
        assert done.error.message
        assert done.attempt == 1
        assert [i async for i in app.blobs.list("")] == []
    finally:
        await app.stop()


async def test_transient_errors_are_retried_then_fail(tmp_path: Path) -> None:
    app = await started(
        tmp_path, generator_fail_mode="transient", max_attempts=3, retry_backoff_seconds=0.01
    )
    try:
        done = await create_and_wait(app)
        assert done.status == g.GENERATION_STATUS_FAILED
        assert done.error.code == "GENERATOR_UNAVAILABLE"
    finally:
        await app.stop()


async def test_a_transient_error_then_success(tmp_path: Path) -> None:
    app = await started(tmp_path, generator_fail_mode="flaky", retry_backoff_seconds=0.01)
    try:
        done = await create_and_wait(app)
        assert done.status == g.GENERATION_STATUS_SUCCESS
        assert done.attempt == 1  # retried inside one run, not a new claim
    finally:
        await app.stop()


async def test_an_expired_lease_is_claimed_again_and_finishes_once(tmp_path: Path) -> None:
    """A generation left PROCESSING by a dead worker runs again once its lease expires."""
    app = await started(tmp_path, workers=0)  # no workers: we play the dead one
    try:
        md = (("x-api-key", app.dev_api_key or ""),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            created = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="an orphan"), metadata=md
            )
            past = datetime.now(UTC) - timedelta(seconds=1)
            async with app.db.write.begin() as session:
                await session.execute(
                    update(GenerationRow)
                    .where(GenerationRow.id == created.id)
                    .values(
                        status="processing",
                        lease_token="dead-worker",
                        lease_expire_time=past,
                        attempt=1,
                    )
                )
            # A stale object left by the dead worker under the generation's prefix.
            prefix = f"projects/{created.project_id}/generations/{created.id}/"
            await app.blobs.put(prefix + "r1-a1-deadbeef.png", b"half", "image/png")
            from server.engine.worker import Engine

            engine = Engine(
                app.db,
                app.blobs,
                app.hub,
                app.engine._generator,
                app.engine._enhancer,
                replace(app.engine.settings, workers=1),
            )
            engine.start()
            try:
                done = await until_terminal(stub, created.id, md)
            finally:
                await engine.stop(2)
            assert done.status == g.GENERATION_STATUS_SUCCESS
            assert done.attempt == 2
            keys = [i.key async for i in app.blobs.list(prefix)]
            assert len(keys) == 1 and "deadbeef" not in keys[0]
    finally:
        await app.stop()


async def test_shutdown_hands_back_unfinished_work(tmp_path: Path) -> None:
    """On stop, a run that cannot finish within the grace period releases its lease at once."""
    app = await started(
        tmp_path, generator_delay_seconds=30, shutdown_grace_seconds=0.5, lease_seconds=60
    )
    md = (("x-api-key", app.dev_api_key or ""),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="slow"), metadata=md)
        for _ in range(100):
            got = await stub.GetGeneration(g.GetGenerationRequest(id=created.id), metadata=md)
            if got.status == g.GENERATION_STATUS_PROCESSING:
                break
            await asyncio.sleep(0.05)
    await app.stop()
    async with app.db.read() as session:
        row = await session.get(GenerationRow, created.id)
    assert row is not None and row.status == "processing"
    assert row.lease_expire_time is not None
    assert row.lease_expire_time <= datetime.now(UTC)  # free for any worker right now
    # A new process on the same data picks it up without waiting for the 60 s lease.
    again = App(make_settings(tmp_path / "data"))
    await again.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{again.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            done = await until_terminal(stub, created.id, md, timeout=20)
        assert done.status == g.GENERATION_STATUS_SUCCESS
        assert done.attempt == 2
    finally:
        await again.stop()


async def test_regenerate_during_a_run_discards_the_old_run(tmp_path: Path) -> None:
    app = await started(tmp_path, generator_delay_seconds=0.5)
    md = (("x-api-key", app.dev_api_key or ""),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            created = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="race"), metadata=md
            )
            for _ in range(100):
                got = await stub.GetGeneration(g.GetGenerationRequest(id=created.id), metadata=md)
                if got.status == g.GENERATION_STATUS_PROCESSING:
                    break
                await asyncio.sleep(0.02)
            await stub.RegenerateGeneration(
                g.RegenerateGenerationRequest(id=created.id), metadata=md
            )
            done = await until_terminal(stub, created.id, md)
            await asyncio.sleep(0.8)  # let the superseded run finish and clean up
            final = await stub.GetGeneration(g.GetGenerationRequest(id=created.id), metadata=md)
        assert done.status == final.status == g.GENERATION_STATUS_SUCCESS
        assert final.revision == done.revision  # the old run committed nothing afterwards
        keys = [i.key async for i in app.blobs.list("")]
        assert len(keys) == 1
    finally:
        await app.stop()


async def test_changes_to_held_generations_are_checked_together(tmp_path: Path) -> None:
    """After a gap in notifications every held lease is checked in one read, and only the
    runs whose lease is gone are abandoned (here: one taken away behind the engine's back)."""
    app = await started(tmp_path, workers=8, generator_delay_seconds=30.0, lease_seconds=60.0)
    md = (("x-api-key", app.dev_api_key or ""),)
    reads: list[str] = []

    def note_read(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT GENERATIONS.ID, GENERATIONS.LEASE_TOKEN"):
            reads.append(statement)

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = stub_for(app, channel)
            ids = [
                (
                    await stub.CreateGeneration(
                        g.CreateGenerationRequest(prompt=f"a held fox {n}"), metadata=md
                    )
                ).id
                for n in range(8)
            ]
        for _ in range(500):
            if app.engine.in_flight == 8:
                break
            await asyncio.sleep(0.01)
        assert app.engine.in_flight == 8
        # A lease lost without a notification (as if another replica's NOTIFY was missed).
        async with app.db.write.begin() as session:
            await session.execute(
                update(GenerationRow)
                .where(GenerationRow.id == ids[0])
                .values(lease_token=None, status="cancelled")
            )
        event.listen(app.db.read_engine.sync_engine, "before_cursor_execute", note_read)
        app.hub.notify_everyone()  # what the listener does after a reconnect
        for _ in range(300):
            if app.engine.in_flight == 7:
                break
            await asyncio.sleep(0.01)
        event.remove(app.db.read_engine.sync_engine, "before_cursor_execute", note_read)
        assert app.engine.in_flight == 7  # the one whose lease is gone, and only it
        assert len(reads) == 1  # the eight held leases in one read
    finally:
        await app.stop()
