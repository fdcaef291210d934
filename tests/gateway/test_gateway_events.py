"""Watch as Server-Sent Events: every state in order, Last-Event-ID resume after a dropped
connection, heartbeats, errors as HTTP statuses, and the gRPC call cancelled on disconnect."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from conftest import dev_key_metadata
from rest import (  # noqa: F401  (fixtures, by function name)
    Event,
    app_fixture,
    app_overrides_fixture,
    client_fixture,
    events_of,
    failed,
    ok,
    sse,
    standalone_gateway,
    until_status,
)

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.gateway import create_gateway, serve_gateway

SLOW = {"generator_delay_seconds": 0.6}


@pytest.fixture
async def watcher(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway of its own with a 0.2 s heartbeat, in front of the app."""
    assert app.dev_api_key
    async with (
        standalone_gateway(f"127.0.0.1:{app.grpc_port}") as url,
        httpx.AsyncClient(base_url=url, headers={"X-API-Key": app.dev_api_key}) as http,
    ):
        yield http


async def grpc_revisions(app: App, generation_id: str, since: int) -> list[int]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        request = g.WatchGenerationRequest(id=generation_id, since_revision=since)
        metadata = dev_key_metadata(app)
        return [event.revision async for event in stub.WatchGeneration(request, metadata=metadata)]


async def test_watch_streams_every_state_then_ends(app: App, client: httpx.AsyncClient) -> None:
    created = ok(await client.post("/api/v1/generations", json={"prompt": "owl"}), 201)
    async with client.stream("GET", f"/api/v1/generations/{created['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-request-id"]
        events = await events_of(response)  # returns: the stream ends after SUCCESS
    assert events[0].event == "snapshot"
    assert events[-1].data["generation"]["status"] == "success"
    revisions = [int(e.id or 0) for e in events]
    assert revisions == list(range(revisions[0], revisions[0] + len(events)))
    for event in events:
        assert event.data["revision"] == int(event.id or 0)
        assert event.data["type"] == event.event
        assert event.data["generation"]["status"] in ("pending", "processing", "success")


@pytest.mark.parametrize("app_overrides", [SLOW])
async def test_resume_after_a_dropped_connection_gets_exactly_the_rest(
    app: App, client: httpx.AsyncClient
) -> None:
    created = ok(await client.post("/api/v1/generations", json={"prompt": "owl"}), 201)
    url = f"/api/v1/generations/{created['id']}/events"
    async with client.stream("GET", url) as response:
        first = (await events_of(response, count=1))[0]
    # Dropped after one event; the generation goes on meanwhile.
    assert first.data["generation"]["status"] in ("pending", "processing")
    done = await until_status(client, created["id"])
    async with client.stream("GET", url, headers={"Last-Event-ID": first.id or ""}) as response:
        rest_ = await events_of(response)
    resumed = [int(e.id or 0) for e in rest_]
    assert resumed == list(range(int(first.id or 0) + 1, done["revision"] + 1))
    assert resumed == await grpc_revisions(app, created["id"], int(first.id or 0))
    assert all(e.event == "updated" for e in rest_)
    assert rest_[-1].data["generation"]["status"] == "success"
    # The query parameter does the same; the header wins over it (EventSource resends the URL).
    async with client.stream("GET", f"{url}?sinceRevision={done['revision'] - 1}") as response:
        assert [e.id for e in await events_of(response)] == [str(done["revision"])]
    headers = {"Last-Event-ID": str(done["revision"])}
    async with client.stream("GET", f"{url}?sinceRevision=0", headers=headers) as response:
        assert await events_of(response) == []


async def test_project_stream_resumes_by_cursor(app: App, watcher: httpx.AsyncClient) -> None:
    seen: list[Event] = []
    async with watcher.stream("GET", "/api/v1/generations:watch") as response:
        assert response.status_code == 200
        stream = sse(response)
        assert await anext(stream) == "keep-alive"  # open (and quiet) before anything happens
        ids = [
            ok(await watcher.post("/api/v1/generations", json={"prompt": f"fox {i}"}), 201)["id"]
            for i in range(2)
        ]
        async for item in stream:
            if isinstance(item, Event):
                seen.append(item)
                if len(seen) == 2:
                    break
    for generation_id in ids:
        await until_status(watcher, generation_id)
    cursor = seen[-1].id
    async with watcher.stream(
        "GET", "/api/v1/generations:watch", headers={"Last-Event-ID": cursor or ""}
    ) as response:
        finished: set[str] = set()
        async for item in sse(response):
            if isinstance(item, Event):
                seen.append(item)
                if item.data["generation"]["status"] == "success":
                    finished.add(item.data["generation"]["id"])
                if finished == set(ids):
                    break
    cursors = [int(e.id or 0) for e in seen]
    assert cursors == sorted(set(cursors))  # no duplicate, none out of order
    by_generation: defaultdict[str, list[int]] = defaultdict(list)
    for event in seen:
        assert event.data["cursor"] == event.id
        by_generation[event.data["generation"]["id"]].append(event.data["revision"])
    for generation_id in ids:  # every revision, from creation, without a gap
        revisions = by_generation[generation_id]
        assert revisions == list(range(1, len(revisions) + 1)) and len(revisions) >= 3


