"""The webhook address guard: bad or private URLs refused at create time (INVALID_ARGUMENT)
and again at send time, with nothing sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import httpx
import pytest
from expect import expect_error
from webhook_receiver import Receiver

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.webhooks.sender import SendLimits, send, signed_headers

Metadata = tuple[tuple[str, str], ...]


def hook(url: str, *events: str) -> g.Webhook:
    return g.Webhook(url=url, events=list(events))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    try:
        yield started
    finally:
        await started.close()


@pytest.mark.parametrize(
    ("url", "events", "reason", "field"),
    [
        ("ftp://example.com/x", [], "VALIDATION_ERROR", "webhook.url"),
        ("http://user:pw@example.com/x", [], "VALIDATION_ERROR", "webhook.url"),
        ("", [], "VALIDATION_ERROR", "webhook.url"),
        ("https://example.com/x", ["finished"], "VALIDATION_ERROR", "webhook.events[0]"),
        ("http://127.0.0.1:9/x", [], "WEBHOOK_URL_REFUSED", ""),
        ("http://localhost:9/x", [], "WEBHOOK_URL_REFUSED", ""),
        ("http://169.254.169.254/latest/meta-data", [], "WEBHOOK_URL_REFUSED", ""),
        ("http://10.1.2.3/x", [], "WEBHOOK_URL_REFUSED", ""),
        ("http://[::1]:9/x", [], "WEBHOOK_URL_REFUSED", ""),
        ("http://[::ffff:192.168.0.1]/x", [], "WEBHOOK_URL_REFUSED", ""),
        ("https://no-such-host.invalid/x", [], "WEBHOOK_URL_REFUSED", ""),
    ],
)
async def test_bad_or_private_webhook_urls_are_refused_at_create(
    gens: generation_pb2_grpc.GenerationServiceStub,
    auth: Metadata,
    url: str,
    events: list[str],
    reason: str,
    field: str,
) -> None:
    error = await expect_error(
        gens.CreateGeneration(
            g.CreateGenerationRequest(prompt="x", webhook=hook(url, *events)), metadata=auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason,
    )
    assert field in (error.details() or "")


async def test_the_send_time_guard_refuses_a_private_address_and_sends_nothing(
    receiver: Receiver,
) -> None:
    limits = SendLimits(timeout_seconds=2.0, max_response_bytes=1024, allow_private=False)
    headers = signed_headers("whsec_" + "A" * 44, "msg-1", datetime.now(UTC), "{}")
    async with httpx.AsyncClient() as client:
        result = await send(client, receiver.url, headers, "{}", limits)
    assert result.status_code is None and result.error and result.error.startswith("refused")
    assert receiver.received == []
