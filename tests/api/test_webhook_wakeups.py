"""Webhook senders are woken by changes of generations that have a webhook, not by every change."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
from conftest import dev_key_metadata, make_settings
from sqlalchemy import event

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App


async def test_creates_without_a_webhook_do_not_send_the_senders_looking(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    # No workers and a long poll: the senders look for due deliveries only when woken.
    app = App(
        make_settings(
            tmp_path / "data",
            workers=0,
            poll_interval_seconds=600,
            webhook_allow_private_addresses=True,
            **storage,
        )
    )
    looks: list[str] = []

    def count_looks(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "webhook_deliveries" in statement:
            looks.append(statement)

    await app.start()
    engine = app.db.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", count_looks)
    try:
        md = dev_key_metadata(app)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            gens = generation_pb2_grpc.GenerationServiceStub(channel)
            await asyncio.sleep(0.3)  # the senders' first look, at start
            before = len(looks)
            for n in range(10):
                await gens.CreateGeneration(
                    g.CreateGenerationRequest(prompt=f"a fox {n}"), metadata=md
                )
            await asyncio.sleep(0.3)
            assert len(looks) == before, "a change without a webhook woke the senders"
            await gens.CreateGeneration(
                g.CreateGenerationRequest(
                    prompt="a fox with a hook",
                    webhook=g.Webhook(url="http://127.0.0.1:9/hook", events=["completed"]),
                ),
                metadata=md,
            )
            deadline = time.monotonic() + 30
            while len(looks) == before:
                assert time.monotonic() < deadline, "a change with a webhook did not wake them"
                await asyncio.sleep(0.02)
    finally:
        event.remove(engine, "before_cursor_execute", count_looks)
        await app.stop()
