"""PostgreSQL pool health: a connection idle for a while is checked before it is used."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from conftest import dev_key_metadata, make_settings

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.events.listener import asyncpg_dsn
from server.store.db import PING_AFTER_IDLE_SECONDS


async def _terminate_app_connections(app: App) -> int:
    """Kill every server process of the app's database from outside (a restart, as the pool
    sees it); returns how many."""
    killer = await asyncpg.connect(asyncpg_dsn(app.settings.resolved_database_url))
    try:
        killed = await killer.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await killer.close()
    return len(killed)


async def test_idle_connections_killed_behind_the_pools_back_are_replaced(
    tmp_path: Path, storage: dict[str, Any], backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has no server to lose connections to")
    # Anything else using the pool in the background (the readiness probe, the engine's
    # claims and queue gauge, the NOTIFY listener's catch-up) would meet a dead connection
    # first and have the pool start afresh: all are quiet here, so the reads meet them.
    quiet = {
        "readiness_interval_seconds": 3600,
        "workers": 0,
        "poll_interval_seconds": 600,
        "watch_listen_notify": False,
    }
    app = App(make_settings(tmp_path / "data", **{**quiet, **storage}))
    await app.start()
    try:
        auth = dev_key_metadata(app)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            gens = generation_pb2_grpc.GenerationServiceStub(channel)
            created = await gens.CreateGeneration(
                g.CreateGenerationRequest(prompt="a fox"), metadata=auth
            )
            request = g.GetGenerationRequest(id=created.id)
            # Several reads at once, so the pool holds several connections.
            await asyncio.gather(*(gens.GetGeneration(request, metadata=auth) for _ in range(8)))
            assert await _terminate_app_connections(app) > 0
            # Idle past the bound: each is pinged at checkout, found dead and replaced.
            await asyncio.sleep(PING_AFTER_IDLE_SECONDS + 0.3)
            replies = await asyncio.gather(
                *(gens.GetGeneration(request, metadata=auth) for _ in range(8)),
                return_exceptions=True,
            )
            failed = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)]
            assert not failed, [(e.code(), e.details()) for e in failed]
            again = await gens.CreateGeneration(
                g.CreateGenerationRequest(prompt="a fox"), metadata=auth
            )
            assert again.id
    finally:
        await app.stop()
