"""Hostile HTTP input answers 4xx with a reason, never 500: control and non-ASCII characters
in headers, oversized keys, NaN and Infinity, deep JSON, huge cursors; and the key is checked
before the body."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    app_overrides_fixture,
    base_url,
    client_fixture,
    failed,
    violated,
)

from server.app import App
from server.gateway.routing import Binding, bindings


@pytest.fixture
def backend() -> str:
    """Header and body checks do not depend on the storage: SQLite only."""
    return "sqlite"


@pytest.mark.parametrize(
    "raw_id",
    [b"a\x01b", b"caf\xe9", b"x" * 129, b"tab\there"],
    ids=["ctl", "latin1", "long", "tab"],
)
async def test_malformed_correlation_id_is_400(app: App, raw_id: bytes) -> None:
    assert app.dev_api_key
    async with httpx.AsyncClient(base_url=base_url(app)) as http:
        reply = await http.get(
            "/api/v1/generations",
            headers=[(b"X-API-Key", app.dev_api_key.encode()), (b"X-Request-Id", raw_id)],
        )
    error = failed(reply, 400, "INVALID_CORRELATION_ID")
    assert error["status"] == "INVALID_ARGUMENT"
    # The answer still carries a (fresh, well-formed) id to quote.
    rid = reply.headers["x-request-id"]
    assert rid.isascii() and rid.isprintable() and rid.encode() != raw_id


@pytest.mark.parametrize(
    "raw_key",
    [b"a\x01b", b"caf\xe9", b"k" * 8192, b"k" * 20_000],
    ids=["ctl", "latin1", "8k", "20k"],
)
async def test_malformed_key_is_401(app: App, raw_key: bytes) -> None:
    async with httpx.AsyncClient(base_url=base_url(app)) as http:
        reply = await http.get("/api/v1/generations", headers=[(b"X-API-Key", raw_key)])
    error = failed(reply, 401, "API_KEY_INVALID")
    assert error["status"] == "UNAUTHENTICATED"
    assert reply.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'


async def test_key_is_checked_before_the_body(app: App) -> None:
    async with httpx.AsyncClient(base_url=base_url(app)) as http:
        bad_body = {"content": "{not json", "headers": {"content-type": "application/json"}}
        failed(await http.post("/api/v1/generations", **bad_body), 401, "API_KEY_MISSING")
        failed(await http.post("/api/v1/generations", json={"unknown": 1}), 401, "API_KEY_MISSING")
        # With a key, the same body is the caller's 400.
        assert app.dev_api_key
        keyed = {"X-API-Key": app.dev_api_key, "content-type": "application/json"}
        failed(
            await http.post("/api/v1/generations", content="{not json", headers=keyed),
            400,
            "MALFORMED_JSON",
        )


def _refusable(binding: Binding) -> tuple[str, dict[str, Any]]:
    """A request for ``binding`` the gateway refuses for its own reasons (a path with
    well-formed variables, and a body that is not JSON, or an unknown query field)."""
    path = re.sub(r"\{v\d+(:path)?\}", "00000000-0000-4000-8000-000000000001", binding.pattern)
    if binding.body:
        return path, {"content": "{not json", "headers": {"content-type": "application/json"}}
    return path, {"params": {"notAField": "1"}}


UNKNOWN_KEY = "ig_live_" + "0" * 40
BINDINGS = bindings()


@pytest.mark.parametrize("binding", BINDINGS, ids=[f"{b.verb} {b.template}" for b in BINDINGS])
async def test_unknown_key_is_401_whatever_the_body(app: App, binding: Binding) -> None:
    path, bad = _refusable(binding)
    async with httpx.AsyncClient(base_url=base_url(app), timeout=30) as http:
        headers = {**bad.pop("headers", {}), "X-API-Key": UNKNOWN_KEY}
        reply = await http.request(binding.verb, path, headers=headers, **bad)
        assert failed(reply, 401)["status"] == "UNAUTHENTICATED"
        assert reply.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
        # With the project's key, the same request is the caller's 400 (or, on admin
        # routes, a project key's 403): the key is checked first, the body still counts.
        assert app.dev_api_key
        headers["X-API-Key"] = app.dev_api_key
        reply = await http.request(binding.verb, path, headers=headers, **bad)
        failed(reply, 403 if binding.service.name == "AdminService" else 400)


async def test_unknown_key_with_a_bad_upload_is_401(app: App) -> None:
    assert app.dev_api_key
    form = {"data": {"alias": "@x"}, "files": {"notTheFile": ("a.png", b"x", "image/png")}}
    async with httpx.AsyncClient(base_url=base_url(app), timeout=30) as http:
        reply = await http.post("/api/v1/images/upload", headers={"X-API-Key": UNKNOWN_KEY}, **form)
        failed(reply, 401)
        reply = await http.post(
            "/api/v1/images/upload", headers={"X-API-Key": app.dev_api_key}, **form
        )
        assert "file" in violated(failed(reply, 400, "VALIDATION_ERROR"))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_numbers_are_400(client: httpx.AsyncClient, constant: str) -> None:
    body = f'{{"prompt": "a bell", "meta": {{"x": [1, {constant}]}}}}'
    reply = await client.post(
        "/api/v1/generations", content=body, headers={"content-type": "application/json"}
    )
    assert constant in failed(reply, 400, "MALFORMED_JSON")["message"]


@pytest.mark.parametrize("levels", [65, 2_000, 100_000])
async def test_deep_json_is_400(client: httpx.AsyncClient, levels: int) -> None:
    body = '{"prompt": "a bell", "meta": {"x": ' + "[" * levels + "]" * levels + "}}"
    reply = await client.post(
        "/api/v1/generations", content=body, headers={"content-type": "application/json"}
    )
    assert "nested deeper" in failed(reply, 400, "MALFORMED_JSON")["message"]


async def test_reasonably_nested_meta_is_accepted(client: httpx.AsyncClient) -> None:
    body = '{"prompt": "a bell", "meta": {"x": ' + "[" * 30 + "]" * 30 + "}}"
    reply = await client.post(
        "/api/v1/generations", content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 201, reply.text


@pytest.mark.parametrize("cursor", [str(2**63), "9" * 30, "1" * 5000])
async def test_huge_watch_cursor_is_400(client: httpx.AsyncClient, cursor: str) -> None:
    by_query = await client.get("/api/v1/generations:watch", params={"sinceCursor": cursor})
    failed(by_query, 400, "INVALID_CURSOR")
    by_header = await client.get("/api/v1/generations:watch", headers={"Last-Event-ID": cursor})
    failed(by_header, 400, "INVALID_CURSOR")


@pytest.mark.parametrize("ttl", ["315576000001s", "99999999999999999999s", "NaNs"])
async def test_out_of_range_ttl_is_400(client: httpx.AsyncClient, ttl: str) -> None:
    reply = await client.get("/api/v1/images/@missing/signed-url", params={"ttl": ttl})
    failed(reply, 400)


async def test_client_leaving_mid_body_is_no_error(app: App, capsys) -> None:
    assert app.dev_api_key
    _reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
    writer.write(
        b"POST /api/v1/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-API-Key: " + app.dev_api_key.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
        b'{"prompt": "a'
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    # The gateway noticed (logged as a disconnect), without a traceback.
    logged = ""
    for _ in range(200):
        captured = capsys.readouterr()
        logged += captured.out + captured.err
        if "client_disconnected" in logged:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the gateway never logged the disconnect")
    assert "Traceback" not in logged
    assert "gateway_failed" not in logged


async def _closed_by_server(app: App, sent: bytes) -> bytes:
    """Send ``sent`` and then nothing: what the server answers before it closes (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
    try:
        writer.write(sent)
        await writer.drain()
        # Far longer than the read timeout; EOF comes once the server gives up on us.
        return await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()


SLOW = {"http_read_timeout_seconds": 0.5}


@pytest.mark.parametrize("app_overrides", [SLOW], ids=["read-timeout"])
@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET /api/v1/generations HTTP/1.1\r\nHost: x\r\nX-Api",
        b"POST /api/v1/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-API-Key: k\r\nContent-Length: 100\r\n\r\n{",
    ],
    ids=["nothing", "partial-headers", "stalled-body"],
)
async def test_stalled_clients_are_disconnected(app: App, sent: bytes) -> None:
    assert await _closed_by_server(app, sent) == b""


