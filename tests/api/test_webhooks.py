"""Webhooks to a real HTTP receiver on 127.0.0.1: Standard Webhooks signatures, rotation,
retries with one webhook-id, processing events on request, the address guard, the record."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import make_settings
from expect import until_terminal
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from webhook_receiver import Receiver

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc, project_pb2, project_pb2_grpc
from server.app import App
from server.store.models import WebhookAttemptRow, WebhookDeliveryRow

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def app(tmp_path: Path, storage: dict[str, Any]) -> AsyncIterator[App]:
    """An App that may call loopback receivers, retrying fast."""
    started = App(
        make_settings(
            tmp_path / "data",
            **storage,
            webhook_allow_private_addresses=True,
            webhook_first_retry_seconds=0.1,
            webhook_max_retry_seconds=0.2,
            webhook_timeout_seconds=10.0,  # the local receiver answers at once
        )
    )
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
def projects(channel: grpc.aio.Channel) -> project_pb2_grpc.ProjectServiceStub:
    return project_pb2_grpc.ProjectServiceStub(channel)


def hook(url: str, *events: str) -> g.Webhook:
    return g.Webhook(url=url, events=list(events))


async def secret_of(projects: project_pb2_grpc.ProjectServiceStub, md: Metadata) -> str:
    reply = await projects.GetWebhookSecret(project_pb2.GetWebhookSecretRequest(), metadata=md)
    return reply.secret


async def test_completed_webhook_is_signed_with_the_project_secret_and_rotation_changes_it(
    gens: generation_pb2_grpc.GenerationServiceStub,
    projects: project_pb2_grpc.ProjectServiceStub,
    auth: Metadata,
    receiver: Receiver,
) -> None:
    secret = await secret_of(projects, auth)
    assert secret.startswith("whsec_")
    created = await gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="a signed lighthouse", webhook=hook(receiver.url)),
        metadata=auth,
    )
    assert created.webhook_url == receiver.url and list(created.webhook_events) == ["completed"]
    done = await until_terminal(gens, created.id, auth)
    (request,) = await receiver.wait_for(lambda got: len(got) >= 1)
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "generation.completed"
    data = payload["data"]
    assert data["id"] == done.id and data["status"] == "success"
    assert data["outputImage"]["id"] == done.output_image.id
    assert data["webhookUrl"] == receiver.url and "secret" not in json.dumps(data)
    assert request.headers["webhook-signature"].startswith("v1,")

    rotated = await projects.RotateWebhookSecret(
        project_pb2.RotateWebhookSecretRequest(), metadata=auth
    )
    assert rotated.secret != secret and rotated.secret == await secret_of(projects, auth)
    again = await gens.RegenerateGeneration(
        g.RegenerateGenerationRequest(id=done.id), metadata=auth
    )
    assert again.webhook_url == receiver.url  # carried over by regenerate
    await receiver.wait_for(lambda got: len(got) >= 2)
    later = receiver.received[1]
    assert later.headers["webhook-id"] != request.headers["webhook-id"]
    Webhook(rotated.secret).verify(later.body, later.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(later.body, later.headers)


async def test_failed_attempts_are_retried_with_the_same_webhook_id_and_recorded(
    gens: generation_pb2_grpc.GenerationServiceStub,
    projects: project_pb2_grpc.ProjectServiceStub,
    auth: Metadata,
    receiver: Receiver,
) -> None:
    receiver.answers = [500, 500, 200]
    created = await gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="try again", webhook=hook(receiver.url)), metadata=auth
    )
    got = await receiver.wait_for(lambda got: len(got) >= 3)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    secret = await secret_of(projects, auth)
    for request in got:
        Webhook(secret).verify(request.body, request.headers)
    listed = await projects.ListWebhookDeliveries(
        project_pb2.ListWebhookDeliveriesRequest(generation_id=created.id), metadata=auth
    )
    # The delivery is recorded after the receiver answered; wait for the last record.
    for _ in range(100):
        if listed.deliveries[0].status == project_pb2.WEBHOOK_DELIVERY_STATUS_DELIVERED:
            break
        await asyncio.sleep(0.05)
        listed = await projects.ListWebhookDeliveries(
            project_pb2.ListWebhookDeliveriesRequest(generation_id=created.id), metadata=auth
        )
    (delivery,) = listed.deliveries
    assert delivery.id == got[0].headers["webhook-id"]
    assert delivery.status == project_pb2.WEBHOOK_DELIVERY_STATUS_DELIVERED
    assert delivery.event_type == "generation.completed" and delivery.url == receiver.url
    assert [a.status_code for a in delivery.attempts] == [500, 500, 200]
    assert [a.number for a in delivery.attempts] == [1, 2, 3]
    assert [a.error for a in delivery.attempts] == ["HTTP 500", "HTTP 500", ""]
    assert all(a.latency_ms >= 0 and a.HasField("create_time") for a in delivery.attempts)
    assert not delivery.HasField("next_attempt_time")
    await no_more_arrive(receiver, count=3)


async def no_more_arrive(receiver: Receiver, count: int) -> None:
    await asyncio.sleep(0.5)  # a delivered event is not sent again
    assert len(receiver.received) == count


async def test_processing_events_only_when_asked(
    gens: generation_pb2_grpc.GenerationServiceStub, auth: Metadata, receiver: Receiver
) -> None:
    asked = await gens.CreateGeneration(
        g.CreateGenerationRequest(
            prompt="both", webhook=hook(receiver.url, "processing", "completed")
        ),
        metadata=auth,
    )
    await until_terminal(gens, asked.id, auth)
    await receiver.wait_for(lambda got: len(got) >= 2)
    assert receiver.types() == ["generation.processing", "generation.completed"]
    bodies = [json.loads(r.body)["data"] for r in receiver.received]
    assert [b["status"] for b in bodies] == ["processing", "success"]

    default = await gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="only done", webhook=hook(receiver.url)), metadata=auth
    )
    await until_terminal(gens, default.id, auth)
    await receiver.wait_for(lambda got: len(got) >= 3)
    assert receiver.types()[2:] == ["generation.completed"]
    assert json.loads(receiver.received[2].body)["data"]["id"] == default.id
    await no_more_arrive(receiver, count=3)


async def test_a_receiver_that_hangs_does_not_hold_up_other_deliveries(
    gens: generation_pb2_grpc.GenerationServiceStub, auth: Metadata, receiver: Receiver
) -> None:
    hanging = await Receiver(answers=[0]).start()  # takes the request, never answers
    try:
        first = await gens.CreateGeneration(
            g.CreateGenerationRequest(prompt="to the hang", webhook=hook(hanging.url)),
            metadata=auth,
        )
        await until_terminal(gens, first.id, auth)
        held = (await hanging.wait_for(lambda got: len(got) >= 1))[0]
        second = await gens.CreateGeneration(
            g.CreateGenerationRequest(prompt="elsewhere", webhook=hook(receiver.url)),
            metadata=auth,
        )
        await until_terminal(gens, second.id, auth)
        got = (await receiver.wait_for(lambda got: len(got) >= 1))[0]
        assert json.loads(got.body)["data"]["id"] == second.id
        # Sent while the first attempt still waited for its answer (it times out after 10 s;
        # one sender at a time would deliver the second only after that).
        assert got.at - held.at < 9.0
    finally:
        await hanging.close()


async def test_a_cancelled_generation_sends_completed_with_status_cancelled(
    gens: generation_pb2_grpc.GenerationServiceStub, auth: Metadata, receiver: Receiver
) -> None:
    created = await gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="stop", webhook=hook(receiver.url)), metadata=auth
    )
    try:
        await gens.CancelGeneration(g.CancelGenerationRequest(id=created.id), metadata=auth)
    except grpc.aio.AioRpcError as error:  # it may have finished first: then no cancel
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    done = await until_terminal(gens, created.id, auth)
    await receiver.wait_for(lambda got: len(got) >= 1)
    assert json.loads(receiver.received[0].body)["data"]["status"] == (
        "cancelled" if done.status == g.GENERATION_STATUS_CANCELLED else "success"
    )


async def test_redirects_are_not_followed(
    gens: generation_pb2_grpc.GenerationServiceStub,
    projects: project_pb2_grpc.ProjectServiceStub,
    auth: Metadata,
    receiver: Receiver,
) -> None:
    target = await Receiver().start()
    try:
        receiver.answers = [302]
        receiver.extra_headers = {"location": target.url}
        created = await gens.CreateGeneration(
            g.CreateGenerationRequest(prompt="moved", webhook=hook(receiver.url)), metadata=auth
        )
        await receiver.wait_for(lambda got: len(got) >= 2)  # retried at the same URL
        assert {r.headers["webhook-id"] for r in receiver.received[:2]} == {
            receiver.received[0].headers["webhook-id"]
        }
        assert target.received == []
        listed = await projects.ListWebhookDeliveries(
            project_pb2.ListWebhookDeliveriesRequest(generation_id=created.id), metadata=auth
        )
        first = listed.deliveries[0].attempts[0]
        assert first.status_code == 302 and "not followed" in first.error
    finally:
        await target.close()


async def test_an_update_that_runs_again_keeps_the_webhook(
    gens: generation_pb2_grpc.GenerationServiceStub, auth: Metadata, receiver: Receiver
) -> None:
    created = await gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="first words", webhook=hook(receiver.url)), metadata=auth
    )
    await until_terminal(gens, created.id, auth)
    await receiver.wait_for(lambda got: len(got) >= 1)
    updated = await gens.UpdateGeneration(
        g.UpdateGenerationRequest(id=created.id, prompt="second words"), metadata=auth
    )
    assert updated.status == g.GENERATION_STATUS_PENDING and updated.webhook_url == receiver.url
    await until_terminal(gens, created.id, auth)
    await receiver.wait_for(lambda got: len(got) >= 2)
    data = json.loads(receiver.received[1].body)["data"]
    assert data["id"] == created.id and data["status"] == "success"
    assert "second words" in data["prompt"]


async def test_the_pruner_deletes_old_finished_deliveries_and_keeps_owed_ones(
    app: App,
    gens: generation_pb2_grpc.GenerationServiceStub,
    projects: project_pb2_grpc.ProjectServiceStub,
    auth: Metadata,
    receiver: Receiver,
) -> None:
    async def deliveries(generation_id: str) -> list[project_pb2.WebhookDelivery]:
        listed = await projects.ListWebhookDeliveries(
            project_pb2.ListWebhookDeliveriesRequest(generation_id=generation_id), metadata=auth
        )
        return list(listed.deliveries)

    done = await gens.CreateGeneration(
        g.CreateGenerationRequest(prompt="kept a while", webhook=hook(receiver.url)),
        metadata=auth,
    )
    await receiver.wait_for(lambda got: len(got) >= 1)
    for _ in range(200):  # recorded just after the receiver answered
        if (await deliveries(done.id))[0].status == project_pb2.WEBHOOK_DELIVERY_STATUS_DELIVERED:
            break
        await asyncio.sleep(0.05)
    failing = await Receiver(answers=[500] * 100_000).start()  # still owed: retried for a day
    try:
        owed = await gens.CreateGeneration(
            g.CreateGenerationRequest(prompt="still owed", webhook=hook(failing.url)),
            metadata=auth,
        )
        await failing.wait_for(lambda got: len(got) >= 1)

        assert (await app.pruner.prune()).deliveries == 0  # nothing is old yet
        pruned = await app.pruner.prune(now=datetime.now(UTC) + timedelta(days=31))
        assert pruned.deliveries == 1
        assert await deliveries(done.id) == []
        (kept,) = await deliveries(owed.id)
        assert kept.status == project_pb2.WEBHOOK_DELIVERY_STATUS_PENDING
        async with app.db.read() as session:
            orphans = await session.scalar(
                select(func.count())
                .select_from(WebhookAttemptRow)
                .where(WebhookAttemptRow.delivery_id.not_in(select(WebhookDeliveryRow.id)))
            )
        assert orphans == 0
    finally:
        await failing.close()
