"""Live URLs under other settings: trusted proxies, the bounded wait, failures, no auto-create."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from conftest import make_settings
from rest import base_url, ok

from server.app import App


@asynccontextmanager
async def serving(
    tmp_path: Path, storage: dict[str, Any], **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """An App on the test's backend with ``overrides``: (keyed client, anonymous client)."""
    app = App(
        make_settings(tmp_path / "data", http_enabled=True, http_port=0, **storage, **overrides)
    )
    await app.start()
    try:
        assert app.dev_api_key
        async with (
            httpx.AsyncClient(
                base_url=base_url(app), headers={"X-API-Key": app.dev_api_key}, timeout=60
            ) as keyed,
            httpx.AsyncClient(base_url=base_url(app), timeout=60) as anonymous,
        ):
            yield keyed, anonymous
    finally:
        await app.stop()


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    async with serving(
        tmp_path, storage, trusted_proxies="10.0.0.0/8, 127.0.0.1", live_ip_limit_per_hour=1
    ) as (_, anonymous):
        path = "/cdn/default/live/proxied"

        async def get(prompt: str, chain: str) -> httpx.Response:
            return await anonymous.get(
                path, params={"prompt": prompt}, headers={"X-Forwarded-For": chain}
            )

        assert (await get("one", "203.0.113.5")).status_code == 200
        refused = await get("two", "203.0.113.5")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 3000
        # Another client behind the same proxies has its own budget; a hop that a
        # trusted proxy (10.1.2.3) appended is skipped, the untrusted one before it counts.
        assert (await get("three", "203.0.113.6, 10.1.2.3")).status_code == 200
        assert (await get("four", "203.0.113.6")).status_code == 429


async def test_a_miss_that_outlasts_the_wait_answers_503_then_the_image(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    async with serving(tmp_path, storage, live_wait_seconds=0.3, generator_delay_seconds=2.0) as (
        _,
        anonymous,
    ):
        path, params = "/cdn/default/live/slow", {"prompt": "a slow sunrise"}
        pending = await anonymous.get(path, params=params)
        assert pending.status_code == 503
        assert pending.json()["error"]["code"] == "LIVE_GENERATION_PENDING"
        assert pending.headers["retry-after"] == "5"
        assert pending.headers["cache-control"] == "no-store"
        deadline = time.monotonic() + 60
        while True:
            answer = await anonymous.get(path, params=params)
            if answer.status_code == 200:
                break
            assert answer.status_code == 503 and time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert answer.headers["content-type"] == "image/png" and answer.content


async def test_a_failed_generation_answers_503_and_is_run_again_by_the_next_miss(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    async with serving(tmp_path, storage, generator_fail_mode="always", max_attempts=1) as (
        keyed,
        anonymous,
    ):
        path, params = "/cdn/default/live/failing", {"prompt": "never works"}
        failed = await anonymous.get(path, params=params)
        assert failed.status_code == 503
        assert failed.json()["error"]["code"] == "LIVE_GENERATION_FAILED"
        first = ok(await keyed.get("/api/v1/generations"))
        assert [g["status"] for g in first] == ["failed"] and first[0]["liveScope"] == "failing"
        again = await anonymous.get(path, params=params)
        assert again.status_code == 503
        second = ok(await keyed.get("/api/v1/generations"))
        assert len(second) == 1 and int(second[0]["attempt"]) > int(first[0]["attempt"])


async def test_a_cancelled_live_generation_is_run_again_by_the_next_miss(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    async with serving(tmp_path, storage, live_wait_seconds=0.3, generator_delay_seconds=5.0) as (
        keyed,
        anonymous,
    ):
        path, params = "/cdn/default/live/stopped", {"prompt": "stopped halfway"}
        pending = await anonymous.get(path, params=params)
        assert pending.json()["error"]["code"] == "LIVE_GENERATION_PENDING"
        (generation,) = ok(await keyed.get("/api/v1/generations"))
        cancelled = ok(await keyed.post(f"/api/v1/generations/{generation['id']}/cancel", json={}))
        assert cancelled["status"] == "cancelled"
        again = await anonymous.get(path, params=params)
        assert again.json()["error"]["code"] == "LIVE_GENERATION_PENDING"
        (rerun,) = ok(await keyed.get("/api/v1/generations"))
        assert rerun["id"] == generation["id"] and rerun["status"] in ("pending", "processing")


async def test_scopes_are_not_created_on_first_use_when_turned_off(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    async with serving(tmp_path, storage, live_auto_create_scopes=False) as (keyed, anonymous):
        path, params = "/cdn/default/live/planned", {"prompt": "a plan"}
        unknown = await anonymous.get(path, params=params)
        assert unknown.status_code == 404
        assert unknown.json() == (await anonymous.get("/cdn/nobody/img/@x")).json()
        ok(await keyed.post("/api/v1/live/scopes", json={"slug": "planned"}), 201)
        made = await anonymous.get(path, params=params)
        assert made.status_code == 200 and made.headers["x-cache-status"] == "MISS"
