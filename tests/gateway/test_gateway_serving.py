"""serve_gateway: port 0, a port in use, small answers sent at once, and a graceful stop."""

from __future__ import annotations

import socket

import httpx
import pytest

from server.gateway import create_gateway, serve_gateway
from server.gateway.serving import bind

NOBODY = "127.0.0.1:1"  # the routes used here never reach the API


async def test_port_zero_binds_a_free_port_and_stop_frees_it() -> None:
    server, task, port = await serve_gateway(create_gateway(NOBODY), "127.0.0.1", 0)
    assert port > 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/openapi.json")).status_code == 200
    with pytest.raises(OSError, match="in use"):  # an error to the caller, not an exit
        await serve_gateway(create_gateway(NOBODY), "127.0.0.1", port)
    await server.stop()
    assert task.done() and task.exception() is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # released


async def test_small_answers_are_not_held_back_by_nagle() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # so asyncio sets TCP_NODELAY on each connection
    finally:
        sock.close()
    # The cause, checked directly rather than by timing requests (tests never fail on
    # timing): the served sockets are TCP, so asyncio disables Nagle on each connection.
    server, _, port = await serve_gateway(create_gateway(NOBODY), "127.0.0.1", 0)
    try:
        listening = [s for srv in server.servers for s in srv.sockets]
        assert listening and all(s.proto == socket.IPPROTO_TCP for s in listening)
        # An answer the gateway makes alone (no API behind it): a call without a key. (A
        # bad query with a key asks the API about the key first: 503 with nobody there.)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/api/v1/generations?limit=x")).status_code == 401
    finally:
        await server.stop()
