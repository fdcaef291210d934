"""Generations over REST (spec §6.3): the seed's examples, every route, Prefer: wait,
Idempotency-Key, and every way a request can be malformed."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    app_overrides_fixture,
    base_url,
    client_fixture,
    failed,
    ok,
    until_status,
    violated,
)

from server.app import App

SEED = {"prompt": "a serene mountain landscape at sunset", "aspectRatio": "16:9"}


async def test_seed_create_example_answers_201_pending(app: App, client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/generations", json=SEED)
    data = ok(response, 201)
    assert data["status"] == "pending"
    assert data["aspectRatio"] == "16:9"
    assert data["autoEnhance"] is True
    assert data["revision"] == 1 and isinstance(data["revision"], int)  # a number, not "1"
    assert uuid.UUID(data["id"]) and uuid.UUID(data["flowId"])  # a flow was minted
    assert response.headers["x-request-id"]
    done = await until_status(client, data["id"])
    # The image URL is the gateway's own, on the port it really bound.
    assert done["outputImage"]["url"].startswith(base_url(app) + "/cdn/default/img/")
    assert done["outputImage"]["source"] == "generated"
    assert done["originalPrompt"] == SEED["prompt"]


async def test_seed_list_example_filters_by_lowercase_status(client: httpx.AsyncClient) -> None:
    first = ok(await client.post("/api/v1/generations", json=SEED), 201)
    await until_status(client, first["id"])
    second = ok(await client.post("/api/v1/generations", json={"prompt": "an owl"}), 201)
    await until_status(client, second["id"])
    failed(await client.post("/api/v1/generations", json={"prompt": "a fox", "flowId": "x"}), 400)
    response = await client.get("/api/v1/generations?limit=10&status=success")
    body = response.json()
    assert response.status_code == 200 and body["success"] is True
    assert body["data"] and all(g["status"] == "success" for g in body["data"])
    assert first["id"] in [g["id"] for g in body["data"]]
    assert body["pagination"] == {
        "total": len(body["data"]),
        "limit": 10,
        "offset": 0,
        "hasMore": False,
        "nextPageToken": "",
    }
    # Full enum names and numbers mean the same filter.
    for spelling in ("SUCCESS", "GENERATION_STATUS_SUCCESS", "3"):
        again = ok(await client.get(f"/api/v1/generations?status={spelling}"))
        assert [g["id"] for g in again] == [g["id"] for g in body["data"]]


async def test_list_pages_by_offset_and_by_token(client: httpx.AsyncClient) -> None:
    created = [
        ok(await client.post("/api/v1/generations", json={"prompt": f"cat {i}"}), 201)["id"]
        for i in range(3)
    ]
    newest_first = list(reversed(created))
    page = (await client.get("/api/v1/generations", params={"limit": 2})).json()
    assert [g["id"] for g in page["data"]] == newest_first[:2]
    assert page["pagination"]["hasMore"] is True and page["pagination"]["total"] == 3
    token = page["pagination"]["nextPageToken"]
    assert token
    rest_page = (await client.get("/api/v1/generations", params={"pageToken": token})).json()
    assert [g["id"] for g in rest_page["data"]] == newest_first[2:]
    by_offset = (await client.get("/api/v1/generations?limit=2&offset=2")).json()
    assert [g["id"] for g in by_offset["data"]] == newest_first[2:]
    assert by_offset["pagination"]["offset"] == 2
    flow = ok(await client.get(f"/api/v1/generations/{created[0]}"))["flowId"]
    only = ok(await client.get("/api/v1/generations", params={"flowId": flow}))
    assert [g["id"] for g in only] == [created[0]]


async def test_get_update_regenerate_delete(client: httpx.AsyncClient) -> None:
    wait = {"Prefer": "wait=20"}
    created = ok(await client.post("/api/v1/generations", json=SEED, headers=wait), 201)
    assert created["status"] == "success"
    gid, image = created["id"], created["outputImage"]
    assert ok(await client.get(f"/api/v1/generations/{gid}")) == created

    meta_only = ok(await client.put(f"/api/v1/generations/{gid}", json={"meta": {"k": ["v", 1]}}))
    assert meta_only["meta"] == {"k": ["v", 1]} and meta_only["status"] == "success"

    changed = ok(
        await client.put(f"/api/v1/generations/{gid}", json={"prompt": "a lake"}, headers=wait)
    )
    assert changed["status"] == "success"
    assert changed["outputImage"]["id"] == image["id"]
    assert changed["outputImage"]["url"] == image["url"]
    assert changed["outputImage"]["etag"] != image["etag"]

    regenerated = ok(await client.post(f"/api/v1/generations/{gid}/regenerate"))
    assert regenerated["status"] == "pending"
    await until_status(client, gid)

    detached = ok(await client.put(f"/api/v1/generations/{gid}", json={"flowId": None}))
    assert "flowId" not in detached  # null detaches, like ""

    deleted = ok(await client.delete(f"/api/v1/generations/{gid}"))
    assert deleted == {"id": gid, "imageDeleted": True}
    failed(await client.get(f"/api/v1/generations/{gid}"), 404, "GENERATION_NOT_FOUND")
    failed(await client.delete(f"/api/v1/generations/{gid}"), 404, "GENERATION_NOT_FOUND")


async def test_flow_id_omitted_null_or_empty(client: httpx.AsyncClient) -> None:
    minted = ok(await client.post("/api/v1/generations", json={"prompt": "a"}), 201)
    assert "flowId" in minted
    for no_flow in (None, ""):
        body = {"prompt": "b", "flowId": no_flow}
        assert "flowId" not in ok(await client.post("/api/v1/generations", json=body), 201)


@pytest.mark.parametrize("app_overrides", [{"generator_delay_seconds": 1.2}])
async def test_prefer_wait_holds_until_done_or_n_seconds(client: httpx.AsyncClient) -> None:
    no_wait = await client.post("/api/v1/generations", json=SEED, headers={"Prefer": "wait=x"})
    assert ok(no_wait, 201)["status"] == "pending"
    assert "preference-applied" not in no_wait.headers
    gid = ok(no_wait, 201)["id"]

    started = time.monotonic()
    response = await client.post("/api/v1/generations", json=SEED, headers={"Prefer": "wait=1"})
    held = time.monotonic() - started
    assert ok(response, 201)["status"] in ("pending", "processing")
    assert response.headers["preference-applied"] == "wait=1"
    assert 0.9 <= held < 3

    response = await client.post(
        "/api/v1/generations", json=SEED, headers={"Prefer": "return=minimal, wait=999"}
    )
    assert ok(response, 201)["status"] == "success"
    assert response.headers["preference-applied"] == "wait=60"  # capped

    # Reads do not wait; regenerate does.
    read = await client.get(f"/api/v1/generations/{gid}", headers={"Prefer": "wait=5"})
    assert "preference-applied" not in read.headers
    await until_status(client, gid)
    again = await client.post(f"/api/v1/generations/{gid}/regenerate", headers={"Prefer": "wait=9"})
    assert ok(again)["status"] == "success" and again.headers["preference-applied"] == "wait=9"


async def test_idempotency_key_returns_the_first_result(client: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = ok(await client.post("/api/v1/generations", json=SEED, headers=key), 201)
    retry = ok(await client.post("/api/v1/generations", json=SEED, headers=key), 201)
    assert retry["id"] == first["id"]
    listed = (await client.get("/api/v1/generations")).json()
    assert listed["pagination"]["total"] == 1

    other = await client.post("/api/v1/generations", json={"prompt": "other"}, headers=key)
    error = failed(other, 400, "REQUEST_ID_REUSED")
    assert error["status"] == "FAILED_PRECONDITION"

    clash = await client.post(
        "/api/v1/generations", json={**SEED, "requestId": "order-43"}, headers=key
    )
    assert violated(failed(clash, 400, "VALIDATION_ERROR")) == ["requestId"]
    # The body field alone works the same as the header.
    body_key = {**SEED, "requestId": "order-44"}
    one = ok(await client.post("/api/v1/generations", json=body_key), 201)
    assert ok(await client.post("/api/v1/generations", json=body_key), 201)["id"] == one["id"]


async def test_malformed_bodies_are_400_never_500(client: httpx.AsyncClient) -> None:
    post = "/api/v1/generations"
    json_type = {"Content-Type": "application/json"}
    failed(
        await client.post(post, content=b'{"prompt": ', headers=json_type), 400, "MALFORMED_JSON"
    )
    failed(await client.post(post, content=b"\xff\xfe", headers=json_type), 400, "MALFORMED_JSON")
    failed(await client.post(post, json=["a list"]), 400, "MALFORMED_JSON")
    failed(await client.post(post, json="a string"), 400, "MALFORMED_JSON")

    wrong = {
        "prompt": 3,
        "aspectRatio": ["16:9"],
        "autoEnhance": "yes",
        "referenceImages": "@a",
        "meta": [1],
        "flowAlias": {"x": 1},
        "colour": "red",
    }
    error = failed(await client.post(post, json=wrong), 400, "VALIDATION_ERROR")
    assert sorted(violated(error)) == sorted(wrong)
    assert "colour: unknown field" in error["message"]

    # Checked by the API itself: the same envelope, with the API's reason and field names.
    error = failed(await client.post(post, json={"prompt": "  ", "aspectRatio": "4:3"}), 400)
    assert error["code"] == "VALIDATION_ERROR" and error["status"] == "INVALID_ARGUMENT"
    assert sorted(violated(error)) == ["aspectRatio", "prompt"]  # camelCase, as sent

    failed(
        await client.post(post, content=b"prompt=x", headers={"Content-Type": "text/plain"}), 415
    )
    failed(await client.post(post + "?prompt=x", json=SEED), 400, "VALIDATION_ERROR")
    huge = {"prompt": "x", "meta": {"blob": "y" * (1024 * 1024)}}
    failed(await client.post(post, json=huge), 413, "PAYLOAD_TOO_LARGE")

    gid = ok(await client.post(post, json=SEED), 201)["id"]
    mismatch = await client.put(f"/api/v1/generations/{gid}", json={"id": str(uuid.uuid4())})
    assert violated(failed(mismatch, 400, "VALIDATION_ERROR")) == ["id"]
    same = await client.put(f"/api/v1/generations/{gid}", json={"id": gid, "meta": {"a": 1}})
    assert ok(same)["meta"] == {"a": 1}


async def test_malformed_queries_are_400(client: httpx.AsyncClient) -> None:
    cases = {
        "limit=abc": "limit",
        "limit=99999999999": "limit",
        "status=done": "status",
        "colour=red": "colour",
        "limit=1&limit=2": "limit",
        "outputImage.id=x": "outputImage.id",
    }
    for query, field in cases.items():
        error = failed(await client.get(f"/api/v1/generations?{query}"), 400, "VALIDATION_ERROR")
        assert violated(error) == [field], (query, error)
    error = failed(await client.get("/api/v1/generations?status=done"), 400)
    assert "pending, processing, success, failed" in error["message"]
    # Out of the API's range: its own error, mapped to 400.
    error = failed(await client.get("/api/v1/generations?limit=101"), 400, "VALIDATION_ERROR")
    assert violated(error) == ["limit"] and error["status"] == "INVALID_ARGUMENT"
    failed(await client.get(f"/api/v1/generations/{uuid.uuid4()}?id=x"), 400, "VALIDATION_ERROR")


async def test_unknown_routes_and_methods_answer_in_the_envelope(
    client: httpx.AsyncClient,
) -> None:
    failed(await client.get("/api/v1/nothing"), 404, "ROUTE_NOT_FOUND")
    response = await client.patch("/api/v1/generations")
    failed(response, 405, "METHOD_NOT_ALLOWED")
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}
    # Templates that differ only in variable names share a route: every verb is allowed.
    response = await client.post(f"/api/v1/images/{uuid.uuid4()}")
    assert set(response.headers["allow"].split(", ")) >= {"GET", "PUT", "DELETE"}


async def test_request_id_is_passed_through_and_returned(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/generations", headers={"X-Request-Id": "trace-7"})
    assert response.headers["x-request-id"] == "trace-7"
    missing = await client.get(
        f"/api/v1/generations/{uuid.uuid4()}", headers={"X-Request-Id": "t8"}
    )
    assert missing.headers["x-request-id"] == "t8"
    gateway_made = await client.get("/api/v1/generations?limit=x", headers={"X-Request-Id": "t9"})
    assert gateway_made.headers["x-request-id"] == "t9"
    generated = await client.get("/api/v1/generations")
    assert len(generated.headers["x-request-id"]) == 32


async def test_concurrent_requests_share_the_channel(client: httpx.AsyncClient) -> None:
    created = await asyncio.gather(
        *(client.post("/api/v1/generations", json={"prompt": f"bird {i}"}) for i in range(20))
    )
    ids = {ok(response, 201)["id"] for response in created}
    assert len(ids) == 20
    listed = (await client.get("/api/v1/generations?limit=100")).json()
    assert listed["pagination"]["total"] == 20


async def test_model_seed_negative_prompt_and_format_over_rest(client: httpx.AsyncClient) -> None:
    body = {
        "prompt": "a kite",
        "model": "local",
        "seed": 2024,
        "negativePrompt": "rain",
        "outputFormat": "webp",
    }
    data = ok(await client.post("/api/v1/generations", json=body), 201)
    assert (data["model"], data["seed"], data["negativePrompt"]) == ("local", 2024, "rain")
    done = await until_status(client, data["id"])
    assert done["outputFormat"] == "webp" and done["outputImage"]["mimeType"] == "image/webp"
    assert done["enhancedBy"] == "template"

    # FAILED_PRECONDITION is 400 in the standard gRPC-to-HTTP mapping; the code tells it apart.
    unavailable = {"prompt": "a kite", "model": "openai"}
    error = failed(await client.post("/api/v1/generations", json=unavailable), 400)
    assert (error["code"], error["status"]) == ("MODEL_UNAVAILABLE", "FAILED_PRECONDITION")
    assert "openai/gpt-image-1" in error["message"]
    bad = {"prompt": "a kite", "model": "dalle/3", "outputFormat": "bmp", "seed": -1}
    error = failed(await client.post("/api/v1/generations", json=bad), 400)
    assert set(violated(error)) == {"model", "outputFormat", "seed"}
