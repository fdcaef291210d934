"""GETs answered past Starlette's layers (server/gateway/fastgets.py) choose the route Starlette
would and answer the same bytes; a response's header block and body leave in one write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    app_overrides_fixture,
    client_fixture,
    ok,
    until_status,
)
from starlette.routing import Match, Route

from server.app import App
from server.gateway import create_gateway
from server.gateway.fastgets import GatewayApp
from server.gateway.writes import JoiningTransport

GATEWAY = create_gateway("127.0.0.1:1")  # never called: only its routes are looked at
assert isinstance(GATEWAY, GatewayApp) and GATEWAY.fast_gets is not None
FAST = GATEWAY.fast_gets


def starlette_choice(path: str) -> Route | None:
    """The route Starlette's router runs for a GET of ``path`` (None: a 404 or a 405)."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    for route in GATEWAY.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            assert isinstance(route, Route)
            return route
    return None


# Path segments: every literal of the templates, ids, aliases, verbs, and odd text.
LITERALS = sorted(
    {
        part
        for route in GATEWAY.routes
        if isinstance(route, Route)
        for part in route.path_format.replace(":", "/:").split("/")
        if part and "{" not in part
    }
)
SEGMENTS = (
    st.sampled_from(LITERALS)
    | st.sampled_from(
        ["01a22f33-735c-709c-be0f-6f5ec2029bcc", "@hero", "x", "%20", ":cancel", ":watch", ""]
    )
    | st.text(alphabet="abc:@-_.", max_size=6)
)


@settings(max_examples=600, deadline=None)
@given(parts=st.lists(SEGMENTS, min_size=1, max_size=6), slash=st.booleans())
def test_fastgets_choose_the_route_starlette_chooses(parts: list[str], slash: bool) -> None:
    path = "/" + "/".join(parts) + ("/" if slash else "")
    path = path.replace("/:", ":")
    assert_same_choice(path)


# Paths where a route that does not take GET comes first (upload is POST only; a key is
# only deleted) and where a literal route precedes a variable one (resolve before {id}).
TRICKY = [
    "/api/v1/images/upload",
    "/api/v1/admin/keys/k1",
    "/api/v1/images/resolve/@hero",
    "/api/v1/project/webhook-secret:rotate",
    "/api/v1/generations:watch",
    "/api/v1/generations/g1:cancel",
]


@pytest.mark.parametrize(
    "path",
    TRICKY
    + [
        route.path_format.replace("{v0}", "a1").replace("{v1}", "b2")
        for route in GATEWAY.routes
        if isinstance(route, Route)
    ],
)
def test_fastgets_choose_starlettes_route_for_every_template(path: str) -> None:
    assert_same_choice(path)


def assert_same_choice(path: str) -> None:
    chosen = starlette_choice(path)
    found = FAST.resolve(path)
    if chosen is not None and _direct(chosen):
        assert found is not None, f"{path}: {chosen.path} is a unary GET, left to Starlette"
    if found is None:
        # Left to Starlette: nothing matched, or the route is not a unary GET.
        assert chosen is None or not _direct(chosen)
        return
    route, params = found
    assert route is chosen
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    _, child = route.matches(scope)
    assert params == child["path_params"]


def test_every_unary_get_route_is_direct_and_streams_and_content_are_not() -> None:
    direct = {route.path for route in GATEWAY.routes if isinstance(route, Route) and _direct(route)}
    assert "/api/v1/generations/{v0}" in direct and "/api/v1/images" in direct
    # Event streams, image bytes, probes and the CDN keep Starlette's whole stack.
    for path in (
        "/api/v1/generations/{v0}/events",
        "/api/v1/generations:watch",
        "/api/v1/images/{v0}/content",
        "/healthz",
        "/cdn/{project_slug}/img/{image}",
    ):
        assert path not in direct
    assert FAST.resolve("/api/v1/generations/abc/events") is None
    assert FAST.resolve("/api/v1/images/resolve/@hero") is not None


def _direct(route: Route) -> bool:
    return any(r is route and direct for _, r, direct in FAST.entries)


