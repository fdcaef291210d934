"""Live URLs: one generation per key, hits, per-IP and per-scope limits, disabled scopes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    base_url,
    client_fixture,
    ok,
)

from imagegen_client import AsyncClient
from server.app import App

IP_LIMIT = 3


@pytest.fixture(name="app_overrides")
def app_overrides_fixture() -> dict[str, Any]:
    # A generation slow enough that the concurrent misses all arrive while it runs.
    return {"live_ip_limit_per_hour": IP_LIMIT, "generator_delay_seconds": 0.5}


@pytest.fixture(name="anonymous")
async def anonymous_fixture(app: App) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url(app), timeout=60) as http:
        yield http


def live(scope: str, prompt: str, **params: str) -> tuple[str, dict[str, str]]:
    return f"/cdn/default/live/{scope}", {"prompt": prompt, **params}


async def live_generations(client: httpx.AsyncClient, scope: str) -> list[dict[str, Any]]:
    listed = ok(await client.get("/api/v1/generations", params={"limit": 100}))
    return [g for g in listed if g.get("liveScope") == scope]


async def test_concurrent_misses_share_one_generation_and_hits_make_none(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    path, params = live("banners", "a lighthouse at dusk", aspectRatio="16:9")
    answers = await asyncio.gather(*(anonymous.get(path, params=params) for _ in range(20)))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        # A request the loop dispatched only after the image was done is a hit; whichever
        # it was, all twenty got the same picture from the same single generation.
        assert answer.headers["x-cache-status"] in ("MISS", "HIT")
        assert answer.headers["content-type"] == "image/png"
        assert answer.content == answers[0].content
    assert any(answer.headers["x-cache-status"] == "MISS" for answer in answers)
    made = await live_generations(client, "banners")
    assert len(made) == 1
    assert made[0]["status"] == "success" and made[0]["aspectRatio"] == "16:9"
    assert answers[0].headers["x-image-id"] == made[0]["outputImage"]["id"]

    # Hits: no new generation, and far more of them than the per-IP limit allows misses.
    for _ in range(IP_LIMIT + 2):
        hit = await anonymous.get(path, params=params)
        assert hit.status_code == 200 and hit.headers["x-cache-status"] == "HIT"
        assert hit.content == answers[0].content
    revalidated = await anonymous.get(
        path, params=params, headers={"If-None-Match": answers[0].headers["etag"]}
    )
    assert revalidated.status_code == 304
    assert len(await live_generations(client, "banners")) == 1
    # The enhancement choice is part of the key: another generation.
    other = await anonymous.get(path, params={**params, "autoEnhance": "true"})
    assert other.status_code == 200 and other.headers["x-cache-status"] == "MISS"
    assert len(await live_generations(client, "banners")) == 2
    scope = ok(await client.get("/api/v1/live/scopes/banners"))
    assert scope["currentGenerations"] == 2 and scope["allowNewGenerations"] is True


async def test_per_ip_limit_answers_429_with_retry_after(anonymous: httpx.AsyncClient) -> None:
    path, _ = live("ip", "")
    for n in range(IP_LIMIT):
        answer = await anonymous.get(path, params={"prompt": f"picture {n}"})
        assert answer.status_code == 200, answer.text
    refused = await anonymous.get(path, params={"prompt": "one too many"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "LIVE_IP_LIMIT"
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    # A hit from the same address is still served.
    hit = await anonymous.get(path, params={"prompt": "picture 0"})
    assert hit.status_code == 200 and hit.headers["x-cache-status"] == "HIT"


async def test_scope_cap_and_disabled_scope(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    created = ok(
        await client.post("/api/v1/live/scopes", json={"slug": "capped", "newGenerationsLimit": 1}),
        201,
    )
    assert created["newGenerationsLimit"] == 1 and created["currentGenerations"] == 0
    path, params = live("capped", "first")
    assert (await anonymous.get(path, params=params)).status_code == 200
    full = await anonymous.get(path, params={"prompt": "second"})
    assert full.status_code == 429 and full.json()["error"]["code"] == "LIVE_SCOPE_LIMIT"
    assert int(full.headers["retry-after"]) >= 1

    ok(await client.put("/api/v1/live/scopes/capped", json={"allowNewGenerations": False}))
    ok(await client.put("/api/v1/live/scopes/capped", json={"newGenerationsLimit": 10}))
    hit = await anonymous.get(path, params=params)
    assert hit.status_code == 200 and hit.headers["x-cache-status"] == "HIT"
    refused = await anonymous.get(path, params={"prompt": "second"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "LIVE_SCOPE_DISABLED"


async def test_scope_management_regenerate_and_delete(
    app: App, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    path, params = live("gallery", "a quiet harbour")
    first = await anonymous.get(path, params=params)
    assert first.status_code == 200
    listed = ok(await client.get("/api/v1/live/scopes"))
    assert [s["slug"] for s in listed] == ["gallery"]  # auto-created on first use
    image_id = first.headers["x-image-id"]
    # An ordinary generation of the project: it can be watched like any other.
    (made,) = await live_generations(client, "gallery")
    async with AsyncClient(f"127.0.0.1:{app.grpc_port}", app.dev_api_key) as sdk:
        events = [event async for event in sdk.watch(made["id"])]
    assert events[-1].generation.live_scope == "gallery"
    assert events[-1].generation.output_image.id == image_id
    again = ok(
        await client.post("/api/v1/live/scopes/gallery/regenerate", json={"imageId": image_id})
    )
    assert [g["liveScope"] for g in again] == ["gallery"]
    # The live URL keeps serving (the old bytes until the new ones commit, then the new).
    served = await anonymous.get(path, params=params)
    assert served.status_code == 200 and served.headers["x-image-id"] == image_id
    # A second image; then every image of the scope regenerates.
    second = await anonymous.get(path, params={"prompt": "a loud harbour"})
    assert second.status_code == 200
    everything = ok(await client.post("/api/v1/live/scopes/gallery/regenerate", json={}))
    assert sorted(g["outputImage"]["id"] for g in everything) == sorted(
        [image_id, second.headers["x-image-id"]]
    )
    # Deleting the scope follows DeleteGeneration's rule: an image with a project alias stays.
    ok(await client.put(f"/api/v1/images/{image_id}/alias", json={"alias": "@keeper"}))
    deleted = ok(await client.delete("/api/v1/live/scopes/gallery"))
    assert (deleted["deletedGenerations"], deleted["keptImages"]) == (2, 1)
    assert (await client.get("/api/v1/live/scopes/gallery")).status_code == 404
    assert await live_generations(client, "gallery") == []
    kept = await anonymous.get("/cdn/default/img/@keeper")
    assert kept.status_code == 200 and kept.headers["x-image-id"] == image_id
    gone = await anonymous.get(f"/cdn/default/img/{second.headers['x-image-id']}")
    assert gone.status_code == 404


async def test_unknown_project_and_bad_queries(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/cdn/nobody/live/x", params={"prompt": "p"})).status_code == 404
    missing = await anonymous.get("/cdn/default/live/x")
    assert missing.status_code == 400
    bad = await anonymous.get("/cdn/default/live/x", params={"prompt": "p", "autoEnhance": "maybe"})
    assert bad.status_code == 400
    ratio = await anonymous.get("/cdn/default/live/x", params={"prompt": "p", "aspectRatio": "7:1"})
    assert ratio.status_code == 400


async def test_forwarded_for_is_ignored_from_untrusted_peers(anonymous: httpx.AsyncClient) -> None:
    path, _ = live("spoof", "")
    for n in range(IP_LIMIT):
        spoofed = {"X-Forwarded-For": f"203.0.113.{n}"}
        answer = await anonymous.get(path, params={"prompt": f"p{n}"}, headers=spoofed)
        assert answer.status_code == 200, answer.text
    # Every one counted against the real peer (no trusted proxies are configured).
    refused = await anonymous.get(
        path, params={"prompt": "more"}, headers={"X-Forwarded-For": "198.51.100.7"}
    )
    assert refused.status_code == 429


async def test_a_deleted_image_is_generated_again_under_the_same_generation(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    path, params = live("restore", "an orange door")
    first = await anonymous.get(path, params=params)
    assert first.status_code == 200
    ok(await client.delete(f"/api/v1/images/{first.headers['x-image-id']}"))
    again = await anonymous.get(path, params=params)
    assert again.status_code == 200 and again.headers["x-cache-status"] == "MISS"
    assert again.headers["x-image-id"] != first.headers["x-image-id"]
    made = await live_generations(client, "restore")
    assert len(made) == 1 and made[0]["outputImage"]["id"] == again.headers["x-image-id"]
    hit = await anonymous.get(path, params=params)
    assert hit.headers["x-cache-status"] == "HIT" and hit.content == again.content
