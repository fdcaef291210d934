"""Public image URLs and signed URLs through the gateway, on both stores, with no API key."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from conftest import make_settings
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    app_overrides_fixture,
    base_url,
    client_fixture,
    ok,
    picture,
)
from seaweed import SeaweedFS, remove_bucket

from server.app import App
from server.gateway import create_gateway, serve_gateway

UPLOAD = "/api/v1/images/upload"


async def upload(client: httpx.AsyncClient, content: bytes, **fields: str) -> dict[str, Any]:
    response = await client.post(
        UPLOAD, files={"file": ("pic.png", content, "image/png")}, data=fields
    )
    data: dict[str, Any] = ok(response, 201)
    return data


async def finished(client: httpx.AsyncClient, generation_id: str, revision: int = 0) -> Any:
    """The generation once it succeeded (past ``revision``), polling for at most a minute."""
    deadline = time.monotonic() + 60
    while True:
        data = ok(await client.get(f"/api/v1/generations/{generation_id}"))
        if data["status"] == "success" and int(data["revision"]) > revision:
            return data
        assert data["status"] != "failed", data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)


@pytest.fixture(name="anonymous")
async def anonymous_fixture(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the gateway with no API key."""
    async with httpx.AsyncClient(base_url=base_url(app), timeout=30) as http:
        yield http


