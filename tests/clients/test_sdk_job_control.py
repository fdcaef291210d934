"""SDK and CLI job control against a real server: cancel, run timeouts, webhooks verified with
verify_webhook in a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import structlog
from conftest import make_settings
from webhook_receiver import Receiver

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import project_pb2, project_pb2_grpc
from imagegen_client import (
    AsyncClient,
    Client,
    FailedPrecondition,
    WebhookVerificationError,
    verify_webhook,
)
from imagegen_client.cli import main
from server.app import App


@pytest.fixture(autouse=True)
def quiet_server_logs() -> Iterator[None]:
    """Keep the in-process server's log lines out of the CLI output that capsys reads."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.__stderr__),
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture
async def slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    """One worker, a 30 s generator, loopback webhooks allowed; the CLI's env points here."""
    app = App(
        make_settings(
            tmp_path / "data",
            workers=1,
            generator_delay_seconds=30.0,
            webhook_allow_private_addresses=True,
        )
    )
    await app.start()
    monkeypatch.setenv("IMAGEGEN_ADDRESS", f"127.0.0.1:{app.grpc_port}")
    monkeypatch.setenv("IMAGEGEN_API_KEY", app.dev_api_key or "")
    try:
        yield app
    finally:
        await app.stop()


async def processing(client: AsyncClient, generation_id: str) -> None:
    deadline = time.monotonic() + 30
    while (await client.get_generation(generation_id)).status != g.GENERATION_STATUS_PROCESSING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_sdk_cancel_and_webhook_verified_with_verify_webhook(slow: App) -> None:
    receiver = await Receiver().start()
    try:
        async with AsyncClient(f"127.0.0.1:{slow.grpc_port}", slow.dev_api_key) as client:
            created = await client.create_generation(
                "a kite", run_timeout=120, webhook_url=receiver.url
            )
            assert created.timeout.ToSeconds() == 120 and created.webhook_url == receiver.url
            await processing(client, created.id)
            cancelled = await client.cancel(created.id)
            assert cancelled.status == g.GENERATION_STATUS_CANCELLED
            with pytest.raises(FailedPrecondition) as caught:
                await client.cancel_generation(created.id)
            assert caught.value.reason == "GENERATION_ALREADY_FINISHED"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{slow.grpc_port}") as channel:
            reply = await project_pb2_grpc.ProjectServiceStub(channel).GetWebhookSecret(
                project_pb2.GetWebhookSecretRequest(),
                metadata=(("x-api-key", slow.dev_api_key or ""),),
            )
        secret = reply.secret
        (request,) = await receiver.wait_for(lambda got: len(got) >= 1)
        payload = verify_webhook(secret, request.headers, request.body)
        assert payload["type"] == "generation.completed"
        assert payload["data"]["status"] == "cancelled"
        with pytest.raises(WebhookVerificationError):
            verify_webhook(secret, request.headers, request.body.replace(b"cancelled", b"success"))
    finally:
        await receiver.close()


async def test_sync_sdk_and_cli_cancel(slow: App, capsys: pytest.CaptureFixture[str]) -> None:
    def scenario() -> str:
        with Client(f"127.0.0.1:{slow.grpc_port}", slow.dev_api_key) as client:
            busy = client.create_generation("busy")
            queued = client.create_generation("queued")
            assert client.cancel(queued.id).status == g.GENERATION_STATUS_CANCELLED
            return busy.id

    busy_id = await asyncio.to_thread(scenario)
    async with AsyncClient(f"127.0.0.1:{slow.grpc_port}", slow.dev_api_key) as client:
        await processing(client, busy_id)
    code = await asyncio.to_thread(main, ["cancel", busy_id, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["status"] == "GENERATION_STATUS_CANCELLED"
    code = await asyncio.to_thread(main, ["cancel", busy_id])
    out, err = capsys.readouterr()
    assert code == 1 and "GENERATION_ALREADY_FINISHED" in err
    # Waiting on a cancelled generation ends at once: exit 4, like FAILED.
    code = await asyncio.to_thread(main, ["wait", busy_id, "--wait-timeout", "10"])
    out, err = capsys.readouterr()
    assert code == 4 and "CANCELLED" in err
