"""Job control over REST: cancel, timeout and webhook fields in camelCase, the project routes."""

from __future__ import annotations

import httpx
import pytest
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    app_overrides_fixture,
    client_fixture,
    failed,
    ok,
    until_status,
    violated,
)

SLOW_WITH_LOCAL_HOOKS = {
    "generator_delay_seconds": 30.0,
    "workers": 1,
    "webhook_allow_private_addresses": True,
}
HOOK = "http://127.0.0.1:9/hooks"  # nothing listens: attempts fail at once, and stay local


@pytest.mark.parametrize("app_overrides", [SLOW_WITH_LOCAL_HOOKS])
async def test_cancel_route_and_job_fields(client: httpx.AsyncClient) -> None:
    body = {
        "prompt": "a slow kite",
        "timeout": "120s",
        "webhook": {"url": HOOK, "events": ["processing", "completed"]},
    }
    created = ok(await client.post("/api/v1/generations", json=body), 201)
    assert created["timeout"] == "120s"
    assert created["webhookUrl"] == HOOK
    assert created["webhookEvents"] == ["processing", "completed"]
    await until_status(client, created["id"], ("processing",))
    cancelled = ok(await client.post(f"/api/v1/generations/{created['id']}/cancel", json={}))
    assert cancelled["status"] == "cancelled" and cancelled["cancelTime"]
    again = failed(
        await client.post(f"/api/v1/generations/{created['id']}/cancel", json={}),
        400,
        "GENERATION_ALREADY_FINISHED",
    )
    assert again["status"] == "FAILED_PRECONDITION"
    listed = ok(await client.get("/api/v1/generations", params={"status": "cancelled"}))
    assert [g["id"] for g in listed] == [created["id"]]


async def test_bad_timeout_and_webhook_over_rest(client: httpx.AsyncClient) -> None:
    error = failed(
        await client.post(
            "/api/v1/generations",
            json={"prompt": "x", "timeout": "-5s", "webhook": {"url": "gopher://x"}},
        ),
        400,
        "VALIDATION_ERROR",
    )
    assert set(violated(error)) == {"timeout", "webhook.url"}


async def test_project_routes(client: httpx.AsyncClient) -> None:
    project = ok(await client.get("/api/v1/project"))
    assert project["slug"] == "default" and project["id"]
    secret = ok(await client.get("/api/v1/project/webhook-secret"))["secret"]
    assert secret.startswith("whsec_")
    rotated = ok(await client.post("/api/v1/project/webhook-secret:rotate", json={}))["secret"]
    assert rotated != secret
    assert ok(await client.get("/api/v1/project/webhook-secret"))["secret"] == rotated
    assert ok(await client.get("/api/v1/project/webhook-deliveries")) == []
