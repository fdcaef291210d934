"""Two replicas on one PostgreSQL and one S3 server: shared work, cross-replica watch, a crash."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
from expect import until_terminal
from postgres import Postgres
from seaweed import SeaweedFS, remove_bucket
from serve_process import ServeProcess

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc

pytestmark = pytest.mark.slow
P, R, S = (
    g.GENERATION_STATUS_PENDING,
    g.GENERATION_STATUS_PROCESSING,
    g.GENERATION_STATUS_SUCCESS,
)


async def test_two_replicas_share_work_and_survive_a_kill_9(
    tmp_path: Path, postgres_server: Postgres, s3_server: SeaweedFS
) -> None:
    database_url = await postgres_server.create_database()
    bucket = "replicas-" + uuid.uuid4().hex[:12]
    env = {
        "IMAGEGEN_DATABASE_URL": database_url,
        "IMAGEGEN_S3_ENDPOINT": s3_server.endpoint,
        "IMAGEGEN_S3_ACCESS_KEY": s3_server.access_key,
        "IMAGEGEN_S3_SECRET_KEY": s3_server.secret_key,
        "IMAGEGEN_S3_BUCKET": bucket,
        "IMAGEGEN_GENERATOR_DELAY_SECONDS": "0.3",
        "IMAGEGEN_WORKERS": "4",
        "IMAGEGEN_LEASE_SECONDS": "2",
        "IMAGEGEN_POLL_INTERVAL_SECONDS": "0.2",
    }
    a = ServeProcess(tmp_path / "a", **env).start()
    b = ServeProcess(tmp_path / "b", **env).start()
    try:
        md = (("x-api-key", a.api_key()),)  # one database: the dev project exists once
        assert not (tmp_path / "b" / "dev-api-key").exists()
        async with (
            grpc.aio.insecure_channel(a.address) as to_a,
            grpc.aio.insecure_channel(b.address) as to_b,
        ):
            stub_a = generation_pb2_grpc.GenerationServiceStub(to_a)
            stub_b = generation_pb2_grpc.GenerationServiceStub(to_b)
            created = await asyncio.gather(
                *(
                    stub_a.CreateGeneration(
                        g.CreateGenerationRequest(prompt=f"replica scene {i}"), metadata=md
                    )
                    for i in range(100)
                )
            )

            async def watch(generation: g.Generation) -> list[g.GenerationEvent]:
                request = g.WatchGenerationRequest(
                    id=generation.id, since_revision=generation.revision
                )
                return [e async for e in stub_b.WatchGeneration(request, metadata=md)]

            watchers = [asyncio.create_task(watch(x)) for x in created]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                listed = await stub_b.ListGenerations(
                    g.ListGenerationsRequest(limit=100, status=S), metadata=md
                )
                if listed.total >= 15:
                    break
                await asyncio.sleep(0.05)
            a.kill()  # mid-run: A holds leases on generations it will never finish
            assert listed.total < 100, "the kill must land mid-run"
            results = await asyncio.wait_for(asyncio.gather(*watchers), 120)
            for generation, events in zip(created, results, strict=True):
                statuses = [P] + [e.generation.status for e in events]
                revisions = [generation.revision] + [e.revision for e in events]
                # Every state, in order, no gaps or repeats (a re-claim after A died
                # shows as a second PROCESSING revision).
                assert revisions == list(range(1, len(revisions) + 1)), revisions
                assert statuses[0] == P and statuses[-1] == S
                assert set(statuses[1:-1]) == {R}, statuses
            finals = [await until_terminal(stub_b, x.id, md) for x in created]
            assert all(f.status == S for f in finals)
            reclaimed = sum(f.attempt > 1 for f in finals)
        assert b.terminate() == 0
    finally:
        a.kill()
        b.kill()

    # Both replicas executed work, and each generation succeeded exactly once.
    dsn = database_url.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(dsn)
    try:
        successes = await connection.fetch(
            "SELECT generation_id, count(*) AS n FROM generation_events "
            "WHERE status = 'success' GROUP BY generation_id"
        )
        keys = {r["object_key"] for r in await connection.fetch("SELECT object_key FROM images")}
    finally:
        await connection.close()
    assert len(successes) == 100 and {r["n"] for r in successes} == {1}
    assert reclaimed >= 1, "A's unfinished generations were finished by B"
    a_log, b_log = a.log(), b.log()
    assert a_log.count('"event": "generation_finished"') >= 1
    assert b_log.count('"event": "generation_finished"') >= 1
    stored = {obj.object_name for obj in s3_server.client().list_objects(bucket, recursive=True)}
    remove_bucket(s3_server, bucket)
    assert stored == keys and len(stored) == 100