@pytest.fixture(name="twin")
async def twin_fixture(app: App) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two gateways in front of the app's gRPC port, one with the GET shortcut and one
    without, each behind an ASGI client (no network in between: the bytes are the app's)."""
    fast = create_gateway(f"127.0.0.1:{app.grpc_port}")
    slow = create_gateway(f"127.0.0.1:{app.grpc_port}")
    assert isinstance(slow, GatewayApp)
    slow.fast_gets = None
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw")
        for gateway in (fast, slow)
    ]
    try:
        yield clients[0], clients[1]
    finally:
        for client in clients:
            await client.aclose()
        for gateway in (fast, slow):
            await gateway.state.gateway.close()


async def test_direct_gets_answer_what_starlette_answers(
    app: App,
    client: httpx.AsyncClient,
    twin: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    created = ok(await client.post("/api/v1/generations", json={"prompt": "an owl"}), 201)
    await until_status(client, created["id"])
    key = {"X-API-Key": app.dev_api_key or ""}
    requests: list[tuple[str, dict[str, str]]] = [
        (f"/api/v1/generations/{created['id']}", key),
        ("/api/v1/generations/01a22f33-735c-709c-be0f-6f5ec2029bcc", key),  # 404 NOT_FOUND
        ("/api/v1/generations/not-a-uuid", key),  # the API's 400
        (f"/api/v1/generations/{created['id']}", {}),  # 401 API_KEY_MISSING
        (f"/api/v1/generations/{created['id']}", {"X-API-Key": "k\x01"}),  # malformed key
        (f"/api/v1/generations/{created['id']}", {"X-API-Key": "wrong-key"}),  # the API's 401
        ("/api/v1/generations?limit=1&status=success", key),
        ("/api/v1/generations?limit=x", key),  # the gateway's 400, after the key check
        ("/api/v1/generations?nope=1", {"X-API-Key": "wrong-key"}),  # the key's 401 first
        ("/api/v1/images/resolve/@nobody", key),
        ("/api/v1/nowhere", key),  # Starlette's 404, in the envelope
        ("/api/v1/generations/x/cancel", key),  # 405
    ]
    for n, (path, headers) in enumerate(requests):
        sent = {**headers, "X-Request-Id": f"twin-{n}"}
        fast, slow = [await c.get(path, headers=sent) for c in twin]
        assert fast.status_code == slow.status_code, path
        assert fast.content == slow.content, path
        assert fast.headers.multi_items() == slow.headers.multi_items(), path
    # A request without an id gets a fresh one either way, in the header and the body.
    fast, slow = [await c.get("/api/v1/generations/x", headers={}) for c in twin]
    assert fast.status_code == slow.status_code == 401
    assert len(fast.headers["x-request-id"]) == len(slow.headers["x-request-id"]) == 32


async def test_head_and_get_over_http_finish(app: App, client: httpx.AsyncClient) -> None:
    """Through uvicorn: a HEAD's header block has no body to join and still goes out."""
    created = ok(await client.post("/api/v1/generations", json={"prompt": "a fox"}), 201)
    head = await asyncio.wait_for(client.head(f"/api/v1/generations/{created['id']}"), 30)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0
    got = await client.get(f"/api/v1/generations/{created['id']}")
    assert got.status_code == 200 and got.json()["data"]["id"] == created["id"]


class Recording(asyncio.Transport):
    """A real connection's transport that records what is written to it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def close(self) -> None:
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


async def test_joining_transport_sends_a_header_block_with_what_follows() -> None:
    received = bytearray()
    done = asyncio.Event()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read())  # until the other side closes
        done.set()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    recording = Recording(transport)  # type: ignore[arg-type]
    joining = JoiningTransport(recording, loop)
    try:
        # A response: its header block and its body, written in one turn, leave as one.
        joining.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert recording.writes == []
        joining.write(b"{}")
        assert recording.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        # A header block with nothing after it (a HEAD, an event stream) leaves at the end
        # of the turn.
        joining.write(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert recording.writes[-1] == b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"
        # Held bytes are sent before a close.
        joining.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        joining.close()
        await asyncio.wait_for(done.wait(), 30)
    finally:
        server.close()
        await server.wait_closed()
    assert bytes(received) == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
    )