async def test_image_url_is_public_cached_and_revalidated(
    app: App, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    content = picture(size=(40, 30))
    image = await upload(client, content, alias="@hero")
    url = image["url"]
    assert url == f"{base_url(app)}/cdn/default/img/{image['id']}"

    response = await anonymous.get(url)
    assert response.status_code == 200
    assert response.content == content
    headers = response.headers
    assert headers["etag"] == f'"{image["etag"]}"'
    assert headers["cache-control"] == "public, no-cache"
    assert headers["x-image-id"] == image["id"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-type"] == "image/png"
    assert headers["content-length"] == str(len(content))

    again = await anonymous.get(url, headers={"If-None-Match": headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == headers["etag"]
    other_tag = await anonymous.get(url, headers={"If-None-Match": '"something-else"'})
    assert other_tag.status_code == 200 and other_tag.content == content

    head = await anonymous.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(content))
    assert head.headers["etag"] == headers["etag"]

    by_alias = await anonymous.get("/cdn/default/img/@hero")
    assert by_alias.content == content and by_alias.headers["x-image-id"] == image["id"]


async def test_unknown_project_image_or_alias_is_one_indistinguishable_404(
    app: App, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    image = await upload(client, picture())
    admin = await app.tenancy.create_project(slug="elsewhere", name="Elsewhere")
    assert admin.slug == "elsewhere"
    answers = [
        await anonymous.get(f"/cdn/elsewhere/img/{image['id']}"),  # another project's slug
        await anonymous.get(f"/cdn/nobody/img/{image['id']}"),  # no such project
        await anonymous.get("/cdn/default/img/0190aaaa-0000-7000-8000-000000000000"),
        await anonymous.get("/cdn/default/img/@missing"),
        await anonymous.get("/cdn/default/img/not-an-id"),
    ]
    for answer in answers:
        assert answer.status_code == 404
        assert answer.json() == answers[0].json()
        assert "x-image-id" not in answer.headers


async def test_regeneration_serves_new_bytes_and_etag_at_the_same_url(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    created = ok(await client.post("/api/v1/generations", json={"prompt": "a red kite"}), 201)
    first = await finished(client, created["id"])
    url = first["outputImage"]["url"]
    before = await anonymous.get(url)
    assert before.status_code == 200
    assert before.content[:8] == b"\x89PNG\r\n\x1a\n"
    ok(await client.post(f"/api/v1/generations/{created['id']}/regenerate", json={}))
    second = await finished(client, created["id"], int(first["revision"]))
    assert second["outputImage"]["url"] == url
    after = await anonymous.get(url, headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]
    assert after.headers["etag"] == f'"{second["outputImage"]["etag"]}"'
    assert after.content != before.content


async def test_signed_urls_work_until_expiry_and_refuse_tampering(
    app: App, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    content = picture()
    image = await upload(client, content)
    signed = ok(await client.get(f"/api/v1/images/{image['id']}/signed-url", params={"ttl": "60s"}))
    url = signed["url"]
    on_s3 = bool(app.settings.s3_endpoint)
    if on_s3:
        assert "X-Amz-Signature=" in url  # the S3 store presigns the object itself
    else:
        assert url.startswith(f"{base_url(app)}/signed/img/{image['id']}?")
    got = await anonymous.get(url)
    assert got.status_code == 200 and got.content == content
    if not on_s3:
        assert got.headers["x-image-id"] == image["id"]
        assert got.headers["cache-control"] == "private, no-cache"

    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    signature_field = "X-Amz-Signature" if on_s3 else "signature"
    flipped = query[signature_field]
    flipped = ("A" if flipped[0] != "A" else "B") + flipped[1:]
    tampered = parts._replace(query=urlencode({**query, signature_field: flipped})).geturl()
    assert (await anonymous.get(tampered)).status_code == 403
    if on_s3:
        # Expiry is S3's to enforce: a one-second URL, used after that second.
        short = ok(
            await client.get(f"/api/v1/images/{image['id']}/signed-url", params={"ttl": "1s"})
        )
        await asyncio.sleep(2.5)
        assert (await anonymous.get(short["url"])).status_code == 403
        return
    later = str(int(query["expires"]) + 3600)
    extended = parts._replace(query=urlencode({**query, "expires": later})).geturl()
    assert (await anonymous.get(extended)).status_code == 403
    # A URL correctly signed by this server, for an expiry already past.
    past = app.url_signer.url(image["id"], datetime.now(UTC) - timedelta(seconds=1))
    expired = await anonymous.get(f"{base_url(app)}{past}")
    assert expired.status_code == 403
    assert expired.json()["error"]["code"] == "SIGNATURE_INVALID"
    # Expiries no int64 holds, or none the server signs, are the same 403 (never a 500).
    for odd in (str(-(2**63) - 1), str(2**63), "-1", "1e3", ""):
        bent = parts._replace(query=urlencode({**query, "expires": odd})).geturl()
        refused = await anonymous.get(bent)
        assert refused.status_code == 403, (odd, refused.text)
        assert refused.json()["error"]["code"] == "SIGNATURE_INVALID"


async def test_s3_presigned_urls_carry_the_public_endpoint(
    tmp_path: Path, s3_server: SeaweedFS
) -> None:
    # The same S3 server under another name: a URL signed for it must name it.
    port = s3_server.endpoint.rsplit(":", 1)[1]
    public = f"http://localhost:{port}"
    bucket = "t-" + uuid.uuid4().hex[:20]
    app = App(
        make_settings(
            tmp_path / "data",
            http_enabled=True,
            http_port=0,
            s3_endpoint=s3_server.endpoint,
            s3_access_key=s3_server.access_key,
            s3_secret_key=s3_server.secret_key,
            s3_bucket=bucket,
            s3_public_endpoint=public,
        )
    )
    await app.start()
    try:
        assert app.dev_api_key
        async with httpx.AsyncClient(
            base_url=base_url(app), headers={"X-API-Key": app.dev_api_key}, timeout=30
        ) as client:
            content = picture()
            image = await upload(client, content)
            signed = ok(await client.get(f"/api/v1/images/{image['id']}/signed-url"))
        url = signed["url"]
        assert url.startswith(f"{public}/{bucket}/"), url
        assert s3_server.endpoint not in url
        async with httpx.AsyncClient(timeout=30) as anyone:
            got = await anyone.get(url)
        assert got.status_code == 200 and got.content == content
    finally:
        await app.stop()
        remove_bucket(s3_server, bucket)


async def test_signing_secret_and_gateway_token_are_generated_once_and_kept(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data", http_enabled=True, http_port=0)
    first = App(settings)
    await first.start()
    try:
        assert first.dev_api_key
        async with httpx.AsyncClient(
            base_url=base_url(first), headers={"X-API-Key": first.dev_api_key}, timeout=30
        ) as client:
            content = picture()
            image = await upload(client, content)
            signed = ok(await client.get(f"/api/v1/images/{image['id']}/signed-url"))
    finally:
        await first.stop()
    for name in ("url-signing-secret", "gateway-token"):
        kept = tmp_path / "data" / name
        assert kept.stat().st_mode & 0o777 == 0o600
        assert len(kept.read_text().strip()) >= 32
    assert first.gateway_token == (tmp_path / "data" / "gateway-token").read_text().strip()
    second = App(settings)
    await second.start()
    try:
        # The URL signed before the restart names the old port: ask the new one.
        path = urlsplit(signed["url"])
        async with httpx.AsyncClient(base_url=base_url(second), timeout=30) as anyone:
            got = await anyone.get(f"{path.path}?{path.query}")
        assert got.status_code == 200 and got.content == content
        assert second.gateway_token == first.gateway_token
    finally:
        await second.stop()


async def test_a_gateway_without_the_token_answers_502_not_401(
    app: App, client: httpx.AsyncClient
) -> None:
    image = await upload(client, picture())
    path = f"/cdn/default/img/{image['id']}"
    for token, status in (("", 502), ("wrong", 502), (app.gateway_token, 200)):
        gateway = create_gateway(f"127.0.0.1:{app.grpc_port}", gateway_token=token)
        server, _, port = await serve_gateway(gateway, "127.0.0.1", 0, grace_seconds=2)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                answer = await http.get(path)
        finally:
            await server.stop()
        assert answer.status_code == status, (token, answer.text)
        if status == 502:
            assert answer.json()["error"]["code"] == "GATEWAY_TOKEN_REJECTED"
            assert "www-authenticate" not in answer.headers
