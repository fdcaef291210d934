"""Webhook delivery across crashes and replicas: `imagegen serve` killed with -9 after the
commit still delivers after a restart; two replicas on PostgreSQL deliver each event once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import grpc
import pytest
from expect import until_terminal
from postgres import Postgres
from seaweed import SeaweedFS, remove_bucket
from serve_process import ServeProcess
from webhook_receiver import Receiver

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc, project_pb2, project_pb2_grpc

pytestmark = pytest.mark.slow

ENV = {
    "IMAGEGEN_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true",
    "IMAGEGEN_WEBHOOK_TIMEOUT_SECONDS": "5",
    "IMAGEGEN_WEBHOOK_FIRST_RETRY_SECONDS": "0.2",
    "IMAGEGEN_POLL_INTERVAL_SECONDS": "0.1",
}


async def deliveries(
    address: str, md: tuple[tuple[str, str], ...]
) -> list[project_pb2.WebhookDelivery]:
    async with grpc.aio.insecure_channel(address) as channel:
        listed = await project_pb2_grpc.ProjectServiceStub(channel).ListWebhookDeliveries(
            project_pb2.ListWebhookDeliveriesRequest(limit=100), metadata=md
        )
    return list(listed.deliveries)


async def test_killed_before_sending_then_restarted_still_delivers(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    data = tmp_path / "data"
    # No senders: the event is committed to the outbox, and nothing sends it.
    first = ServeProcess(data, IMAGEGEN_WEBHOOK_SENDERS="0", **ENV).start()
    try:
        md = (("x-api-key", first.api_key()),)
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            created = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="outbox", webhook=g.Webhook(url=receiver.url)),
                metadata=md,
            )
            assert (
                await until_terminal(stub, created.id, md)
            ).status == g.GENERATION_STATUS_SUCCESS
        first.kill()
        assert receiver.received == []
        second = ServeProcess(data, port=first.port, **ENV).start()
        try:
            (request,) = await receiver.wait_for(lambda got: len(got) >= 1)
            (delivery,) = await deliveries(second.address, md)
            assert delivery.id == request.headers["webhook-id"]
        finally:
            second.kill()
    finally:
        first.kill()
        await receiver.close()


async def test_killed_mid_attempt_then_restarted_resends_with_the_same_webhook_id(
    tmp_path: Path,
) -> None:
    receiver = await Receiver(answers=[0]).start()  # the first attempt is never answered
    data = tmp_path / "data"
    # An attempt may take 4 s: the kill lands long before it would time out, and the
    # hold (the timeout and HOLD_MARGIN_SECONDS) is no longer than it must be.
    env = {**ENV, "IMAGEGEN_WEBHOOK_TIMEOUT_SECONDS": "4"}
    first = ServeProcess(data, **env).start()
    try:
        md = (("x-api-key", first.api_key()),)
        async with grpc.aio.insecure_channel(first.address) as channel:
            await generation_pb2_grpc.GenerationServiceStub(channel).CreateGeneration(
                g.CreateGenerationRequest(prompt="in flight", webhook=g.Webhook(url=receiver.url)),
                metadata=md,
            )
        await receiver.wait_for(lambda got: len(got) >= 1)
        first.kill()  # between the commit and the delivery's record
        second = ServeProcess(data, port=first.port, **env).start()
        try:
            # Sent again once the dead sender's hold expires (timeout + 5 s = 9 s).
            got = await receiver.wait_for(lambda got: len(got) >= 2, timeout=40)
            assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
            assert got[0].body == got[1].body
            deadline = time.monotonic() + 10
            while True:
                (delivery,) = await deliveries(second.address, md)
                if delivery.status == project_pb2.WEBHOOK_DELIVERY_STATUS_DELIVERED:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            # The killed attempt left no record; the resend is attempt 1.
            assert [a.status_code for a in delivery.attempts] == [200]
        finally:
            second.kill()
    finally:
        first.kill()
        await receiver.close()


async def test_two_replicas_deliver_each_event_once(
    tmp_path: Path, postgres_server: Postgres, s3_server: SeaweedFS
) -> None:
    database_url = await postgres_server.create_database()
    bucket = "hooks-" + uuid.uuid4().hex[:12]
    env = {
        **ENV,
        "IMAGEGEN_DATABASE_URL": database_url,
        "IMAGEGEN_S3_ENDPOINT": s3_server.endpoint,
        "IMAGEGEN_S3_ACCESS_KEY": s3_server.access_key,
        "IMAGEGEN_S3_SECRET_KEY": s3_server.secret_key,
        "IMAGEGEN_S3_BUCKET": bucket,
        "IMAGEGEN_WORKERS": "2",
    }
    receiver = await Receiver().start()
    a = ServeProcess(tmp_path / "a", **env).start()
    b = ServeProcess(tmp_path / "b", **env).start()
    count = 16
    try:
        md = (("x-api-key", a.api_key()),)
        async with (
            grpc.aio.insecure_channel(a.address) as to_a,
            grpc.aio.insecure_channel(b.address) as to_b,
        ):
            stubs = [generation_pb2_grpc.GenerationServiceStub(c) for c in (to_a, to_b)]
            created = await asyncio.gather(
                *(
                    stubs[i % 2].CreateGeneration(
                        g.CreateGenerationRequest(
                            prompt=f"hook {i}",
                            webhook=g.Webhook(url=receiver.url, events=["processing", "completed"]),
                        ),
                        metadata=md,
                    )
                    for i in range(count)
                )
            )
            for generation in created:
                await until_terminal(stubs[0], generation.id, md)
        await receiver.wait_for(
            lambda got: len({r.headers["webhook-id"] for r in got}) >= 2 * count
        )
        for _ in range(100):  # until every delivery is recorded as delivered
            if await states(database_url) == ["delivered"]:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # nothing further arrives
        receipts = Counter(r.headers["webhook-id"] for r in receiver.received)
        types = {r.headers["webhook-id"]: json.loads(r.body)["type"] for r in receiver.received}
        assert sorted(types.values()) == sorted(
            ["generation.processing", "generation.completed"] * count
        )
    finally:
        a.kill()
        b.kill()
        await receiver.close()
    connection = await asyncpg.connect(dsn(database_url))
    try:
        rows = await connection.fetch(
            "SELECT delivery_id, number, status_code, error FROM webhook_attempts "
            "ORDER BY delivery_id, number"
        )
    finally:
        await connection.close()
    remove_bucket(s3_server, bucket)
    assert await states(database_url) == ["delivered"]
    attempts: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        attempts.setdefault(row["delivery_id"], []).append(row)
    assert set(attempts) == set(receipts)
    for delivery_id, tries in attempts.items():
        # One sender at a time: a request reaches the receiver only within a recorded
        # attempt, and a later attempt follows only a failed one (a timeout under load).
        assert receipts[delivery_id] <= len(tries)
        assert [t["error"] is not None for t in tries] == [True] * (len(tries) - 1) + [False]
        assert tries[-1]["status_code"] == 200
    sent_by = [p.log().count('"event": "webhook_attempt"') for p in (a, b)]
    assert sum(sent_by) == len(rows)


def dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg", "postgresql")


async def states(database_url: str) -> list[str]:
    connection = await asyncpg.connect(dsn(database_url))
    try:
        rows = await connection.fetch("SELECT DISTINCT state FROM webhook_deliveries")
    finally:
        await connection.close()
    return sorted(r["state"] for r in rows)
