"""Flow and admin routes over REST, with the statuses their errors map to."""

from __future__ import annotations

import uuid

import httpx
from rest import (  # noqa: F401  (fixtures, by function name)
    admin_fixture,
    app_fixture,
    app_overrides_fixture,
    base_url,
    client_fixture,
    failed,
    ok,
    picture,
)

from server.app import App


async def test_flow_routes(client: httpx.AsyncClient) -> None:
    wait = {"Prefer": "wait=20"}
    first = ok(await client.post("/api/v1/generations", json={"prompt": "a"}, headers=wait), 201)
    flow = first["flowId"]
    second = ok(
        await client.post(
            "/api/v1/generations", json={"prompt": "b", "flowId": flow}, headers=wait
        ),
        201,
    )
    uploaded = ok(
        await client.post(
            "/api/v1/images/upload",
            files={"file": ("a.png", picture(), "image/png")},
            data={"flowId": flow},
        ),
        201,
    )

    flows = await client.get("/api/v1/flows?limit=5")
    assert [f["id"] for f in ok(flows)] == [flow]
    assert flows.json()["pagination"]["total"] == 1
    got = ok(await client.get(f"/api/v1/flows/{flow}"))
    assert (got["generationCount"], got["imageCount"]) == (2, 3)

    generations = await client.get(f"/api/v1/flows/{flow}/generations?limit=1")
    assert [g["id"] for g in ok(generations)] == [second["id"]]
    assert generations.json()["pagination"]["hasMore"] is True
    images = ok(await client.get(f"/api/v1/flows/{flow}/images"))
    assert uploaded["id"] in [i["id"] for i in images] and len(images) == 3

    aliases = {"@hero": uploaded["id"], "@first": first["outputImage"]["id"]}
    merged = await client.put(
        f"/api/v1/flows/{flow}/aliases", json={"aliases": {"@hero": aliases["@hero"]}}
    )
    assert ok(merged)["aliases"] == {"@hero": uploaded["id"]}
    reserved = await client.put(f"/api/v1/flows/{flow}/aliases", json={"aliases": aliases})
    failed(reserved, 400, "VALIDATION_ERROR")  # @first is a technical alias
    removed = ok(await client.delete(f"/api/v1/flows/{flow}/aliases/@hero"))
    assert removed["aliases"] == {}

    regenerated = ok(await client.post(f"/api/v1/flows/{flow}/regenerate", headers=wait))
    assert regenerated["id"] == second["id"] and regenerated["status"] == "success"

    deleted = ok(await client.delete(f"/api/v1/flows/{flow}"))
    assert deleted == {"id": flow, "generationsDeleted": 2, "imagesDeleted": 3}
    failed(await client.get(f"/api/v1/flows/{flow}"), 404, "FLOW_NOT_FOUND")


async def test_flow_errors(client: httpx.AsyncClient) -> None:
    failed(await client.get(f"/api/v1/flows/{uuid.uuid4()}"), 404, "FLOW_NOT_FOUND")
    failed(await client.get("/api/v1/flows/not-a-uuid"), 400, "VALIDATION_ERROR")
    empty = ok(
        await client.post(
            "/api/v1/images/upload", files={"file": ("a.png", picture(), "image/png")}
        ),
        201,
    )["flowId"]
    nothing = await client.post(f"/api/v1/flows/{empty}/regenerate")
    error = failed(nothing, 400, "FLOW_HAS_NO_GENERATIONS")
    assert error["status"] == "FAILED_PRECONDITION" and error["details"]["metadata"] == {
        "flow_id": empty
    }
    bad = await client.put(f"/api/v1/flows/{empty}/aliases", json={"aliases": ["@a"]})
    failed(bad, 400, "VALIDATION_ERROR")


async def test_admin_routes(app: App, admin: httpx.AsyncClient) -> None:
    project = ok(
        await admin.post("/api/v1/admin/projects", json={"slug": "acme", "name": "Acme"}), 201
    )
    assert project["slug"] == "acme" and uuid.UUID(project["id"])
    taken = await admin.post("/api/v1/admin/projects", json={"slug": "acme"})
    assert failed(taken, 409, "PROJECT_SLUG_TAKEN")["status"] == "ALREADY_EXISTS"
    projects = await admin.get("/api/v1/admin/projects?limit=1")
    assert len(ok(projects)) == 1 and projects.json()["pagination"]["total"] == 2

    created = ok(
        await admin.post(
            "/api/v1/admin/keys", json={"projectId": project["id"], "name": "ci", "expireDays": 30}
        ),
        201,
    )
    secret, key = created["apiKey"], created["key"]
    assert key["projectId"] == project["id"] and key["admin"] is False and key["expireTime"]
    keys = await admin.get(f"/api/v1/admin/keys?projectId={project['id']}")
    assert [k["id"] for k in ok(keys)] == [key["id"]]
    assert "pagination" not in keys.json() and secret not in keys.text

    async with httpx.AsyncClient(base_url=base_url(app), headers={"X-API-Key": secret}) as acme:
        ok(await acme.get("/api/v1/generations"))
        failed(await acme.get("/api/v1/admin/projects"), 403, "ADMIN_KEY_REQUIRED")
        revoked = ok(await admin.delete(f"/api/v1/admin/keys/{key['id']}"))
        assert revoked["revokeTime"]
        failed(await acme.get("/api/v1/generations"), 401)
    failed(await admin.get("/api/v1/generations"), 403, "PROJECT_KEY_REQUIRED")
    failed(await admin.post("/api/v1/admin/keys", json={"expireDays": "soon"}), 400)
