"""kill -9 mid-run, restart on the same data: nothing lost, one image each, no orphans."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import grpc
import pytest
from serve_process import ServeProcess

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc

pytestmark = pytest.mark.slow


def test_kill_9_mid_run_then_restart_finishes_every_generation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        "IMAGEGEN_GENERATOR_DELAY_SECONDS": "0.4",
        "IMAGEGEN_WORKERS": "4",
        "IMAGEGEN_LEASE_SECONDS": "2",
        "IMAGEGEN_POLL_INTERVAL_SECONDS": "0.1",
    }
    first = ServeProcess(data, **env).start()
    key = first.api_key()
    md = (("x-api-key", key),)
    with grpc.insecure_channel(first.address) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        ids = [
            stub.CreateGeneration(
                g.CreateGenerationRequest(prompt=f"crash scene {i}"), metadata=md, timeout=10
            ).id
            for i in range(20)
        ]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # kill once some are done and some are running
            listed = stub.ListGenerations(g.ListGenerationsRequest(limit=100), metadata=md)
            done = sum(x.status == g.GENERATION_STATUS_SUCCESS for x in listed.generations)
            running = sum(x.status == g.GENERATION_STATUS_PROCESSING for x in listed.generations)
            if done >= 2 and running >= 1:
                break
            time.sleep(0.05)
    first.kill()
    assert 0 < done < 20, "the kill must land mid-run"

    second = ServeProcess(data, port=first.port, **env).start()
    try:
        with grpc.insecure_channel(second.address) as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                listed = stub.ListGenerations(g.ListGenerationsRequest(limit=100), metadata=md)
                if all(x.status == g.GENERATION_STATUS_SUCCESS for x in listed.generations):
                    break
                time.sleep(0.2)
            assert {x.id for x in listed.generations} == set(ids)
            assert all(x.status == g.GENERATION_STATUS_SUCCESS for x in listed.generations), [
                (x.id, x.status, x.error.code) for x in listed.generations
            ]
        code = second.terminate()
        assert code == 0
    finally:
        second.kill()

    with sqlite3.connect(data / "imagegen.db") as db:
        keys = {row[0] for row in db.execute("SELECT object_key FROM images")}
        per_generation = dict(
            db.execute(
                "SELECT generation_id, count(*) FROM images GROUP BY generation_id"
            ).fetchall()
        )
        successes = dict(
            db.execute(
                "SELECT generation_id, count(*) FROM generation_events WHERE status='success' "
                "GROUP BY generation_id"
            ).fetchall()
        )
    assert set(per_generation) == set(ids) and set(per_generation.values()) == {1}
    assert set(successes) == set(ids) and set(successes.values()) == {1}  # once per run
    images = data / "images"
    files = {str(p.relative_to(images)) for p in images.rglob("*") if p.is_file()}
    assert files == keys, {"orphans": files - keys, "missing": keys - files}
