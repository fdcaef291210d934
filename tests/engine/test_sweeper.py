"""The sweeper deletes unreferenced objects past the grace period, and nothing else."""

from __future__ import annotations

from datetime import timedelta

import grpc
from expect import until_terminal

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.engine.sweeper import Sweeper


async def test_sweep_removes_orphans_and_keeps_referenced(
    app: App, channel: grpc.aio.Channel, auth
) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    created = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a kept one"), metadata=auth
    )
    done = await until_terminal(stub, created.id, auth)
    orphan = f"projects/{done.project_id}/generations/{done.id}/r9-a9-crashed.png"
    await app.blobs.put(orphan, b"left by a crash", "image/png")
    before = {i.key async for i in app.blobs.list("")}
    assert orphan in before and len(before) == 2

    # Within the grace period nothing goes: it could be a write in flight.
    patient = Sweeper(app.db, app.blobs, grace=timedelta(hours=1), interval=60)
    assert await patient.sweep() == 0
    assert {i.key async for i in app.blobs.list("")} == before

    eager = Sweeper(app.db, app.blobs, grace=timedelta(0), interval=60)
    assert await eager.sweep() == 1
    after = {i.key async for i in app.blobs.list("")}
    assert after == before - {orphan}
    got = await stub.GetGeneration(g.GetGenerationRequest(id=done.id), metadata=auth)
    assert got.output_image.etag == done.output_image.etag