@pytest.mark.parametrize("app_overrides", [SLOW], ids=["read-timeout"])
async def test_quiet_event_streams_are_not_timed_out(app: App, client: httpx.AsyncClient) -> None:
    async with client.stream("GET", "/api/v1/generations:watch") as stream:
        assert stream.status_code == 200
        # Silent (no events, no heartbeat yet) for several read timeouts: still open.
        await asyncio.sleep(2.0)
        created = await client.post("/api/v1/generations", json={"prompt": "a bell"})
        assert created.status_code == 201
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                break


@pytest.mark.parametrize(
    "value", ["a", "req-42", "a b", "x" * 128, "x" * 129, "a\x01b", "café", "\t", "~!"]
)
def test_openapi_states_what_the_gateway_accepts_as_a_request_id(value: str) -> None:
    # Schema-valid requests are not refused for a reason the schema could state.
    import re

    from server.gateway import openapi
    from server.gateway.headers import valid_correlation_id
    from server.gateway.routing import bindings

    parameters = openapi.document(bindings())["components"]["parameters"]
    pattern = parameters["RequestId"]["schema"]["pattern"]
    assert bool(re.fullmatch(pattern, value)) == valid_correlation_id(value)
    event_id = parameters["LastEventId"]["schema"]["pattern"]
    assert re.fullmatch(event_id, "9" * 18) and not re.fullmatch(event_id, str(2**63))
