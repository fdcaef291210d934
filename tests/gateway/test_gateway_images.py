"""Images over REST: multipart and JSON uploads under their size caps, every image route, and
the bytes at the image URL with ETag / If-None-Match revalidation."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    app_overrides_fixture,
    client_fixture,
    failed,
    ok,
    picture,
    violated,
)

from server.app import App

UPLOAD = "/api/v1/images/upload"
MIB = 1024 * 1024


async def upload(client: httpx.AsyncClient, content: bytes, **fields: str) -> dict[str, Any]:
    response = await client.post(
        UPLOAD, files={"file": ("pic.png", content, "image/png")}, data=fields
    )
    data: dict[str, Any] = ok(response, 201)
    return data


async def test_multipart_upload_with_every_field(client: httpx.AsyncClient) -> None:
    flow = str(uuid.uuid4())
    content = picture(size=(64, 48))
    image = await upload(
        client,
        content,
        alias="@logo",
        flowId=flow,
        flowAlias="@ref",
        meta=json.dumps({"by": "test", "n": 1}),
    )
    assert image["source"] == "uploaded"
    assert (image["width"], image["height"], image["fileSize"]) == (64, 48, len(content))
    assert image["mimeType"] == "image/png" and image["alias"] == "@logo"
    assert image["flowId"] == flow and image["meta"] == {"by": "test", "n": 1}
    # snake_case field names work too, and an empty flow_id means no flow.
    plain = await upload(client, picture(), flow_id="")
    assert "flowId" not in plain
    # The JSON form: the bytes in base64, camelCase fields, and the idempotency header.
    body = {
        "content": base64.b64encode(content).decode(),
        "alias": "@json",
        "mimeType": "image/png",
    }
    key = {"Idempotency-Key": "upload-1"}
    first = ok(await client.post(UPLOAD, json=body, headers=key), 201)
    assert ok(await client.post(UPLOAD, json=body, headers=key), 201)["id"] == first["id"]
    assert first["alias"] == "@json" and first["fileSize"] == len(content)


async def test_upload_limits(client: httpx.AsyncClient) -> None:
    over = b"\0" * (5 * MIB + 1)
    response = await client.post(UPLOAD, files={"file": ("big.png", over, "image/png")})
    failed(response, 413, "PAYLOAD_TOO_LARGE")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n"
        for _ in range(7):
            yield b"\0" * MIB

    response = await client.post(
        UPLOAD, content=chunked(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    failed(response, 413, "PAYLOAD_TOO_LARGE")
    big_field = await client.post(
        UPLOAD, files={"file": ("a.png", picture(), "image/png")}, data={"meta": "x" * 70_000}
    )
    failed(big_field, 413, "PAYLOAD_TOO_LARGE")
    # Exactly 5 MiB passes the gateway; the API then judges the bytes (not a picture).
    at_limit = b"\0" * (5 * MIB)
    response = await client.post(UPLOAD, files={"file": ("a.png", at_limit, "image/png")})
    assert failed(response, 400)["status"] == "INVALID_ARGUMENT"
    # The JSON form caps its (base64) body too.
    huge = {"content": base64.b64encode(b"\0" * (7 * MIB)).decode()}
    failed(await client.post(UPLOAD, json=huge), 413, "PAYLOAD_TOO_LARGE")


async def test_malformed_uploads_are_400(client: httpx.AsyncClient) -> None:
    png = ("a.png", picture(), "image/png")
    no_file = await client.post(UPLOAD, data={"alias": "@x"}, files={"other": png})
    assert violated(failed(no_file, 400, "VALIDATION_ERROR")) == ["file"]
    missing = await client.post(
        UPLOAD,
        content=b"--b\r\nContent-Disposition: form-data; name=alias\r\n\r\n@x\r\n--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert violated(failed(missing, 400, "VALIDATION_ERROR")) == ["file"]
    two = await client.post(UPLOAD, files=[("file", png), ("file", png)])
    assert violated(failed(two, 400, "VALIDATION_ERROR")) == ["file"]
    unknown = await client.post(UPLOAD, files={"file": png}, data={"colour": "red"})
    assert violated(failed(unknown, 400, "VALIDATION_ERROR")) == ["colour"]
    bad_meta = await client.post(UPLOAD, files={"file": png}, data={"meta": "{nope"})
    assert violated(failed(bad_meta, 400, "VALIDATION_ERROR")) == ["meta"]
    list_meta = await client.post(UPLOAD, files={"file": png}, data={"meta": "[1]"})
    assert violated(failed(list_meta, 400, "VALIDATION_ERROR")) == ["meta"]
    no_boundary = await client.post(
        UPLOAD, content=b"x", headers={"Content-Type": "multipart/form-data"}
    )
    failed(no_boundary, 400, "MALFORMED_MULTIPART")
    garbage = await client.post(
        UPLOAD,
        content=b"--b\r\nno headers here\r\n\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    failed(garbage, 400, "MALFORMED_MULTIPART")
    bad_base64 = await client.post(UPLOAD, json={"content": "not base64!"})
    assert violated(failed(bad_base64, 400, "VALIDATION_ERROR")) == ["content"]
    gif = await client.post(UPLOAD, files={"file": ("a.gif", picture("GIF"), "image/gif")})
    failed(gif, 400, "UNSUPPORTED_IMAGE")
    # Multipart where the route takes JSON.
    wrong_route = await client.post("/api/v1/generations", files={"file": png})
    failed(wrong_route, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_image_routes(client: httpx.AsyncClient) -> None:
    flow = str(uuid.uuid4())
    image = await upload(client, picture(), alias="@hero", flowId=flow, flowAlias="@bg")
    iid = image["id"]
    assert ok(await client.get(f"/api/v1/images/{iid}"))["id"] == iid
    assert ok(await client.get("/api/v1/images/@hero"))["id"] == iid
    assert ok(await client.get(f"/api/v1/images/@bg?flowId={flow}"))["id"] == iid

    listed = await client.get("/api/v1/images?source=uploaded&limit=5")
    assert [i["id"] for i in ok(listed)] == [iid]
    assert listed.json()["pagination"]["total"] == 1
    assert ok(await client.get("/api/v1/images?source=generated")) == []
    failed(await client.get("/api/v1/images?source=drawn"), 400, "VALIDATION_ERROR")

    resolved = ok(await client.get("/api/v1/images/resolve/@hero"))
    assert resolved["scope"] == "project" and resolved["image"]["id"] == iid
    by_flow = ok(await client.get(f"/api/v1/images/resolve/@bg?flowId={flow}"))
    assert by_flow["scope"] == "flow"
    technical = ok(await client.get(f"/api/v1/images/resolve/@upload?flowId={flow}"))
    assert technical["scope"] == "technical" and technical["image"]["id"] == iid
    failed(await client.get("/api/v1/images/resolve/@nobody"), 404)

    updated = ok(
        await client.put(
            f"/api/v1/images/{iid}", json={"focalPoint": {"x": 0.25, "y": 0.75}, "meta": {"a": 1}}
        )
    )
    assert updated["focalPoint"] == {"x": 0.25, "y": 0.75} and updated["meta"] == {"a": 1}
    bad = await client.put(f"/api/v1/images/{iid}", json={"focalPoint": {"x": "left"}})
    assert violated(failed(bad, 400, "VALIDATION_ERROR")) == ["focalPoint.x"]

    renamed = ok(await client.put(f"/api/v1/images/{iid}/alias", json={"alias": "@star"}))
    assert renamed["alias"] == "@star"
    other = await upload(client, picture())
    taken = await client.put(f"/api/v1/images/{other['id']}/alias", json={"alias": "@star"})
    assert failed(taken, 409)["status"] == "ALREADY_EXISTS"
    moved = await client.put(
        f"/api/v1/images/{other['id']}/alias", json={"alias": "@star", "reassign": True}
    )
    assert ok(moved)["alias"] == "@star"
    cleared = ok(await client.put(f"/api/v1/images/{other['id']}/alias", json={"alias": ""}))
    assert cleared["alias"] == ""

    assert ok(await client.delete(f"/api/v1/images/{iid}")) == {"id": iid}
    failed(await client.get(f"/api/v1/images/{iid}"), 404, "IMAGE_NOT_FOUND")
    failed(await client.get(f"/api/v1/images/{iid}/content"), 404, "IMAGE_NOT_FOUND")


async def test_content_with_etag_revalidation(app: App, client: httpx.AsyncClient) -> None:
    content = picture()
    image = await upload(client, content, alias="@pic")
    # The public URL (tests/gateway/test_delivery_images.py); here the key-protected route.
    assert image["url"] == f"http://127.0.0.1:{app.http_port}/cdn/default/img/{image['id']}"
    url = f"/api/v1/images/{image['id']}/content"
    response = await client.get(url)
    assert response.status_code == 200 and response.content == content
    etag = response.headers["etag"]
    assert etag == f'"{image["etag"]}"'
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(content))
    assert response.headers["cache-control"] == "private, no-cache"
    for validator in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get(url, headers={"If-None-Match": validator})
        assert again.status_code == 304 and again.content == b"", validator
        assert again.headers["etag"] == etag
    changed = await client.get(url, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200 and changed.content == content
    by_alias = await client.get("/api/v1/images/@pic/content")
    assert by_alias.content == content and by_alias.headers["etag"] == etag
    head = await client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(content)) and head.headers["etag"] == etag
    failed(await client.get(url, headers={"X-API-Key": ""}), 401, "API_KEY_MISSING")
    failed(await client.get(f"{url}?size=big"), 400, "VALIDATION_ERROR")


async def test_regenerated_content_keeps_its_url_and_changes_its_etag(
    client: httpx.AsyncClient,
) -> None:
    wait = {"Prefer": "wait=20"}
    created = ok(await client.post("/api/v1/generations", json={"prompt": "a"}, headers=wait), 201)
    url = created["outputImage"]["url"]
    before = await client.get(url)
    assert before.status_code == 200 and before.content[:8] == b"\x89PNG\r\n\x1a\n"
    updated = ok(
        await client.put(f"/api/v1/generations/{created['id']}", json={"prompt": "b"}, headers=wait)
    )
    assert updated["outputImage"]["url"] == url
    after = await client.get(url, headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200 and after.content != before.content
    assert after.headers["etag"] != before.headers["etag"]
    assert after.headers["etag"] == f'"{updated["outputImage"]["etag"]}"'


async def test_signed_url(backend: str, client: httpx.AsyncClient) -> None:
    content = picture()
    image = await upload(client, content)
    response = await client.get(f"/api/v1/images/{image['id']}/signed-url?ttl=60s")
    # Every store signs: S3 presigns the object, the local store signs a gateway URL.
    signed = ok(response)
    assert signed["url"].startswith("http") and signed["expireTime"].endswith("Z")
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(signed["url"])).content == content
    bad_ttl = await client.get(f"/api/v1/images/{image['id']}/signed-url?ttl=soon")
    failed(bad_ttl, 400, "VALIDATION_ERROR")