@pytest.mark.parametrize("app_overrides", [SLOW])
async def test_heartbeats_while_idle_and_filters(app: App, watcher: httpx.AsyncClient) -> None:
    created = ok(await watcher.post("/api/v1/generations", json={"prompt": "slow owl"}), 201)
    comments = 0
    async with watcher.stream("GET", f"/api/v1/generations/{created['id']}/events") as response:
        async for item in sse(response):
            comments += item == "keep-alive"
    # About 0.6 s of work with a 0.2 s heartbeat: keep-alives in between, then the end.
    assert comments >= 2
    # A status filter in its short form, on the project stream.
    async with watcher.stream("GET", "/api/v1/generations:watch?status=failed") as response:
        stream = sse(response)
        assert await anext(stream) == "keep-alive"
        assert await anext(stream) == "keep-alive"


async def test_disconnect_cancels_the_grpc_call(app: App) -> None:
    assert app.dev_api_key
    # An hour-long heartbeat: only the disconnect itself can end the call.
    async with (
        standalone_gateway(f"127.0.0.1:{app.grpc_port}", heartbeat=3600) as url,
        httpx.AsyncClient(base_url=url, headers={"X-API-Key": app.dev_api_key}) as http,
    ):
        assert app.hub.subscriber_count == 0
        async with http.stream("GET", "/api/v1/generations:watch") as response:
            assert response.status_code == 200
            for _ in range(100):
                if app.hub.subscriber_count == 1:
                    break
                await asyncio.sleep(0.02)
            assert app.hub.subscriber_count == 1
        for _ in range(100):
            if app.hub.subscriber_count == 0:
                break
            await asyncio.sleep(0.02)
        assert app.hub.subscriber_count == 0


async def test_stream_errors_keep_their_http_status(client: httpx.AsyncClient) -> None:
    missing = await client.get(f"/api/v1/generations/{uuid.uuid4()}/events")
    failed(missing, 404, "GENERATION_NOT_FOUND")
    gid = ok(await client.post("/api/v1/generations", json={"prompt": "owl"}), 201)["id"]
    bad_id = await client.get(f"/api/v1/generations/{gid}/events", headers={"Last-Event-ID": "x"})
    assert failed(bad_id, 400, "VALIDATION_ERROR")["details"]["fieldViolations"][0]["field"] == (
        "Last-Event-ID"
    )
    negative = await client.get(f"/api/v1/generations/{gid}/events?sinceRevision=-1")
    failed(negative, 400, "VALIDATION_ERROR")
    bad_cursor = await client.get("/api/v1/generations:watch", headers={"Last-Event-ID": "abc"})
    failed(bad_cursor, 400, "INVALID_CURSOR")
    failed(await client.get("/api/v1/generations:watch?status=over"), 400, "VALIDATION_ERROR")
    anonymous = await client.get("/api/v1/generations:watch", headers={"X-API-Key": ""})
    failed(anonymous, 401, "API_KEY_MISSING")


async def test_follow_ends_with_the_deleted_event(client: httpx.AsyncClient) -> None:
    created = ok(
        await client.post(
            "/api/v1/generations", json={"prompt": "owl"}, headers={"Prefer": "wait=20"}
        ),
        201,
    )
    url = f"/api/v1/generations/{created['id']}/events?follow=true"
    async with client.stream("GET", url) as response:
        stream = sse(response)
        snapshot = await anext(stream)
        assert isinstance(snapshot, Event) and snapshot.event == "snapshot"
        ok(await client.delete(f"/api/v1/generations/{created['id']}"))
        rest_ = [item async for item in stream if isinstance(item, Event)]
    assert [e.event for e in rest_] == ["deleted"]


async def test_stopping_the_gateway_ends_open_streams(app: App) -> None:
    assert app.dev_api_key
    server, task, port = await serve_gateway(
        create_gateway(f"127.0.0.1:{app.grpc_port}", heartbeat_seconds=3600), "127.0.0.1", 0
    )
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": app.dev_api_key}
    ) as http:
        async with http.stream("GET", "/api/v1/generations:watch") as response:
            assert response.status_code == 200
            await server.stop()
            assert [item async for item in sse(response)] == []  # ended, cleanly
        assert task.done()
        with pytest.raises(httpx.ConnectError):
            await http.get("/api/v1/generations")
